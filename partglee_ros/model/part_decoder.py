"""Part branch: pick the top-k object queries, parse them with the Q-Former and decode parts independently.

This is the paper's scheme (c): an independent part decoder (its own layers and heads, part vocabulary). Each
part query starts from its parent's predicted box (plus a learned per-parsing-query offset), and carries the
index of its parent object query to the output, so the object->part link survives to the runtime.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from partglee_ros.model.deformable_decoder import DeformableDecoder
from partglee_ros.model.heads import MaskHead, SimilarityClassifier, inverse_sigmoid
from partglee_ros.model.object_decoder import DecoderOutput, Predictions, decode_heads, gather_queries
from partglee_ros.model.qformer import QFormer


class PartDecoder(nn.Module):
    def __init__(
        self,
        hidden_dim: int,
        mask_dim: int,
        text_dim: int,
        topk: int,
        n_parse: int,
        qformer_layers: int,
        qformer_mode: str,
        qformer_grid: int,
        ffn_dim: int,
        n_layers: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.topk, self.n_parse = topk, n_parse
        self.qformer = QFormer(
            hidden_dim, n_heads, ffn_dim, qformer_layers, n_parse, qformer_mode, qformer_grid, dropout
        )
        self.box_prior = nn.Parameter(torch.zeros(n_parse, 4))  # per parsing query, inverse-sigmoid offset
        self.decoder = DeformableDecoder(hidden_dim, ffn_dim, n_layers, n_levels, n_heads, n_points, dropout)
        self.class_head = SimilarityClassifier(hidden_dim, text_dim)
        self.mask_head = MaskHead(hidden_dim, mask_dim)

    def forward(
        self,
        objects: DecoderOutput,
        memory: Tensor,
        shapes: list[tuple[int, int]],
        feature_map: Tensor,
        pixel_embedding: Tensor,
        text: Tensor,
    ) -> tuple[DecoderOutput, Tensor, Tensor]:
        """Returns the part predictions, ``parent`` (B, k*L) int64 index into the object queries, and
        ``parent_boxes`` (B, k*L, 4): the parents' predicted boxes (with gradient, for the restriction loss)."""
        final: Predictions = objects.layers[-1]
        index = final["logits"].max(-1).values.topk(self.topk, dim=1).indices  # (B, k)
        boxes = gather_queries(final["boxes"], index)
        queries = self.qformer(gather_queries(objects.hidden, index), boxes, feature_map)
        parent = index.repeat_interleave(self.n_parse, dim=1)
        parent_boxes = boxes.repeat_interleave(self.n_parse, dim=1)
        ref = inverse_sigmoid(parent_boxes.detach()) + self.box_prior.repeat(self.topk, 1)[None]
        hidden, part_boxes = self.decoder(queries, ref, memory, shapes)
        layers = decode_heads(
            hidden, part_boxes, text, pixel_embedding, self.class_head, self.mask_head, self.training
        )
        return DecoderOutput(layers, hidden[-1]), parent, parent_boxes
