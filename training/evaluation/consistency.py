"""Hierarchy consistency: do predicted parts lie inside the object they are attached to?

A part is consistent when at least ``min_inside`` (default 95 %) of it lies inside its parent: of its box
area inside the parent's box for the box test, of its mask pixels inside the parent's mask for the mask test.
The tolerance absorbs mask upsampling and box rounding at the object border; a part under the wrong parent
fails both. A part whose ``parent_id`` names no object of its image, or whose own box or mask is empty, fails.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from partglee_ros.runtime.result import SegmentationResult
from training.data.grouping import containment


def box_inside_fraction(part_box: np.ndarray, parent_box: np.ndarray) -> float:
    """Share of the part box's area (xyxy) inside the parent box; 0 for an empty part box."""
    px0, py0, px1, py1 = (float(v) for v in part_box)
    ox0, oy0, ox1, oy1 = (float(v) for v in parent_box)
    area = max(px1 - px0, 0.0) * max(py1 - py0, 0.0)
    if area == 0:
        return 0.0
    inter = max(min(px1, ox1) - max(px0, ox0), 0.0) * max(min(py1, oy1) - max(py0, oy0), 0.0)
    return inter / area


def hierarchy_consistency(preds: Sequence[SegmentationResult], min_inside: float = 0.95) -> dict:
    """``{"box", "mask", "num_parts"}``: shares of predicted parts inside their parent (NaN without parts)."""
    box_ok = mask_ok = total = 0
    for res in preds:
        parents = {o.id: o for o in res.objects}
        for part in res.parts():
            total += 1
            parent = parents.get(part.parent_id)
            if parent is None:
                continue
            box_ok += box_inside_fraction(part.box, parent.box) >= min_inside
            mask_ok += containment(part.mask, parent.mask) >= min_inside
    nan = float("nan")
    return {
        "box": box_ok / total if total else nan,
        "mask": mask_ok / total if total else nan,
        "num_parts": total,
    }
