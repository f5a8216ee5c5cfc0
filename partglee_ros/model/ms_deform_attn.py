"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

The CUDA kernel of the reference implementation cannot be exported; sampling every level with
``F.grid_sample`` gives the same result, runs on CPU and exports to ONNX (GridSample, opset >= 16), which
TensorRT supports. Spatial shapes are Python ints taken from the feature maps, so the graph is static in H, W.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_core(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    grids: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Bilinearly sample each level at the given locations and sum with the attention weights.

    value (B, S, H, Dh); grids (B, Q, H, Lv, P, 2) in grid_sample's [-1, 1]; attention_weights
    (B, Q, H, Lv, P). Returns (B, Q, H*Dh).

    Each level's samples are weighted and summed as soon as they are drawn: stacking the levels first
    (next to the points axis) copied 16 bytes at a time and cost ONNX Runtime more than the sampling.
    """
    b, _, n_heads, head_dim = value.shape
    _, n_q, _, n_levels, n_points, _ = grids.shape
    weights = attention_weights.transpose(1, 2).reshape(b * n_heads, 1, n_q, n_levels, n_points)
    levels = []
    start = 0
    for lvl, (h, w) in enumerate(spatial_shapes):
        v = value[:, start : start + h * w]  # (B, hw, H, Dh)
        start += h * w
        v = v.flatten(2).transpose(1, 2).reshape(b * n_heads, head_dim, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*H, Q, P, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        levels.append((sampled * weights[..., lvl, :]).sum(-1))  # (B*H, Dh, Q)
    out = functools.reduce(torch.add, levels)
    return out.view(b, n_heads * head_dim, n_q).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Each query looks at ``n_points`` learned offsets around its reference point on every level."""

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Deformable DETR init: heads start looking in evenly spread directions, at growing distances.
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self, query: Tensor, reference_points: Tensor, value: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """query (B, Q, C); reference_points (B, Q, Lv, 2) points or (B, Q, Lv, 4) boxes in [0, 1]; value (B, S, C)."""
        b, n_q, _ = query.shape
        head_dim = self.d_model // self.n_heads
        v = self.value_proj(value).view(b, value.shape[1], self.n_heads, head_dim)
        weights = self.attention_weights(query).view(b, n_q, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(b, n_q, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            grids = self._point_grids(query, reference_points, spatial_shapes)
        else:
            offsets = self.sampling_offsets(query).view(b, n_q, self.n_heads, self.n_levels, self.n_points, 2)
            ref = reference_points[:, :, None, :, None, :]
            grids = 2 * (ref[..., :2] + offsets / self.n_points * ref[..., 2:] * 0.5) - 1
        return self.output_proj(ms_deform_attn_core(v, spatial_shapes, grids, weights))

    def _point_grids(
        self, query: Tensor, reference_points: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """grid_sample coordinates ``2 * (ref + offset / level_size) - 1`` for point references, computed
        as one linear map of ``[query, ref]``.

        The formula broadcasts (Lv, 2)-sized tensors over (B, Q, H, Lv, P, 2); ONNX Runtime runs such
        broadcasts element by element (4 ms per encoder layer at 320x256). Every term is linear in the
        query or the reference, so the scales and the copy of each reference to its heads and points fold
        into one weight matrix. Same values, same gradients to ``sampling_offsets``.
        """
        b, n_q, _ = query.shape
        per_output = (self.n_heads, self.n_levels, self.n_points, 2)
        sizes = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        scale = (2.0 / sizes)[None, :, None, :].expand(per_output).reshape(-1)  # 2 / level size, per output
        # copy[(h, l, p, c), (l', c')] = 1 where l == l' and c == c': reference l' coordinate c' -> output
        eye = torch.eye(self.n_levels * 2, dtype=query.dtype, device=query.device)
        copy = eye.view(1, self.n_levels, 1, 2, -1).expand(*per_output, -1).reshape(-1, self.n_levels * 2)
        weight = torch.cat([self.sampling_offsets.weight * scale[:, None], 2.0 * copy], dim=1)
        bias = self.sampling_offsets.bias * scale - 1.0
        inputs = torch.cat([query, reference_points.flatten(2)], dim=-1)
        return F.linear(inputs, weight, bias).view(b, n_q, *per_output)
