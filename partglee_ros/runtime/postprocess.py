"""Raw network outputs -> objects with parts at the input image's resolution.

Steps: per-query best label and score, score threshold, duplicate suppression (class-wise box NMS,
torchvision), top-k; parts only under surviving parents, restricted to the parts the vocabulary allows for
the parent's label, thresholded, suppressed and top-k'd per object; masks upsampled from stride 4 to the
input resolution only for the instances that survive. With ``clip_parts_to_parent`` a part's mask and box
are cut to its parent's; a part left with no mask pixels is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms, box_convert

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
    """How the input image was placed into the network input: scaled by `scale`, padded bottom/right."""

    height: int  # original image
    width: int
    scale: float
    padded_height: int
    padded_width: int


def _boxes_to_input(boxes_cxcywh: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    xyxy = box_convert(boxes_cxcywh, "cxcywh", "xyxy")
    xyxy = xyxy * torch.tensor([lb.padded_width, lb.padded_height] * 2) / lb.scale
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, lb.width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, lb.height)
    return xyxy


def _masks_to_input(mask_logits: np.ndarray, lb: Letterbox) -> np.ndarray:
    """(n, h, w) logits over the padded network input -> (n, H, W) bool at the original image size.

    One bilinear resize per mask at the letterbox's own scale, so each output pixel is sampled once at the
    exact position the letterbox maps it to (pixel centres, like ``F.interpolate`` with
    ``align_corners=False``) - no intermediate image at the padded size. Only the rows/columns that cover
    the image are read. OpenCV's resize gives the same pixels as ``F.interpolate`` 4-9x faster here.
    """
    n, h, w = mask_logits.shape
    out = np.zeros((n, lb.height, lb.width), dtype=bool)
    if n == 0:
        return out
    sy, sx = lb.padded_height / (h * lb.scale), lb.padded_width / (w * lb.scale)
    # One replicated cell past the bottom/right edge (what bilinear sampling clamps to anyway), so that
    # round(rows * sy) >= H even when the float scale lands just below the exact ratio.
    rows, cols = min(h + 1, math.ceil(lb.height / sy) + 1), min(w + 1, math.ceil(lb.width / sx) + 1)
    padded = np.pad(mask_logits.astype(np.float32, copy=False), ((0, 0), (0, 1), (0, 1)), mode="edge")
    for i in range(n):
        # dsize None: OpenCV keeps fx/fy as the exact scale instead of recomputing it from a rounded size.
        up = cv2.resize(padded[i, :rows, :cols], None, fx=sx, fy=sy, interpolation=cv2.INTER_LINEAR)
        np.greater(up[: lb.height, : lb.width], 0, out=out[i])
    return out


def _select(
    scores: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, cfg_iou: float, threshold: float, k: int
) -> torch.Tensor:
    """Indices of the kept queries, best first."""
    candidates = torch.nonzero(scores >= threshold).flatten()
    if candidates.numel() == 0:
        return candidates
    keep = batched_nms(boxes[candidates], scores[candidates], labels[candidates], cfg_iou)
    return candidates[keep[:k]]


def postprocess(
    outputs: dict[str, np.ndarray],
    lb: Letterbox,
    objects: tuple[str, ...],
    parts: tuple[str, ...],
    allowed: np.ndarray,
    cfg: PostprocessConfig,
) -> list[ObjectResult]:
    """`allowed` (K_obj, K_part) bool: which parts the vocabulary allows under each object label."""
    obj_scores, obj_labels = torch.from_numpy(outputs["obj_logits"]).sigmoid().max(-1)
    obj_boxes = _boxes_to_input(torch.from_numpy(outputs["obj_boxes"]), lb)
    kept = _select(obj_scores, obj_labels, obj_boxes, cfg.nms_iou, cfg.object_threshold, cfg.max_objects)
    obj_masks = _masks_to_input(outputs["obj_masks"][kept.numpy()], lb)

    part_probs = torch.from_numpy(outputs["part_logits"]).sigmoid()
    part_boxes = _boxes_to_input(torch.from_numpy(outputs["part_boxes"]), lb)
    part_parent = torch.from_numpy(outputs["part_parent"])
    allowed_t = torch.from_numpy(allowed)

    results: list[ObjectResult] = []
    next_id = 1
    for rank, q in enumerate(kept.tolist()):
        label = int(obj_labels[q])
        obj = ObjectResult(
            next_id, objects[label], float(obj_scores[q]), obj_boxes[q].numpy(), obj_masks[rank]
        )
        next_id += 1
        children = torch.nonzero(part_parent == q).flatten()
        if children.numel() and parts and cfg.max_parts_per_object:
            # Disallowed names score -1, below any threshold (0 included), never 0.
            probs = torch.where(allowed_t[label], part_probs[children], -1.0)
            scores, labels = probs.max(-1)
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
            masks = _masks_to_input(outputs["part_masks"][keep.numpy()], lb)
            if cfg.clip_parts_to_parent:
                masks &= obj.mask
            for mask, p in zip(masks, keep.tolist(), strict=True):
                if not mask.any():  # nothing of it (inside its parent): no use to a planner
                    continue
                i = lookup[p]
                part_name = parts[int(labels[i])]
                box = part_boxes[p].numpy()
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
