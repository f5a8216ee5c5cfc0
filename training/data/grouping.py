"""Recovering the object -> part hierarchy for datasets that ship parts without parent links.

Two rules, both documented in docs/DATA.md: a part belongs to the candidate parent that contains the
largest share of its pixels (mask containment; boxes count as rectangular masks), and when a dataset
has no object annotations at all, each connected blob of part pixels is one object instance.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def containment(part: np.ndarray, region: np.ndarray) -> float:
    """Share of the part's pixels inside ``region`` (0 for an empty part)."""
    area = int(part.sum())
    return float(np.logical_and(part, region).sum()) / area if area else 0.0


def box_region(box_xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool mask of an xyxy pixel box (x1/y1 exclusive)."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box_xyxy)
    region = np.zeros((height, width), dtype=bool)
    region[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return region


def best_parent(part: np.ndarray, regions: list[np.ndarray], min_containment: float = 0.5) -> int | None:
    """Index of the region containing most of ``part`` (ties: the smaller region), or None if below
    ``min_containment``."""
    if not regions:
        return None
    scores = [(containment(part, r), -int(r.sum())) for r in regions]
    best = max(range(len(regions)), key=lambda i: scores[i])
    return best if scores[best][0] >= min_containment else None


def instance_blobs(masks: list[np.ndarray], bridge: int = 2) -> np.ndarray:
    """Label map of object instances as connected blobs of the union of part masks.

    Parts of one object touch; ``bridge`` pixels of dilation join parts separated by thin annotation
    gaps. Labels are 1..n (0 = no part), returned at the original (undilated) pixels only.
    """
    union = np.any(np.stack(masks), axis=0)
    grown = ndimage.binary_dilation(union, iterations=bridge) if bridge else union
    labels, _ = ndimage.label(grown)
    return np.where(union, labels, 0)
