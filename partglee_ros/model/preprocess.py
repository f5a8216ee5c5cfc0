"""Image normalisation and padding the model expects (ImageNet statistics on 0..255 RGB, like GLEE/MaskDINO).

The constants and ``padded_size`` are shared with the runtime, whose ONNX Runtime path runs without PyTorch,
so PyTorch is imported only by ``images_to_tensor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
SIZE_DIVISIBILITY = 32  # the backbone's coarsest stride
ENCODER_STRIDES = [32, 16, 8]  # order of the encoder levels in the memory (coarse first)


def padded_size(height: int, width: int) -> tuple[int, int]:
    """Smallest (H, W) >= the input that the backbone strides divide exactly."""
    d = SIZE_DIVISIBILITY
    return (height + d - 1) // d * d, (width + d - 1) // d * d


def encoder_tokens(height: int, width: int) -> int:
    """Tokens of the deformable encoder (strides 8, 16, 32 of the padded input) that the two-stage query
    selection picks the object queries from: an input too small for them cannot run."""
    ph, pw = padded_size(height, width)
    return sum((ph // s) * (pw // s) for s in ENCODER_STRIDES)


def images_to_tensor(images: list[np.ndarray]) -> Tensor:
    """HxWx3 uint8 RGB images -> (B, 3, H, W) normalised float, zero-padded bottom/right to a common size
    divisible by 32. Boxes normalised by the padded size match the model's normalised outputs."""
    import torch
    import torch.nn.functional as F

    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    ph, pw = padded_size(h, w)
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    out = []
    for im in images:
        x = (torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float() - mean) / std
        out.append(F.pad(x, (0, pw - x.shape[2], 0, ph - x.shape[1])))
    return torch.stack(out)
