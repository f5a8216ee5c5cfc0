"""Learning works end to end: the small config overfits 2 fixed SynthParts scenes on CPU in a bounded budget.

Measured on the 2-core container (no GPU): after 60 AdamW steps (lr 2e-3, ~40 s uncontended) mean mask IoU
was ~0.85 for objects and ~0.7 for parts; thresholds leave margin. The untrained model is checked to be
below them, so the test cannot pass without learning.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from partglee_ros.config import ModelConfig
from partglee_ros.model import build_model, images_to_tensor
from partglee_ros.model.text_encoder import build_text_encoder
from training.criterion import SetCriterion
from training.data.synthparts import CATEGORIES, generate_scene
from training.targets import build_targets

STEPS = 60
OBJECT_IOU = 0.7
PART_IOU = 0.5


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum().clamp(min=1))


def hierarchical_mask_iou(out: dict, targets: list[dict], size: tuple[int, int]) -> tuple[float, float]:
    """Objects: the top-n queries of each label are assigned to that label's n GT objects by IoU (Hungarian).
    Parts: among the part queries whose parent is the assigned object query, the best-scoring one of the
    part's label - so the object->part link is part of what is measured."""
    obj_ious, part_ious = [], []
    for b, t in enumerate(targets):
        om = F.interpolate(out["obj_masks"][b : b + 1], size=size, mode="bilinear")[0] > 0
        pm = F.interpolate(out["part_masks"][b : b + 1], size=size, mode="bilinear")[0] > 0
        objs = t["objects"]
        assigned = torch.zeros(len(objs["labels"]), dtype=torch.long)
        for label in objs["labels"].unique():
            gts = (objs["labels"] == label).nonzero().flatten()
            queries = out["obj_logits"][b, :, label].topk(len(gts)).indices
            ious = np.array([[_iou(om[q], objs["masks"][g]) for g in gts] for q in queries])
            rows, cols = linear_sum_assignment(-ious)
            assigned[gts[cols]] = queries[rows]
            obj_ious += list(ious[rows, cols])
        parts = t["parts"]
        for j, label in enumerate(parts["labels"]):
            parent_query = assigned[parts["parent"][j]]
            scores = out["part_logits"][b, :, label].sigmoid() * (out["part_parent"][b] == parent_query)
            part_ious.append(_iou(pm[scores.argmax()], parts["masks"][j]))
    return float(np.mean(obj_ious)), float(np.mean(part_ious))


@pytest.mark.timeout(600)
def test_small_config_overfits_two_synthparts_scenes() -> None:
    torch.manual_seed(0)
    config = ModelConfig.from_file("config/models/small.yaml")
    config.loss.num_points = 1024
    model = build_model(config)
    scenes = [generate_scene(0), generate_scene(1)]
    object_vocab = list(CATEGORIES)
    part_vocab = sorted({p for parts in CATEGORIES.values() for p in parts})
    encoder = build_text_encoder("minilm")
    object_text, part_text = (torch.from_numpy(encoder.encode(v)) for v in (object_vocab, part_vocab))
    images = images_to_tensor([s.image for s in scenes])
    size = tuple(images.shape[-2:])
    targets = [build_targets(s, object_vocab, part_vocab, size) for s in scenes]
    criterion = SetCriterion(config.loss)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(images, object_text, part_text)
        model.train()
        return hierarchical_mask_iou(out, targets, size)

    before = evaluate()
    assert before[0] < OBJECT_IOU and before[1] < PART_IOU, f"untrained model already passes: {before}"
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    model.train()
    for _ in range(STEPS):
        loss, _ = criterion(model(images, object_text, part_text, targets), targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    obj_iou, part_iou = evaluate()
    print(f"mask IoU before {before}, after {STEPS} steps: objects {obj_iou:.3f}, parts {part_iou:.3f}")
    assert obj_iou >= OBJECT_IOU, f"object mask IoU {obj_iou:.3f} (before training {before[0]:.3f})"
    assert part_iou >= PART_IOU, f"part mask IoU {part_iou:.3f} (before training {before[1]:.3f})"
