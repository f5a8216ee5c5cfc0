"""Hungarian matching of predictions to targets, run separately per level (objects, parts) as in the paper.

Costs follow MaskDINO: focal-style class cost on the similarity logits, L1 + GIoU on boxes, BCE + dice on
masks evaluated at shared random points. The assignment is scipy's ``linear_sum_assignment``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou

FORBIDDEN_COST = 1e6  # finite so that every assignment problem stays feasible


def point_sample(masks: Tensor, coords: Tensor) -> Tensor:
    """masks (N, h, w), coords (N or 1, P, 2) as (x, y) in [0, 1] -> (N, P) bilinear values."""
    grid = (2 * coords - 1)[:, :, None].expand(masks.shape[0], -1, -1, -1)
    return F.grid_sample(masks[:, None].float(), grid, align_corners=False)[:, 0, :, 0]


def pairwise_sigmoid_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """(Q, P) logits vs (T, P) {0,1} -> (Q, T) mean BCE."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    p = logits.sigmoid()
    numerator = 2 * p @ targets.T
    denominator = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher:
    def __init__(
        self,
        cost_class: float = 4.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ) -> None:
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.cost_mask, self.cost_dice = cost_mask, cost_dice
        self.num_points, self.alpha, self.gamma = num_points, alpha, gamma

    @torch.no_grad()
    def cost_matrix(self, pred: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
        """One image: pred logits (Q, K), boxes (Q, 4), optional masks (Q, h, w) -> cost (Q, T)."""
        labels = target["labels"]
        prob = pred["logits"].float().sigmoid()
        neg = (1 - self.alpha) * prob**self.gamma * -(1 - prob + 1e-8).log()
        pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
        cost = self.cost_class * (pos[:, labels] - neg[:, labels])
        boxes, tboxes = pred["boxes"].float(), target["boxes"]
        cost = cost + self.cost_bbox * torch.cdist(boxes, tboxes, p=1)
        giou = generalized_box_iou(
            box_convert(boxes, "cxcywh", "xyxy"), box_convert(tboxes, "cxcywh", "xyxy")
        )
        cost = cost - self.cost_giou * giou
        if "masks" in pred and (self.cost_mask or self.cost_dice):
            coords = torch.rand(1, self.num_points, 2, device=boxes.device)
            pm = point_sample(pred["masks"].float(), coords)
            tm = point_sample(target["masks"].to(pm), coords)
            cost = (
                cost + self.cost_mask * pairwise_sigmoid_ce(pm, tm) + self.cost_dice * pairwise_dice(pm, tm)
            )
        return cost

    @torch.no_grad()
    def __call__(
        self,
        preds: dict[str, Tensor],
        targets: list[dict[str, Tensor]],
        forbidden: list[Tensor | None] | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """preds: batched logits (B, Q, K), boxes (B, Q, 4), masks (B, Q, h, w). ``forbidden[b]`` (Q, T) bool
        marks pairs that may not be matched. Returns per image (pred indices, target indices)."""
        out = []
        for b, target in enumerate(targets):
            if len(target["labels"]) == 0:
                empty = torch.zeros(0, dtype=torch.long)
                out.append((empty, empty))
                continue
            cost = self.cost_matrix(
                {k: v[b] for k, v in preds.items() if k in ("logits", "boxes", "masks")}, target
            )
            if forbidden is not None and forbidden[b] is not None:
                cost = cost.masked_fill(forbidden[b].to(cost.device), FORBIDDEN_COST)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return out
