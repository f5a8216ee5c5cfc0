"""Deformable attention in ONNX Runtime: exported as GridSample (opset 18) against DeformConv (opset 19).

Records the inputs of the first call of each of the model's deformable attention modules of a kind (an
encoder layer at its point references, each decoder at its box references) in one forward pass, exports that
module alone both ways, and times the two graphs in ONNX Runtime beside the module in PyTorch eager, as it
runs (grid_sample) and with torchvision's deform_conv2d, the op the DeformConv graph is traced from (2 threads
each, idle ORT workers sleeping as in the node; runs interleaved in a new order each round, deform_conv2d's
after the others). Prints a table and, with --write, replaces this script's section of docs/BENCHMARKS.md.

    python -m benchmarks.deformable_sampling [--model models/default] [--k 50] [--runs 50] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from benchmarks.machine import describe_cpu
from benchmarks.markdown_section import report
from benchmarks.session_options import node_like
from engines.export_onnx import DEFORM_CONV_OPSET, image_shape, register_deform_conv
from partglee_ros.config import load_checkpoint
from partglee_ros.model.ms_deform_attn import MSDeformAttn, deform_conv_sampling

REPO = Path(__file__).resolve().parents[1]
THREADS = 2
INPUTS = ("query", "reference_points", "value")


class AttentionCall(nn.Module):
    """One recorded call of a deformable attention module, with its spatial shapes fixed (they are Python
    ints in the model too)."""

    def __init__(self, attn: MSDeformAttn, spatial_shapes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.attn, self.spatial_shapes = attn, spatial_shapes

    def forward(self, query: Tensor, reference_points: Tensor, value: Tensor) -> Tensor:
        return self.attn(query, reference_points, value, self.spatial_shapes)


def recorded_calls(model_dir: Path, k: int) -> dict[str, tuple[AttentionCall, tuple[Tensor, ...]]]:
    """Module name -> (the call, its inputs), for the first module of each kind (its parent's name without the
    layer index) in one forward pass at the exported input size."""
    model, config = load_checkpoint(model_dir)
    model.eval()
    calls: dict[str, tuple[AttentionCall, tuple[Tensor, ...]]] = {}
    kinds: set[str] = set()

    def recorder(name: str) -> Callable:
        kind = name.split(".layers.")[0]

        def record(module: MSDeformAttn, args: tuple) -> None:
            if kind not in kinds:
                kinds.add(kind)
                query, ref, value, shapes = args
                call = AttentionCall(copy.deepcopy(module), list(shapes)).eval()
                calls[name] = (call, (query.clone(), ref.clone(), value.clone()))

        return record

    hooks = [
        m.register_forward_pre_hook(recorder(name))
        for name, m in model.named_modules()
        if isinstance(m, MSDeformAttn)
    ]
    text = torch.randn(k, config.text_dim)
    try:
        with torch.inference_mode():
            model(torch.randn(image_shape(config)), text, text)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def export(call: AttentionCall, inputs: tuple[Tensor, ...], path: Path, opset: int) -> Path:
    """``call`` as an ONNX graph at ``opset``: DeformConv from DEFORM_CONV_OPSET on, GridSample below."""
    register_deform_conv()
    sampling = deform_conv_sampling(call) if opset >= DEFORM_CONV_OPSET else contextlib.nullcontext()
    with sampling, torch.no_grad():
        torch.onnx.export(
            call, inputs, str(path), dynamo=False, opset_version=opset, input_names=list(INPUTS)
        )
    return path


def _medians(runners: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median ms of each runner over ``runs`` rounds after 5 warm-up rounds, in a new order each round."""
    samples: dict[str, list[float]] = {label: [] for label in runners}
    order = list(runners)
    for run in range(runs + 5):
        random.Random(run).shuffle(order)  # a runtime's threads may still spin when the next one starts
        for label in order:
            start = time.perf_counter()
            runners[label]()
            if run >= 5:
                samples[label].append((time.perf_counter() - start) * 1000.0)
    return {label: statistics.median(v) for label, v in samples.items()}


def time_call(
    call: AttentionCall, inputs: tuple[Tensor, ...], graphs: dict[str, Path], runs: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms per runtime, and each graph's max |difference| from eager's output.

    Eager and the graphs take turns; eager with deform_conv2d is timed after them, alone, so that its long
    OpenMP loops do not run right before theirs."""
    feeds = {name: t.numpy() for name, t in zip(INPUTS, inputs, strict=True)}
    sessions = {
        label: ort.InferenceSession(str(path), node_like(THREADS), providers=["CPUExecutionProvider"])
        for label, path in graphs.items()
    }
    runners: dict[str, Callable[[], object]] = {
        label: (lambda s=s: s.run(None, feeds)) for label, s in sessions.items()
    }
    runners["eager"] = lambda: call(*inputs)
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with torch.inference_mode():
            expected = call(*inputs).numpy()
            ms = _medians(runners, runs)
            with deform_conv_sampling(call):
                ms |= _medians({"eager, deform_conv2d": lambda: call(*inputs)}, runs)
    finally:
        torch.set_num_threads(before)
    errors = {label: float(np.abs(s.run(None, feeds)[0] - expected).max()) for label, s in sessions.items()}
    return ms, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--k", type=int, default=50, help="vocabulary size (object and part names)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)

    lines = [
        "## Deformable attention: GridSample graph against DeformConv graph",
        "",
        f"Measured by `python -m benchmarks.deformable_sampling --k {args.k} --runs {args.runs} --write` on "
        f"{describe_cpu()} (onnxruntime {ort.__version__}, torch {torch.__version__}, {THREADS} threads "
        f"each); `{args.model.name}` at K = {args.k}: the first deformable attention module of each kind, "
        "exported alone at opset 18 (GridSample) and 19 (DeformConv) and timed beside PyTorch eager, median of "
        f"{args.runs} calls in ms. Max |diff| is each graph's largest difference from eager's output.",
        "",
        "| module | queries | PyTorch eager | PyTorch, deform_conv2d | ORT, GridSample | ORT, DeformConv "
        "| GridSample / DeformConv | max \\|diff\\| GridSample / DeformConv |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (call, inputs) in recorded_calls(args.model, args.k).items():
            graphs = {
                label: export(call, inputs, Path(tmp) / f"{name}.{opset}.onnx", opset)
                for label, opset in (("GridSample", 18), ("DeformConv", DEFORM_CONV_OPSET))
            }
            ms, errors = time_call(call, inputs, graphs, args.runs)
            lines.append(
                f"| `{name}` | {inputs[0].shape[1]} | {ms['eager']:.3f} | {ms['eager, deform_conv2d']:.3f} | "
                f"{ms['GridSample']:.3f} | "
                f"{ms['DeformConv']:.3f} | {ms['GridSample'] / ms['DeformConv']:.2f}x | "
                f"{errors['GridSample']:.1e} / {errors['DeformConv']:.1e} |"
            )
    report("\n".join(lines), "deformable-sampling", args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
