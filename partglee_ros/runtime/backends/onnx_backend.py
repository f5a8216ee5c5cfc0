"""ONNX Runtime backend: the exported graph (fixed image shape, dynamic vocabulary size) on CPU or CUDA.

Text embeddings are inputs, so any vocabulary runs through one session; the image must have the graph's
shape (the Segmenter's letterbox policy guarantees it), and anything else is refused with the shape the
graph wants rather than an ONNX Runtime stack trace.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from partglee_ros.config import ONNX_INT8_SOURCE_KEY
from partglee_ros.runtime.backends.base import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    Backend,
    BackendError,
    parse_device,
)

# How long an idle worker spins for the next operator before it sleeps, when spinning is on. The gaps between
# operators within one inference are microseconds, so 100 us gives the latency of unbounded spinning
# (docs/BENCHMARKS.md) while a worker with nothing to do sleeps almost at once.
DEFAULT_SPIN_US = 100


def cpu_threads() -> int:
    """Intra-op threads: the CPUs this process may use, by its affinity and its cgroup CPU quota (a container
    started with ``--cpus 2`` on a 64-core host gets 2). ORT's own default counts every core of the host."""
    import joblib

    return joblib.cpu_count()


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(
        self,
        path: Path,
        device: str = "cpu",
        threads: int | None = None,
        spin_threads: bool = False,
        spin_us: int = DEFAULT_SPIN_US,
    ) -> None:
        """``threads``: intra-op threads (None or 0: the CPUs this process may use). ``spin_threads``: idle
        workers busy-wait for the next op (lower latency, docs/BENCHMARKS.md) for up to ``spin_us``
        microseconds (0: ONNX Runtime's own limit) before they sleep."""
        if threads is not None and threads < 0:
            raise BackendError(
                f"onnx threads must be >= 0 (0 = the CPUs this process may use), got {threads}"
            )
        if spin_us < 0:
            raise BackendError(f"onnx spin time must be >= 0 us (0 = ONNX Runtime's own), got {spin_us}")
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendError("backend 'onnx' needs the onnxruntime package") from err
        path = Path(path)
        if not path.is_file():
            raise BackendError(
                f"ONNX model not found: {path} (export it with `python -m engines.export_onnx --model DIR`)"
            )
        cuda = parse_device(device)
        if cuda is None:
            providers = ["CPUExecutionProvider"]
        elif "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": cuda}), "CPUExecutionProvider"]
        else:
            raise BackendError(f"device {device!r} requested but onnxruntime has no CUDA provider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        # By default idle workers sleep instead of spinning: on a robot the CPU is shared with drivers and
        # other nodes, and spinning threads then steal the time the busy ones need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_threads else "0")
        if spin_threads and spin_us:
            options.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
        # ... and when they spin, they stop when a run ends instead of burning the cores until the next frame.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path, self.device, self.threads = path, device, options.intra_op_num_threads
        self._session_args = (options, providers)
        self.session = None
        self.open()
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if set(inputs) != set(INPUT_NAMES) or outputs != list(OUTPUT_NAMES):
            raise BackendError(
                f"{path} has inputs {sorted(inputs)} and outputs {outputs}; "
                f"expected inputs {list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)}"
            )
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.precision = "int8" if ONNX_INT8_SOURCE_KEY in self.metadata else "fp32"
        self.image_shape = tuple(inputs["image"].shape)
        self.text_dim = inputs["object_text"].shape[1]
        if not all(isinstance(d, int) for d in self.image_shape):
            raise BackendError(f"{path} has a dynamic image shape {self.image_shape}; re-export it")
        if len(self.image_shape) != 4 or self.image_shape[:2] != (1, 3):
            raise BackendError(
                f"{path} takes images of shape {self.image_shape}, not (1, 3, H, W): re-export it"
            )
        fixed_k = [n for n in ("object_text", "part_text") if isinstance(inputs[n].shape[0], int)]
        if fixed_k:  # every vocabulary of another size would fail at its first frame
            raise BackendError(
                f"{path} has a fixed vocabulary size in {', '.join(fixed_k)}; export it with a dynamic K "
                "(python -m engines.export_onnx)"
            )
        if not isinstance(self.text_dim, int) or inputs["part_text"].shape[1] != self.text_dim:
            raise BackendError(
                f"{path} takes object_text {inputs['object_text'].shape} and part_text "
                f"{inputs['part_text'].shape}; both must be (K, D) with one fixed D: re-export it"
            )

    def open(self) -> None:
        if self.session is not None:
            return
        import onnxruntime as ort

        options, providers = self._session_args
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as err:  # ORT raises its own exception types for unreadable or invalid graphs
            hint = ""
            if "implementation for DeformConv" in str(err):  # the default export's deformable attention
                hint = (
                    f" (onnxruntime {ort.__version__} has no DeformConv kernel for this graph: upgrade "
                    "onnxruntime, or export with --opset 18, which samples with GridSample instead)"
                )
            raise BackendError(
                f"cannot load ONNX model {self.path}: {type(err).__name__}: {err}{hint}"
            ) from err

    def infer(
        self, image: np.ndarray, object_text: np.ndarray, part_text: np.ndarray
    ) -> dict[str, np.ndarray]:
        if tuple(image.shape) != self.image_shape:
            raise BackendError(
                f"image of shape {tuple(image.shape)} does not fit {self.path.name}, which takes "
                f"{self.image_shape}; the model's input_size must match the exported graph"
            )
        for name, text in (("object_text", object_text), ("part_text", part_text)):
            if text.ndim != 2 or text.shape[0] < 1 or text.shape[1] != self.text_dim:
                raise BackendError(f"{name} must be (K>=1, {self.text_dim}), got {tuple(text.shape)}")
        feeds = {
            "image": np.ascontiguousarray(image, np.float32),
            "object_text": np.ascontiguousarray(object_text, np.float32),
            "part_text": np.ascontiguousarray(part_text, np.float32),
        }
        if self.session is None:
            raise BackendError("the ONNX Runtime session is closed (backend deactivated)")
        values = self.session.run(list(OUTPUT_NAMES), feeds)
        return {name: value[0] for name, value in zip(OUTPUT_NAMES, values, strict=True)}

    def close(self) -> None:
        self.session = None
