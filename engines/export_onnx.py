"""Export a checkpoint to ONNX with a dynamic vocabulary size K.

Input size policy (the Segmenter's): images are letterboxed into the model's ``input_size`` (W, H) and padded
to a multiple of 32, so the graph has one fixed image shape (1, 3, H32, W32); only ``object_text`` (K_obj, D)
and ``part_text`` (K_part, D) are dynamic, and with them the last axis of ``obj_logits``/``part_logits``.
A vocabulary change is therefore a new input, never a new graph or engine.

The TorchScript-based exporter (``dynamo=False``) is used: it traces the grid_sample-based deformable
attention into plain GridSample nodes, and the graph is checked with ``onnx.checker`` (full check, with
shape inference) before it is written.

    python -m engines.export_onnx --model models/default [--out models/default/model.onnx] [--opset 17]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from partglee_ros.config import ModelConfig, load_checkpoint
from partglee_ros.model.partglee import PartGLEE
from partglee_ros.model.preprocess import padded_size
from partglee_ros.runtime.backends.base import INPUT_NAMES, OUTPUT_NAMES

ONNX_FILE = "model.onnx"
MIN_OPSET = 17  # LayerNormalization is a single op from 17 on; GridSample needs 16
DYNAMIC_AXES = {
    "object_text": {0: "k_obj"},
    "part_text": {0: "k_part"},
    "obj_logits": {2: "k_obj"},
    "part_logits": {2: "k_part"},
}


class ExportWrapper(nn.Module):
    """The model with positional outputs in OUTPUT_NAMES order (ONNX outputs are a tuple, not a dict)."""

    def __init__(self, model: PartGLEE) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, object_text: Tensor, part_text: Tensor) -> tuple[Tensor, ...]:
        out = self.model(image, object_text, part_text)
        return tuple(out[name] for name in OUTPUT_NAMES)


def image_shape(config: ModelConfig) -> tuple[int, int, int, int]:
    """The graph's fixed image input: the model's input size padded to a multiple of 32."""
    width, height = config.input_size
    ph, pw = padded_size(height, width)
    return (1, 3, ph, pw)


def export_onnx(model: PartGLEE, config: ModelConfig, out: Path, opset: int = MIN_OPSET) -> Path:
    """Trace ``model`` (eval mode, on CPU) to ``out``; returns ``out`` after checking the graph."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    # A copy, put in eval mode explicitly: tracing a module in training mode would update BatchNorm
    # statistics of the caller's model and export training-mode behaviour.
    wrapper = ExportWrapper(copy.deepcopy(model).cpu()).eval()
    generator = torch.Generator().manual_seed(0)
    dim = config.text_dim
    # Distinct example sizes, so the tracer cannot conflate the two vocabulary axes.
    example = (
        torch.zeros(image_shape(config)),
        torch.randn(5, dim, generator=generator),
        torch.randn(7, dim, generator=generator),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Gradients stay enabled: under no_grad nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which has no ONNX export.
    with torch.inference_mode(False), torch.enable_grad():
        torch.onnx.export(
            wrapper,
            example,
            str(out),
            dynamo=False,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=DYNAMIC_AXES,
            do_constant_folding=True,
        )
    graph = onnx.load(str(out))
    _annotate(graph, config)
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(out))
    return out


def _annotate(graph: onnx.ModelProto, config: ModelConfig) -> None:
    """Record what the graph expects, so a runtime can tell a mismatching ONNX from the config."""
    props = {
        "partglee.config_name": config.name,
        "partglee.input_size": "x".join(map(str, config.input_size)),
        "partglee.text_encoder": config.text_encoder,
        "partglee.text_dim": str(config.text_dim),
    }
    del graph.metadata_props[:]
    for key, value in props.items():
        graph.metadata_props.add(key=key, value=value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="checkpoint dir (config.json + model.safetensors)"
    )
    parser.add_argument("--out", type=Path, help=f"output file (default: MODEL/{ONNX_FILE})")
    parser.add_argument("--opset", type=int, default=MIN_OPSET)
    args = parser.parse_args(argv)
    model, config = load_checkpoint(args.model)
    out = export_onnx(model, config, args.out or args.model / ONNX_FILE, args.opset)
    print(f"wrote {out} (image {image_shape(config)}, dynamic K, opset {args.opset})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
