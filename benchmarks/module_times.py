"""Where ONNX Runtime gains over PyTorch eager: inference time per model module, both runtimes, one run.

PyTorch eager: wall time of each module's forward (hooks on the model's modules two levels deep, e.g.
``pixel_decoder.layers.0``; a top-level module's own work outside those children is its "rest"). ONNX
Runtime: its profiler's kernel times, each kernel assigned to the module its node came from. ORT's graph
optimizer fuses nodes and renames them, so a kernel is placed through the optimized graph: by its own name,
else the names of its tensors, else the module of the node that produced its input. Both run with 2 threads
and take turns on the same random inputs. The profiler's kernel times add up to more than ORT's unprofiled wall
time (both totals are printed), so the per-module ratios understate ORT's gain by about that factor; what the
table shows is where the gain is and where it is not. Prints a table and, with --write, replaces this
script's section of docs/BENCHMARKS.md.

    python -m benchmarks.module_times [--model models/default] [--k 50] [--runs 20] [--write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from benchmarks.machine import describe_cpu
from benchmarks.markdown_section import report
from benchmarks.session_options import node_like
from engines.export_onnx import image_shape
from partglee_ros.config import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
THREADS = 2


def module_of(tensor_or_node: str, model: nn.Module) -> str | None:
    """'/model/pixel_decoder/layers.0/...' -> 'pixel_decoder.layers.0' (or 'pixel_decoder (rest)' when the
    second level is not a submodule); None for names outside the model's scopes."""
    parts = tensor_or_node.split("/")
    if len(parts) < 4 or parts[1] != "model":
        return None
    top, child = parts[2], parts[3]
    if not hasattr(model, top):
        return None
    try:
        model.get_submodule(f"{top}.{child}")
    except AttributeError:
        return f"{top} (rest)"
    return f"{top}.{child}"


def ort_sessions(graph: Path, tmp: Path) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    """(plain, profiled) sessions; the profiled one saves its optimized graph in ``tmp``."""
    options = node_like(THREADS)
    plain = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / "ort")
    options.optimized_model_filepath = str(tmp / "optimized.onnx")
    return plain, ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def place_nodes(graph: onnx.ModelProto, model: nn.Module) -> dict[str, str | None]:
    """Module of every node of ORT's optimized graph (see the module docstring)."""
    producer = {out: node for node in graph.graph.node for out in node.output}
    placed: dict[str, str | None] = {}

    def place(node: onnx.NodeProto, depth: int = 0) -> str | None:
        if node.name not in placed:
            names = [node.name, *node.output, *node.input]
            found = next((m for m in (module_of(n, model) for n in names) if m), None)
            if found is None and depth < 32:  # deep chains of unnamed nodes: give up rather than recurse
                upstream = (place(producer[i], depth + 1) for i in node.input if i in producer)
                found = next((m for m in upstream if m), None)
            placed[node.name] = found
        return placed[node.name]

    for node in graph.graph.node:
        place(node)
    return placed


def kernel_ms_per_module(events: list[dict], placed: dict[str, str | None], runs: int) -> Counter:
    """Profiled kernel ms per run for each module, the warm-up run left out."""
    first_timed = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")[1]
    times: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_timed:
            times[placed.get(e["name"].removesuffix("_kernel_time")) or "not placed"] += (
                e["dur"] / 1000.0 / runs
            )
    return times


def hook_modules(model: nn.Module, names: list[str], spent: Counter) -> list:
    """Add each named module's forward wall time (ms) to ``spent``; returns the hook handles."""
    hooks = []
    for name in names:
        started: list[float] = []
        module = model.get_submodule(name)
        hooks.append(module.register_forward_pre_hook(lambda *_, s=started: s.append(time.perf_counter())))
        hooks.append(
            module.register_forward_hook(
                lambda *_, s=started, n=name: spent.update({n: (time.perf_counter() - s.pop()) * 1000.0})
            )
        )
    return hooks


