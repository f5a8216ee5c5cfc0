"""PyTorch backend: the model itself, on CPU or CUDA, in fp32 or fp16 (autocast)."""

from __future__ import annotations

import numpy as np
import torch

from partglee_ros.model.partglee import PartGLEE
from partglee_ros.runtime.backends.base import OUTPUT_NAMES, Backend, BackendError


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: PartGLEE, device: str = "cpu", precision: str = "fp32") -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} requested but CUDA is not available")
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"precision must be fp32 or fp16, got {precision!r}")
        if precision == "fp16" and not device.startswith("cuda"):
            raise BackendError("fp16 needs a CUDA device; use fp32 on the CPU")
        self.device, self.precision = device, precision
        self.model = model.eval().to(device)

    @torch.inference_mode()
    def infer(
        self, image: np.ndarray, object_text: np.ndarray, part_text: np.ndarray
    ) -> dict[str, np.ndarray]:
        dev = self.device
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16"):
            out = self.model(
                torch.from_numpy(image).to(dev),
                torch.from_numpy(object_text).to(dev),
                torch.from_numpy(part_text).to(dev),
            )
        return {
            k: out[k][0].float().cpu().numpy() if k != "part_parent" else out[k][0].cpu().numpy()
            for k in OUTPUT_NAMES
        }

    def open(self) -> None:
        self.model.to(self.device)

    def close(self) -> None:
        self.model.cpu()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
