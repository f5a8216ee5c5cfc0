"""PartGLEE training loss (Eq. 4, Eq. 5): per-level Hungarian matching, focal/box/mask losses with deep
supervision, optional query-denoising losses and the restriction loss tying parts to their parent's box.

Total = sum over prediction sets (final, every aux decoder layer, encoder proposals, denoising layers) of
  w_cls * focal(S) + w_l1 * L1 + w_giou * GIoU + w_mask * BCE + w_dice * dice     (objects and parts)
  + w_res * L_res (final and aux part layers).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from partglee_ros.config import LossConfig
from partglee_ros.model.partglee import box_containment, decoder_targets
from training.matcher import HungarianMatcher, point_sample

Matches = list[tuple[Tensor, Tensor]]


def restriction_loss(part_boxes: Tensor, parent_boxes: Tensor) -> Tensor:
    """Eq. 4 per part: 1 - |B_obj ∩ B_part| / |B_part|, boxes (M, 4) cxcywh. 0 inside the parent, ->1 outside."""
    return 1 - box_containment(
        box_convert(part_boxes, "cxcywh", "xyxy"), box_convert(parent_boxes, "cxcywh", "xyxy")
    )


def uncertain_points(logits: Tensor, num_points: int, oversample: float, importance: float) -> Tensor:
    """Mask2Former's point sampling: most uncertain (|logit| small) of oversampled points, plus random ones."""
    n = logits.shape[0]
    n_sampled = int(num_points * oversample)
    coords = torch.rand(n, n_sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits.detach(), coords).abs()
    n_uncertain = int(importance * num_points)
    idx = uncertainty.topk(n_uncertain, dim=1).indices
    chosen = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    return torch.cat([chosen, torch.rand(n, num_points - n_uncertain, 2, device=logits.device)], 1)


class SetCriterion:
    def __init__(self, config: LossConfig, flat: bool = False) -> None:
        self.c = config
        self.flat = flat
        self.matcher = HungarianMatcher(
            config.class_weight,
            config.box_l1_weight,
            config.giou_weight,
            config.mask_weight,
            config.dice_weight,
            config.num_points,
            config.focal_alpha,
            config.focal_gamma,
        )
        self.weights = {
            "cls": config.class_weight,
            "l1": config.box_l1_weight,
            "giou": config.giou_weight,
            "mask": config.mask_weight,
            "dice": config.dice_weight,
            "res": config.restriction_weight,
        }

    def level_losses(
        self, pred: dict[str, Tensor], targets: list[dict[str, Tensor]], matches: Matches, num: float
    ) -> dict[str, Tensor]:
        """Classification over all queries; boxes and masks on the matched pairs only."""
        logits = pred["logits"]
        onehot = torch.zeros_like(logits)
        b_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
        q_idx = torch.cat([q for q, _ in matches])
        labels = torch.cat([t["labels"][ti] for t, (_, ti) in zip(targets, matches, strict=True)])
        onehot[b_idx, q_idx, labels] = 1.0
        out = {"cls": sigmoid_focal_loss(logits, onehot, self.c.focal_alpha, self.c.focal_gamma, "sum") / num}
        src_boxes = pred["boxes"][b_idx, q_idx]
        tgt_boxes = torch.cat([t["boxes"][ti] for t, (_, ti) in zip(targets, matches, strict=True)])
        out["l1"] = F.l1_loss(src_boxes, tgt_boxes, reduction="sum") / num
        out["giou"] = (
            generalized_box_iou_loss(
                box_convert(src_boxes, "cxcywh", "xyxy"),
                box_convert(tgt_boxes, "cxcywh", "xyxy"),
                reduction="sum",
            )
            / num
        )
        if "masks" in pred:
            src = pred["masks"][b_idx, q_idx]
            tgt = torch.cat([t["masks"][ti] for t, (_, ti) in zip(targets, matches, strict=True)])
            if len(src):
                coords = uncertain_points(
                    src, self.c.num_points, self.c.oversample_ratio, self.c.importance_sample_ratio
                )
                pl = point_sample(src, coords)
                with torch.no_grad():
                    tl = point_sample(tgt.float(), coords)
                out["mask"] = F.binary_cross_entropy_with_logits(pl, tl, reduction="none").mean(1).sum() / num
                p = pl.sigmoid()
                out["dice"] = (1 - (2 * (p * tl).sum(1) + 1) / (p.sum(1) + tl.sum(1) + 1)).sum() / num
            else:
                out["mask"] = out["dice"] = pred["masks"].sum() * 0.0
        return out

    def _part_forbidden(self, outputs: dict, obj_matches: Matches, part_targets: list[dict]) -> list[Tensor]:
        """parent_consistent matching: part query q may take GT part t only if q's parent query was matched
        to t's parent object. Built on the outputs' device, where ``part_parent`` and the targets live."""
        parent_query = outputs["part_parent"]
        device = parent_query.device
        forbidden = []
        for b, ((q, t), pt) in enumerate(zip(obj_matches, part_targets, strict=True)):
            gt_of_query = torch.full((outputs["obj_logits"].shape[1],), -1, dtype=torch.long, device=device)
            gt_of_query[q.to(device)] = t.to(device)
            parent_gt = gt_of_query[parent_query[b]]  # (P,)
            forbidden.append(parent_gt[:, None] != pt["parent"].to(device)[None, :])
        return forbidden

    def __call__(
        self, outputs: dict, targets: list[dict[str, dict[str, Tensor]]], part_level: bool = True
    ) -> tuple[Tensor, dict]:
        """outputs: the model's training-mode dict; targets: ``training.targets.build_targets`` per image.
        ``part_level=False`` for a batch of a source without part annotations (COCO): its empty part targets
        mean "not annotated", not "no part here", so no part loss is computed (the paper trains the part
        level on part-level data only) and the flat baseline is scored on the object half of its logits.
        Returns the weighted total and the unweighted terms (for logging)."""
        terms: dict[str, Tensor] = {}
        device = outputs["obj_logits"].device
        k_obj = outputs["obj_logits"].shape[-1]
        to_dev = [
            {lvl: {k: v.to(device) for k, v in t[lvl].items()} for lvl in ("objects", "parts")}
            for t in targets
        ]
        narrow = self.flat and not part_level  # flat sets scored over the joint vocabulary, objects only
        if self.flat and part_level:
            levels = {"obj": [decoder_targets(t, k_obj, True) for t in to_dev]}
            pairs = [(_final(outputs, "obj"), _final(outputs, "part"))]
            pairs += list(zip(outputs.get("obj_aux", []), outputs.get("part_aux", []), strict=True))
            preds = {"obj": [_joined(o, p) for o, p in pairs]}
        else:
            levels = {"obj": [t["objects"] for t in to_dev]}
            if part_level:
                levels["part"] = [t["parts"] for t in to_dev]
            preds = {lvl: [_final(outputs, lvl)] + list(outputs.get(f"{lvl}_aux", [])) for lvl in levels}
        obj_final_matches: Matches = []
        for lvl, tg in levels.items():
            num = _targets_per_rank(sum(len(t["labels"]) for t in tg), device)
            sets = preds[lvl]
            for i, pred in enumerate(sets):
                name = f"{lvl}" if i == 0 else f"{lvl}_aux{i - 1}"
                if lvl == "part" and self.c.part_matching == "parent_consistent":
                    forbidden = self._part_forbidden(outputs, obj_final_matches, tg)
                    matches = _allowed(self.matcher(pred, tg, forbidden), forbidden)
                else:
                    matches = self.matcher(pred, tg)
                if lvl == "obj" and i == 0:
                    obj_final_matches = matches
                terms |= {f"{name}_{k}": v for k, v in self.level_losses(pred, tg, matches, num).items()}
                if lvl == "part" and self.c.restriction_weight:
                    terms[f"{name}_res"] = self._restriction(pred, outputs["part_parent_boxes"], matches, num)
            if f"{lvl}_enc" in outputs:
                enc = _object_logits(outputs[f"{lvl}_enc"], k_obj) if narrow else outputs[f"{lvl}_enc"]
                terms |= {
                    f"{lvl}_enc_{k}": v
                    for k, v in self.level_losses(enc, tg, self.matcher(enc, tg), num).items()
                }
            if lvl == "obj" and "obj_dn" in outputs:
                matches = _dn_matches(tg, outputs["dn_groups"], outputs["dn_group_size"])
                for i, pred in enumerate(outputs["obj_dn"]):
                    dn_pred = _object_logits(pred, k_obj) if narrow else pred
                    dn_num = num * outputs["dn_groups"]
                    terms |= {
                        f"dn{i}_{k}": v for k, v in self.level_losses(dn_pred, tg, matches, dn_num).items()
                    }
        total = sum(self.weights[k.rsplit("_", 1)[1]] * v for k, v in terms.items())
        return total, {k: v.detach() for k, v in terms.items()}

    @staticmethod
    def _restriction(pred: dict, parent_boxes: Tensor, matches: Matches, num: float) -> Tensor:
        b_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
        q_idx = torch.cat([q for q, _ in matches])
        return restriction_loss(pred["boxes"][b_idx, q_idx], parent_boxes[b_idx, q_idx]).sum() / num


