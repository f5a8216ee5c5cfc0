"""Where ONNX Runtime spends the default model's inference time, per operator type, with 1 and 2 threads.

Runs the exported graph (``MODEL/model.onnx``; export it with ``python -m engines.export_onnx --model MODEL``)
on random inputs with ORT's profiler on, once per thread count, and sums the kernel times per op type. The
1-thread column shows which operators use the second core at all; runs alternate between the thread counts. Prints a table and, with --write, replaces
this script's section of docs/BENCHMARKS.md.

    python -m benchmarks.ort_profile [--model models/default] [--k 50] [--runs 20] [--write]
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
import onnxruntime as ort

from benchmarks.machine import describe_cpu
from benchmarks.markdown_section import report
from benchmarks.session_options import node_like

REPO = Path(__file__).resolve().parents[1]
THREADS = (1, 2)


def session_with(graph: Path, threads: int, profiled: bool) -> ort.InferenceSession:
    options = node_like(threads)
    if profiled:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"partglee_ort{threads}")
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def op_times_ms(session: ort.InferenceSession, runs: int) -> tuple[Counter, Counter]:
    """(milliseconds per run, calls per run) for each op type from ORT's kernel timings, warm-up run dropped."""
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    first_timed = run_starts[1]
    total, calls = Counter(), Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_timed:
            total[e["args"]["op_name"]] += e["dur"] / 1000.0 / runs
            calls[e["args"]["op_name"]] += 1
    return total, Counter({op: n // runs for op, n in calls.items()})


def profile(graph: Path, k: int, runs: int) -> tuple[dict[int, tuple[Counter, Counter]], dict[int, float]]:
    """Per thread count: op-type times (profiled sessions) and the median wall-clock run time (unprofiled
    sessions, as the node runs them). All sessions take turns on the same random inputs, so they share the
    machine's load."""
    profiled = {t: session_with(graph, t, True) for t in THREADS}
    plain = {t: session_with(graph, t, False) for t in THREADS}
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in plain[THREADS[0]].get_inputs():
        shape = [k if isinstance(d, str) else d for d in spec.shape]
        feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    wall: dict[int, list[float]] = {t: [] for t in THREADS}
    for run in range(runs + 1):  # the first is a warm-up
        for t in THREADS:
            profiled[t].run(None, feeds)
            start = time.perf_counter()
            plain[t].run(None, feeds)
            if run:
                wall[t].append((time.perf_counter() - start) * 1000.0)
    ops = {t: op_times_ms(session, runs) for t, session in profiled.items()}
    return ops, {t: statistics.median(v) for t, v in wall.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--k", type=int, default=50, help="vocabulary size (object and part names)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    graph = args.model / "model.onnx"
    results, wall = profile(graph, args.k, args.runs)
    times = {t: r[0] for t, r in results.items()}
    calls = results[THREADS[-1]][1]
    ops = [op for op, _ in times[THREADS[-1]].most_common(args.top)]
    lines = [
        "## ONNX Runtime time per operator type",
        "",
        f"Measured by `python -m benchmarks.ort_profile --k {args.k} --runs {args.runs} --write` on "
        f"{describe_cpu()} (onnxruntime {ort.__version__}); `{graph.relative_to(REPO) if graph.is_relative_to(REPO) else graph}`, "
        f"random inputs, K = {args.k}. Kernel times from ORT's profiler, ms per run (mean of {args.runs}); "
        "the ratio shows which operators use the second thread.",
        "",
        "| op type | calls | 1 thread (ms) | 2 threads (ms) | 1 / 2 threads |",
        "|---|---|---|---|---|",
    ]
    for op in ops:
        one, two = times[1][op], times[2][op]
        lines.append(f"| {op} | {calls[op]} | {one:.2f} | {two:.2f} | {one / two:.2f}x |")
    rest = {t: sum(v for op, v in times[t].items() if op not in ops) for t in THREADS}
    lines.append(f"| other | | {rest[1]:.2f} | {rest[2]:.2f} | {rest[1] / rest[2]:.2f}x |")
    sums = {t: sum(times[t].values()) for t in THREADS}
    lines.append(f"| **all kernels** | | {sums[1]:.2f} | {sums[2]:.2f} | {sums[1] / sums[2]:.2f}x |")
    lines += [
        "",
        f"Wall-clock per run without the profiler (median of {args.runs}): 1 thread {wall[1]:.1f} ms, "
        f"2 threads {wall[2]:.1f} ms ({wall[1] / wall[2]:.2f}x from the second core).",
    ]
    report("\n".join(lines), "ort-profile", args.write)


if __name__ == "__main__":
    main()
