"""How well the node's tracking follows the bundled model's objects: SynthParts orbit sequences, scored with
training/evaluation/tracking.py (py-motmetrics) with tracking on and off (off: every object a new identity in
every frame, what a planner had before track ids). Prints a table and, with --write, replaces this script's
section of docs/BENCHMARKS.md.

    python -m benchmarks.tracking_quality [--scenes 6] [--frames 12] [--orbit 2 6 12]
        [--trackers 0.3:0 0.1:0 0.3:0.5] [--threshold 0.2] [--write]

A tracker is `TRACK_IOU[:RELABEL_IOU]` (the node's `track_iou` and `track_relabel_iou`; without the colon
labels never cross, `track_relabel_iou` 0: the node's default is 0.3:0.5).
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


KEYS = (
    "ground_truth_objects",
    "predicted_objects",
    "misses",
    "id_switches",
    "false_positives",
    "id_switches_any_label",
)


def _idf1(results: list[dict], key: str, objects: int) -> float:
    """IDF1 of the summed sequences: each sequence's identity true positives, IDF1 * (truth + predicted) / 2."""
    idtp = sum(r[key] * (r["ground_truth_objects"] + r["predicted_objects"]) / 2 for r in results)
    return 2 * idtp / objects


def row(orbit: float, tracking: str, results: list[dict]) -> str:
    """One table row: counts summed over the sequences, IDF1 and MOTA from the summed counts."""
    t = {k: sum(r[k] for r in results) for k in KEYS}
    objects = t["ground_truth_objects"] + t["predicted_objects"]
    mota = 1 - (t["misses"] + t["false_positives"] + t["id_switches"]) / t["ground_truth_objects"]
    return (
        f"| {orbit:g} | {tracking} | {t['ground_truth_objects']} | {t['predicted_objects']} | "
        f"{t['ground_truth_objects'] - t['misses']} | {_idf1(results, 'IDF1', objects):.3f} | "
        f"{t['id_switches']} | {mota:.3f} | {_idf1(results, 'IDF1_any_label', objects):.3f} | "
        f"{t['id_switches_any_label']} |"
    )


def tracker_config(spec: str) -> TrackingConfig:
    iou, _, relabel = spec.partition(":")
    return TrackingConfig(iou=float(iou), relabel_iou=float(relabel or 0.0))


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
        "--trackers",
        nargs="+",
        default=["0.3:0", "0.1:0", "0.3:0.5"],
        help="tracker settings to compare, TRACK_IOU[:RELABEL_IOU] each",
    )
    parser.add_argument("--threshold", type=float, default=0.2, help="object and part score threshold")
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    post = PostprocessConfig(object_threshold=args.threshold, part_threshold=args.threshold)
    segmenter = load_segmenter(args.model, backend="auto", postprocess_config=post)
    command = (
        f"python -m benchmarks.tracking_quality --scenes {args.scenes} --frames {args.frames} --orbit "
        f"{' '.join(f'{o:g}' for o in args.orbit)} --trackers {' '.join(args.trackers)} "
        f"--threshold {args.threshold:g} --write"
    )
    lines = [
        "## Tracking quality (SynthParts orbit sequences)",
        "",
        f"Measured by `{command}` on {describe_cpu()}: the bundled model (`{segmenter.backend.name}`), thresholds "
        f"{args.threshold:g}, `track_max_missed` 5. One sequence of {args.frames} frames per test-split scene "
        f"({args.scenes} scenes): the camera circles the table by the given angle per frame (at the sample bag's "
        "10 Hz, d degrees per frame are 10 d degrees per second). Counts summed over the sequences, IDF1 and MOTA "
        "from the sums. A match needs the same label and mask IoU >= 0.5; the last two columns score association "
        "alone, a match needing only the IoU. Untracked: every object a new identity in every frame, what a "
        "planner had before track ids. Tracking: `track_iou`, and after a colon `track_relabel_iou`.",
        "",
        "| degrees / frame | tracking | ground-truth objects | predicted | matched | IDF1 | identity switches "
        "| MOTA | IDF1, labels ignored | switches, labels ignored |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for orbit in args.orbit:
        runs: dict[str, list[dict]] = {"untracked": []} | {spec: [] for spec in args.trackers}
        for index in range(args.scenes):
            scenes = sequence_scenes(args.frames, 320, 240, orbit_deg=orbit, index=index)
            objects = sorted({o.name for s in scenes for o in s.objects})
            parts = sorted({p.name for s in scenes for p in s.parts()})
            segmenter.set_vocabulary(objects, parts)
            preds = [segmenter.segment(s.image) for s in scenes]
            runs["untracked"].append(tracking_metrics(scenes, preds))
            for spec in args.trackers:
                tracker = ObjectTracker(tracker_config(spec))
                for pred in preds:  # sets every object's track_id anew
                    tracker.update(pred)
                runs[spec].append(tracking_metrics(scenes, preds))
        lines += [row(orbit, name, results) for name, results in runs.items()]
    report("\n".join(lines), "tracking-quality", args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
