"""Query denoising (DN-DETR / MaskDINO "standard" DN) for the object decoder, training only.

Noised copies of the ground-truth boxes and labels are fed as extra decoder queries whose answer is known,
which stabilises the Hungarian matching early in training. Labels are embedded through the (fused) text
embeddings so this stays open-vocabulary. An attention mask keeps the matching queries from seeing the
denoising queries and the groups from seeing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from partglee_ros.model.heads import inverse_sigmoid


@dataclass
class DenoisingQueries:
    tgt: Tensor  # (B, G*P, C)
    ref_unsigmoid: Tensor  # (B, G*P, 4)
    attn_mask: Tensor  # (G*P + N, G*P + N) bool, True = blocked
    groups: int  # G
    group_size: int  # P: the largest number of targets of an image in the batch


class LabelEmbedding(nn.Module):
    """Projects text embeddings to query content so a noised label becomes a query (open-vocabulary DN)."""

    def __init__(self, text_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, hidden_dim)

    def forward(self, text: Tensor, labels: Tensor) -> Tensor:
        """text (B, K, D), labels (B, P) -> (B, P, C)."""
        gathered = torch.gather(text, 1, labels[..., None].expand(-1, -1, text.shape[-1]))
        return self.proj(gathered)


def build_denoising_queries(
    targets: list[dict[str, Tensor]],
    text: Tensor,
    label_embedding: LabelEmbedding,
    num_queries: int,
    dn_num: int,
    box_noise: float,
    label_noise: float,
) -> DenoisingQueries | None:
    """Make G = dn_num // max_targets groups of noised ground truth; None when the batch has no targets."""
    group_size = max((len(t["labels"]) for t in targets), default=0)
    if group_size == 0 or dn_num < group_size:
        return None
    groups = dn_num // group_size
    b, k, device = len(targets), text.shape[1], text.device
    labels = torch.zeros(b, group_size, dtype=torch.long, device=device)
    boxes = torch.full((b, group_size, 4), 0.5, device=device)
    real = torch.zeros(b, group_size, 1, device=device)  # pads of images with fewer targets: no content
    for i, t in enumerate(targets):
        labels[i, : len(t["labels"])] = t["labels"]
        boxes[i, : len(t["labels"])] = t["boxes"]
        real[i, : len(t["labels"])] = 1.0
    labels = labels.repeat(1, groups)
    boxes = boxes.repeat(1, groups, 1)
    flip = torch.rand(labels.shape, device=device) < label_noise
    labels = torch.where(flip, torch.randint_like(labels, k), labels)
    wh = boxes[..., 2:].repeat(1, 1, 2)
    noise = (torch.rand_like(boxes) * 2 - 1) * box_noise
    noised = boxes + noise * wh * torch.tensor([0.5, 0.5, 1.0, 1.0], device=device)
    noised = noised.clamp(0.0, 1.0)
    n_dn = groups * group_size
    mask = torch.zeros(n_dn + num_queries, n_dn + num_queries, dtype=torch.bool, device=device)
    mask[n_dn:, :n_dn] = True  # matching queries never see the answers
    for g in range(groups):
        s, e = g * group_size, (g + 1) * group_size
        mask[s:e, :s] = True
        mask[s:e, e:n_dn] = True
    # A pad is trained as "no object": with class 0's embedding it would be a class-0 query taught the opposite
    # of a real one (MaskDINO pads with zeros too).
    content = label_embedding(text, labels) * real.repeat(1, groups, 1)
    return DenoisingQueries(content, inverse_sigmoid(noised), mask, groups, group_size)
