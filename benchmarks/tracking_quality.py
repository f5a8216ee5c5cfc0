"""How well the node's tracking follows the bundled model's objects: SynthParts orbit sequences, scored with
training/evaluation/tracking.py (py-motmetrics) with tracking on and off (off: every object a new identity in
every frame, what a planner had before track ids). Prints a table and, with --write, replaces this script's
section of docs/BENCHMARKS.md.

    python -m benchmarks.tracking_quality [--scenes 6] [--frames 12] [--orbit 2 6 12] [--track-iou 0.3 0.1]
        [--threshold 0.2] [--write]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.machine import describe_cpu
from benchmarks.markdown_section import report
from partglee_ros.bag.make_sample import sequence_scenes
from partglee_ros.runtime.factory import load_segmenter
from partglee_ros.runtime.postprocess import PostprocessConfig
from partglee_ros.runtime.tracking import ObjectTracker, TrackingConfig
from training.evaluation.tracking import tracking_metrics

REPO = Path(__file__).resolve().parents[1]


KEYS = ("ground_truth_objects", "predicted_objects", "misses", "id_switches", "false_positives")


def row(orbit: float, tracking: str, results: list[dict]) -> str:
    """One table row: counts summed over the sequences, IDF1 and MOTA from the summed counts."""
    t = {k: sum(r[k] for r in results) for k in KEYS}
    idtp = sum(r["IDF1"] * (r["ground_truth_objects"] + r["predicted_objects"]) / 2 for r in results)
    idf1 = 2 * idtp / (t["ground_truth_objects"] + t["predicted_objects"])
    mota = 1 - (t["misses"] + t["false_positives"] + t["id_switches"]) / t["ground_truth_objects"]
    return (
        f"| {orbit:g} | {tracking} | {t['ground_truth_objects']} | {t['predicted_objects']} | "
        f"{t['ground_truth_objects'] - t['misses']} | {idf1:.3f} | {t['id_switches']} | {mota:.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--scenes", type=int, default=6, help="test-split scenes, one sequence each")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument(
        "--orbit", type=float, nargs="+", default=[2.0, 6.0, 12.0], help="camera degrees per frame"
    )
    parser.add_argument(
        "--track-iou", type=float, nargs="+", default=[0.3, 0.1], help="tracker settings to compare"
    )
    parser.add_argument("--threshold", type=float, default=0.2, help="object and part score threshold")
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    post = PostprocessConfig(object_threshold=args.threshold, part_threshold=args.threshold)
    segmenter = load_segmenter(args.model, backend="auto", postprocess_config=post)
    command = (
        f"python -m benchmarks.tracking_quality --scenes {args.scenes} --frames {args.frames} --orbit "
        f"{' '.join(f'{o:g}' for o in args.orbit)} --track-iou {' '.join(f'{t:g}' for t in args.track_iou)} "
        f"--threshold {args.threshold:g} --write"
    )
    lines = [
        "## Tracking quality (SynthParts orbit sequences)",
        "",
        f"Measured by `{command}` on {describe_cpu()}: the bundled model (`{segmenter.backend.name}`), thresholds "
        f"{args.threshold:g}, `track_max_missed` 5. One sequence of {args.frames} frames per test-split scene "
        f"({args.scenes} scenes): the camera circles the table by the given angle per frame (at the sample bag's "
        "10 Hz, d degrees per frame are 10 d degrees per second). Counts summed over the sequences, IDF1 and MOTA "
        "from the sums. A match needs the same label and mask IoU >= 0.5. Untracked: every object a new identity "
        "in every frame, what a planner had before track ids.",
        "",
        "| degrees / frame | tracking (`track_iou`) | ground-truth objects | predicted | matched | IDF1 "
        "| identity switches | MOTA |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for orbit in args.orbit:
        runs: dict[str, list[dict]] = {"untracked": []} | {f"{iou:g}": [] for iou in args.track_iou}
        for index in range(args.scenes):
            scenes = sequence_scenes(args.frames, 320, 240, orbit_deg=orbit, index=index)
            objects = sorted({o.name for s in scenes for o in s.objects})
            parts = sorted({p.name for s in scenes for p in s.parts()})
            segmenter.set_vocabulary(objects, parts)
            preds = [segmenter.segment(s.image) for s in scenes]
            runs["untracked"].append(tracking_metrics(scenes, preds))
            for iou in args.track_iou:
                tracker = ObjectTracker(TrackingConfig(iou=iou))
                for pred in preds:  # sets every object's track_id anew
                    tracker.update(pred)
                runs[f"{iou:g}"].append(tracking_metrics(scenes, preds))
        lines += [row(orbit, name, results) for name, results in runs.items()]
    report("\n".join(lines), "tracking-quality", args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