def measure(graph: Path, model: nn.Module, feeds: dict, runs: int) -> tuple[Counter, Counter, dict]:
    """(eager ms per module, ORT kernel ms per module, totals); the three runs of each round take turns."""
    inputs = tuple(torch.from_numpy(feeds[k]) for k in ("image", "object_text", "part_text"))
    with tempfile.TemporaryDirectory() as tmp:
        plain, profiled = ort_sessions(graph, Path(tmp))
        placed = place_nodes(onnx.load(str(Path(tmp) / "optimized.onnx")), model)
        modules = sorted({m for m in placed.values() if m and not m.endswith("(rest)")})
        tops = sorted({m.split(".")[0].removesuffix(" (rest)") for m in placed.values() if m})
        spent: Counter = Counter()
        hooks = hook_modules(model, [*modules, *tops], spent)
        wall: dict[str, list[float]] = {"eager": [], "ort": []}
        torch.set_num_threads(THREADS)
        with torch.inference_mode():
            for run in range(runs + 1):  # the first is a warm-up
                profiled.run(None, feeds)
                for name, step in (
                    ("ort", lambda: plain.run(None, feeds)),
                    ("eager", lambda: model(*inputs)),
                ):
                    start = time.perf_counter()
                    step()
                    wall[name].append((time.perf_counter() - start) * 1000.0)
                if run == 0:
                    spent.clear()
        for hook in hooks:
            hook.remove()
        ort_ms = kernel_ms_per_module(json.loads(Path(profiled.end_profiling()).read_text()), placed, runs)
    eager = Counter({name: ms / runs for name, ms in spent.items()})
    for top in tops:  # a top-level module's own work outside its listed children
        eager[f"{top} (rest)"] = eager.pop(top) - sum(eager[m] for m in modules if m.startswith(f"{top}."))
    totals = {name: statistics.median(v[1:]) for name, v in wall.items()} | {"kernels": sum(ort_ms.values())}
    return eager, ort_ms, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--k", type=int, default=50, help="vocabulary size (object and part names)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    model, config = load_checkpoint(args.model)
    model.eval()
    rng = np.random.default_rng(0)
    feeds = {
        "image": rng.standard_normal(image_shape(config)).astype(np.float32),
        "object_text": rng.standard_normal((args.k, config.text_dim)).astype(np.float32),
        "part_text": rng.standard_normal((args.k, config.text_dim)).astype(np.float32),
    }
    eager, ort_ms, totals = measure(args.model / "model.onnx", model, feeds, args.runs)
    lines = [
        "## Inference time per module: PyTorch eager against ONNX Runtime",
        "",
        f"Measured by `python -m benchmarks.module_times --k {args.k} --runs {args.runs} --write` on "
        f"{describe_cpu()} (torch {torch.__version__}, onnxruntime {ort.__version__}, {THREADS} threads "
        f"each); `{args.model.name}`, random inputs, K = {args.k}; ms per run, mean of {args.runs}. Eager: "
        "module wall time; ORT: profiled kernel time placed on modules (how: the script's docstring).",
        "",
        "| module | PyTorch eager | ONNX Runtime kernels | eager / ORT |",
        "|---|---|---|---|",
    ]
    for name in sorted(set(eager) | set(ort_ms), key=lambda n: -eager.get(n, 0.0)):
        e, o = eager.get(name, 0.0), ort_ms.get(name, 0.0)
        lines.append(f"| {name} | {e:.2f} | {o:.2f} | {f'{e / o:.2f}x' if o > 0.05 and e > 0 else '-'} |")
    lines += [
        "",
        f"Medians: eager {totals['eager']:.1f} ms end-to-end, ORT {totals['ort']:.1f} ms wall without the "
        f"profiler ({totals['eager'] / totals['ort']:.2f}x); ORT's profiled kernels add up to "
        f"{totals['kernels']:.1f} ms, so its column is ~{totals['kernels'] / totals['ort']:.2f}x its real "
        "share and the ratios understate ORT's gain by about that factor.",
    ]
    report("\n".join(lines), "module-times", args.write)


if __name__ == "__main__":
    main()
