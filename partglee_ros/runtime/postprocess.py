"""Raw network outputs -> objects with parts at the input image's resolution.

Steps: per-query best label and score, score threshold, duplicate suppression (class-wise box NMS,
OpenCV's), top-k; parts only under surviving parents, restricted to the parts the vocabulary allows for
the parent's label, thresholded, suppressed and top-k'd per object; masks upsampled from stride 4 to the
input resolution only for the instances that survive. With ``clip_parts_to_parent`` a part's mask and box
are cut to its parent's; a part left with no mask pixels is dropped.

NumPy and OpenCV only: every backend returns NumPy arrays, and the ONNX Runtime path then runs without
importing PyTorch (~0.6 GB and seconds less per node process, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from partglee_ros.runtime.result import ObjectResult, PartResult


@dataclass
class PostprocessConfig:
    object_threshold: float = 0.3
    part_threshold: float = 0.3
    max_objects: int = 20
    max_parts_per_object: int = 8
    nms_iou: float = 0.7
    clip_parts_to_parent: bool = True  # a part pixel must also be a pixel of its parent object

    def validate(self) -> None:
        for name in ("object_threshold", "part_threshold", "nms_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 1 <= self.max_objects <= 1000 or not 0 <= self.max_parts_per_object <= 100:
            raise ValueError("max_objects must be in [1, 1000] and max_parts_per_object in [0, 100]")


@dataclass
class Letterbox:
    """How the input image was placed into the network input: resized, padded bottom/right.

    One scale per axis: the resized image has whole pixels, so each side's scale is its rounded size over the
    original's, not the common fit scale (for an 8000 x 250 image into 320 x 240, 8 px wide: 0.032, not 0.03)."""

    height: int  # original image
    width: int
    scale_x: float  # resized width / width
    scale_y: float  # resized height / height
    padded_height: int
    padded_width: int


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function in the tanh form, which cannot overflow (``1 / (1 + exp(-x))`` warns below -88)."""
    return 0.5 * np.tanh(0.5 * logits) + 0.5


def _boxes_to_input(boxes_cxcywh: np.ndarray, lb: Letterbox) -> np.ndarray:
    """(n, 4) normalised cx, cy, w, h over the padded network input -> x1, y1, x2, y2 in input pixels."""
    centre, half = boxes_cxcywh[:, :2], boxes_cxcywh[:, 2:] / 2
    xyxy = np.concatenate([centre - half, centre + half], axis=1)
    xyxy *= np.array([lb.padded_width / lb.scale_x, lb.padded_height / lb.scale_y] * 2, np.float32)
    np.clip(xyxy[:, 0::2], 0, lb.width, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, lb.height, out=xyxy[:, 1::2])
    return xyxy


def _resized(maps: np.ndarray, lb: Letterbox) -> Iterator[np.ndarray]:
    """Each (h, w) map of ``maps`` (n, h, w) over the padded network input, resized bilinearly to the
    original image's (H, W).

    One resize per map at the letterbox's own scale, so each output pixel is sampled once at the exact
    position the letterbox maps it to (pixel centres, like ``F.interpolate`` with ``align_corners=False``) -
    no intermediate image at the padded size. Only the rows/columns that cover the image are read. OpenCV's
    resize gives the same pixels as ``F.interpolate`` 4-9x faster here.
    """
    n, h, w = maps.shape
    if n == 0:
        return
    sy, sx = lb.padded_height / (h * lb.scale_y), lb.padded_width / (w * lb.scale_x)
    # One replicated cell past the bottom/right edge (what bilinear sampling clamps to anyway), so that
    # round(rows * sy) >= H even when the float scale lands just below the exact ratio.
    rows, cols = min(h + 1, math.ceil(lb.height / sy) + 1), min(w + 1, math.ceil(lb.width / sx) + 1)
    padded = np.pad(maps.astype(np.float32, copy=False), ((0, 0), (0, 1), (0, 1)), mode="edge")
    for i in range(n):
        # dsize None: OpenCV keeps fx/fy as the exact scale instead of recomputing it from a rounded size.
        up = cv2.resize(padded[i, :rows, :cols], None, fx=sx, fy=sy, interpolation=cv2.INTER_LINEAR)
        yield up[: lb.height, : lb.width]


def _masks_to_input(mask_logits: np.ndarray, lb: Letterbox) -> np.ndarray:
    """(n, h, w) logits over the padded network input -> (n, H, W) bool at the original image size."""
    out = np.zeros((mask_logits.shape[0], lb.height, lb.width), dtype=bool)
    for i, up in enumerate(_resized(mask_logits, lb)):
        np.greater(up, 0, out=out[i])
    return out


def maps_to_input(maps: np.ndarray, lb: Letterbox) -> np.ndarray:
    """(n, h, w) float maps over the padded network input (scores, probabilities) -> (n, H, W) float32 at
    the original image size, resampled as masks are."""
    out = np.empty((maps.shape[0], lb.height, lb.width), dtype=np.float32)
    for i, up in enumerate(_resized(maps, lb)):
        out[i] = up
    return out


def _select(
    scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray, cfg_iou: float, threshold: float, k: int
) -> np.ndarray:
    """Indices of the kept queries, best first: class-wise NMS (a box goes when its IoU with a better one of
    the same label exceeds ``cfg_iou``), then the ``k`` best."""
    candidates = np.flatnonzero(scores >= threshold)
    if candidates.size == 0:
        return candidates
    xyxy = boxes[candidates].astype(np.float64)
    rects = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)  # OpenCV's x, y, w, h
    # Every candidate passed the threshold already (scores are >= 0 there), so OpenCV's own score filter
    # (strictly above) is set below them all. Its top_k would cut before suppression, hence the slice after.
    keep = cv2.dnn.NMSBoxesBatched(
        rects, scores[candidates].astype(np.float32), labels[candidates].astype(np.int32), -1.0, cfg_iou
    )
    return candidates[np.asarray(keep, np.int64).reshape(-1)[:k]]


def postprocess(
    outputs: dict[str, np.ndarray],
    lb: Letterbox,
    objects: tuple[str, ...],
    parts: tuple[str, ...],
    allowed: np.ndarray,
    cfg: PostprocessConfig,
) -> list[ObjectResult]:
    """`parts`: one name per part_logits column (at least one). `allowed` (K_obj, K_part) bool: which parts
    the vocabulary allows under each object label."""
    obj_probs = sigmoid(outputs["obj_logits"])
    obj_scores, obj_labels = obj_probs.max(-1), obj_probs.argmax(-1)
    obj_boxes = _boxes_to_input(outputs["obj_boxes"], lb)
    kept = _select(obj_scores, obj_labels, obj_boxes, cfg.nms_iou, cfg.object_threshold, cfg.max_objects)
    obj_masks = _masks_to_input(outputs["obj_masks"][kept], lb)

    part_probs = sigmoid(outputs["part_logits"])
    part_boxes = _boxes_to_input(outputs["part_boxes"], lb)
    part_parent = outputs["part_parent"]

    results: list[ObjectResult] = []
    next_id = 1
    for rank, q in enumerate(kept.tolist()):
        label = int(obj_labels[q])
        obj = ObjectResult(next_id, objects[label], float(obj_scores[q]), obj_boxes[q], obj_masks[rank])
        next_id += 1
        children = np.flatnonzero(part_parent == q)
        if children.size and cfg.max_parts_per_object:
            # Disallowed names score -1, below any threshold (0 included), never 0.
            probs = np.where(allowed[label], part_probs[children], np.float32(-1))
            scores, labels = probs.max(-1), probs.argmax(-1)
            keep = children[
                _select(
                    scores,
                    labels,
                    part_boxes[children],
                    cfg.nms_iou,
                    cfg.part_threshold,
                    cfg.max_parts_per_object,
                )
            ]
            lookup = {int(c): i for i, c in enumerate(children)}
            masks = _masks_to_input(outputs["part_masks"][keep], lb)
            if cfg.clip_parts_to_parent:
                masks &= obj.mask
            for mask, p in zip(masks, keep.tolist(), strict=True):
                if not mask.any():  # nothing of it (inside its parent): no use to a planner
                    continue
                i = lookup[p]
                part_name = parts[int(labels[i])]
                box = part_boxes[p]
                if cfg.clip_parts_to_parent:
                    box = np.concatenate([np.maximum(box[:2], obj.box[:2]), np.minimum(box[2:], obj.box[2:])])
                    if (box[2:] <= box[:2]).any():  # predicted boxes disjoint: the mask's own extent
                        ys, xs = np.nonzero(mask)
                        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
                obj.parts.append(
                    PartResult(
                        next_id,
                        part_name,
                        f"{obj.label}:{part_name}",
                        float(scores[i]),
                        box,
                        mask,
                        obj.id,
                    )
                )
                next_id += 1
        results.append(obj)
    return results
