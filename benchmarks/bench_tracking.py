"""What object tracking adds per frame in the node: `ObjectTracker.update` on moving objects.

Each scene has N same-sized objects (half of them one label, half another) moving a few pixels per frame,
at the camera resolutions a robot uses; every object continues its track, so each update compares every
object with every live track of its label. Prints a table and, with --write, replaces this script's section
of docs/BENCHMARKS.md.

    python -m benchmarks.bench_tracking [--runs 200] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.machine import describe_cpu
from benchmarks.markdown_section import report
from partglee_ros.runtime.result import ObjectResult, SegmentationResult
from partglee_ros.runtime.tracking import ObjectTracker

SIZES = ((640, 480), (1280, 720))
COUNTS = (5, 20)


def scene(width: int, height: int, count: int, step: int) -> SegmentationResult:
    """`count` filled ellipses on a grid, two thirds of a grid cell wide, swinging right and back 3 px per step."""
    yy, xx = np.mgrid[:height, :width]
    cols = int(np.ceil(np.sqrt(count)))
    rx, ry = width / (3 * cols), height / (3 * cols)
    objects = []
    for i in range(count):
        cx = (i % cols + 0.5) * width / cols + 3 * abs(step % 40 - 20)
        cy = (i // cols + 0.5) * height / cols
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        box = np.array([cx - rx, cy - ry, cx + rx, cy + ry], np.float32)
        objects.append(ObjectResult(i + 1, "mug" if i % 2 else "bottle", 0.9, box, mask))
    return SegmentationResult(height, width, 1, objects)


def time_updates(width: int, height: int, count: int, runs: int) -> list[float]:
    """ms per update over `runs` frames of one continuing scene (frames made beforehand, not timed)."""
    frames = [scene(width, height, count, step) for step in range(runs + 1)]
    tracker = ObjectTracker()
    tracker.update(frames[0])
    times = []
    for frame in frames[1:]:
        start = time.perf_counter()
        tracker.update(frame)
        times.append((time.perf_counter() - start) * 1e3)
    assert tracker.active == count, "every object should continue its track"
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    lines = [
        "## Object tracking (`ObjectTracker.update` per frame)",
        "",
        f"Measured by `python -m benchmarks.bench_tracking --runs {args.runs} --write` on {describe_cpu()}. "
        "Every object continues its track; times in ms, median / p95.",
        "",
        "| image | objects | update |",
        "|---|---|---|",
    ]
    for width, height in SIZES:
        for count in COUNTS:
            times = time_updates(width, height, count, args.runs)
            p95 = float(np.percentile(times, 95))
            lines.append(f"| {width}x{height} | {count} | {statistics.median(times):.2f} / {p95:.2f} |")
    report("\n".join(lines), "bench-tracking", args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
