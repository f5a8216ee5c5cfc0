"""Build a TensorRT engine from the exported ONNX (TensorRT 10.x Python API) and write its metadata.

TensorRT 11 removed the FP16/INT8 builder flags and the INT8 calibrator API used here, so any other major
version is refused up front; pin ``tensorrt-cu12>=10,<11``.

* precision fp32 (TF32 off: true fp32) / fp16 / int8 (int8 calibrates on images through an entropy
  calibrator and writes a calibration cache; a later build given only the cache reads it and needs no
  images, a build given images calibrates afresh and overwrites it);
* one optimization profile over the vocabulary sizes K of ``object_text`` and ``part_text`` (min/opt/max;
  the image shape is fixed by the export);
* a timing cache file, reused across builds with the same TensorRT version and GPU (it speeds up rebuilds
  after an ONNX change; a cache from another version or GPU is replaced by a new one; failing to write it
  back is a warning, not a failed build);
* a workspace limit;
* ``<engine>.json`` (engines.engine_metadata): ONNX and engine sha256, TensorRT version, GPU and compute
  capability, precision and profile, which the runtime checks before it loads the engine.

    python -m engines.build_engine --onnx models/default/model.onnx --engine models/default/model.engine \\
        --precision fp16 --k-obj 1 10 100 --k-part 1 20 200 --timing-cache models/default/timing.cache
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engines.calibration import calibration_feeds
from engines.engine_metadata import (
    PRECISIONS,
    BuildOptions,
    EngineMetadata,
    Platform,
    Profile,
    write_metadata,
)
from partglee_ros.config import write_atomically

log = logging.getLogger(__name__)
INSTALL_TENSORRT = "pip install 'tensorrt-cu12>=10,<11'"


def check_tensorrt_version(version: str) -> None:
    """Raise RuntimeError unless ``version`` is a TensorRT 10.x. TensorRT 11 (the newest on PyPI) removed
    the FP16/INT8 builder flags and the INT8 calibrator this build uses, and 8.x has another network API:
    either would fail mid-build with an AttributeError, or refuse the engine only at deserialization."""
    if version.split(".")[0] != "10":
        raise RuntimeError(
            f"needs TensorRT 10.x, found {version} ({INSTALL_TENSORRT}; on a Jetson: JetPack 6.1 or later)"
        )


@functools.cache
def tensorrt_logger() -> Any:
    """The process's one TensorRT logger, with TensorRT's standard plugins registered on it.

    TensorRT keeps a single logger per process (a second one is only warned about), so the build and the
    runtime share this one. The plugins: an engine from the default opset-19 export holds the
    ModulatedDeformConv2d plugin (the parser maps DeformConv onto it and registers it while parsing); a
    process that only deserializes must register it itself, or deserialize_cuda_engine returns None."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    return logger


def save_timing_cache(path: Path, data: bytes) -> None:
    """Written after the engine and its metadata, so a failure here (a read-only or full disk) only costs
    the next build its timing: a warning, not a failed build."""
    try:
        write_atomically(path, data)
    except OSError as err:
        log.warning(
            "timing cache %s not written (%s): the engine is built; the next build starts a new one",
            path,
            err,
        )


def cached_calibration(cache_path: Path, calibrating: bool) -> bytes | None:
    """What the calibrator hands TensorRT as its cache: nothing when calibration images are given, so
    TensorRT calibrates on them and the cache is overwritten (an old cache would be used instead, silently
    keeping the ranges of the model before retraining); otherwise the cache file, if there is one."""
    if calibrating or not cache_path.is_file():
        return None
    return cache_path.read_bytes()


def current_platform(device: int = 0) -> Platform:
    """This machine's TensorRT version and CUDA device, as the metadata records them."""
    import tensorrt as trt
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT needs a CUDA device and none is available")
    major, minor = torch.cuda.get_device_capability(device)
    return Platform(trt.__version__, torch.cuda.get_device_name(device), f"{major}.{minor}")


