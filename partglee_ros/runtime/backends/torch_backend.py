"""PyTorch backend: the model itself, on CPU or CUDA, in fp32 or fp16 (autocast), eager or compiled.

``torch_compile=True`` runs the model through ``torch.compile`` (TorchInductor: generated C++ on the CPU, Triton
on CUDA). On 2 CPU cores that halves the eager time of one inference and beats ONNX Runtime's (though not in
a node sharing those cores: docs/BENCHMARKS.md), at the price of a compilation at start-up (~3 min cold on 2
cores, ~15 s from Inductor's cache) and a C++ compiler on the machine. The vocabulary size K is marked
dynamic, so a vocabulary change never recompiles.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch

from partglee_ros.config import CACHE_ROOT
from partglee_ros.model.partglee import PartGLEE
from partglee_ros.runtime.backends.base import OUTPUT_NAMES, Backend, BackendError, parse_device

log = logging.getLogger(__name__)
# Inductor's default cache is /tmp/torchinductor_<user>, gone after a reboot: a robot would recompile at
# every boot. TORCHINDUCTOR_CACHE_DIR, when set, wins.
DEFAULT_CACHE_DIR = CACHE_ROOT / "torchinductor"


def use_persistent_inductor_cache() -> str:
    """Point Inductor at DEFAULT_CACHE_DIR unless the user chose a directory; returns the one in use.

    Inductor writes its default into the environment the first time it looks, so a value equal to that
    default counts as not chosen."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR", default_cache_dir()) == default_cache_dir():
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(DEFAULT_CACHE_DIR)
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self,
        model: PartGLEE,
        device: str = "cpu",
        precision: str = "fp32",
        torch_compile: bool = False,
        threads: int = 0,
    ) -> None:
        """``threads`` > 0 sets PyTorch's intra-op threads (process-wide; before compiling, which reads it)."""
        cuda = parse_device(device)
        if cuda is not None and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} requested but CUDA is not available")
        if cuda is not None and cuda >= torch.cuda.device_count():
            raise BackendError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"precision must be fp32 or fp16, got {precision!r}")
        if precision == "fp16" and cuda is None:
            raise BackendError("fp16 needs a CUDA device; use fp32 on the CPU")
        if threads < 0:
            raise BackendError(f"torch threads must be >= 0 (0 = PyTorch's default), got {threads}")
        if threads:
            torch.set_num_threads(threads)
        self.device, self.precision = device, precision
        self.threads = None if cuda is not None else torch.get_num_threads()
        self.model = model.eval().to(device)
        self.forward = self.model
        if torch_compile:
            use_persistent_inductor_cache()
            self.name = "torch.compile"
            self.forward = torch.compile(self.model, dynamic=False)

    def prepare(self, image_shape: tuple[int, ...], text_dim: int) -> None:
        """Compile now, for the image shape the Segmenter will feed, instead of on the first frame."""
        if self.forward is self.model:
            return
        start = time.perf_counter()
        image = np.zeros(image_shape, np.float32)
        text = np.zeros((2, text_dim), np.float32)
        try:
            self.infer(image, text, text)
        except Exception as err:  # Inductor raises its own types (no compiler, unsupported op, ...)
            raise BackendError(
                f"torch.compile failed ({type(err).__name__}: {err}); it needs a C++ compiler (g++) on "
                "the CPU; run without torch_compile"
            ) from err
        log.info(
            "compiled the model in %.0f s (Inductor cache: %s)",
            time.perf_counter() - start,
            os.environ["TORCHINDUCTOR_CACHE_DIR"],
        )

    @torch.inference_mode()
    def infer(
        self, image: np.ndarray, object_text: np.ndarray, part_text: np.ndarray
    ) -> dict[str, np.ndarray]:
        dev = self.device
        k_obj, k_part = len(object_text), len(part_text)
        compiled = self.forward is not self.model
        doubled = compiled and min(k_obj, k_part) == 1
        if doubled:
            # Dynamo specializes a size-1 dimension, so K = 1 would compile another graph (minutes) on a
            # vocabulary change. Every name twice is exact instead: an attention over the names gives each
            # copy half its weight and the copies carry the same values, and each name's logits are its own.
            object_text, part_text = np.concatenate([object_text] * 2), np.concatenate([part_text] * 2)
        texts = [torch.from_numpy(t).to(dev) for t in (object_text, part_text)]
        if compiled:
            for t in texts:  # any vocabulary size runs the one graph compiled at load
                torch._dynamo.mark_dynamic(t, 0)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16"):
            out = self.forward(torch.from_numpy(image).to(dev), *texts)
        result = {
            k: out[k][0].float().cpu().numpy() if k != "part_parent" else out[k][0].cpu().numpy()
            for k in OUTPUT_NAMES
        }
        if doubled:
            result["obj_logits"], result["part_logits"] = (
                result["obj_logits"][:, :k_obj],
                result["part_logits"][:, :k_part],
            )
        return result

    def open(self) -> None:
        self.model.to(self.device)

    def close(self) -> None:
        self.model.cpu()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
