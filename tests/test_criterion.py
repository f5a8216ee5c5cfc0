"""Matcher optimality, restriction loss (Eq. 4), target conversion and the criterion's modes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from partglee_ros.config import LossConfig
from training.criterion import SetCriterion, restriction_loss
from training.data.hierarchy import ImageAnnotation, ObjectAnnotation, PartAnnotation
from training.matcher import HungarianMatcher
from training.targets import build_targets


def _random_case(gen: torch.Generator, q: int, t: int, k: int = 4) -> tuple[dict, dict]:
    def boxes(n: int) -> torch.Tensor:
        return torch.cat(
            [torch.rand(n, 2, generator=gen) * 0.6 + 0.2, torch.rand(n, 2, generator=gen) * 0.3 + 0.05], 1
        )

    pred = {
        "logits": torch.randn(1, q, k, generator=gen),
        "boxes": boxes(q)[None],
        "masks": torch.randn(1, q, 8, 8, generator=gen),
    }
    target = {
        "labels": torch.randint(k, (t,), generator=gen),
        "boxes": boxes(t),
        "masks": torch.rand(t, 16, 16, generator=gen) > 0.5,
    }
    return pred, target


@pytest.mark.parametrize("seed", range(12))
def test_matcher_equals_brute_force(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    q, t = int(torch.randint(2, 6, (1,), generator=gen)), int(torch.randint(1, 4, (1,), generator=gen))
    t = min(t, q)
    pred, target = _random_case(gen, q, t)
    matcher = HungarianMatcher(num_points=64)
    torch.manual_seed(seed)
    cost = matcher.cost_matrix({k: v[0] for k, v in pred.items()}, target)
    best = min(sum(cost[p, j] for j, p in enumerate(perm)) for perm in itertools.permutations(range(q), t))
    torch.manual_seed(seed)  # same random mask points as above
    ((rows, cols),) = matcher(pred, [target])
    assert len(rows) == t and sorted(cols.tolist()) == list(range(t))
    assert torch.isclose(cost[rows, cols].sum(), torch.as_tensor(best), atol=1e-5)


def test_matcher_respects_forbidden_pairs() -> None:
    pred, target = _random_case(torch.Generator().manual_seed(0), 4, 2)
    forbidden = torch.ones(4, 2, dtype=torch.bool)
    forbidden[3, 0] = forbidden[1, 1] = False
    ((rows, cols),) = HungarianMatcher(num_points=64)(pred, [target], [forbidden])
    assert dict(zip(cols.tolist(), rows.tolist(), strict=True)) == {0: 3, 1: 1}


def test_restriction_loss_is_zero_inside_and_grows_outside() -> None:
    parent = torch.tensor([[0.5, 0.5, 0.4, 0.4]])
    inside = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.35, 0.35, 0.1, 0.1], [0.5, 0.5, 0.4, 0.4]])
    assert torch.allclose(restriction_loss(inside, parent.expand(3, -1)), torch.zeros(3), atol=1e-6)
    shifts = torch.linspace(0.0, 0.5, 11)
    moving = torch.stack([torch.tensor([0.6 + s, 0.5, 0.2, 0.2]) for s in shifts])
    losses = restriction_loss(moving, parent.expand(len(shifts), -1))
    assert losses[0].abs() < 1e-6 and torch.all(losses[1:] >= losses[:-1] - 1e-6) and losses[4] > 0.5
    assert torch.isclose(losses[-1], torch.tensor(1.0))  # fully outside
    assert torch.isclose(losses[2], torch.tensor(0.5), atol=1e-5)  # half of the part sticks out


def _annotation() -> ImageAnnotation:
    h, w = 40, 60
    m1 = np.zeros((h, w), bool)
    m1[5:25, 10:30] = True
    handle = np.zeros((h, w), bool)
    handle[10:15, 30:35] = True
    m2 = np.zeros((h, w), bool)
    m2[20:35, 40:55] = True
    mug = ObjectAnnotation(
        1, "mug", m1 | handle, [PartAnnotation(2, "body", m1, 1), PartAnnotation(3, "handle", handle, 1)]
    )
    pan = ObjectAnnotation(4, "pan", m2, [PartAnnotation(5, "handle", m2, 4)])
    ghost = ObjectAnnotation(6, "unicorn", m2, [PartAnnotation(7, "horn", m2, 6)])
    return ImageAnnotation(0, "x.png", h, w, [ghost, mug, pan])


def test_build_targets_labels_parents_and_normalised_boxes() -> None:
    t = build_targets(_annotation(), ["pan", "mug"], ["handle", "mug:handle", "body"], padded_size=(64, 64))
    objs, parts = t["objects"], t["parts"]
    assert objs["labels"].tolist() == [1, 0]  # unicorn is not in the vocabulary: dropped with its parts
    assert parts["labels"].tolist() == [2, 1, 0]  # object-specific name preferred when the vocabulary has it
    assert parts["parent"].tolist() == [0, 0, 1]
    assert objs["masks"].shape == (2, 64, 64) and not objs["masks"][:, 40:].any()
    assert torch.allclose(objs["boxes"][1], torch.tensor([47.5 / 64, 27.5 / 64, 15 / 64, 15 / 64]))


def _outputs(q: int, p: int, k_obj: int, k_part: int, flat: bool = False) -> dict:
    torch.manual_seed(0)
    n = q if flat else p

    def level(n_q: int, k: int) -> dict:
        return {
            "logits": torch.randn(1, n_q, k, requires_grad=True),
            "boxes": torch.rand(1, n_q, 4).clamp(0.1, 0.5).requires_grad_(),
            "masks": torch.randn(1, n_q, 16, 16, requires_grad=True),
        }

    obj, part = level(q, k_obj), level(n, k_part)
    out = {f"obj_{k}": v for k, v in obj.items()} | {f"part_{k}": v for k, v in part.items()}
    out["part_parent"] = torch.arange(n)[None] % q
    out["part_parent_boxes"] = obj["boxes"][:, out["part_parent"][0]]
    return out


def test_criterion_terms_and_parent_consistent_matching() -> None:
    targets = [build_targets(_annotation(), ["pan", "mug"], ["handle", "body"], padded_size=(64, 64))]
    out = _outputs(q=4, p=8, k_obj=2, k_part=2)
    cfg = LossConfig(num_points=64)
    loss, terms = SetCriterion(cfg)(out, targets)
    assert {"obj_cls", "obj_l1", "obj_giou", "obj_mask", "obj_dice", "part_cls", "part_res"} <= set(terms)
    assert torch.isfinite(loss)
    loss.backward()
    cfg_pc = LossConfig(num_points=64, part_matching="parent_consistent")
    crit = SetCriterion(cfg_pc)
    obj_matches = crit.matcher(
        {k[4:]: out[k] for k in ("obj_logits", "obj_boxes", "obj_masks")}, [targets[0]["objects"]]
    )
    forbidden = crit._part_forbidden(out, obj_matches, [targets[0]["parts"]])[0]
    ((rows, cols),) = crit.matcher(
        {k[5:]: out[k] for k in ("part_logits", "part_boxes", "part_masks")},
        [targets[0]["parts"]],
        [forbidden],
    )
    assert not forbidden[rows, cols].any()  # every part matched under the object its parent query got


def test_flat_criterion_matches_objects_and_parts_as_one_level() -> None:
    targets = [build_targets(_annotation(), ["pan", "mug"], ["handle", "body"], padded_size=(64, 64))]
    out = _outputs(q=8, p=8, k_obj=2, k_part=2, flat=True)
    out["part_boxes"], out["part_masks"] = out["obj_boxes"], out["obj_masks"]
    loss, terms = SetCriterion(LossConfig(num_points=64), flat=True)(out, targets)
    assert torch.isfinite(loss) and "obj_cls" in terms and not any(k.startswith("part") for k in terms)
