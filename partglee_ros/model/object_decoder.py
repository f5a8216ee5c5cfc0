"""Object decoder: two-stage query selection from the encoder tokens, then the deformable decoder and heads."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from partglee_ros.model.deformable_decoder import DeformableDecoder
from partglee_ros.model.denoising import DenoisingQueries
from partglee_ros.model.heads import BoxHead, MaskHead, SimilarityClassifier, inverse_sigmoid

Predictions = dict[str, Tensor]  # "logits" (B,Q,K), "boxes" (B,Q,4) cxcywh in [0,1], "masks" (B,Q,H/4,W/4)


@dataclass
class DecoderOutput:
    layers: list[Predictions]  # one per decoder layer, last = final prediction (heads only on last in eval)
    hidden: Tensor  # (B, Q, C) final normalised queries
    enc: Predictions | None = None  # two-stage proposals (training only)
    dn_layers: list[Predictions] = field(
        default_factory=list
    )  # denoising queries' predictions (training only)


def gather_queries(x: Tensor, index: Tensor) -> Tensor:
    """x (B, S, C), index (B, Q) -> (B, Q, C)."""
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


def decode_heads(
    hidden: list[Tensor],
    boxes: list[Tensor],
    text: Tensor,
    pixel_embedding: Tensor,
    class_head: SimilarityClassifier,
    mask_head: MaskHead,
    all_layers: bool,
) -> list[Predictions]:
    """Apply the heads to every layer (training, deep supervision) or only the last one (inference)."""
    pairs = list(zip(hidden, boxes, strict=True)) if all_layers else [(hidden[-1], boxes[-1])]
    return [
        {"logits": class_head(h, text), "boxes": b, "masks": mask_head(h, pixel_embedding)} for h, b in pairs
    ]


class ObjectDecoder(nn.Module):
    def __init__(
        self,
        hidden_dim: int,
        mask_dim: int,
        text_dim: int,
        num_queries: int,
        ffn_dim: int,
        n_layers: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.enc_output = nn.Linear(hidden_dim, hidden_dim)
        self.enc_norm = nn.LayerNorm(hidden_dim)
        self.enc_class = SimilarityClassifier(hidden_dim, text_dim)
        self.enc_box = BoxHead(hidden_dim)
        self.decoder = DeformableDecoder(hidden_dim, ffn_dim, n_layers, n_levels, n_heads, n_points, dropout)
        self.class_head = SimilarityClassifier(hidden_dim, text_dim)
        self.mask_head = MaskHead(hidden_dim, mask_dim)

    @staticmethod
    def proposals(shapes: list[tuple[int, int]], strides: list[int], device: torch.device) -> Tensor:
        """(S, 4) anchor boxes (inverse sigmoid) at every token: its centre, size 0.05 * stride / 8."""
        out = []
        for (h, w), stride in zip(shapes, strides, strict=True):
            ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
            xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            wh = torch.full_like(xx, 0.05 * stride / 8)
            out.append(torch.stack([xx, yy, wh, wh], -1).flatten(0, 1))
        return inverse_sigmoid(torch.cat(out))

    def forward(
        self,
        memory: Tensor,
        shapes: list[tuple[int, int]],
        strides: list[int],
        pixel_embedding: Tensor,
        text: Tensor,
        dn: DenoisingQueries | None = None,
    ) -> DecoderOutput:
        out_mem = self.enc_norm(self.enc_output(memory))
        enc_logits = self.enc_class(out_mem, text)
        # two-stage selection: the N tokens most similar to any category of the vocabulary
        index = enc_logits.max(-1).values.topk(self.num_queries, dim=1).indices
        tgt = gather_queries(out_mem, index)
        # boxes only for the selected tokens (the box head is per token: same values, N rows instead of all)
        proposals = self.proposals(shapes, strides, memory.device).to(memory.dtype)
        ref = self.enc_box(tgt) + gather_queries(proposals[None].expand(memory.shape[0], -1, -1), index)
        enc = None
        if self.training:
            enc = {
                "logits": gather_queries(enc_logits, index),
                "boxes": ref.sigmoid(),
                "masks": self.mask_head(self.decoder.norm(tgt), pixel_embedding),
            }
        tgt, ref, attn_mask = tgt.detach(), ref.detach(), None
        n_dn = 0
        if dn is not None:
            n_dn = dn.tgt.shape[1]
            tgt, ref, attn_mask = (
                torch.cat([dn.tgt, tgt], 1),
                torch.cat([dn.ref_unsigmoid, ref], 1),
                dn.attn_mask,
            )
        hidden, boxes = self.decoder(tgt, ref, memory, shapes, attn_mask)
        layers = decode_heads(
            hidden, boxes, text, pixel_embedding, self.class_head, self.mask_head, self.training
        )
        dn_layers = []
        if n_dn:
            dn_layers = [{k: v[:, :n_dn] for k, v in p.items()} for p in layers]
            layers = [{k: v[:, n_dn:] for k, v in p.items()} for p in layers]
        return DecoderOutput(layers, hidden[-1][:, n_dn:], enc, dn_layers)
