"""GridSample: ONNX Runtime's CPU kernel against PyTorch's, at the shapes the model calls it with.

In PyTorch, and in an ONNX export at opset 17 or 18, deformable attention samples every feature level with
one GridSample per layer and level; the default export (opset 19) uses DeformConv instead, because of what
this shows. This records the (input, grid) shapes of every ``grid_sample`` call in one forward pass of the
model, then times each shape alone: a one-node ONNX graph in ONNX Runtime and ``F.grid_sample`` in PyTorch,
1 and 2 threads, runs interleaved. The sum over the calls is the sampling time of one frame in each runtime, which shows how much
of the gap between ONNX Runtime and PyTorch eager the sampling kernel accounts for. Prints a table and, with
--write, replaces this script's section of docs/BENCHMARKS.md.

    python -m benchmarks.grid_sample_kernels [--model models/default] [--k 50] [--runs 50] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from benchmarks.machine import describe_cpu
from benchmarks.markdown_section import report
from benchmarks.session_options import node_like
from engines.export_onnx import image_shape
from partglee_ros.config import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
THREADS = (1, 2)
Shape = tuple[int, ...]


def recorded_calls(model_dir: Path, k: int) -> Counter[tuple[Shape, Shape]]:
    """(input shape, grid shape) -> number of calls in one forward pass, at the exported input size."""
    model, config = load_checkpoint(model_dir)
    model.eval()
    calls: Counter[tuple[Shape, Shape]] = Counter()
    real = F.grid_sample

    def recording(x: torch.Tensor, grid: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        calls[(tuple(x.shape), tuple(grid.shape))] += 1
        return real(x, grid, *args, **kwargs)

    text = torch.randn(k, config.text_dim)
    with torch.inference_mode(), mock.patch.object(F, "grid_sample", recording):
        model(torch.randn(image_shape(config)), text, text)
    return calls


def ort_grid_sample(x_shape: Shape, grid_shape: Shape, threads: int) -> ort.InferenceSession:
    """A one-node graph with the model's GridSample attributes (bilinear, zeros, align_corners=0)."""
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode="linear", padding_mode="zeros")
    graph = helper.make_graph(
        [node],
        "grid_sample",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape)),
            helper.make_tensor_value_info("grid", TensorProto.FLOAT, list(grid_shape)),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    return ort.InferenceSession(
        model.SerializeToString(), node_like(threads), providers=["CPUExecutionProvider"]
    )


def timed(fn: Callable[[], object], sink: list[float]) -> None:
    """Run ``fn`` once and append its wall time in ms to ``sink``."""
    start = time.perf_counter()
    fn()
    sink.append((time.perf_counter() - start) * 1000.0)


def time_shape(x_shape: Shape, grid_shape: Shape, runs: int) -> dict[tuple[str, int], float]:
    """Median ms of one call per (runtime, threads); the four take turns so they share the machine's load."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    grid = rng.uniform(-1.0, 1.0, grid_shape).astype(np.float32)  # the model's samples mostly fall inside
    sessions = {t: ort_grid_sample(x_shape, grid_shape, t) for t in THREADS}
    xt, gt = torch.from_numpy(x), torch.from_numpy(grid)
    timings: dict[tuple[str, int], list[float]] = {
        (r, t): [] for r in ("onnxruntime", "torch") for t in THREADS
    }
    before = torch.get_num_threads()
    try:
        for run in range(runs + 5):  # 5 warm-up runs
            for t in THREADS:
                sink = [] if run < 5 else timings[("onnxruntime", t)]
                timed(lambda t=t: sessions[t].run(None, {"x": x, "grid": grid}), sink)
                torch.set_num_threads(t)
                sink = [] if run < 5 else timings[("torch", t)]
                timed(lambda: F.grid_sample(xt, gt, mode="bilinear", align_corners=False), sink)
    finally:
        torch.set_num_threads(before)
    return {key: statistics.median(v) for key, v in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--k", type=int, default=50, help="vocabulary size (object and part names)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    calls = recorded_calls(args.model, args.k)
    lines = [
        "## GridSample: ONNX Runtime's kernel against PyTorch's",
        "",
        f"Measured by `python -m benchmarks.grid_sample_kernels --k {args.k} --runs {args.runs} --write` on "
        f"{describe_cpu()} (onnxruntime {ort.__version__}, onnx {onnx.__version__}, torch "
        f"{torch.__version__}); the shapes of every `grid_sample` call in one forward pass of "
        f"`{args.model.name}` at K = {args.k}, each timed alone (median of {args.runs} calls, in ms).",
        "",
        "| input (N, C, H, W) | grid (N, H_out, W_out, 2) | calls | ORT 1 thread | ORT 2 threads "
        "| PyTorch 1 thread | PyTorch 2 threads | ORT / PyTorch, 2 threads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    totals: Counter[tuple[str, int]] = Counter()
    for (x_shape, grid_shape), n in sorted(calls.items(), key=lambda c: -np.prod(c[0][1])):
        t = time_shape(x_shape, grid_shape, args.runs)
        for key, ms in t.items():
            totals[key] += n * ms
        lines.append(
            f"| {x_shape} | {grid_shape} | {n} | {t['onnxruntime', 1]:.3f} | {t['onnxruntime', 2]:.3f} | "
            f"{t['torch', 1]:.3f} | {t['torch', 2]:.3f} | {t['onnxruntime', 2] / t['torch', 2]:.1f}x |"
        )
    lines.append(
        f"| **per frame** | | {sum(calls.values())} | {totals['onnxruntime', 1]:.2f} | "
        f"{totals['onnxruntime', 2]:.2f} | {totals['torch', 1]:.2f} | {totals['torch', 2]:.2f} | "
        f"{totals['onnxruntime', 2] / totals['torch', 2]:.1f}x |"
    )
    report("\n".join(lines), "grid-sample", args.write)


if __name__ == "__main__":
    main()
