"""MaskDINO-style pixel decoder: deformable encoder over strides 8/16/32 and the stride-4 pixel embedding M_p.

Early fusion with the vocabulary's text (when enabled) happens on the flattened multi-scale tokens right
before the encoder, as in GLEE/UNINEXT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partglee_ros.model.early_fusion import EarlyFusion
from partglee_ros.model.ms_deform_attn import MSDeformAttn
from partglee_ros.model.position_encoding import map_position_embedding


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


class DeformableEncoderLayer(nn.Module):
    """Post-norm deformable self-attention + FFN (Deformable DETR encoder layer)."""

    def __init__(self, dim: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int, dropout: float):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, ref: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, ref, src, shapes)))
        return self.norm2(src + self.dropout(self.ffn(src)))


@dataclass
class PixelDecoderOutput:
    memory: Tensor  # (B, S, C) encoder tokens of all levels, coarse-to-fine order of `spatial_shapes`
    spatial_shapes: list[tuple[int, int]]
    pixel_embedding: Tensor  # (B, mask_dim, H/4, W/4), M_p of Eq. 1
    text: Tensor  # (B, K, D) text after early fusion (unchanged when fusion is off)
    finest: Tensor  # (B, C, H/8, W/8) the finest (stride-8) encoder level of `memory` as a map


class PixelDecoder(nn.Module):
    def __init__(
        self,
        in_channels: list[int],
        hidden_dim: int,
        mask_dim: int,
        num_heads: int,
        ffn_dim: int,
        enc_layers: int,
        enc_points: int,
        dropout: float,
        text_dim: int,
        early_fusion: bool,
    ) -> None:
        super().__init__()
        # strides 8/16/32 enter the encoder, listed coarse first (MaskDINO "low2high" ordering of levels)
        self.encoder_channels = in_channels[1:][::-1]
        n_levels = len(self.encoder_channels)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden_dim, 1), group_norm(hidden_dim)) for c in self.encoder_channels
        )
        self.level_embed = nn.Parameter(torch.randn(n_levels, hidden_dim) * 0.02)
        self.fusion = EarlyFusion(hidden_dim, text_dim, hidden_dim, num_heads) if early_fusion else None
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(hidden_dim, ffn_dim, n_levels, num_heads, enc_points, dropout)
            for _ in range(enc_layers)
        )
        self.lateral = nn.Sequential(
            nn.Conv2d(in_channels[0], hidden_dim, 1, bias=False), group_norm(hidden_dim)
        )
        self.output_conv = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, bias=False), group_norm(hidden_dim), nn.ReLU()
        )
        self.mask_features = nn.Conv2d(hidden_dim, mask_dim, 1)
        self.hidden_dim = hidden_dim

    @staticmethod
    def reference_points(shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Tensor:
        """(S, Lv, 2) normalised token centres, repeated for every level (no padding masks: valid ratio 1)."""
        refs = []
        for h, w in shapes:
            ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
            xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            refs.append(torch.stack([xx.flatten(), yy.flatten()], -1))
        return torch.cat(refs)[:, None].expand(-1, len(shapes), -1)

    def forward(self, features: list[Tensor], text: Tensor) -> PixelDecoderOutput:
        """features: backbone maps at strides 4/8/16/32; text (B, K, D)."""
        srcs, pos, shapes = [], [], []
        for lvl, (proj, feat) in enumerate(zip(self.input_proj, features[1:][::-1], strict=True)):
            x = proj(feat)
            h, w = x.shape[-2:]
            shapes.append((int(h), int(w)))
            srcs.append(x.flatten(2).transpose(1, 2))
            pos.append(
                map_position_embedding(h, w, self.hidden_dim, x.device, x.dtype) + self.level_embed[lvl]
            )
        src = torch.cat(srcs, 1)
        pos_all = torch.cat(pos, 0)[None]
        if self.fusion is not None:
            src, text = self.fusion(src, text)
        ref = self.reference_points(shapes, src.device, src.dtype)[None].expand(src.shape[0], -1, -1, -1)
        for layer in self.layers:
            src = layer(src, pos_all, ref, shapes)
        # FPN step to stride 4: finest encoder level (stride 8) upsampled onto the backbone's stride-4 map
        h8, w8 = shapes[-1]
        finest = src[:, -h8 * w8 :].transpose(1, 2).reshape(src.shape[0], self.hidden_dim, h8, w8)
        lateral = self.lateral(features[0])
        y = lateral + F.interpolate(finest, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        pixel_embedding = self.mask_features(self.output_conv(y))
        return PixelDecoderOutput(src, shapes, pixel_embedding, text, finest)
