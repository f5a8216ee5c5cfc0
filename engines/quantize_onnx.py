"""ONNX Runtime INT8 graph: the exported model.onnx with its convolutions quantized, calibrated on images.

Static quantization by onnxruntime.quantization in QDQ form: per-channel int8 weights, uint8 activations with
ranges from calibration images (MinMax), fused by ONNX Runtime's CPU provider into QLinearConv. What it
quantizes and why (docs/ENGINES.md §1, "INT8 graph"; measured on 2 CPU cores):

* only Conv (the backbone and the pixel decoder's projections, a third of ORT's kernel time). Also
  quantizing Gemm and MatMul made the graph slower, not faster: the decoders' matrices are small (30 x 64),
  and each quantized one adds quantize/dequantize nodes around it;
* asymmetric uint8 activations, which ONNX Runtime's x86 kernels run fastest. Symmetric int8 activations, what
  TensorRT's explicit quantization needs, ran no faster than fp32 there. So this graph is for ONNX Runtime;
  TensorRT builds its INT8 engines from model.onnx (engines.build_engine --precision int8).

The graph keeps model.onnx's metadata (weights and model code digests), so the runtime refuses it for other
weights as it does model.onnx, and records model.onnx's SHA-256 so that ``--if-stale`` remakes it after a
new export.

    python -m engines.quantize_onnx --model models/default --calib-images /data/robot_frames
    python -m engines.quantize_onnx --model models/default --synthparts 32   # models trained on SynthParts

writes MODEL/model.int8.onnx; the node runs it with ``precision: int8`` (backend onnx or auto).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from engines.calibration import calibration_feeds
from partglee_ros.config import ONNX_FILE, ONNX_INT8_FILE, ONNX_INT8_SOURCE_KEY, file_sha256

QUANTIZED_OPS = ("Conv",)
SPLIT_CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "synthparts.yaml"


def quantize_onnx(onnx_path: Path, out_path: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """Write the INT8 graph of ``onnx_path`` to ``out_path``, calibrated on ``feeds`` (network inputs)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not feeds:
        raise ValueError("calibration needs at least one input")

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        # shapes for every tensor (the quantizer needs them); ORT's graph optimizations stay at load time
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        quantized = Path(tmp) / "quantized.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            Feeds(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        graph = onnx.load(str(quantized))
    props = [p for p in graph.metadata_props if not p.key.startswith("onnx.")]  # the quantizer's own notes
    del graph.metadata_props[:]
    graph.metadata_props.extend(props)
    graph.metadata_props.add(key=ONNX_INT8_SOURCE_KEY, value=file_sha256(onnx_path))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(out_path))
    return out_path


def is_current(out_path: Path, onnx_path: Path) -> bool:
    """Whether ``out_path`` was quantized from ``onnx_path`` as it is now; False for an unreadable file."""
    try:
        graph = onnx.load(str(out_path), load_external_data=False)
    except Exception:  # DecodeError and friends: quantize again
        return False
    props = {p.key: p.value for p in graph.metadata_props}
    return props.get(ONNX_INT8_SOURCE_KEY) == file_sha256(onnx_path)


def synthparts_images(folder: Path, count: int) -> Path:
    """``count`` SynthParts validation scenes as PNG files in ``folder`` (calibration for models trained on
    SynthParts, such as the bundled one)."""
    import cv2

    from training.data.synthparts import load_split_config, split_scenes

    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(split_scenes("val", load_split_config(SPLIT_CONFIG), limit=count)):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help=f"model dir with {ONNX_FILE}")
    parser.add_argument("--out", type=Path, help=f"output file (default: MODEL/{ONNX_INT8_FILE})")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--calib-images", type=Path, help="folder of camera images to calibrate on")
    source.add_argument(
        "--synthparts", type=int, metavar="N", help="calibrate on N rendered SynthParts validation scenes"
    )
    parser.add_argument(
        "--calib-count",
        type=int,
        default=64,
        help="at most this many of --calib-images (not used with --synthparts)",
    )
    parser.add_argument(
        "--if-stale", action="store_true", help=f"skip when OUT was quantized from MODEL/{ONNX_FILE} as it is"
    )
    args = parser.parse_args(argv)
    if args.calib_count < 1 or (args.synthparts is not None and args.synthparts < 1):
        parser.error("--calib-count and --synthparts must be at least 1")
    onnx_path, out = args.model / ONNX_FILE, args.out or args.model / ONNX_INT8_FILE
    if not onnx_path.is_file():
        parser.error(
            f"{onnx_path} not found: export it first (python -m engines.export_onnx --model {args.model})"
        )
    if args.if_stale and out.is_file() and is_current(out, onnx_path):
        print(f"{out} is up to date with {onnx_path}")
        return 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.synthparts:
                images, count = synthparts_images(Path(tmp), args.synthparts), args.synthparts
            else:
                images, count = args.calib_images, args.calib_count
            if not images.is_dir():
                raise FileNotFoundError(f"--calib-images {images} is not a folder")
            feeds = calibration_feeds(args.model, images, count)
            quantize_onnx(onnx_path, out, feeds)
    except Exception as err:  # no images, a damaged graph (protobuf's DecodeError), an unwritable folder
        print(f"quantize_onnx: error: {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({', '.join(QUANTIZED_OPS)} in int8, calibrated on {len(feeds)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
