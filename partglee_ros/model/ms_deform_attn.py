"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

The CUDA kernel of the reference implementation cannot be exported; sampling every level with
``F.grid_sample`` gives the same result, runs on CPU and exports to ONNX (GridSample, opset >= 16), which
TensorRT supports. Spatial shapes are Python ints taken from the feature maps, so the graph is static in H, W.

For export at opset >= 19 the same sum is traced as one ONNX DeformConv per level instead
(``deform_conv_sampling``): ONNX Runtime's DeformConv computes each sample's corners once for all channels of
a head, where its GridSample kernel works through them serially: an encoder layer's attention runs 1.2-1.6x
faster (benchmarks/deformable_sampling.py). PyTorch keeps grid_sample: torchvision's CPU deform_conv2d is ~3x
slower than it (same benchmark).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d


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


class TapLayout(NamedTuple):
    """One level's deformable convolution in ``deform_conv_core``, each as (y, x)."""

    stride: tuple[int, int]
    pad: tuple[int, int]
    out: tuple[int, int]


def _output_axis(size: int, kernel: int, target: int) -> tuple[int, int, int]:
    """(stride, pad, outputs) of one convolution axis over ``size`` inputs giving at least ``target`` outputs.

    Outputs stay between ``target`` and twice that, and their base positions within the padded map, so that
    offsets (sample minus base position) stay small numbers: float32 loses 1e-4 pixel at an offset of 1000.
    """
    span = size - kernel  # start of the last window without padding
    if span + 1 >= target:
        stride = span + 1 if target == 1 else max(1, span // (target - 1))
        return stride, 0, span // stride + 1
    pad = -(-(target - span - 1) // 2)
    return 1, pad, span + 1 + 2 * pad


def tap_layouts(spatial_shapes: list[tuple[int, int]], n_q: int, n_points: int) -> list[TapLayout]:
    """Per level, a (1 x points) convolution with a near-square grid of at least ``n_q`` outputs."""
    side = math.isqrt(n_q - 1) + 1  # ceil(sqrt(Q))
    layouts = []
    for h, w in spatial_shapes:
        (stride_h, pad_h, out_h), (stride_w, pad_w, out_w) = (
            _output_axis(h, 1, side),
            _output_axis(w, n_points, side),
        )
        layouts.append(TapLayout((stride_h, stride_w), (pad_h, pad_w), (out_h, out_w)))
    return layouts


def tap_bases(layouts: list[TapLayout], n_q: int, n_heads: int, n_points: int) -> Tensor:
    """(H, Lv, P, 2, Q): where query q's taps sit before their offsets (output position q in row-major
    order), as (y, x) pixel indices."""
    query = torch.arange(n_q)
    bases = []
    for (stride_h, stride_w), (pad_h, pad_w), (_, out_w) in layouts:
        y = (query // out_w * stride_h - pad_h).expand(n_points, n_q)
        x = query % out_w * stride_w - pad_w + torch.arange(n_points)[:, None]
        bases.append(torch.stack((y, x), 1))  # (P, 2, Q)
    return torch.stack(bases).expand(n_heads, -1, -1, -1, -1)


def pixel_positions(grids: Tensor, spatial_shapes: list[tuple[int, int]], shift: bool = True) -> Tensor:
    """grid_sample coordinates (..., Lv, P, 2) as (x, y) in [-1, 1] -> each level's pixel indices as (y, x),
    the positions deform_conv2d takes (align_corners=False: ``g * size / 2 + (size - 1) / 2``).

    ``shift=False`` applies only the linear part, for mapping the weights of a linear layer's outputs."""
    sizes = grids.new_tensor(spatial_shapes)[:, None, :]  # (Lv, 1, 2) as (h, w)
    pixels = grids.flip(-1) * (sizes / 2)
    return pixels + (sizes - 1) / 2 if shift else pixels


def deform_conv_core(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    layouts: list[TapLayout],
    offsets: Tensor,
    masks: Tensor,
) -> Tensor:
    """``ms_deform_attn_core`` as one deformable convolution per level.

    Each query is one output position of a (1 x points) depthwise convolution with all-ones weights: the
    kernel's taps are the query's sampling points, their offsets move each tap from its base position
    (``tap_bases``) to the sample, the mask is the attention weight, and heads are offset groups. Outputs
    beyond the queries have mask 0 and are cut off.

    value (B, S, H, Dh); offsets (B, H, Lv, P, 2, Q) as (y, x); masks (B, H, Lv, P, Q), queries last so that
    every level's slice is a (channels x queries) block. Returns (B, Q, H*Dh).
    """
    b, _, n_heads, head_dim = value.shape
    n_q, n_points = int(offsets.shape[-1]), int(offsets.shape[3])
    channels = n_heads * head_dim
    ones = value.new_ones(channels, 1, 1, n_points)
    sampled = []
    start = 0
    for lvl, ((h, w), layout) in enumerate(zip(spatial_shapes, layouts, strict=True)):
        x = value[:, start : start + h * w].flatten(2).transpose(1, 2).reshape(b, channels, h, w)
        start += h * w
        offset, mask = offsets[:, :, lvl].reshape(b, -1, n_q), masks[:, :, lvl].reshape(b, -1, n_q)
        out_h, out_w = layout.out
        if out_h * out_w > n_q:
            offset, mask = (F.pad(t, (0, out_h * out_w - n_q)) for t in (offset, mask))
        offset, mask = offset.view(b, -1, out_h, out_w), mask.view(b, -1, out_h, out_w)
        y = deform_conv2d(x, offset, ones, stride=layout.stride, padding=layout.pad, mask=mask)
        sampled.append(y.flatten(2))
    if len({t.shape[-1] for t in sampled}) > 1:  # otherwise cut once, after the sum
        sampled = [t[..., :n_q] for t in sampled]
    return functools.reduce(torch.add, sampled)[..., :n_q].transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Each query looks at ``n_points`` learned offsets around its reference point on every level."""

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.deform_conv = False  # sample with deform_conv2d instead of grid_sample: deform_conv_sampling
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
        if self.deform_conv:
            out = self._deform_conv(query, reference_points, v, weights, spatial_shapes)
            return self.output_proj(out)
        if reference_points.shape[-1] == 2:
            weight, bias = self._point_map(spatial_shapes, query)
            inputs = torch.cat([query, reference_points.flatten(2)], dim=-1)
            grids = F.linear(inputs, weight, bias).view(b, n_q, *self._per_query)
        else:
            grids = self._box_grids(query, reference_points)
        return self.output_proj(ms_deform_attn_core(v, spatial_shapes, grids, weights))

    @property
    def _per_query(self) -> tuple[int, int, int, int]:
        """The axes of one query's sampling locations: heads, levels, points, 2 coordinates."""
        return (self.n_heads, self.n_levels, self.n_points, 2)

    def _box_grids(self, query: Tensor, reference_points: Tensor) -> Tensor:
        """grid_sample coordinates of the samples around box references: offsets scale with the box."""
        b, n_q, _ = query.shape
        offsets = self.sampling_offsets(query).view(b, n_q, *self._per_query)
        ref = reference_points[:, :, None, :, None, :]
        return 2 * (ref[..., :2] + offsets / self.n_points * ref[..., 2:] * 0.5) - 1

    def _point_map(
        self, spatial_shapes: list[tuple[int, int]], like: Tensor, pixels: bool = False
    ) -> tuple[Tensor, Tensor]:
        """(weight, bias) of one linear map from ``[query, ref]`` to the grid_sample coordinates
        ``2 * (ref + offset / level_size) - 1`` of point references; with ``pixels``, to their
        ``pixel_positions``.

        The formula broadcasts (Lv, 2)-sized tensors over (B, Q, H, Lv, P, 2); ONNX Runtime runs such
        broadcasts element by element (4 ms per encoder layer at 320x256). Every term is linear in the
        query or the reference, so the scales and the copy of each reference to its heads and points fold
        into one weight matrix. Same values, same gradients to ``sampling_offsets``.
        """
        per_output = self._per_query
        sizes = like.new_tensor([[w, h] for h, w in spatial_shapes])
        scale = (2.0 / sizes)[None, :, None, :].expand(per_output).reshape(-1)  # 2 / level size, per output
        # copy[(h, l, p, c), (l', c')] = 1 where l == l' and c == c': reference l' coordinate c' -> output
        eye = torch.eye(self.n_levels * 2, dtype=like.dtype, device=like.device)
        copy = eye.view(1, self.n_levels, 1, 2, -1).expand(*per_output, -1).reshape(-1, self.n_levels * 2)
        weight = torch.cat([self.sampling_offsets.weight * scale[:, None], 2.0 * copy], dim=1)
        bias = self.sampling_offsets.bias * scale - 1.0
        if pixels:  # the same affine map applied to the weights (constants in an exported graph)
            weight = pixel_positions(weight.T.reshape(-1, *per_output), spatial_shapes, shift=False)
            weight = weight.reshape(weight.shape[0], -1).T
            bias = pixel_positions(bias.view(per_output), spatial_shapes).reshape(-1)
        return weight, bias

    def _deform_conv(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        weights: Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """``deform_conv_core``'s inputs, laid out so that each level's offsets and masks are one block."""
        b = query.shape[0]
        n_q = int(query.shape[1])  # a Python int even where the tracer hands out sizes as tensors
        layouts = tap_layouts(spatial_shapes, n_q, self.n_points)
        bases = tap_bases(layouts, n_q, self.n_heads, self.n_points).to(query)  # (H, Lv, P, 2, Q)
        if reference_points.shape[-1] == 2:
            # One matrix product yields (offsets x queries) directly; bias and bases fold into one constant.
            weight, bias = self._point_map(spatial_shapes, query, pixels=True)
            inputs = torch.cat([query, reference_points.flatten(2)], dim=-1)
            constant = (bias.view(*self._per_query, 1) - bases).reshape(-1, n_q)
            offsets = weight @ inputs.transpose(1, 2) + constant
        else:
            pixels = pixel_positions(self._box_grids(query, reference_points), spatial_shapes)
            offsets = pixels.permute(0, 2, 3, 4, 5, 1) - bases
        offsets = offsets.reshape(b, *self._per_query, n_q)
        masks = weights.reshape(b, n_q, -1).transpose(1, 2).reshape(b, self.n_heads, self.n_levels, -1, n_q)
        return deform_conv_core(value, spatial_shapes, layouts, offsets, masks)


@contextlib.contextmanager
def deform_conv_sampling(model: nn.Module) -> Iterator[None]:
    """Within this block the deformable attention in ``model`` samples with torchvision's deform_conv2d (the
    exporter traces it as ONNX DeformConv) instead of grid_sample; same values.

    A module attribute, not a global switch, so that torch.compile sees a constant and keeps its graph whole."""
    modules = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    for m in modules:
        m.deform_conv = True
    try:
        yield
    finally:
        for m in modules:
            m.deform_conv = False
