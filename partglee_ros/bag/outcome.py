"""What one evaluation run produced, frame by frame: the shared output of offline and replay mode."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from partglee_ros.bag.reader import BagError, Frame, ReadLog
from partglee_ros.runtime.result import SegmentationResult


class ReplayError(RuntimeError):
    """Replay could not reach the node or the node refused the vocabulary; the message says what to check."""


@dataclass
class FrameOutcome:
    index: int
    stamp_ns: int
    log_ns: int
    result: SegmentationResult | None = None  # None: frame error, or dropped by the node (replay)
    latency_ms: float | None = None  # offline: Segmenter time; replay: publish -> result received
    error: str | None = None


@dataclass
class EvaluationRun:
    mode: str  # "offline" or "replay"
    bag: str
    image_topic: str
    frames: list[FrameOutcome] = field(default_factory=list)
    log: ReadLog = field(default_factory=ReadLog)
    overlay_images: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> RGB
    notes: list[str] = field(default_factory=list)  # mode-specific facts for the report

    def add_frame(self, frame: Frame, keep_image: bool) -> FrameOutcome:
        outcome = FrameOutcome(frame.index, frame.stamp_ns, frame.log_ns, error=frame.error)
        if frame.error is not None:
            self.log.frame_errors.append((frame.index, frame.error))
        elif keep_image:
            self.overlay_images[frame.index] = frame.rgb
        self.frames.append(outcome)
        return outcome

    def stop(self, err: BagError) -> None:
        """Reading ended at damaged data: keep what was done and say why it stopped."""
        self.log.fatal = str(err)

    @property
    def answered(self) -> list[FrameOutcome]:
        return [f for f in self.frames if f.result is not None]

    @property
    def dropped(self) -> list[FrameOutcome]:
        """Good frames without a result (replay: the node skipped them or answered too late)."""
        return [f for f in self.frames if f.result is None and f.error is None]


def overlay_indices(count: int, wanted: int) -> set[int]:
    """`wanted` frame indices spread evenly over `count` frames."""
    if count <= 0 or wanted <= 0:
        return set()
    return {int(i) for i in np.linspace(0, count - 1, min(wanted, count)).round()}
