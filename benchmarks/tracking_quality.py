"""How well the node's tracking follows the bundled model's objects: SynthParts orbit sequences, scored with
training/evaluation/tracking.py (py-motmetrics) with tracking on and off (off: every object a new identity in
every frame, what a planner had before track ids). Prints a table and, with --write, replaces this script's
section of docs/BENCHMARKS.md.

    python -m benchmarks.tracking_quality [--scenes 6] [--frames 12] [--orbit 2 6] [--threshold 0.2] [--write]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.machine import describe_cpu
from benchmarks.markdown_section import report
from partglee_ros.bag.make_sample import sequence_scenes
from partglee_ros.runtime.factory import load_segmenter
from partglee_ros.runtime.postprocess import PostprocessConfig
from partglee_ros.runtime.tracking import ObjectTracker
from training.evaluation.tracking import tracking_metrics

REPO = Path(__file__).resolve().parents[1]


def sums(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) for k in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--scenes", type=int, default=6, help="test-split scenes, one sequence each")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--orbit", type=float, nargs="+", default=[2.0, 6.0], help="camera degrees per frame")
    parser.add_argument("--threshold", type=float, default=0.2, help="object and part score threshold")
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    post = PostprocessConfig(object_threshold=args.threshold, part_threshold=args.threshold)
    segmenter = load_segmenter(args.model, backend="auto", postprocess_config=post)
    lines = [
        "## Tracking quality (SynthParts orbit sequences)",
        "",
        f"Measured by `python -m benchmarks.tracking_quality --scenes {args.scenes} --frames {args.frames} "
        f"--orbit {' '.join(f'{o:g}' for o in args.orbit)} --threshold {args.threshold:g} --write` on "
        f"{describe_cpu()}: the bundled model (`{segmenter.backend.name}`), thresholds {args.threshold:g}, "
        "the node's default tracking (`track_iou` 0.3, `track_max_missed` 5). One sequence per test-split scene: "
        "the camera circles the table by the given angle per frame (at the sample bag's 10 Hz, d degrees per frame are "
        "10 d degrees per second). Summed over the sequences; IDF1 from the summed identity counts. A match needs the same label "
        "and mask IoU >= 0.5. Untracked: every object a new identity in every frame.",
        "",
        "| degrees / frame | ground-truth objects | predicted | matched | IDF1 tracked / untracked "
        "| identity switches tracked / untracked | MOTA |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = ("ground_truth_objects", "predicted_objects", "misses", "id_switches", "false_positives")
    for orbit in args.orbit:
        tracked, untracked = [], []
        for index in range(args.scenes):
            scenes = sequence_scenes(args.frames, 320, 240, orbit_deg=orbit, index=index)
            objects = sorted({o.name for s in scenes for o in s.objects})
            parts = sorted({p.name for s in scenes for p in s.parts()})
            segmenter.set_vocabulary(objects, parts)
            preds = [segmenter.segment(s.image) for s in scenes]
            untracked.append(tracking_metrics(scenes, preds))
            tracker = ObjectTracker()
            for pred in preds:
                tracker.update(pred)
            tracked.append(tracking_metrics(scenes, preds))
        t, u = sums(tracked, keys), sums(untracked, keys)
        matched = t["ground_truth_objects"] - t["misses"]
        idtp_t = sum(r["IDF1"] * (r["ground_truth_objects"] + r["predicted_objects"]) / 2 for r in tracked)
        idtp_u = sum(r["IDF1"] * (r["ground_truth_objects"] + r["predicted_objects"]) / 2 for r in untracked)
        total = t["ground_truth_objects"] + t["predicted_objects"]
        mota = 1 - (t["misses"] + t["false_positives"] + t["id_switches"]) / t["ground_truth_objects"]
        lines.append(
            f"| {orbit:g} | {t['ground_truth_objects']:.0f} | {t['predicted_objects']:.0f} | {matched:.0f} | "
            f"{2 * idtp_t / total:.3f} / {2 * idtp_u / total:.3f} | {t['id_switches']:.0f} / "
            f"{u['id_switches']:.0f} | {mota:.3f} |"
        )
    report("\n".join(lines), "tracking-quality", args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