def fit_rows(text: np.ndarray, rows: int) -> np.ndarray:
    """``text`` (K, D) repeated cyclically or cut to ``rows`` rows. TensorRT calibrates a dynamic input at its
    profile's OPT shape and reads that many rows, whatever the feed holds."""
    return np.ascontiguousarray(np.resize(text, (rows, text.shape[1])))


def _make_calibrator(
    trt: Any, cache_path: Path, batches: list[dict[str, np.ndarray]] | None, profiles: dict[str, Profile]
) -> Any:
    """An entropy calibrator over (image, object_text, part_text) feeds, the text fitted to each profile's
    OPT size; buffers live on the current GPU (torch)."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter(batches or [])
            self.buffers: dict[str, torch.Tensor] = {}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            feed = next(self.batches, None)
            if feed is None:
                return None
            arrays = {n: fit_rows(feed[n], profiles[n].opt) if n in profiles else feed[n] for n in names}
            self.buffers = {n: torch.from_numpy(np.ascontiguousarray(a)).cuda() for n, a in arrays.items()}
            torch.cuda.current_stream().synchronize()  # TensorRT reads them on its own stream
            return [self.buffers[n].data_ptr() for n in names]

        def read_calibration_cache(self) -> bytes | None:
            return cached_calibration(cache_path, bool(batches))

        def write_calibration_cache(self, cache: bytes) -> None:
            write_atomically(cache_path, bytes(cache))

    return Calibrator()


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    options: BuildOptions,
    calibration_batches: list[dict[str, np.ndarray]] | None = None,
    device: int = 0,
) -> EngineMetadata:
    """Parse, build, serialize ``engine_path`` and its metadata; returns the metadata.

    Built on CUDA device ``device`` (TensorRT builds for the current device, and the engine runs only on
    that kind of GPU)."""
    import tensorrt as trt
    import torch

    check_tensorrt_version(trt.__version__)
    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT needs a CUDA device and none is available")
    if not 0 <= device < torch.cuda.device_count():
        raise RuntimeError(f"device cuda:{device} does not exist ({torch.cuda.device_count()} CUDA devices)")
    with torch.cuda.device(device):
        return _build(onnx_path, engine_path, options, calibration_batches, current_platform(device))


def _build(
    onnx_path: Path,
    engine_path: Path,
    options: BuildOptions,
    calibration_batches: list[dict[str, np.ndarray]] | None,
    platform: Platform,
) -> EngineMetadata:
    import tensorrt as trt

    logger = tensorrt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    graph = onnx_path.read_bytes()  # hashed as parsed: the file may be re-exported during a long build
    if not parser.parse(graph, str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    profile = builder.create_optimization_profile()
    image_shape = ()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name in options.profiles:
            p, dim = options.profiles[tensor.name], tensor.shape[1]
            profile.set_shape(tensor.name, (p.min, dim), (p.opt, dim), (p.max, dim))
        else:
            image_shape = tuple(tensor.shape)
    config.add_optimization_profile(profile)
    if options.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default (Ampere and later): fp32 means fp32
    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16 where that is faster
    if options.precision == "int8":
        cache = Path(options.int8_calibration_cache)
        if not cache.is_file() and not calibration_batches:
            raise RuntimeError(f"int8 needs calibration images or an existing calibration cache ({cache})")
        if calibration_batches and cache.is_file():
            log.info("calibrating on %d images; %s will be overwritten", len(calibration_batches), cache)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _make_calibrator(trt, cache, calibration_batches, options.profiles)
        config.set_calibration_profile(profile)

    timing_cache = Path(options.timing_cache) if options.timing_cache else None
    _use_timing_cache(config, timing_cache)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine = bytes(serialized)
    write_atomically(engine_path, engine)
    metadata = EngineMetadata(
        onnx_sha256=hashlib.sha256(graph).hexdigest(),
        engine_sha256=hashlib.sha256(engine).hexdigest(),
        platform=platform,
        precision=options.precision,
        profiles=dict(options.profiles),
        image_shape=image_shape,
        workspace_mib=options.workspace_mib,
        int8_calibration_cache=options.int8_calibration_cache,
        timing_cache=options.timing_cache,
    )
    write_metadata(engine_path, metadata)
    if timing_cache and (built_cache := config.get_timing_cache()) is not None:
        save_timing_cache(timing_cache, bytes(built_cache.serialize()))
    log.info(
        "built %s (%s, %s on %s)",
        engine_path,
        options.precision,
        platform.tensorrt_version,
        platform.gpu_name,
    )
    return metadata


def _use_timing_cache(config: Any, path: Path | None) -> None:
    """Start from the timing cache at ``path`` when there is one. TensorRT refuses a cache from another
    TensorRT version or GPU (the usual reason for a rebuild); the build then starts a new one."""
    cached = path.read_bytes() if path and path.is_file() else b""
    accepted, why = False, "it is from another TensorRT version or GPU"
    if cached:
        try:
            accepted = bool(config.set_timing_cache(config.create_timing_cache(cached), False))
        except (RuntimeError, TypeError) as err:  # a blob TensorRT cannot read at all
            why = f"TensorRT cannot read it ({err})"
        if not accepted:
            log.warning("timing cache %s not used, %s; starting a new one", path, why)
    if not accepted:
        config.set_timing_cache(config.create_timing_cache(b""), False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--engine", type=Path, required=True)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16")
    parser.add_argument("--k-obj", type=int, nargs=3, default=(1, 10, 100), metavar=("MIN", "OPT", "MAX"))
    parser.add_argument("--k-part", type=int, nargs=3, default=(1, 20, 200), metavar=("MIN", "OPT", "MAX"))
    parser.add_argument("--workspace-mib", type=int, default=2048)
    parser.add_argument("--timing-cache", type=Path, help="read and updated; share it between builds")
    parser.add_argument(
        "--calib-cache",
        type=Path,
        help="int8: calibration cache, written by calibrating on --calib-images (overwritten), else read",
    )
    parser.add_argument(
        "--calib-images", type=Path, help="int8: folder of images to calibrate on (afresh, even with a cache)"
    )
    parser.add_argument("--calib-count", type=int, default=64)
    parser.add_argument("--model", type=Path, help="int8 with --calib-images: model dir (input size, text)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index to build on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.precision == "int8" and not args.calib_cache:
        parser.error("--precision int8 needs --calib-cache")
    if not args.onnx.is_file():
        parser.error(f"--onnx {args.onnx} not found (python -m engines.export_onnx writes it)")
    if args.calib_count < 1:
        parser.error("--calib-count must be at least 1")
    try:
        options = BuildOptions(
            args.precision,
            {"object_text": Profile(*args.k_obj), "part_text": Profile(*args.k_part)},
            args.workspace_mib,
            # absolute: a rebuild-on-stale by the node runs from another working directory
            str(args.calib_cache.resolve()) if args.calib_cache else None,
            str(args.timing_cache.resolve()) if args.timing_cache else None,
        )
    except ValueError as err:
        parser.error(str(err))
    try:  # checked before any work (calibration loads a text encoder): the build needs TensorRT 10
        import tensorrt

        check_tensorrt_version(tensorrt.__version__)
    except ImportError:
        print(f"build_engine: error: needs the tensorrt Python package ({INSTALL_TENSORRT})", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"build_engine: error: {err}", file=sys.stderr)
        return 2
    try:
        batches = None
        if args.precision == "int8" and args.calib_images:
            batches = calibration_feeds(args.model or args.onnx.parent, args.calib_images, args.calib_count)
        metadata = build_engine(args.onnx, args.engine, options, batches, args.device)
    except ImportError as err:  # PyTorch, OpenCV or the training package on a runtime-only install
        print(
            f"build_engine: error: {err} (building needs the full install: pip install -e '.[engines]')",
            file=sys.stderr,
        )
        return 2
    # RuntimeError includes BackendError and TensorRT's own
    except (RuntimeError, ValueError, OSError) as err:
        print(f"build_engine: error: {err}", file=sys.stderr)
        return 2
    print(dataclasses.asdict(metadata))
    return 0


if __name__ == "__main__":
    sys.exit(main())
