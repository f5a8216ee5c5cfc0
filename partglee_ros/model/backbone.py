"""Backbone: a timm CNN returning the stride 4/8/16/32 feature maps (paper: F_s, s = 2..5).

Weights are never downloaded (``pretrained=False``); a user may pass a local weights file, which is loaded
with safetensors or ``torch.load(weights_only=True)`` so no pickle is ever executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg_value
from torch import Tensor, nn

STRIDES = (4, 8, 16, 32)


def _load_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class Backbone(nn.Module):
    """timm ``features_only`` model restricted to the four strides the pixel decoder consumes."""

    def __init__(self, name: str, kwargs: dict[str, Any] | None = None, weights: str | None = None) -> None:
        super().__init__()
        self.name = name
        probe = timm.create_model(name, pretrained=False, features_only=True, **(kwargs or {}))
        reductions = probe.feature_info.reduction()
        missing = [s for s in STRIDES if s not in reductions]
        if missing:
            raise ValueError(f"backbone {name} has no features at strides {missing} (has {reductions})")
        out_indices = tuple(reductions.index(s) for s in STRIDES)
        self.body = timm.create_model(
            name, pretrained=False, features_only=True, out_indices=out_indices, **(kwargs or {})
        )
        self.channels: list[int] = list(self.body.feature_info.channels())
        if weights:
            self.load_weights(Path(weights))

    def load_weights(self, path: Path) -> None:
        """Load classification-model weights (e.g. timm's ``resnet50.a1_in1k``). Every backbone tensor must be
        present; the only keys allowed to go unused are the classifier's (timm's ``pretrained_cfg``
        ``classifier``, ``fc`` for ResNets), which ``features_only`` drops."""
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights not found: {path}")
        result = self.body.load_state_dict(_load_state_dict(path), strict=False)
        if result.missing_keys:
            raise RuntimeError(
                f"backbone weights {path} lack {len(result.missing_keys)} keys, e.g. "
                f"{result.missing_keys[:5]}"
            )
        classifier = get_pretrained_cfg_value(self.name, "classifier") or ()
        prefixes = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
        unexpected = [k for k in result.unexpected_keys if not k.startswith(prefixes)]
        if unexpected:
            raise RuntimeError(
                f"backbone weights {path} hold {len(unexpected)} keys the backbone does not use, e.g. "
                f"{unexpected[:5]}"
            )

    def forward(self, images: Tensor) -> list[Tensor]:
        return self.body(images)
