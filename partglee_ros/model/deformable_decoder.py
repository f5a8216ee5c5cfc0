"""DINO-style deformable transformer decoder with iterative box refinement, used for objects and for parts.

Each layer: self-attention among queries, deformable cross-attention into the multi-scale memory around the
query's current box, FFN. After every layer the box head predicts a delta in inverse-sigmoid space; the
refined box (detached) becomes the next layer's reference, the undetached one is that layer's prediction.
"""

from __future__ import annotations

from torch import Tensor, nn

from partglee_ros.model.heads import MLP, BoxHead, inverse_sigmoid
from partglee_ros.model.ms_deform_attn import MSDeformAttn
from partglee_ros.model.position_encoding import sine_embed


class DeformableDecoderLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MSDeformAttn(dim, n_levels, n_heads, n_points)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        ref_boxes: Tensor,
        memory: Tensor,
        shapes: list[tuple[int, int]],
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        q = tgt + query_pos
        tgt = self.norm1(
            tgt + self.dropout(self.self_attn(q, q, tgt, attn_mask=attn_mask, need_weights=False)[0])
        )
        ref = ref_boxes[:, :, None].expand(-1, -1, len(shapes), -1)
        tgt = self.norm2(tgt + self.dropout(self.cross_attn(tgt + query_pos, ref, memory, shapes)))
        return self.norm3(tgt + self.dropout(self.ffn(tgt)))


class DeformableDecoder(nn.Module):
    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        n_layers: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableDecoderLayer(dim, ffn_dim, n_levels, n_heads, n_points, dropout)
            for _ in range(n_layers)
        )
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)  # sine(box) -> query position (DINO)
        self.norm = nn.LayerNorm(dim)
        self.box_head = BoxHead(dim)  # shared across layers (MaskDINO's dec_pred_bbox_embed_share)
        self.dim = dim

    def forward(
        self,
        tgt: Tensor,
        ref_unsigmoid: Tensor,
        memory: Tensor,
        shapes: list[tuple[int, int]],
        attn_mask: Tensor | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """tgt (B, Q, C) content queries, ref_unsigmoid (B, Q, 4) initial boxes (cxcywh, inverse sigmoid).

        Returns per layer the normalised hidden states (B, Q, C) and the predicted boxes (B, Q, 4) in [0, 1].
        """
        ref = ref_unsigmoid.sigmoid()
        hidden, boxes = [], []
        for layer in self.layers:
            query_pos = self.ref_point_head(sine_embed(ref, self.dim // 2))
            tgt = layer(tgt, query_pos, ref, memory, shapes, attn_mask)
            new_ref = (self.box_head(tgt) + inverse_sigmoid(ref)).sigmoid()
            hidden.append(self.norm(tgt))
            boxes.append(new_ref)
            ref = new_ref.detach()
        return hidden, boxes
