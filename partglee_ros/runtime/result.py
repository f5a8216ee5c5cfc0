"""Plain results of one segmented frame: what the Segmenter returns and every consumer reads.

Boxes are (x0, y0, x1, y1) float32 in input-image pixels; masks are HxW bool at the input resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PartResult:
    id: int
    label: str  # generic part name, e.g. "handle"
    object_label: str  # object-specific name, e.g. "mug:handle"
    score: float
    box: np.ndarray
    mask: np.ndarray
    parent_id: int  # ObjectResult.id of its parent


@dataclass
class ObjectResult:
    id: int
    label: str
    score: float
    box: np.ndarray
    mask: np.ndarray
    parts: list[PartResult] = field(default_factory=list)
    track_id: int = 0  # the same object across frames (runtime/tracking.py); 0 = not tracked


@dataclass
class SegmentationResult:
    height: int
    width: int
    vocabulary_revision: int
    objects: list[ObjectResult] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def parts(self) -> list[PartResult]:
        return [p for o in self.objects for p in o.parts]
