"""SynthParts throughput (images/s at 320x240 and 640x480) and scene statistics, written to docs/DATA.md.

    .venv/bin/python -m benchmarks.bench_synthparts            # measure and update docs/DATA.md
    .venv/bin/python -m benchmarks.bench_synthparts --no-write # print only

Single process (what one data-loader worker gives) and one process per core (what a training loop with
``num_workers = cores`` can draw). Each timed run starts after a warm-up scene (texture loading).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import describe_cpu
from benchmarks.markdown_section import report
from training.data.synthparts import CATEGORIES, generate_scene

DOC = Path(__file__).resolve().parent.parent / "docs" / "DATA.md"


def _render(args: tuple[int, int, int]) -> int:
    seed, width, height = args
    return len(generate_scene(seed, width, height).objects)


def _warm(_: int) -> None:
    generate_scene(0, 64, 48)


def measure(width: int, height: int, num: int, processes: int) -> float:
    """Images per second over ``num`` scenes (seeds 10_000..) rendered by ``processes`` workers."""
    jobs = [(10_000 + i, width, height) for i in range(num)]
    if processes == 1:
        _warm(0)
        t0 = time.perf_counter()
        for job in jobs:
            _render(job)
        return num / (time.perf_counter() - t0)
    # one BLAS thread per worker, so N workers on N cores do not oversubscribe them
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    with mp.get_context("spawn").Pool(processes) as pool:
        pool.map(_warm, range(processes))
        t0 = time.perf_counter()
        pool.map(_render, jobs, chunksize=4)
        return num / (time.perf_counter() - t0)


def scene_statistics(num: int) -> list[str]:
    """Markdown lines: objects per scene, camera distance of object centres, parts shown, over seeds 0..num-1."""
    objects, dists, partial, parts = [], [], 0, 0
    for seed in range(num):
        scene = generate_scene(seed)
        objects.append(len(scene.objects))
        for obj in scene.objects:
            dists.append(float(np.linalg.norm(obj.pose.center)))
            partial += len(obj.parts) < len(CATEGORIES[obj.name])
            parts += len(obj.parts)
    p = np.percentile(dists, [0, 5, 50, 95, 100])
    return [
        f"Scene statistics over seeds 0-{num - 1} at 320x240:",
        "",
        "| annotated objects / scene (mean, min-max) | parts / object | objects missing some parts "
        "| camera distance of object centres, m (min / 5 % / median / 95 % / max) |",
        "|---|---|---|---|",
        f"| {np.mean(objects):.2f} ({min(objects)}-{max(objects)}) | {parts / len(dists):.2f} "
        f"| {100 * partial / len(dists):.0f} % | {' / '.join(f'{v:.2f}' for v in p)} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=100, help="scenes per 320x240 run (a quarter at 640x480)")
    parser.add_argument("--stats-scenes", type=int, default=200, help="scenes for the statistics table")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/DATA.md alone")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    for width, height, num in ((320, 240, args.num), (640, 480, max(args.num // 4, 8))):
        single = measure(width, height, num, 1)
        multi = measure(width, height, num, cores) if cores > 1 else single
        rows.append(f"| {width}x{height} | {num} | {single:.1f} | {multi:.1f} ({cores} processes) |")
    table = "\n".join(
        [
            f"Machine: {describe_cpu()} container, no GPU (Python {platform.python_version()}); "
            f"load average {os.getloadavg()[0]:.1f} at the end of the run "
            "(other jobs share these cores, so numbers are lower bounds).",
            "Command: `.venv/bin/python -m benchmarks.bench_synthparts`",
            "",
            "| size | scenes | images/s, 1 process | images/s, all cores |",
            "|---|---|---|---|",
            *rows,
            "",
            *scene_statistics(args.stats_scenes),
        ]
    )
    report(table, "bench-synthparts", not args.no_write, path=DOC)


if __name__ == "__main__":
    main()
