"""Score a run against ground truth and write the report: Markdown, metrics JSON and PNG figures.

Metrics are exactly `training.evaluation.report.evaluate` over the frames that have both a result and
ground truth, with the part mIoU over the vocabulary's part classes as a dataset evaluation has them, so a
bag evaluation and a dataset evaluation of the same images give the same numbers, except box AP: a bag
scores the boxes the node publishes, the tight boxes of the masks (offline mode converts its results so).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from partglee_ros import strict_json  # noqa: E402
from partglee_ros.bag.outcome import EvaluationRun  # noqa: E402
from partglee_ros.bag.segmentation_msgs import annotation_as_result  # noqa: E402
from partglee_ros.runtime.overlay import draw_overlay  # noqa: E402
from partglee_ros.runtime.result import SegmentationResult  # noqa: E402
from partglee_ros.runtime.vocabulary import Vocabulary  # noqa: E402
from training.data.hierarchy import ImageAnnotation, part_label  # noqa: E402
from training.evaluation.part_miou import occurring_part_labels  # noqa: E402
from training.evaluation.report import evaluate, metrics_to_markdown  # noqa: E402
from training.evaluation.split import CategorySplit  # noqa: E402
from training.evaluation.tracking import tracking_metrics, tracking_to_markdown  # noqa: E402


def scored_pairs(
    run: EvaluationRun, gts: dict[int, ImageAnnotation]
) -> tuple[list[ImageAnnotation], list[SegmentationResult]]:
    """Ground truth and result of each answered frame that has ground truth. ValueError naming the stamps
    where the two differ in size (the evaluators could only name a position among the scored frames)."""
    pairs = [(f.stamp_ns, gts[f.stamp_ns], f.result) for f in run.answered if f.stamp_ns in gts]
    wrong = [
        f"{stamp} ns (ground truth {g.width}x{g.height}, frame {p.width}x{p.height})"
        for stamp, g, p in pairs
        if (g.height, g.width) != (p.height, p.width)
    ]
    if wrong:
        raise ValueError(
            f"ground truth and frame differ in size at {len(wrong)} stamp(s): {', '.join(wrong[:3])}"
            f"{' ...' if len(wrong) > 3 else ''}; is the ground truth of another camera or resolution?"
        )
    return [g for _, g, _ in pairs], [p for _, _, p in pairs]


def part_classes(
    vocabulary: Vocabulary, gts: list[ImageAnnotation], preds: list[SegmentationResult]
) -> list[str]:
    """The part mIoU class set: every "obj:part" the vocabulary allows (as a dataset evaluation passes it;
    with only the labels that occur, Oracle-Obj would drop a wrong part and score the one under it), plus
    ground-truth labels outside it (parts the model was not asked for: missed) and predicted ones (a node
    that kept its own vocabulary)."""
    allowed = {part_label(o, p) for o in vocabulary.objects for p in vocabulary.allowed_parts(o)}
    return sorted(allowed | occurring_part_labels(gts, preds))


def score(
    run: EvaluationRun,
    gts: dict[int, ImageAnnotation],
    split: CategorySplit | None = None,
    vocabulary: Vocabulary | None = None,
) -> dict | None:
    """evaluate() over the answered frames that have ground truth; None when there are none. Part mIoU is
    over ``vocabulary``'s part classes (part_classes; without one, the labels that occur). Where the ground
    truth carries track ids, "tracking" adds how well the results' track ids follow them over every frame
    with ground truth, in bag order (a frame without a result misses all its objects; one whose header could
    not be read has no stamp to find its ground truth by and is left out)."""
    g, p = scored_pairs(run, gts)
    if not g:
        return None
    metrics = evaluate(g, p, split, part_classes(vocabulary, g, p) if vocabulary is not None else None)
    sequence, seen = [], set()
    for frame in run.frames:  # a repeated stamp is an error frame, not a second look at its ground truth
        if frame.stamp_ns in gts and frame.stamp_ns not in seen:
            sequence.append(frame)
            seen.add(frame.stamp_ns)
    tracking = tracking_metrics([gts[f.stamp_ns] for f in sequence], [f.result for f in sequence])
    if tracking is not None:
        metrics["tracking"] = tracking
    return metrics


def latency_summary(run: EvaluationRun) -> dict[str, float]:
    values = np.array([f.latency_ms for f in run.answered if f.latency_ms is not None])
    if values.size == 0:
        return {}
    out = {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)}
    return out | {"mean": float(values.mean()), "max": float(values.max()), "count": int(values.size)}


def _latency_histogram(run: EvaluationRun, path: Path) -> None:
    values = [f.latency_ms for f in run.answered if f.latency_ms is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=min(30, max(5, len(values) // 2)), color="#4477aa")
    label = "Segmenter time per frame" if run.mode == "offline" else "end-to-end latency (publish -> result)"
    ax.set(xlabel=f"{label} [ms]", ylabel="frames", title=f"{run.mode}: {len(values)} frames")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _per_class_plot(metrics: dict, path: Path) -> None:
    levels = [("object", "objects"), ("part", "parts (object:part)")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 + 0.28 * max(4, _longest(metrics, levels))))
    for ax, (key, title) in zip(axes, levels, strict=True):
        names = sorted(metrics[key]["segm"]["per_category"])
        y = np.arange(len(names))
        for offset, iou_type, color in ((-0.2, "bbox", "#4477aa"), (0.2, "segm", "#ee6677")):
            values = [metrics[key][iou_type]["per_category"].get(n, math.nan) for n in names]
            ax.barh(y + offset, np.nan_to_num(values), height=0.4, color=color, label=f"{iou_type} AP")
        ax.set(yticks=y, yticklabels=names, xlim=(0, 1), title=title, xlabel="AP (IoU 0.50:0.95)")
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _longest(metrics: dict, levels: list[tuple[str, str]]) -> int:
    return max(len(metrics[key]["segm"]["per_category"]) for key, _ in levels)


def _overlays(run: EvaluationRun, gts: dict[int, ImageAnnotation], out: Path) -> list[Path]:
    """Prediction (left) beside ground truth (right, when known) for the frames kept for overlays."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in run.frames:
        rgb = run.overlay_images.get(f.index)
        if rgb is None or f.result is None:
            continue
        panels = [draw_overlay(rgb, f.result)]
        gt = gts.get(f.stamp_ns)
        if gt is not None and (gt.height, gt.width) == rgb.shape[:2]:  # another size: the warnings say so
            panels.append(draw_overlay(rgb, annotation_as_result(gt)))
        path = out / f"frame_{f.index:05d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(np.hstack(panels), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def write_report(
    run: EvaluationRun,
    gts: dict[int, ImageAnnotation],
    metrics: dict | None,
    vocabulary: Vocabulary,
    out: Path,
    command: str,
    results_bag: Path | None,
) -> Path:
    """report.md, metrics.json, latency_histogram.png, per_class_ap.png, overlays/*.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    latency = latency_summary(run)
    with_gt = sum(1 for f in run.answered if f.stamp_ns in gts)
    lines = [f"# Bag evaluation: {run.mode} mode", "", f"Command: `{command}`", ""]
    if run.log.fatal:
        lines += [
            f"**INCOMPLETE — reading stopped:** {run.log.fatal}. Results below cover the frames before it.",
            "",
        ]
    lines += [
        "| | |",
        "|---|---|",
        f"| bag | `{run.bag}` |",
        f"| image topic | `{run.image_topic}` |",
        f"| frames read | {len(run.frames)} |",
        f"| frames with a result | {len(run.answered)} |",
        f"| frames with errors | {len(run.log.frame_errors)} |",
        f"| frames dropped (no result) | {len(run.dropped)} |",
        f"| frames scored (result + ground truth) | {with_gt} |",
        f"| vocabulary | {len(vocabulary.objects)} objects: {', '.join(vocabulary.objects)}; "
        f"{len(vocabulary.parts)} parts: {', '.join(vocabulary.parts)}"
        + "".join(f"; {o}: {', '.join(p)}" for o, p in vocabulary.object_parts.items())
        + " |",
    ]
    if results_bag is not None:
        lines.append(f"| results bag | `{results_bag}` |")
    lines += [f"| note | {n} |" for n in run.notes] + [f"| warning | {w} |" for w in run.log.warnings]
    if run.log.frame_errors:
        lines += ["", "Frame errors (first 10):", ""]
        lines += [f"- frame {i}: {e}" for i, e in run.log.frame_errors[:10]]
    if latency:
        what = (
            "Segmenter time per frame" if run.mode == "offline" else "End-to-end latency (publish → result)"
        )
        lines += [
            "",
            f"## {what}",
            "",
            "| frames | mean ms | p50 ms | p90 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|",
            f"| {latency['count']} | {latency['mean']:.1f} | {latency['p50']:.1f} | {latency['p90']:.1f} | "
            f"{latency['p99']:.1f} | {latency['max']:.1f} |",
            "",
            "![latency histogram](latency_histogram.png)",
        ]
        _latency_histogram(run, out / "latency_histogram.png")
    if metrics is not None:
        lines += ["", "## Metrics", "", metrics_to_markdown(metrics, per_category=True)]
        lines += ["![per-class AP](per_class_ap.png)"]
        _per_class_plot(metrics, out / "per_class_ap.png")
        if "tracking" in metrics:
            threshold = metrics["tracking"]["iou_threshold"]
            lines += [
                "",
                f"## Tracking (py-motmetrics; a match needs the same label and mask IoU >= {threshold:g}, "
                "the IoU alone in the rows with labels ignored)",
            ]
            lines += ["", tracking_to_markdown(metrics["tracking"])]
    elif with_gt:
        lines += ["", "No metrics: scoring failed (the warnings say why)."]
    else:
        lines += ["", "No frame has both a result and ground truth: no metrics."]
    overlays = _overlays(run, gts, out / "overlays")
    if overlays:
        lines += ["", "## Overlays (prediction | ground truth)", ""]
        lines += [f"![frame]({p.relative_to(out)})" for p in overlays]
    summary = {
        "mode": run.mode,
        "bag": run.bag,
        "image_topic": run.image_topic,
        "frames_read": len(run.frames),
        "frames_answered": len(run.answered),
        "frames_dropped": len(run.dropped),
        "frame_errors": run.log.frame_errors,
        "frames_scored": with_gt,
        "fatal_error": run.log.fatal,
        "warnings": run.log.warnings,
        "latency_ms": latency,
        "metrics": metrics,
    }
    (out / "metrics.json").write_text(strict_json.dumps(summary, indent=1))
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
