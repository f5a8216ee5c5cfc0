"""Convert an ``ImageAnnotation`` + vocabularies into the per-level target dicts the criterion consumes.

Per image: ``{"objects": {labels, boxes, masks}, "parts": {labels, boxes, masks, parent}}`` where labels
index the object / part vocabulary, boxes are cxcywh normalised by the (padded) network input size - the
same frame as the model's outputs - masks are (T, H, W) bool at the padded input size and ``parent`` indexes
the part's object inside ``objects``. A part is labelled with its object-specific name (``mug:handle``)
when the part vocabulary has it, else with its generic name (``handle``); instances whose category is not
in the vocabulary, whose mask is empty, or that are COCO crowd regions (``iscrowd``: many instances under one
mask) are left out (with the parts of a left-out object).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from training.data.hierarchy import ImageAnnotation, part_label


def _box_cxcywh(box_xyxy: np.ndarray, width: int, height: int) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    return [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]


def _level(labels: list[int], boxes: list[list[float]], masks: list[np.ndarray], size: tuple[int, int]):
    h, w = size
    m = np.zeros((len(masks), h, w), dtype=bool)
    for i, mask in enumerate(masks):
        m[i, : mask.shape[0], : mask.shape[1]] = mask
    return {
        "labels": torch.tensor(labels, dtype=torch.long),
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "masks": torch.from_numpy(m),
    }


def build_targets(
    ann: ImageAnnotation,
    object_vocab: list[str],
    part_vocab: list[str],
    padded_size: tuple[int, int] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """``padded_size`` (H, W) of the network input the image was padded into; defaults to the image size."""
    h, w = padded_size or (ann.height, ann.width)
    obj_index = {n: i for i, n in enumerate(object_vocab)}
    part_index = {n: i for i, n in enumerate(part_vocab)}
    objs: tuple[list, list, list] = ([], [], [])
    parts: tuple[list, list, list] = ([], [], [])
    parents: list[int] = []
    for obj in ann.objects:
        if obj.name not in obj_index or not obj.mask.any() or obj.iscrowd:
            continue
        parent = len(objs[0])
        for lst, v in zip(objs, (obj_index[obj.name], _box_cxcywh(obj.box, w, h), obj.mask), strict=True):
            lst.append(v)
        for part in obj.parts:
            label = part_index.get(part_label(obj.name, part.name), part_index.get(part.name))
            if label is None or not part.mask.any() or part.iscrowd:
                continue
            for lst, v in zip(parts, (label, _box_cxcywh(part.box, w, h), part.mask), strict=True):
                lst.append(v)
            parents.append(parent)
    part_level = _level(*parts, (h, w))
    part_level["parent"] = torch.tensor(parents, dtype=torch.long)
    return {"objects": _level(*objs, (h, w)), "parts": part_level}
