"""Build a Segmenter from a model directory (config.json + model.safetensors [+ model.onnx, text_encoder.onnx,
engines]; config.json + the two graphs run without PyTorch).

Every failure becomes a `BackendError` naming the file and the problem, so a node can report it and
stay alive (or exit cleanly) instead of printing a traceback.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from partglee_ros.config import (
    CODE_SHA256_KEY,
    CONFIG_FILE,
    ONNX_FILE,
    ONNX_INT8_FILE,
    ONNX_INT8_SOURCE_KEY,
    TEXT_ENCODER_FILE,
    WEIGHTS_FILE,
    WEIGHTS_SHA256_KEY,
    ModelConfig,
    load_checkpoint,
    model_code_digest,
    weights_digest,
)
from partglee_ros.model.preprocess import padded_size
from partglee_ros.model.text_encoder import CachedTextEncoder, TextEncoder, build_text_encoder
from partglee_ros.runtime.backends.base import Backend, BackendError, parse_device
from partglee_ros.runtime.backends.onnx_backend import DEFAULT_SPIN_US
from partglee_ros.runtime.postprocess import PostprocessConfig
from partglee_ros.runtime.segmenter import Segmenter

log = logging.getLogger(__name__)
# auto not using the backend or graph it would have: a logger of its own, so a node can tell its user why
# (partglee_node shows these in its `loaded` line and /diagnostics)
fallback_log = logging.getLogger(f"{__name__}.fallback")
BACKENDS = ("auto", "torch", "onnx", "tensorrt")
# fp16: PyTorch autocast (CUDA); int8: ONNX Runtime's int8 graph (ONNX_INT8_FILE)
PRECISIONS = ("fp32", "fp16", "int8")


def read_model_config(model_dir: Path) -> ModelConfig:
    """The checkpoint's config; BackendError for a missing, unreadable or invalid one."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise BackendError(f"model config not found: {path}")
    try:
        return ModelConfig.from_file(path)
    except (ValueError, TypeError, OSError) as err:  # TypeError: a value of the wrong type for its key
        # one line: a YAML parser's message spans several
        raise BackendError(f"model config {path} is invalid: {' '.join(str(err).split())}") from err


def _torch_backend(
    model_dir: Path, device: str, precision: str, torch_compile: bool, torch_threads: int
) -> Backend:
    from partglee_ros.runtime.backends.torch_backend import TorchBackend

    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise BackendError(f"model weights not found: {weights}")
    try:
        model, _ = load_checkpoint(model_dir)
    except Exception as err:  # safetensors raises several types for a corrupt or mismatched file
        raise BackendError(f"cannot load {weights}: {type(err).__name__}: {err}") from err
    return TorchBackend(model, device, precision, torch_compile, torch_threads)


def _onnx_backend(
    model_dir: Path,
    onnx_path: str,
    device: str,
    onnx_threads: int,
    onnx_spin_threads: bool,
    onnx_spin_us: int,
    int8: bool = False,
) -> Backend:
    from partglee_ros.runtime.backends.onnx_backend import OnnxBackend

    path = Path(onnx_path) if onnx_path else model_dir / (ONNX_INT8_FILE if int8 else ONNX_FILE)
    out = f" --out {path}" if onnx_path else ""
    quantize = f"`python -m engines.quantize_onnx --model {model_dir} --calib-images IMAGES{out}`"
    if int8 and not path.is_file():
        raise BackendError(
            f"precision int8 needs the int8 graph {path}: make it with {quantize} (docs/ENGINES.md §1, "
            "'INT8 graph')"
        )
    if int8 and parse_device(device) is not None:
        # ORT's CUDA provider has no int8 kernels for these graphs (Q/DQ nodes would run on the CPU between GPU ops)
        raise BackendError(
            f"precision int8 with ONNX Runtime is for the CPU; on {device} use a TensorRT engine "
            "(`python -m engines.build_engine --precision int8`, docs/ENGINES.md) or fp32"
        )
    backend = OnnxBackend(path, device, onnx_threads, onnx_spin_threads, onnx_spin_us)
    # an int8 graph carries the metadata of the graph it quantized: made again, not re-exported
    quantized = ONNX_INT8_SOURCE_KEY in backend.metadata
    remake = f"`python -m engines.export_onnx --model {model_dir}`" + (
        f", then {quantize}" if quantized else ""
    )
    if quantized != int8:  # engine_path names a graph of the other kind
        log.warning(
            "%s is %s graph, but precision is %s: it runs as it is",
            path,
            "an int8" if quantized else "a float",
            "int8" if int8 else "not int8",
        )
    recorded = backend.metadata.get(WEIGHTS_SHA256_KEY, "")
    weights = model_dir / WEIGHTS_FILE
    if recorded and weights.is_file() and recorded != weights_digest(model_dir):
        if damage := _unreadable_weights(weights):  # the graph is fine; the weights beside it are not
            raise BackendError(
                f"{weights} is damaged ({damage}) and no longer the weights {path} was exported from: "
                "restore the weights file"
            )
        # Stale graphs are silent accuracy bugs: the outputs look plausible but come from old weights.
        raise BackendError(
            f"{path} was exported from other weights than {weights}; make it again with {remake}"
        )
    if not recorded:
        log.warning("%s records no weights hash (exported before it was recorded): not verified", path)
    if backend.metadata.get(CODE_SHA256_KEY, "") != model_code_digest():
        log.warning(
            "%s was traced from other model code; make it again (scripts/setup.sh does) with %s", path, remake
        )
    return backend


