"""Sine position encodings: 2D maps for image tokens (DETR) and 4D boxes for decoder queries (DINO)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_embed(coords: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """Embed each coordinate in [0, 1] with ``num_feats`` interleaved sin/cos features; (..., n) -> (..., n*num_feats)."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = coords[..., None].float() * (2 * math.pi) / dim_t
    pos = torch.stack([pos[..., 0::2].sin(), pos[..., 1::2].cos()], dim=-1).flatten(-2)
    return pos.flatten(-2).to(coords.dtype)


def map_position_embedding(h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(h*w, dim) embedding of normalised pixel centres: first half encodes y, second half x (DETR order)."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pos = sine_embed(torch.stack([yy.flatten(), xx.flatten()], -1), dim // 2)
    return pos.to(dtype)