def _targets_per_rank(count: int, device: torch.device) -> float:
    """The loss normaliser: targets of the whole step over the ranks, at least 1 (DETR's num_boxes).

    Under DDP each rank's losses are divided by it and the gradients averaged, so every target of the step
    weighs alike; a rank's own count would make one target of a sparse image weigh as much as all targets
    of a crowded one. Every rank calls it in the same order (a step's source, hence its levels, is shared)."""
    total = float(count)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([total], dtype=torch.float32, device=device)
        dist.all_reduce(t)
        total = float(t.item()) / dist.get_world_size()
    return max(total, 1.0)


def _final(outputs: dict, lvl: str) -> dict[str, Tensor]:
    return {k: outputs[f"{lvl}_{k}"] for k in ("logits", "boxes", "masks")}


def _allowed(matches: Matches, forbidden: list[Tensor]) -> Matches:
    """Drop matched pairs that are forbidden: FORBIDDEN_COST only makes them expensive, so the matcher still
    takes one when no allowed pair is left, and such a pair must not be trained towards that ground truth."""
    out = []
    for (q, t), f in zip(matches, forbidden, strict=True):
        keep = ~f.cpu()[q, t]
        out.append((q[keep], t[keep]))
    return out


def _object_logits(pred: dict[str, Tensor], k_obj: int) -> dict[str, Tensor]:
    """A flat-baseline prediction set restricted to the object names of its joint vocabulary."""
    return {**pred, "logits": pred["logits"][..., :k_obj]}


def _joined(obj: dict, part: dict) -> dict[str, Tensor]:
    """Flat baseline: the object and part halves of the logits belong to the same queries."""
    return {
        "logits": torch.cat([obj["logits"], part["logits"]], -1),
        "boxes": obj["boxes"],
        "masks": obj["masks"],
    }


def _dn_matches(targets: list[dict], groups: int, group_size: int) -> Matches:
    """Denoising queries know their answer: query g*P + j reconstructs target j."""
    out = []
    for t in targets:
        n = len(t["labels"])
        q = (torch.arange(groups)[:, None] * group_size + torch.arange(n)[None]).flatten()
        out.append((q, torch.arange(n).repeat(groups)))
    return out
