"""Object track ids across frames (partglee_ros/runtime/tracking.py)."""

from __future__ import annotations

import numpy as np
import pytest

from partglee_ros.runtime.overlay import draw_overlay
from partglee_ros.runtime.result import ObjectResult, SegmentationResult
from partglee_ros.runtime.tracking import ObjectTracker, TrackingConfig

H, W = 120, 160


def rect(x: int, y: int, w: int, h: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[y : y + h, x : x + w] = True
    return mask


def frame(*objects: tuple[str, np.ndarray]) -> SegmentationResult:
    height, width = objects[0][1].shape if objects else (H, W)
    found = [
        ObjectResult(i + 1, label, 0.9, np.zeros(4, np.float32), m) for i, (label, m) in enumerate(objects)
    ]
    return SegmentationResult(height, width, 1, found)


def track_ids(tracker: ObjectTracker, result: SegmentationResult, stamp: int | None = None) -> list[int]:
    tracker.update(result, stamp)
    return [o.track_id for o in result.objects]


def test_moving_objects_keep_their_ids_and_labels_never_share_a_track() -> None:
    tracker = ObjectTracker(TrackingConfig(relabel_iou=0.0))
    first = track_ids(tracker, frame(("mug", rect(10, 10, 20, 20)), ("kettle", rect(100, 50, 30, 30))))
    assert len(set(first)) == 2 and 0 not in first
    for step in range(1, 15):  # 3 px per frame: IoU with the last mask ~0.74
        got = track_ids(
            tracker,
            frame(("kettle", rect(100 - 2 * step, 50, 30, 30)), ("mug", rect(10 + 3 * step, 10, 20, 20))),
        )
        assert got == first[::-1]
    # a different label where the mug was is another object, and the mug's track lives on unmatched
    last_mug = rect(10 + 3 * 14, 10, 20, 20)
    (bottle,) = track_ids(tracker, frame(("bottle", last_mug)))
    assert bottle not in first and tracker.active == 3
    assert track_ids(tracker, frame(("mug", last_mug))) == [first[0]]


def test_a_track_survives_max_missed_frames_and_then_ends() -> None:
    tracker = ObjectTracker(TrackingConfig(iou=0.3, max_missed=3))
    mug = rect(40, 40, 30, 30)
    (mug_id,) = track_ids(tracker, frame(("mug", mug)))
    for _ in range(3):  # occluded
        assert track_ids(tracker, frame()) == []
    assert track_ids(tracker, frame(("mug", mug))) == [mug_id]
    for _ in range(4):
        track_ids(tracker, frame())
    assert tracker.active == 0
    (again,) = track_ids(tracker, frame(("mug", mug)))
    assert again != mug_id and again > mug_id  # ids are never reused


S = 10**9  # ns per second: stamps are integer nanoseconds, as in a header


def test_a_track_unseen_for_longer_than_max_age_ends_however_few_frames_came() -> None:
    tracker = ObjectTracker(TrackingConfig(iou=0.3, max_missed=5, max_age=1.0))
    mug = rect(40, 40, 30, 30)
    (mug_id,) = track_ids(tracker, frame(("mug", mug)), stamp=1_700_000_000 * S)
    assert track_ids(tracker, frame(), stamp=1_700_000_000 * S + S // 2) == []
    assert track_ids(tracker, frame(("mug", mug)), stamp=1_700_000_001 * S) == [mug_id]  # 1 s: still alive
    assert track_ids(tracker, frame(), stamp=1_700_000_001 * S + S // 2) == [] and tracker.active == 1
    (after_pause,) = track_ids(tracker, frame(("mug", mug)), stamp=1_700_000_002 * S + 1)  # 1 s + 1 ns later
    assert after_pause not in (0, mug_id)
    # no time limit: only frames count
    patient = ObjectTracker(TrackingConfig(max_age=0.0))
    (first,) = track_ids(patient, frame(("mug", mug)), stamp=0)
    assert track_ids(patient, frame(("mug", mug)), stamp=3600 * S) == [first]


def test_time_going_back_ends_every_track() -> None:
    tracker = ObjectTracker()
    mug = rect(40, 40, 30, 30)
    (mug_id,) = track_ids(tracker, frame(("mug", mug)), stamp=100 * S)
    assert track_ids(tracker, frame(("mug", mug)), stamp=100 * S + S // 10) == [mug_id]
    (replayed,) = track_ids(tracker, frame(("mug", mug)), stamp=5 * S)  # a bag replayed into a live node
    assert replayed not in (0, mug_id)
    assert track_ids(tracker, frame(("mug", mug)), stamp=5 * S + 1) == [replayed]
    # equal stamps (a driver that leaves them unset) are not time going back
    assert track_ids(tracker, frame(("mug", mug)), stamp=5 * S + 1) == [replayed]


def test_relabel_iou_lets_a_track_keep_its_id_when_the_label_wavers() -> None:
    mug = rect(40, 40, 30, 30)
    strict = ObjectTracker(TrackingConfig(relabel_iou=0.0))  # labels never share a track
    (a,) = track_ids(strict, frame(("mug", mug)))
    assert track_ids(strict, frame(("cup", mug))) != [a]

    tracker = ObjectTracker()  # the default relabel_iou, 0.5
    (a,) = track_ids(tracker, frame(("mug", mug)))
    assert track_ids(tracker, frame(("cup", rect(43, 40, 30, 30)))) == [a]  # IoU 0.82
    assert track_ids(tracker, frame(("cup", mug))) == [a]  # the track took the new label
    (b,) = track_ids(tracker, frame(("mug", rect(52, 40, 30, 30))))  # IoU 0.43: >= track_iou, < 0.5
    assert b != a


def test_a_pair_across_labels_never_displaces_a_same_label_pair() -> None:
    """Track mug A; the new frame has a mug overlapping A by 0.5 and a cup overlapping it by 0.82: the mug
    continues A (same label first), the cup starts a track."""
    tracker = ObjectTracker(TrackingConfig(relabel_iou=0.3))
    (a,) = track_ids(tracker, frame(("mug", rect(40, 40, 30, 30))))
    mug_id, cup_id = track_ids(tracker, frame(("mug", rect(50, 40, 30, 30)), ("cup", rect(43, 40, 30, 30))))
    assert mug_id == a and cup_id not in (0, a)


def test_overlap_below_the_threshold_starts_a_new_track() -> None:
    tracker = ObjectTracker(TrackingConfig(iou=0.5))
    (a,) = track_ids(tracker, frame(("mug", rect(0, 0, 40, 40))))
    (b,) = track_ids(tracker, frame(("mug", rect(20, 0, 40, 40))))  # IoU 1/3
    (c,) = track_ids(tracker, frame(("mug", rect(30, 0, 40, 40))))  # IoU 3/5 with the last mask
    assert b != a and c == b


def test_assignment_is_one_to_one_and_maximises_total_overlap() -> None:
    """Two mugs side by side move 12 px right. The new left mug overlaps the old right one most (IoU 0.43),
    so matching the best pair first would give it the right mug's id and leave the left track unmatched; the
    assignment pairs old left with new left and old right with new right (IoU 0.25 each, 0.5 in all)."""
    tracker = ObjectTracker(TrackingConfig(iou=0.2))
    left, right = rect(10, 10, 20, 20), rect(30, 10, 20, 20)
    ids = track_ids(tracker, frame(("mug", left), ("mug", right)))
    moved = track_ids(tracker, frame(("mug", rect(42, 10, 20, 20)), ("mug", rect(22, 10, 20, 20))))
    assert moved == ids[::-1]
    # an object cannot continue two tracks, and two objects cannot continue one
    merged = track_ids(tracker, frame(("mug", rect(22, 10, 40, 20))))
    assert len(merged) == 1 and merged[0] in ids and tracker.active == 2


def test_pairs_below_the_threshold_do_not_take_part_in_the_assignment() -> None:
    """Gated before assigning, as ByteTrack does: old A = new a (IoU 1) and A-b 0.5; old B-a 0.67 and B-b 0.25.
    Left in, the weak pair wins (A-a + B-b = 1.25 > A-b + B-a = 1.17) and is then dropped (< 0.3), so b would
    start a new track; gated, both new objects continue a track."""
    tracker = ObjectTracker(TrackingConfig(iou=0.3))
    old, new = [rect(0, 0, 30, 30), rect(0, 0, 20, 30)], [rect(0, 0, 30, 30), rect(10, 0, 30, 30)]
    ious = [[float((o & n).sum() / (o | n).sum()) for n in new] for o in old]
    assert (
        ious[1][1] < 0.3 <= min(ious[0][1], ious[1][0]) and ious[0][0] + ious[1][1] > ious[0][1] + ious[1][0]
    )
    ids = track_ids(tracker, frame(("mug", old[0]), ("mug", old[1])))
    assert track_ids(tracker, frame(("mug", new[0]), ("mug", new[1]))) == ids[::-1]


def test_a_new_image_size_ends_every_track() -> None:
    tracker = ObjectTracker()
    (a,) = track_ids(tracker, frame(("mug", rect(10, 10, 20, 20))))
    (b,) = track_ids(tracker, frame(("mug", rect(10, 10, 20, 20, size=(240, 320)))))
    assert b != a and tracker.active == 1


def test_empty_masks_never_match() -> None:
    tracker = ObjectTracker()
    (a,) = track_ids(tracker, frame(("mug", np.zeros((H, W), bool))))
    (b,) = track_ids(tracker, frame(("mug", np.zeros((H, W), bool))))
    assert a != b


@pytest.mark.parametrize(
    "config",
    [
        TrackingConfig(iou=0.0),
        TrackingConfig(iou=1.5),
        TrackingConfig(max_missed=-1),
        TrackingConfig(max_age=-1.0),
        TrackingConfig(max_age=float("nan")),
        TrackingConfig(max_age=float("inf")),  # overflowed the integer-ns arithmetic at every update
        TrackingConfig(relabel_iou=-0.1),
        TrackingConfig(relabel_iou=1.1),
    ],
)
def test_bad_configs_are_refused(config) -> None:
    with pytest.raises(ValueError, match="track"):
        config.validate()
    with pytest.raises(ValueError, match="track"):
        ObjectTracker(config)


@pytest.mark.parametrize("missed", [float("inf"), 2.7, True])
def test_max_missed_must_be_a_whole_number_of_frames(missed) -> None:
    with pytest.raises(ValueError, match="whole number of frames"):
        TrackingConfig.from_parameters({"track_max_missed": missed})


def test_the_debug_overlay_colours_a_tracked_object_by_its_track() -> None:
    image = np.full((H, W, 3), 128, np.uint8)

    def drawn(object_id: int, track_id: int) -> np.ndarray:
        obj = ObjectResult(
            object_id, "mug", 0.9, np.array([10, 10, 40, 40], np.float32), rect(10, 10, 30, 30)
        )
        obj.track_id = track_id
        return draw_overlay(image, SegmentationResult(H, W, 1, [obj]))

    assert np.array_equal(drawn(1, 7), drawn(2, 7))  # the frame's id changes, the track's colour stays
    assert not np.array_equal(drawn(1, 0), drawn(2, 0))


def test_the_node_parameters_make_the_config() -> None:
    """The node and the offline bag evaluation both read these names (defaults for missing ones)."""
    values = {"track_iou": 0.2, "track_max_missed": 3, "track_max_age": 2.5, "track_relabel_iou": 0.0}
    assert TrackingConfig.from_parameters(values) == TrackingConfig(0.2, 3, 2.5, 0.0)
    assert TrackingConfig.from_parameters({}) == TrackingConfig()
    with pytest.raises(ValueError, match="relabel_iou"):
        TrackingConfig.from_parameters({"track_relabel_iou": 2.0})


def test_a_rate_cap_slower_than_max_age_is_warned_about() -> None:
    from partglee_ros.ros.parameters import tracking_warning

    values = {"tracking": True, "max_rate": 0.2, "track_max_age": 5.0}
    assert "track_max_age" in tracking_warning(values)
    assert tracking_warning(values | {"max_rate": 0.25}) is None  # a frame every 4 s
    assert tracking_warning(values | {"track_max_age": 0.0}) is None  # no time limit
    assert tracking_warning(values | {"max_rate": 0.0}) is None  # no cap
    assert tracking_warning(values | {"tracking": False}) is None


def test_masks_that_do_not_fit_the_frame_are_refused_before_any_track_changes() -> None:
    tracker = ObjectTracker()
    assert track_ids(tracker, frame(("mug", rect(10, 10, 30, 30)))) == [1]
    wrong_size = frame(("mug", rect(10, 10, 30, 30)), ("mug", rect(10, 10, 30, 30, size=(H, W + 8))))
    wrong_size.height, wrong_size.width = H, W
    with pytest.raises(ValueError, match="expected a bool mask of"):
        tracker.update(wrong_size)
    floats = frame(("mug", rect(10, 10, 30, 30).astype(np.float32)))
    with pytest.raises(ValueError, match="expected a bool mask of"):
        tracker.update(floats)
    assert track_ids(tracker, frame(("mug", rect(11, 10, 30, 30)))) == [1]  # the track went on untouched