def _unreadable_weights(weights: Path) -> str | None:
    """Why a safetensors file cannot be read (its header and extent), or None; None also where the
    runtime-only install has no safetensors package."""
    try:
        from safetensors import safe_open
    except ImportError:
        return None
    try:
        with safe_open(str(weights), framework="numpy") as f:
            f.keys()
    except Exception as err:  # SafetensorError, OSError
        return f"{type(err).__name__}: {err}"
    return None


def _tensorrt_backend(engine_path: str, model_dir: Path, rebuild: bool, device: str) -> Backend:
    from partglee_ros.runtime.backends.tensorrt_backend import TensorRTBackend

    if not engine_path:
        raise BackendError("backend 'tensorrt' needs engine_path")
    return TensorRTBackend(Path(engine_path), model_dir / ONNX_FILE, rebuild_stale=rebuild, device=device)


# Options that tune one backend, with their defaults; make_backend and load_segmenter take them by keyword.
TORCH_OPTIONS = {"torch_compile": False, "torch_threads": 0}
ONNX_OPTIONS = {"onnx_threads": 0, "onnx_spin_threads": False, "onnx_spin_us": DEFAULT_SPIN_US}


def _backend_options(backend: str, options: dict) -> tuple[dict, dict]:
    """(torch options, onnx options) with defaults filled in. An unknown option is an error; an option set
    for another backend than the one named is ignored with a warning, because the user expects it to act."""
    unknown = set(options) - set(TORCH_OPTIONS) - set(ONNX_OPTIONS)
    if unknown:
        raise BackendError(f"unknown backend options {sorted(unknown)}")
    torch_options = {k: options.get(k, v) for k, v in TORCH_OPTIONS.items()}
    onnx_options = {k: options.get(k, v) for k, v in ONNX_OPTIONS.items()}
    defaults = TORCH_OPTIONS | ONNX_OPTIONS
    ignored = {"torch": ONNX_OPTIONS, "onnx": TORCH_OPTIONS, "tensorrt": defaults}.get(backend, {})
    for option in sorted(set(options) & set(ignored)):
        if options[option] != defaults[option]:
            log.warning("%s does not apply to backend %s; ignored", option, backend)
    return torch_options, onnx_options


