"""What object tracking adds per frame in the node: `ObjectTracker.update` on moving objects.

Each scene has N same-sized objects (half of them one label, half another) moving a few pixels per frame,
at the camera resolutions a robot uses; every object continues its track. With the default
`track_relabel_iou` each update compares every object with every live track; with 0 only with those of its
label: both are timed. Prints a table and, with --write, replaces this script's section of docs/BENCHMARKS.md.

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
from partglee_ros.runtime.tracking import ObjectTracker, TrackingConfig

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


def time_updates(frames: list[SegmentationResult], config: TrackingConfig) -> list[float]:
    """ms per update over the frames of one continuing scene after its first (made beforehand, not timed)."""
    count = len(frames[0].objects)
    tracker = ObjectTracker(config)
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
        "| image | objects | update (default) | update, same label only (`track_relabel_iou` 0) |",
        "|---|---|---|---|",
    ]
    for width, height in SIZES:
        for count in COUNTS:
            frames = [scene(width, height, count, step) for step in range(args.runs + 1)]
            cells = []
            for config in (TrackingConfig(), TrackingConfig(relabel_iou=0.0)):
                times = time_updates(frames, config)
                cells.append(f"{statistics.median(times):.2f} / {float(np.percentile(times, 95)):.2f}")
            lines.append(f"| {width}x{height} | {count} | {' | '.join(cells)} |")
    report("\n".join(lines), "bench-tracking", args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
