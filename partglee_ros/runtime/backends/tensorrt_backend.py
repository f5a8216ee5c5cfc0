"""TensorRT backend: deserialize an engine built by ``engines.build_engine`` and run it on CUDA buffers
owned by torch.

Before TensorRT is asked to load anything the engine's metadata is checked against the engine file's own
bytes, the ONNX next to it, this TensorRT and this GPU (``engines.engine_metadata.decide``): a mismatching engine is refused with a
message naming each difference, or rebuilt in place when ``rebuild_stale`` is set. Only TensorRT 10.x is
accepted (that of ``engines.build_engine``), and any failure is a BackendError, so ``auto`` can fall back
and the node report it in one line.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.build_engine import build_engine, check_tensorrt_version, current_platform, tensorrt_logger
from engines.engine_metadata import Action, EngineStaleError, Profile, decide
from partglee_ros.runtime.backends.base import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    Backend,
    BackendError,
    SizeRange,
    parse_device,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(
        self,
        engine_path: Path,
        onnx_path: Path,
        rebuild_stale: bool = False,
        device: str = "cuda",
    ) -> None:
        """The engine runs in its own precision. ``device`` picks the GPU (``cpu``, the node's default,
        means cuda:0): the engine is checked against, (re)built for and run on that one."""
        index = parse_device(device) or 0
        try:
            import tensorrt as trt
        except ImportError as err:
            raise BackendError(f"backend 'tensorrt' needs the tensorrt Python package (10.x): {err}") from err
        try:
            check_tensorrt_version(trt.__version__)
        except RuntimeError as err:
            raise BackendError(f"backend 'tensorrt' {err}") from err
        try:
            import torch
        except ImportError as err:  # its CUDA buffers hold the engine's inputs and outputs
            raise BackendError(f"backend 'tensorrt' needs PyTorch with CUDA: {err}") from err
        if not torch.cuda.is_available():
            raise BackendError("backend 'tensorrt' needs a CUDA device and none is available")
        if index >= torch.cuda.device_count():
            raise BackendError(
                f"device cuda:{index} does not exist ({torch.cuda.device_count()} CUDA devices)"
            )
        engine_path, onnx_path = Path(engine_path), Path(onnx_path)
        try:
            decision = decide(engine_path, onnx_path, current_platform(index), rebuild_stale)
        except EngineStaleError as err:
            raise BackendError(str(err)) from err
        except OSError as err:  # an unreadable engine or ONNX: a BackendError, so auto falls back past it
            raise BackendError(f"cannot check TensorRT engine {engine_path}: {err}") from err
        # the metadata that was checked (or just written): open() holds the engine's bytes to its hash, so
        # an engine and .json pair swapped in after the check is refused rather than loaded unchecked
        self.metadata = decision.metadata
        if decision.action is Action.REBUILD:
            log.warning("rebuilding TensorRT engine %s: %s", engine_path, "; ".join(decision.reasons))
            try:
                self.metadata = build_engine(onnx_path, engine_path, decision.options, device=index)
            # not only TensorRT's RuntimeError: an OSError (a read-only engine folder such as /opt/models)
            # or a ValueError must reach auto's fallback and the node's start-up error too, not a traceback
            except Exception as err:
                raise BackendError(f"rebuilding {engine_path} failed: {type(err).__name__}: {err}") from err

        self._torch = torch
        self.runtime = trt.Runtime(tensorrt_logger())  # the build's logger; registers the DeformConv plugin
        self.device, self.path = torch.device("cuda", index), engine_path
        self.profiles: dict[str, Profile] = self.metadata.profiles
        self.precision = self.metadata.precision
        self.engine = self.context = None
        self.open()
        self.stream = torch.cuda.Stream(self.device)
        self.dtypes = {
            n: getattr(torch, np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))).name)
            for n in (*INPUT_NAMES, *OUTPUT_NAMES)
        }
        self.image_shape = tuple(self.engine.get_tensor_shape("image"))
        self.text_dim = int(self.engine.get_tensor_shape("object_text")[1])

    def open(self) -> None:
        if self.engine is not None:
            return
        try:
            engine = self.path.read_bytes()
        except OSError as err:
            raise BackendError(f"cannot read TensorRT engine {self.path}: {err}") from err
        if hashlib.sha256(engine).hexdigest() != self.metadata.engine_sha256:  # replaced since checked
            raise BackendError(
                f"{self.path} is not the engine that was checked (replaced since; a lifecycle node checks it "
                "again on cleanup + configure)"
            )
        with self._torch.cuda.device(self.device):  # TensorRT loads onto the current CUDA device
            self.engine = self.runtime.deserialize_cuda_engine(engine)
            if self.engine is None:
                raise BackendError(f"TensorRT could not deserialize {self.path} (see the TensorRT log)")
            self.context = self.engine.create_execution_context()

    def infer(
        self, image: np.ndarray, object_text: np.ndarray, part_text: np.ndarray
    ) -> dict[str, np.ndarray]:
        torch = self._torch
        if tuple(image.shape) != self.image_shape:
            raise BackendError(
                f"image of shape {tuple(image.shape)} does not fit {self.path.name} ({self.image_shape})"
            )
        if self.context is None:
            raise BackendError("the TensorRT engine is released (backend deactivated)")
        feeds = {"image": image, "object_text": object_text, "part_text": part_text}
        for name, profile in self.profiles.items():
            k = feeds[name].shape[0]
            if not profile.contains(k):
                raise BackendError(
                    f"{name} has K={k}, outside the engine's profile [{profile.min}, {profile.max}]; "
                    "rebuild the engine with a wider --k-obj/--k-part"
                )
        buffers = {}
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for name in INPUT_NAMES:
                t = torch.from_numpy(np.ascontiguousarray(feeds[name])).to(self.device, self.dtypes[name])
                buffers[name] = t
                if not self.context.set_input_shape(name, tuple(t.shape)):
                    raise BackendError(
                        f"{self.path.name} refuses {name} of shape {tuple(t.shape)} (engine: "
                        f"{tuple(self.engine.get_tensor_shape(name))}); was it built for this model?"
                    )
                self._bind(name, t)
            for name in OUTPUT_NAMES:
                shape = tuple(self.context.get_tensor_shape(name))
                if min(shape, default=0) < 0:
                    raise BackendError(f"{self.path.name} left output {name} shape {shape} unresolved")
                buffers[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self._bind(name, buffers[name])
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError(f"TensorRT execution of {self.path.name} failed")
        self.stream.synchronize()
        return {name: buffers[name][0].cpu().numpy() for name in OUTPUT_NAMES}

    def _bind(self, name: str, tensor: torch.Tensor) -> None:
        if not self.context.set_tensor_address(name, tensor.data_ptr()):
            raise BackendError(f"TensorRT refused the buffer for {name} of {self.path.name}")

    def vocabulary_limits(self) -> tuple[SizeRange, SizeRange] | None:
        objects, parts = self.profiles["object_text"], self.profiles["part_text"]
        return SizeRange(objects.min, objects.max), SizeRange(parts.min, parts.max)

    def close(self) -> None:
        self.context = self.engine = None
        self._torch.cuda.empty_cache()
