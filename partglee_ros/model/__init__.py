"""PartGLEE in PyTorch: image encoder, early fusion, object decoder, Q-Former, part decoder and heads.

The names below load on first use (PEP 562): the runtime imports ``partglee_ros.model.preprocess`` and
``text_encoder`` on every node start, and with an ONNX Runtime or TensorRT backend it never needs the
network itself, nor timm (~0.6 s and ~30 MiB of a start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from partglee_ros.model.partglee import PartGLEE, build_model
    from partglee_ros.model.preprocess import PIXEL_MEAN, PIXEL_STD, SIZE_DIVISIBILITY, images_to_tensor

_WHERE = {
    "PartGLEE": "partglee_ros.model.partglee",
    "build_model": "partglee_ros.model.partglee",
    "PIXEL_MEAN": "partglee_ros.model.preprocess",
    "PIXEL_STD": "partglee_ros.model.preprocess",
    "SIZE_DIVISIBILITY": "partglee_ros.model.preprocess",
    "images_to_tensor": "partglee_ros.model.preprocess",
}
__all__ = ["PIXEL_MEAN", "PIXEL_STD", "SIZE_DIVISIBILITY", "PartGLEE", "build_model", "images_to_tensor"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
