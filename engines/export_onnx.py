"""Export a checkpoint to ONNX with a dynamic vocabulary size K.

Input size policy (the Segmenter's): images are letterboxed into the model's ``input_size`` (W, H) and padded
to a multiple of 32, so the graph has one fixed image shape (1, 3, H32, W32); only ``object_text`` (K_obj, D)
and ``part_text`` (K_part, D) are dynamic, and with them the last axis of ``obj_logits``/``part_logits``.
A vocabulary change is therefore a new input, never a new graph or engine.

The TorchScript-based exporter (``dynamo=False``) is used. From opset 19 (the default) deformable attention
is traced as one standard DeformConv per level (partglee_ros.model.ms_deform_attn: ONNX Runtime runs it
faster than GridSample); at 17 and 18, which have no DeformConv, as GridSample nodes, for runtimes without
DeformConv (older onnxruntime, TensorRT before 10.1). Without ``--opset`` the CLI exports at 19 where this
machine's onnxruntime runs DeformConv, else at 18 (``default_opset``). The traced graph is then simplified
with onnxsim (constant folding of the tracer's shape arithmetic: 4555 -> 1273 nodes for the default model at
opset 17; ONNX Runtime ran both equally fast, docs/BENCHMARKS.md, but the graph is one people and
TensorRT's parser can read) and checked with ``onnx.checker`` (full check, with shape inference) before it is
written. The SHA-256 of the weights file and of the model code it came from are
recorded in the graph's metadata: a runtime refuses a graph exported from other weights, and warns about one
traced from other model code (``--if-stale``, which scripts/setup.sh uses, re-exports either).

For MiniLM models the text encoder is exported too, into ``MODEL/text_encoder.onnx`` with its tokenizer in
``text_encoder.json``: a directory with ``config.json`` and the two graphs runs on ONNX Runtime without
PyTorch (docs/ENGINES.md, "Deploying without PyTorch").

    python -m engines.export_onnx --model models/default [--out models/default/model.onnx] [--opset 18]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn
from torch.onnx import symbolic_helper

from engines.export_text_encoder import write_model_text_encoder
from partglee_ros.config import (
    CODE_SHA256_KEY,
    CONFIG_FILE,
    ONNX_FILE,
    TEXT_ENCODER_FILE,
    WEIGHTS_FILE,
    WEIGHTS_SHA256_KEY,
    ModelConfig,
    load_checkpoint,
    model_code_digest,
    weights_digest,
)
from partglee_ros.model.ms_deform_attn import deform_conv_sampling
from partglee_ros.model.partglee import PartGLEE
from partglee_ros.model.preprocess import padded_size
from partglee_ros.runtime.backends.base import INPUT_NAMES, OUTPUT_NAMES

MIN_OPSET = 17  # LayerNormalization is a single op from 17 on; GridSample needs 16
DEFORM_CONV_OPSET = 19  # the first with DeformConv; also the default
# The newest opset the TorchScript exporter (dynamo=False) supports (torch warns above it, and e.g. at 25 traces
# the model, prints its IR and fails). torch keeps it only in a private module (since 2.1; 20 there up to 2.13).
try:
    from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as MAX_OPSET
except ImportError:  # moved in a later torch: its value in every torch that had it
    MAX_OPSET = 20
DYNAMIC_AXES = {
    "object_text": {0: "k_obj"},
    "part_text": {0: "k_part"},
    "obj_logits": {2: "k_obj"},
    "part_logits": {2: "k_part"},
}


@symbolic_helper.parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
def _deform_conv(
    g: torch.Graph,
    x: torch.Value,
    weight: torch.Value,
    offset: torch.Value,
    mask: torch.Value,
    bias: torch.Value,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    groups: int,
    offset_groups: int,
    use_mask: bool,
) -> torch.Value:
    """torchvision's deform_conv2d as ONNX DeformConv, whose inputs and attributes it was modelled on
    (torchvision registers no ONNX export for it)."""
    inputs = (x, weight, offset, bias, mask) if use_mask else (x, weight, offset, bias)
    return g.op(
        "DeformConv",
        *inputs,
        strides_i=[stride_h, stride_w],
        pads_i=[pad_h, pad_w, pad_h, pad_w],
        dilations_i=[dilation_h, dilation_w],
        group_i=groups,
        offset_group_i=offset_groups,
    )


def default_opset() -> int:
    """DEFORM_CONV_OPSET where this machine's onnxruntime runs DeformConv (the faster graph), else 18, whose
    graph samples with GridSample: scripts/setup.sh exports on the machine that runs the graph, and an
    onnxruntime without the kernel could not load the default one."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    inputs = [("x", [1, 1, 2, 2]), ("w", [1, 1, 1, 1]), ("offset", [1, 2, 2, 2])]
    graph = helper.make_graph(
        [helper.make_node("DeformConv", [name for name, _ in inputs], ["y"])],
        "probe",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DEFORM_CONV_OPSET)])
    try:
        ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # ORT's own NotImplemented type: no DeformConv kernel in this build
        return DEFORM_CONV_OPSET - 1
    return DEFORM_CONV_OPSET


def register_deform_conv() -> None:
    """Let the TorchScript exporter trace torchvision's deform_conv2d (``deform_conv_sampling``); idempotent."""
    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv, DEFORM_CONV_OPSET)


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


