"""Q-Former (Eq. 2): L universal parsing queries decompose each object query into L part queries.

Each of the M layers: self-attention among the L parsing queries, cross-attention to the object, FFN.

``faithful`` mode reproduces the official code: the cross-attention memory is the single object query, so the
softmax over one key is always 1 and the layer just adds a projection of the object query to every parsing
query. ``box_features`` mode makes the conditioning spatial: the memory also holds a G x G grid of encoder
features bilinearly sampled inside the parent's predicted box (grid_sample, exportable), so parsing queries
can attend to *where* in the object a part is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class QFormerLayer(nn.Module):
    def __init__(self, dim: int, n_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, memory: Tensor, memory_pos: Tensor | None) -> Tensor:
        """``memory_pos`` is added to the keys only (None: the faithful single-slot memory has no positions)."""
        keys = memory if memory_pos is None else memory + memory_pos
        x = self.norm1(x + self.self_attn(x, x, x, need_weights=False)[0])
        x = self.norm2(x + self.cross_attn(x, keys, memory, need_weights=False)[0])
        return self.norm3(x + self.ffn(x))


def sample_in_boxes(feature_map: Tensor, boxes: Tensor, grid: int) -> Tensor:
    """Bilinear samples on a grid x grid lattice inside each box.

    feature_map (B, C, h, w); boxes (B, k, 4) cxcywh in [0, 1] -> (B, k, grid*grid, C).
    """
    steps = (torch.arange(grid, device=boxes.device, dtype=boxes.dtype) + 0.5) / grid - 0.5  # cell centres
    gy, gx = torch.meshgrid(steps, steps, indexing="ij")
    offsets = torch.stack([gx.flatten(), gy.flatten()], -1)  # (G*G, 2)
    points = boxes[:, :, None, :2] + offsets[None, None] * boxes[:, :, None, 2:]  # (B, k, G*G, 2)
    sampled = F.grid_sample(feature_map, points * 2 - 1, mode="bilinear", align_corners=False)
    return sampled.permute(0, 2, 3, 1)


class QFormer(nn.Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        ffn_dim: int,
        n_layers: int,
        n_parse: int,
        mode: str,
        grid: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.parse_queries = nn.Parameter(torch.randn(n_parse, dim) * 0.02)  # q_parse, L x C
        self.layers = nn.ModuleList(QFormerLayer(dim, n_heads, ffn_dim, dropout) for _ in range(n_layers))
        self.mode, self.grid = mode, grid
        if mode == "box_features":
            # position of each memory slot: slot 0 is the object query itself, then the grid cells
            self.memory_pos = nn.Parameter(torch.randn(1 + grid * grid, dim) * 0.02)
            self.sample_proj = nn.Linear(dim, dim)

    def forward(self, objects: Tensor, parent_boxes: Tensor, feature_map: Tensor) -> Tensor:
        """objects (B, k, C), parent_boxes (B, k, 4), feature_map (B, C, h, w) -> part queries (B, k*L, C)."""
        b, k, c = objects.shape
        n_parse = self.parse_queries.shape[0]
        x = self.parse_queries[None].expand(b * k, -1, -1)
        memory = objects.reshape(b * k, 1, c)
        pos = None
        if self.mode == "box_features":
            samples = self.sample_proj(sample_in_boxes(feature_map, parent_boxes.detach(), self.grid))
            memory = torch.cat([memory, samples.reshape(b * k, -1, c)], 1)
            pos = self.memory_pos[None]
        for layer in self.layers:
            x = layer(x, memory, pos)
        return x.reshape(b, k * n_parse, c)
