"""Shared check that two backends computed the same network outputs (fp32 on CPU, same inputs).

Tolerances: logits and mask logits max |diff| <= 1e-3, normalised boxes <= 1e-4, part->parent links
identical, and masks (logit > 0) IoU >= 0.99 over all queries.
"""

from __future__ import annotations

import numpy as np

from partglee_ros.runtime.backends.base import OUTPUT_NAMES

LOGIT_ATOL = 1e-3
BOX_ATOL = 1e-4
MASK_IOU_MIN = 0.99


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def assert_outputs_match(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert got.keys() == ref.keys() == set(OUTPUT_NAMES)
    for name in OUTPUT_NAMES:
        assert got[name].shape == ref[name].shape, name
    for name in ("obj_logits", "part_logits", "obj_masks", "part_masks"):
        err = np.abs(got[name] - ref[name]).max()
        assert err <= LOGIT_ATOL, f"{name}: max abs error {err}"
    for name in ("obj_boxes", "part_boxes"):
        err = np.abs(got[name] - ref[name]).max()
        assert err <= BOX_ATOL, f"{name}: max abs error {err}"
    np.testing.assert_array_equal(got["part_parent"], ref["part_parent"])
    for name in ("obj_masks", "part_masks"):
        assert mask_iou(got[name], ref[name]) >= MASK_IOU_MIN, name
