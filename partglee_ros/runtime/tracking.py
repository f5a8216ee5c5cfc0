"""Track ids for objects across frames, so a planner can follow "the same mug" from one result to the next.

Each new frame's objects are matched to the live tracks of the same label by mask IoU with the track's last
mask, one to one (scipy's linear_sum_assignment, largest total IoU over the pairs of at least `iou`: weaker
pairs are left out before assigning, as ByteTrack gates its costs, so they cannot crowd out a valid one).
With `relabel_iou` > 0 a track may also continue with an object of another label whose mask overlaps its
last one that much (a detector wavering between "mug" and "cup" on one object); the track then takes the
new label. A matched object takes the track's id, an unmatched one starts a new track, and a track unmatched
for more than `max_missed` frames in a row, or not seen for more than `max_age` seconds of frame stamps, ends
(a camera that paused for a minute must not continue old tracks into its first frame). A frame stamped
before the previous one (a looped or replayed bag, a restarted simulator) ends every track. No motion
model: at camera rates an object moves little between frames, and its last mask is a better guess of where
it is than a box extrapolated from noisy detections.
Parts are not tracked apart: a part is (its object's track id, its label).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from partglee_ros.runtime.result import ObjectResult, SegmentationResult

MAX_TRACK_ID = 2**32 - 1  # ids are uint32 in ObjectInstance; 0 means "not tracked"
MAX_AGE_S = 1e6  # 11.6 days: beyond it "no limit" is meant, which is 0


@dataclass(frozen=True)
class TrackingConfig:
    iou: float = 0.3  # mask IoU with a track's last mask needed to continue it
    max_missed: int = 5  # frames in a row a track may go unmatched before it ends
    max_age: float = 5.0  # seconds (of frame stamps) a track may go unseen before it ends; 0: no limit
    relabel_iou: float = 0.5  # mask IoU at which a track continues with an object of another label; 0: never

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> TrackingConfig:
        """From the node's parameters `track_iou`, `track_relabel_iou`, `track_max_missed` and `track_max_age`
        (defaults for missing ones), validated: the node and the offline bag evaluation read them alike."""
        defaults = cls()
        missed = values.get("track_max_missed", defaults.max_missed)
        if isinstance(missed, bool) or not (isinstance(missed, int) or float(missed).is_integer()):
            raise ValueError(f"track max_missed must be a whole number of frames, got {missed}")
        config = cls(
            iou=float(values.get("track_iou", defaults.iou)),
            max_missed=int(missed),
            max_age=float(values.get("track_max_age", defaults.max_age)),
            relabel_iou=float(values.get("track_relabel_iou", defaults.relabel_iou)),
        )
        config.validate()
        return config

    def validate(self) -> None:
        if not 0.0 < self.iou <= 1.0:
            raise ValueError(f"track IoU must be in (0, 1], got {self.iou}")
        if self.max_missed < 0:
            raise ValueError(f"track max_missed must be >= 0, got {self.max_missed}")
        if not 0.0 <= self.max_age <= MAX_AGE_S:  # also refuses NaN and inf (stamps are integer ns)
            raise ValueError(
                f"track max_age must be 0 (no limit) to {MAX_AGE_S:g} seconds, got {self.max_age}"
            )
        if not 0.0 <= self.relabel_iou <= 1.0:
            raise ValueError(f"track relabel_iou must be in [0, 1] (0: never), got {self.relabel_iou}")


@dataclass
class _Silhouette:
    """A mask with its tight bounds (x0, y0, x1, y1) and area, so IoU only looks where both can overlap."""

    mask: np.ndarray
    bounds: tuple[int, int, int, int]
    area: int

    @classmethod
    def of(cls, mask: np.ndarray) -> _Silhouette:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows) == 0:
            return cls(mask, (0, 0, 0, 0), 0)
        bounds = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        return cls(mask, bounds, int(np.count_nonzero(mask)))

    def iou(self, other: _Silhouette) -> float:
        x0, y0 = max(self.bounds[0], other.bounds[0]), max(self.bounds[1], other.bounds[1])
        x1, y1 = min(self.bounds[2], other.bounds[2]), min(self.bounds[3], other.bounds[3])
        if x0 >= x1 or y0 >= y1:
            return 0.0
        inter = np.count_nonzero(self.mask[y0:y1, x0:x1] & other.mask[y0:y1, x0:x1])
        return inter / (self.area + other.area - inter)


@dataclass
class _Track:
    id: int
    label: str
    silhouette: _Silhouette
    seen: int | None  # stamp (ns) of the last frame that matched it
    missed: int = 0


class ObjectTracker:
    """Sets `track_id` on the objects of consecutive results of one camera. Not thread-safe: feed it from
    the one thread that sees the frames in order."""

    def __init__(self, config: TrackingConfig | None = None) -> None:
        self.config = config or TrackingConfig()
        self.config.validate()
        self._tracks: list[_Track] = []
        self._size: tuple[int, int] | None = None
        self._stamp: int | None = None
        self._next_id = 1

    @property
    def active(self) -> int:
        """Tracks alive now (matched in this frame, or missed for at most max_missed frames and max_age s)."""
        return len(self._tracks)

    def reset(self) -> None:
        """End every track (ids keep counting up, so an old id never names a new object)."""
        self._tracks = []
        self._size = None
        self._stamp = None

    def update(self, result: SegmentationResult, stamp_ns: int | None = None) -> None:
        """Give the objects of the next frame their track ids. `stamp_ns`: the frame's header stamp in integer
        nanoseconds, for `max_age` and to notice time going back; without one only frames count."""
        config = self.config  # one read: a concurrent swap applies from the next frame
        size = (result.height, result.width)
        for obj in result.objects:  # checked before any track changes
            if obj.mask.shape != size or obj.mask.dtype != bool:
                raise ValueError(
                    f"object {obj.id}: mask {obj.mask.shape} {obj.mask.dtype}, expected a bool mask of {size}"
                )
        went_back = stamp_ns is not None and self._stamp is not None and stamp_ns < self._stamp
        if self._size != size or went_back:  # another camera mode (no mask compares), or time went back
            self.reset()
            self._size = size
        if stamp_ns is not None:
            self._stamp = stamp_ns
            if config.max_age > 0.0:
                oldest = stamp_ns - round(config.max_age * 1e9)
                self._tracks = [t for t in self._tracks if t.seen is None or t.seen >= oldest]
        shapes = [_Silhouette.of(o.mask) for o in result.objects]
        matches = self._match(result.objects, shapes, config)
        seen = set()
        for j, (obj, shape) in enumerate(zip(result.objects, shapes, strict=True)):
            track = matches.get(j)
            if track is None:
                track = _Track(self._new_id(), obj.label, shape, stamp_ns)
                self._tracks.append(track)
            track.silhouette, track.seen, track.label = shape, stamp_ns, obj.label
            obj.track_id = track.id
            seen.add(track.id)
        for track in self._tracks:
            track.missed = 0 if track.id in seen else track.missed + 1
        self._tracks = [t for t in self._tracks if t.missed <= config.max_missed]

    def _match(
        self, objects: list[ObjectResult], shapes: list[_Silhouette], config: TrackingConfig
    ) -> dict[int, _Track]:
        """One to one, largest total IoU: first the pairs of the same label, then, among the tracks and objects
        left over, pairs across labels (from `relabel_iou` on), so a relabelled pair never displaces one."""
        matches: dict[int, _Track] = {}
        self._assign(objects, shapes, matches, config.iou, same_label=True)
        if config.relabel_iou > 0.0:
            self._assign(objects, shapes, matches, max(config.relabel_iou, config.iou), same_label=False)
        return matches

    def _assign(
        self,
        objects: list[ObjectResult],
        shapes: list[_Silhouette],
        matches: dict[int, _Track],
        min_iou: float,
        same_label: bool,
    ) -> None:
        """Adds to `matches` the assignment of the unmatched objects to the unmatched tracks."""
        taken = {id(t) for t in matches.values()}
        tracks = [t for t in self._tracks if id(t) not in taken]
        free = [j for j in range(len(objects)) if j not in matches]
        if not tracks or not free:
            return
        iou = np.zeros((len(tracks), len(free)))
        # only pairs whose boxes overlap reach the per-pair IoU, found all at once (many objects, few overlaps)
        a = np.array([t.silhouette.bounds for t in tracks]).reshape(-1, 1, 4)
        b = np.array([shapes[j].bounds for j in free]).reshape(1, -1, 4)
        overlap = (np.maximum(a[..., :2], b[..., :2]) < np.minimum(a[..., 2:], b[..., 2:])).all(axis=-1)
        labels = np.array([t.label for t in tracks], dtype=object)[:, None]
        overlap &= (labels == np.array([objects[j].label for j in free], dtype=object)[None, :]) == same_label
        for i, c in zip(*np.nonzero(overlap), strict=True):
            iou[i, c] = tracks[i].silhouette.iou(shapes[free[c]])
        # before assigning: a pair that may not match must not crowd out one that may
        iou[iou < min_iou] = 0.0
        rows, cols = linear_sum_assignment(iou, maximize=True)
        matches.update({free[c]: tracks[i] for i, c in zip(rows, cols, strict=True) if iou[i, c] > 0.0})

    def _new_id(self) -> int:
        new = self._next_id
        self._next_id = new % MAX_TRACK_ID + 1
        return new