def export_onnx(
    model: PartGLEE,
    config: ModelConfig,
    out: Path,
    opset: int = DEFORM_CONV_OPSET,
    simplify: bool = True,
    weights_sha256: str = "",
) -> Path:
    """Trace ``model`` (eval mode, on CPU) to ``out``; returns ``out`` after checking the graph.

    The graph is built in a temporary file next to ``out`` and replaces it only once simplified, annotated
    and checked: a failed export leaves the previous ``out`` as it was, never an unchecked graph without
    the metadata the runtime verifies (``auto`` would pick it up).

    ``weights_sha256``: ``weights_digest`` of the checkpoint the model was loaded from ("" if none)."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in {MIN_OPSET}..{MAX_OPSET}, got {opset}")
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
    # Not tempfile.mkstemp: its file is private (0600), and a node running as another user reads the graph.
    tmp = str(out.with_name(f".{out.name}.{os.getpid()}.tmp"))
    try:
        # Gradients stay enabled: under no_grad nn.MultiheadAttention takes its fused fast path
        # (aten::_native_multi_head_attention), which has no ONNX export.
        sampling = deform_conv_sampling(wrapper) if opset >= DEFORM_CONV_OPSET else contextlib.nullcontext()
        register_deform_conv()
        with torch.inference_mode(False), torch.enable_grad(), sampling:
            torch.onnx.export(
                wrapper,
                example,
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=DYNAMIC_AXES,
                do_constant_folding=True,
            )
        graph = onnx.load(tmp)
        if simplify:
            graph = _simplified(graph)
        _annotate(graph, config, weights_sha256)
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, tmp)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(
            OSError
        ):  # e.g. a read-only folder: the export's own error is the one to see
            Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _simplified(graph: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxsim
    except ImportError as err:
        raise RuntimeError("onnxsim is not installed; install it or export with --no-simplify") from err
    simplified, ok = onnxsim.simplify(graph)
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified graph; export with --no-simplify")
    return simplified


def _annotate(graph: onnx.ModelProto, config: ModelConfig, weights_sha256: str) -> None:
    """Record what the graph expects, so a runtime can tell a mismatching ONNX from the config."""
    props = {
        WEIGHTS_SHA256_KEY: weights_sha256,
        CODE_SHA256_KEY: model_code_digest(),
        "partglee.config_name": config.name,
        "partglee.input_size": "x".join(map(str, config.input_size)),
        "partglee.text_encoder": config.text_encoder,
        "partglee.text_dim": str(config.text_dim),
    }
    del graph.metadata_props[:]
    for key, value in props.items():
        graph.metadata_props.add(key=key, value=value)


def is_current(path: Path, model_dir: Path, opset: int = DEFORM_CONV_OPSET) -> bool:
    """Whether the graph at ``path`` was exported from ``model_dir``'s weights and config (input size, text
    width) by this model code at ``opset``; False for a graph that cannot be read (a damaged file)."""
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # DecodeError and friends: export it again
        return False
    props = {p.key: p.value for p in graph.metadata_props}
    config = ModelConfig.from_file(model_dir / CONFIG_FILE)
    expected = {
        WEIGHTS_SHA256_KEY: weights_digest(model_dir),
        CODE_SHA256_KEY: model_code_digest(),
        "partglee.input_size": "x".join(map(str, config.input_size)),
        "partglee.text_dim": str(config.text_dim),
    }
    opsets = {o.domain: o.version for o in graph.opset_import}
    return (
        all(props.get(k) == v for k, v in expected.items()) and opsets.get("", opsets.get("ai.onnx")) == opset
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="checkpoint dir (config.json + model.safetensors)"
    )
    parser.add_argument("--out", type=Path, help=f"output file (default: MODEL/{ONNX_FILE})")
    parser.add_argument(
        "--opset",
        type=int,
        help=f"{MIN_OPSET}..{MAX_OPSET}; below {DEFORM_CONV_OPSET} deformable attention samples with GridSample, "
        f"not DeformConv (default: {DEFORM_CONV_OPSET}, or {DEFORM_CONV_OPSET - 1} where this onnxruntime has "
        "no DeformConv)",
    )
    parser.add_argument("--no-simplify", action="store_true", help="keep the traced graph as it is")
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="skip the export when OUT was exported from these weights by this model code (and the text "
        "encoder graph from the same encoder files)",
    )
    parser.add_argument(
        "--no-text-encoder",
        action="store_true",
        help=f"do not write MODEL/{TEXT_ENCODER_FILE} (the MiniLM graph that lets the model run without PyTorch)",
    )
    args = parser.parse_args(argv)
    if args.opset is None:
        args.opset = default_opset()
        if args.opset < DEFORM_CONV_OPSET:
            print(
                f"this onnxruntime has no DeformConv kernel: exporting at opset {args.opset}, deformable "
                "attention as GridSample (slower in ONNX Runtime)"
            )
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        parser.error(f"--opset must be in {MIN_OPSET}..{MAX_OPSET} (torch.onnx exports up to {MAX_OPSET})")
    try:
        return _export(args)
    except (OSError, ValueError, RuntimeError) as err:  # missing files, unwritable folders, bad config
        print(f"export_onnx: error: {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def _export(args: argparse.Namespace) -> int:
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if not (args.model / required).is_file():
            raise FileNotFoundError(f"{args.model / required} not found: --model names a checkpoint folder")
    out = args.out or args.model / ONNX_FILE
    if args.if_stale and out.is_file() and is_current(out, args.model, args.opset):
        print(f"{out} is up to date with {args.model} and the model code")
        config = ModelConfig.from_file(args.model / CONFIG_FILE)
    else:
        model, config = load_checkpoint(args.model)
        out = export_onnx(
            model,
            config,
            out,
            args.opset,
            simplify=not args.no_simplify,
            weights_sha256=weights_digest(args.model),
        )
        print(f"wrote {out} (image {image_shape(config)}, dynamic K, opset {args.opset})")
    if not args.no_text_encoder:
        encoder = write_model_text_encoder(args.model, config, if_stale=args.if_stale)
        print(f"text encoder: {encoder or f'none exported for {config.text_encoder!r} encoders'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
