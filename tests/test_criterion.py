"""Matcher optimality, restriction loss (Eq. 4), target conversion and the criterion's modes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from partglee_ros.config import LossConfig
from partglee_ros.model.denoising import LabelEmbedding, build_denoising_queries
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


def _targets() -> list[dict]:
    # objects: 0 = mug, 1 = pan; parts: mug:body, mug:handle (parent 0), pan:handle (parent 1)
    return [build_targets(_annotation(), ["pan", "mug"], ["handle", "body"], padded_size=(64, 64))]


def _final_level(out: dict, lvl: str) -> dict:
    return {k: out[f"{lvl}_{k}"] for k in ("logits", "boxes", "masks")}


def test_criterion_terms() -> None:
    out = _outputs(q=4, p=8, k_obj=2, k_part=2)
    loss, terms = SetCriterion(LossConfig(num_points=64))(out, _targets())
    assert {"obj_cls", "obj_l1", "obj_giou", "obj_mask", "obj_dice", "part_cls", "part_res"} <= set(terms)
    assert torch.isfinite(loss)
    loss.backward()


def test_part_forbidden_mask_by_hand() -> None:
    targets = _targets()
    assert targets[0]["parts"]["parent"].tolist() == [0, 0, 1]
    out = _outputs(q=4, p=6, k_obj=2, k_part=2)
    out["part_parent"] = torch.tensor([[0, 1, 2, 3, 2, 0]])
    # object query 2 took GT object 0 (mug), query 0 took GT object 1 (pan); queries 1 and 3 are unmatched
    obj_matches = [(torch.tensor([2, 0]), torch.tensor([0, 1]))]
    crit = SetCriterion(LossConfig(num_points=64, part_matching="parent_consistent"))
    (forbidden,) = crit._part_forbidden(out, obj_matches, [targets[0]["parts"]])
    t, f = True, False
    expected = [[t, t, f], [t, t, t], [f, f, t], [t, t, t], [f, f, t], [t, t, f]]
    assert forbidden.tolist() == expected


def test_parent_consistent_criterion_trains_no_forbidden_pair() -> None:
    """Every part query's parent is an unmatched object query: all pairs are forbidden, so the matcher's
    (expensive but finite) assignments must be dropped and no part box/mask/restriction loss remain."""
    targets = _targets()
    out = _outputs(q=4, p=8, k_obj=2, k_part=2)
    crit = SetCriterion(LossConfig(num_points=64, part_matching="parent_consistent"))
    torch.manual_seed(1)
    ((matched, _),) = crit.matcher(_final_level(out, "obj"), [targets[0]["objects"]])
    unmatched = next(q for q in range(4) if q not in matched.tolist())
    out["part_parent"] = torch.full((1, 8), unmatched)
    out["part_parent_boxes"] = out["obj_boxes"][:, out["part_parent"][0]]
    torch.manual_seed(1)  # the criterion's object matching draws the same mask points as above
    loss, terms = crit(out, targets)
    for key in ("part_l1", "part_giou", "part_mask", "part_dice", "part_res"):
        assert terms[key] == 0, key
    assert terms["part_cls"] > 0 and terms["obj_l1"] > 0  # unmatched part queries still learn "no part"
    loss.backward()
    assert not out["part_boxes"].grad.any() and not out["part_masks"].grad.any()


def test_parent_consistent_matches_only_allowed_pairs() -> None:
    targets = _targets()
    out = _outputs(q=4, p=8, k_obj=2, k_part=2)
    crit = SetCriterion(LossConfig(num_points=64, part_matching="parent_consistent"))
    seen = []
    matcher = crit.matcher

    def spy(pred: dict, tg: list, forbidden: list | None = None) -> list:
        matches = matcher(pred, tg, forbidden)
        seen.append((matches, forbidden))
        return matches

    crit.matcher = spy
    crit(out, targets)
    obj_matches, _ = seen[0]
    (forbidden,) = crit._part_forbidden(out, obj_matches, [targets[0]["parts"]])
    part_calls = [f for _, f in seen if f is not None]
    assert len(part_calls) == 1 and torch.equal(part_calls[0][0], forbidden)
    assert (~forbidden).any()  # some parts can be matched under this object assignment


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_parent_consistent_criterion_on_cuda() -> None:
    out = {
        k: v.detach().cuda().requires_grad_(v.is_floating_point())
        for k, v in _outputs(q=4, p=8, k_obj=2, k_part=2).items()
    }
    crit = SetCriterion(LossConfig(num_points=64, part_matching="parent_consistent"))
    loss, _ = crit(out, _targets())
    assert loss.is_cuda and torch.isfinite(loss)


def test_object_only_batches_get_no_part_loss() -> None:
    """A source without part annotations (COCO) must not push every part logit down (all-negative focal)."""
    targets = _targets()
    for flat in (False, True):
        out = _outputs(q=8, p=8, k_obj=2, k_part=2, flat=flat)
        if flat:  # the flat baseline's encoder proposals score the joint vocabulary (2 objects + 2 parts)
            out["part_boxes"], out["part_masks"] = out["obj_boxes"], out["obj_masks"]
            out["obj_enc"] = {
                k: v.detach().clone().requires_grad_() for k, v in _final_level(out, "part").items()
            }
            out["obj_enc"]["logits"] = torch.randn(1, 8, 4, requires_grad=True)
        loss, terms = SetCriterion(LossConfig(num_points=64), flat=flat)(out, targets, part_level=False)
        assert "obj_cls" in terms and not any(k.startswith("part") for k in terms), flat
        loss.backward()
        assert out["part_logits"].grad is None or not out["part_logits"].grad.any(), flat
        assert out["obj_logits"].grad.any(), flat
        if flat:
            enc_grad = out["obj_enc"]["logits"].grad
            assert enc_grad[..., :2].any() and not enc_grad[..., 2:].any()


def test_flat_criterion_matches_objects_and_parts_as_one_level() -> None:
    targets = [build_targets(_annotation(), ["pan", "mug"], ["handle", "body"], padded_size=(64, 64))]
    out = _outputs(q=8, p=8, k_obj=2, k_part=2, flat=True)
    out["part_boxes"], out["part_masks"] = out["obj_boxes"], out["obj_masks"]
    loss, terms = SetCriterion(LossConfig(num_points=64), flat=True)(out, targets)
    assert torch.isfinite(loss) and "obj_cls" in terms and not any(k.startswith("part") for k in terms)


def _object_case(image: int, n: int) -> tuple[dict, dict]:
    """One image with ``n`` objects and 6 queries: the first ``n`` near their object (box 0.02 off, same
    mask), so every matching is the same; the rest elsewhere and unlikely."""
    gen = torch.Generator().manual_seed(image)
    boxes = torch.rand(n, 4, generator=gen) * 0.2 + torch.tensor([0.3, 0.3, 0.2, 0.2])
    masks = torch.zeros(n, 16, 16, dtype=torch.bool)
    for i in range(n):
        masks[i, i : i + 4, 2:10] = True
    logits = torch.full((1, 6, 2), -3.0)
    logits[0, :n, 0] = 2.0
    pred_boxes = torch.tensor([0.9, 0.9, 0.05, 0.05]).repeat(1, 6, 1)
    pred_boxes[0, :n] = boxes + 0.02
    pred_masks = torch.full((1, 6, 16, 16), -8.0)
    pred_masks[0, :n] = torch.where(masks, 8.0, -8.0)
    no_parts = {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    no_parts |= {
        "masks": torch.zeros(0, 16, 16, dtype=torch.bool),
        "parent": torch.zeros(0, dtype=torch.long),
    }
    target = {"objects": {"labels": torch.zeros(n, dtype=torch.long), "boxes": boxes, "masks": masks}}
    return {"obj_logits": logits, "obj_boxes": pred_boxes, "obj_masks": pred_masks}, target | {
        "parts": no_parts
    }


COUNTS = (1, 5)  # objects on rank 0 and rank 1
SUMMED = ("obj_cls", "obj_l1", "obj_giou")  # terms summed over targets (mask terms sample random points)


def _rank_terms(rank: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    outputs, target = _object_case(rank, COUNTS[rank])
    _, terms = SetCriterion(LossConfig(num_points=64))(outputs, [target], part_level=False)
    torch.save({k: terms[k] for k in SUMMED}, f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_ranks_normalise_by_the_targets_of_the_whole_step(tmp_path) -> None:
    """DDP averages the ranks' gradients, so each rank must divide by the step's targets over the ranks (as
    DETR and MaskDINO do): then the average of the ranks' losses is the loss of the whole step in one process.
    Divided by its own count, a rank with 1 object weighed it as much as the other's 5 together."""
    torch.multiprocessing.spawn(_rank_terms, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    cases = [_object_case(r, n) for r, n in enumerate(COUNTS)]
    whole = {k: torch.cat([c[0][k] for c in cases]) for k in cases[0][0]}
    _, terms = SetCriterion(LossConfig(num_points=64))(whole, [c[1] for c in cases], part_level=False)
    for k in SUMMED:
        assert float(ranks[0][k] + ranks[1][k]) / 2 == pytest.approx(float(terms[k]), rel=1e-5), k


def test_denoising_pads_carry_no_label() -> None:
    """Images with 1 and 3 objects: the first image's 2 pads per group are trained as "no object", so they
    must not carry class 0's embedding (a real class-0 query with the same content is trained towards it)."""
    torch.manual_seed(0)
    text = torch.randn(2, 4, 8)
    targets = [{"labels": torch.tensor([2]), "boxes": torch.full((1, 4), 0.4)}]
    targets.append({"labels": torch.tensor([0, 1, 3]), "boxes": torch.full((3, 4), 0.4)})
    dn = build_denoising_queries(targets, text, LabelEmbedding(8, 16), 10, 6, 0.4, 0.0)
    assert dn.groups == 2 and dn.group_size == 3
    content = dn.tgt.view(2, 2, 3, 16)  # image, group, slot
    assert (content[0, :, 1:] == 0).all() and (content[0, :, 0] != 0).any()
    assert (content[1] != 0).any(-1).all()
