"""Early fusion (paper 3.1, after UNINEXT/GLIP): bi-directional cross-attention between image tokens and text.

Both directions share one attention map (image->text softmax over categories, text->image softmax over
pixels). Updates are scaled by small learnable gains (GLIP's layer scale) so an untrained fusion starts as a
near identity. Consequence: with fusion on, the encoder memory depends on the vocabulary; with it off, image
features are vocabulary independent and only the classifiers see the text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EarlyFusion(nn.Module):
    def __init__(self, img_dim: int, text_dim: int, embed_dim: int, num_heads: int, init_gain: float = 1e-4):
        super().__init__()
        self.num_heads = num_heads
        self.img_norm = nn.LayerNorm(img_dim)
        self.text_norm = nn.LayerNorm(text_dim)
        self.img_query = nn.Linear(img_dim, embed_dim)
        self.text_key = nn.Linear(text_dim, embed_dim)
        self.img_value = nn.Linear(img_dim, embed_dim)
        self.text_value = nn.Linear(text_dim, embed_dim)
        self.img_out = nn.Linear(embed_dim, img_dim)
        self.text_out = nn.Linear(embed_dim, text_dim)
        self.img_gain = nn.Parameter(torch.full((img_dim,), init_gain))
        self.text_gain = nn.Parameter(torch.full((text_dim,), init_gain))

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, img: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """img (B, S, C) tokens, text (B, K, D) -> updated (img, text)."""
        v, t = self.img_norm(img), self.text_norm(text)
        q_img, k_text = self._heads(self.img_query(v)), self._heads(self.text_key(t))
        img_upd = F.scaled_dot_product_attention(q_img, k_text, self._heads(self.text_value(t)))
        text_upd = F.scaled_dot_product_attention(k_text, q_img, self._heads(self.img_value(v)))
        img_upd = self.img_out(img_upd.transpose(1, 2).flatten(2))
        text_upd = self.text_out(text_upd.transpose(1, 2).flatten(2))
        return img + self.img_gain * img_upd, text + self.text_gain * text_upd