def make_backend(
    model_dir: Path,
    backend: str = "auto",
    device: str = "cpu",
    precision: str = "fp32",
    engine_path: str = "",
    rebuild_stale_engine: bool = False,
    **options,
) -> Backend:
    """`auto`: TensorRT when an engine is given and loads, else ONNX Runtime when model.onnx exists (with
    precision int8: model.int8.onnx, else fp32), else PyTorch.

    ``options``: TORCH_OPTIONS for the PyTorch backend, ONNX_OPTIONS for ONNX Runtime (each also where auto
    ends up on it)."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    parse_device(device)  # a mistyped device is one clear error, not a different one per backend tried
    torch_options, onnx_options = _backend_options(backend, options)
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    int8 = precision == "int8"
    if (backend == "onnx" and precision == "fp16") or (backend == "tensorrt" and precision != "fp32"):
        # A graph runs as exported and an engine in the precision it was built with; PyTorch autocasts to fp16.
        log.warning("precision %s does not apply to backend %s; ignored", precision, backend)
    if backend == "torch":
        return _torch_backend(model_dir, device, precision, **torch_options)
    if backend == "onnx":
        return _onnx_backend(model_dir, engine_path, device, **onnx_options, int8=int8)
    if backend == "tensorrt":
        return _tensorrt_backend(engine_path, model_dir, rebuild_stale_engine, device)
    errors = []
    if engine_path.endswith(".engine"):
        try:
            return _tensorrt_backend(engine_path, model_dir, rebuild_stale_engine, device)
        except BackendError as err:
            # Falling back silently would hide a stale engine behind a CPU backend that is 10x slower.
            fallback_log.warning(
                "backend auto: TensorRT engine %s not used, falling back: %s", engine_path, err
            )
            errors.append(str(err))
    elif engine_path:
        fallback_log.warning(
            "backend auto: engine_path %s does not end in .engine; not tried as an engine", engine_path
        )
    if int8:
        try:
            return _onnx_backend(model_dir, "", device, **onnx_options, int8=True)
        except BackendError as err:
            fallback_log.warning("backend auto: %s not used, falling back to fp32: %s", ONNX_INT8_FILE, err)
            errors.append(str(err))
            precision = "fp32"
    if (model_dir / ONNX_FILE).is_file() and precision == "fp32":
        try:
            return _onnx_backend(model_dir, "", device, **onnx_options)
        except BackendError as err:
            fallback_log.warning("backend auto: %s not used, falling back to PyTorch: %s", ONNX_FILE, err)
            errors.append(str(err))
    try:
        return _torch_backend(model_dir, device, precision, **torch_options)
    except BackendError as err:
        raise BackendError("; ".join([*errors, str(err)])) from err


def make_text_encoder(config: ModelConfig, model_dir: Path | None = None) -> TextEncoder:
    """The config's encoder, cached per name. MiniLM runs on ONNX Runtime (same embeddings, about two
    thirds of the time per vocabulary change): from ``model_dir``'s TEXT_ENCODER_FILE when it has one (no
    PyTorch needed), else exported once into the cache; PyTorch's encoder is the last resort."""
    errors = []
    if config.text_encoder == "minilm":
        from partglee_ros.runtime.onnx_text_encoder import OnnxSentenceTextEncoder

        shipped = model_dir / TEXT_ENCODER_FILE if model_dir is not None else None
        if shipped is not None and shipped.is_file():
            if other := _exported_from_other_files(shipped, config):
                log.warning(
                    "%s was exported from other encoder files than %s; using %s", shipped, other, other
                )
            else:
                try:
                    return CachedTextEncoder(OnnxSentenceTextEncoder.from_files(shipped))
                except Exception as err:  # a damaged file: the encoder's own files may still work
                    errors.append(f"{shipped}: {type(err).__name__}: {err}")
                    log.warning("text encoder unusable, trying the encoder's own files: %s", errors[-1])
        elif shipped is not None:  # said only if nothing else works: then it is what a robot lacks
            errors.append(f"no {shipped} (`python -m engines.export_onnx --model {model_dir}` writes it)")
        try:
            return CachedTextEncoder(OnnxSentenceTextEncoder.cached(**config.text_encoder_kwargs))
        except Exception as err:  # export or ONNX Runtime problems: the PyTorch encoder may still work
            errors.append(f"ONNX Runtime: {type(err).__name__}: {err}")
            log.warning("MiniLM on ONNX Runtime unavailable, trying PyTorch: %s", errors[-1])
    try:
        return build_text_encoder(config.text_encoder, **config.text_encoder_kwargs)
    except Exception as err:
        errors.append(f"{type(err).__name__}: {err}")
        raise BackendError(f"cannot load text encoder {config.text_encoder!r}: {'; '.join(errors)}") from err


