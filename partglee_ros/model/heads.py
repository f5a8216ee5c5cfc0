"""Prediction heads shared by the object and part decoders: similarity classifier (Eq. 3), boxes, masks (Eq. 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """Linear layers with ReLU between them (the paper's 3-layer FFN)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class SimilarityClassifier(nn.Module):
    """S = q W_proj (x) T (Eq. 3) as a scaled cosine similarity plus a bias.

    Normalising both sides and learning a temperature and a prior-probability bias makes the sigmoid focal loss
    start at the usual 1% prior whatever the text encoder's embedding norms are.
    """

    def __init__(self, hidden_dim: int, text_dim: int, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_dim, text_dim, bias=False)  # W_proj
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.bias = nn.Parameter(torch.tensor(-math.log((1 - prior_prob) / prior_prob)))

    def forward(self, queries: Tensor, text: Tensor) -> Tensor:
        """queries (B, Q, C), text (B, K, D) -> logits (B, Q, K).

        cos(q W^T, t) computed on the query side of W_proj: q (t W) / |q W^T|, with |q W^T|^2 = q (W^T W) q^T.
        Same value as projecting every query to the text width, but the two-stage selection scores all
        encoder tokens (1680 at 320x240) and projecting them to D = 384 cost more than the similarity
        itself; here the K text rows are projected instead (2.9 -> 0.8 ms in ONNX Runtime at K = 50).
        """
        w = self.proj.weight  # (D, C)
        t = F.normalize(text, dim=-1) @ w  # (B, K, C)
        norm = projected_norm(queries, w)
        scale = self.logit_scale.exp().clamp(max=100)
        # einsum, not queries @ t.mT: with the transpose onnxsim loses the shapes downstream of the
        # two-stage top-k and leaves ~180 more nodes in the exported graph
        return torch.einsum("bqc,bkc->bqk", queries, t) / norm.to(queries.dtype) * scale + self.bias


def projected_norm(queries: Tensor, w: Tensor) -> Tensor:
    """|q W^T| per query (B, Q, 1) in fp32, also under autocast: squares of fp16 activations can overflow,
    and bf16 moved the logits by ~0.01."""
    with torch.autocast(queries.device.type, enabled=False):
        q32 = queries.float()
        return ((q32 @ (w.t() @ w).float()) * q32).sum(-1, keepdim=True).clamp(min=1e-24).sqrt()


class BoxHead(MLP):
    """3-layer MLP predicting a box delta in inverse-sigmoid space (DINO's iterative refinement)."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__(hidden_dim, hidden_dim, 4, 3)
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)


class MaskHead(nn.Module):
    """m = FFN(q) (x) M_p (Eq. 1): a 3-layer FFN embeds each query, dotted with the stride-4 pixel embedding."""

    def __init__(self, hidden_dim: int, mask_dim: int) -> None:
        super().__init__()
        self.embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, queries: Tensor, pixel_embedding: Tensor) -> Tensor:
        """queries (B, Q, C), pixel_embedding (B, mask_dim, H/4, W/4) -> mask logits (B, Q, H/4, W/4)."""
        return torch.einsum("bqc,bchw->bqhw", self.embed(queries), pixel_embedding)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