def _exported_from_other_files(shipped: Path, config: ModelConfig) -> Path | None:
    """The config's encoder folder (its ``model_path``) when it is here and ``shipped`` records another
    source (a graph left from an earlier config would give other embeddings, silently); None when it matches
    or cannot be told: a robot without the encoder's files runs the graph as it is, and the bundled encoder
    (no ``model_path``) is a pinned package not imported for this."""
    from partglee_ros.runtime.onnx_text_encoder import cache_key, info_file

    folder = config.text_encoder_kwargs.get("model_path")
    if not folder or not Path(folder).is_dir():
        return None
    try:
        recorded = json.loads(info_file(shipped).read_text()).get("source_key")
    except (OSError, ValueError, AttributeError):  # unreadable: from_files then says so
        return None
    return Path(folder) if recorded is not None and recorded != cache_key(Path(folder)) else None


def load_segmenter(
    model_dir: str | Path,
    backend: str = "auto",
    device: str = "cpu",
    precision: str = "fp32",
    engine_path: str = "",
    input_size: tuple[int, int] | None = None,
    postprocess_config: PostprocessConfig | None = None,
    rebuild_stale_engine: bool = False,
    **backend_options,
) -> Segmenter:
    """A Segmenter on ``make_backend``'s choice (``backend_options``: TORCH_OPTIONS, ONNX_OPTIONS)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BackendError(f"model directory not found: {model_dir}")
    try:
        return _load_segmenter(
            model_dir,
            backend,
            device,
            precision,
            engine_path,
            input_size,
            postprocess_config,
            rebuild_stale_engine,
            **backend_options,
        )
    except OSError as err:  # a model file that exists but cannot be read (permissions, I/O error, a fifo)
        raise BackendError(f"cannot read the model in {model_dir}: {err}") from err


def _load_segmenter(
    model_dir: Path,
    backend: str,
    device: str,
    precision: str,
    engine_path: str,
    input_size: tuple[int, int] | None,
    postprocess_config: PostprocessConfig | None,
    rebuild_stale_engine: bool,
    **backend_options,
) -> Segmenter:
    config = read_model_config(model_dir)
    backend_impl = make_backend(
        model_dir,
        backend,
        device,
        precision,
        engine_path,
        rebuild_stale_engine,
        **backend_options,
    )
    size = tuple(input_size) if input_size else tuple(config.input_size)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise BackendError(f"input size must be two positive integers (width, height), got {input_size!r}")
    try:
        config.check_input_size(size)
    except ValueError as err:
        raise BackendError(str(err)) from err
    # Mismatches are found here, at start-up, not as a failure on every frame.
    fixed = backend_impl.image_shape
    if fixed is not None and tuple(fixed[2:]) != padded_size(size[1], size[0]):
        if input_size and tuple(input_size) != tuple(config.input_size):
            fix = "leave input_width/input_height at 0 (the model's own size), or re-export it at this size"
        else:  # the graph is from another config of this model
            fix = f"re-export it (python -m engines.export_onnx --model {model_dir}" + (
                ", then python -m engines.quantize_onnx)" if precision == "int8" else ")"
            )
        mismatch = (
            f"the {backend_impl.name} graph takes images of shape {tuple(fixed)}, but input size "
            f"{size[0]}x{size[1]} needs {padded_size(size[1], size[0])}: {fix}"
        )
        if backend != "auto":
            raise BackendError(mismatch)
        fallback_log.warning("%s; auto uses PyTorch instead", mismatch)
        backend_impl.close()
        torch_options = {k: v for k, v in backend_options.items() if k in TORCH_OPTIONS}
        torch_precision = "fp32" if precision == "int8" else precision  # int8 is a graph, not a PyTorch mode
        backend_impl = make_backend(model_dir, "torch", device, torch_precision, **torch_options)
    if backend_impl.text_dim not in (None, config.text_dim):
        raise BackendError(
            f"the {backend_impl.name} graph takes text embeddings of width {backend_impl.text_dim}, but "
            f"{model_dir / CONFIG_FILE} says text_dim {config.text_dim}: it was exported from another model"
        )
    text_encoder = make_text_encoder(config, model_dir)
    if text_encoder.dim != config.text_dim:
        raise BackendError(
            f"text encoder {config.text_encoder!r} gives {text_encoder.dim}-d embeddings, but the model takes "
            f"text_dim {config.text_dim} ({model_dir / CONFIG_FILE})"
        )
    backend_impl.prepare((1, 3, *padded_size(size[1], size[0])), config.text_dim)
    return Segmenter(backend_impl, text_encoder, size, postprocess_config)
