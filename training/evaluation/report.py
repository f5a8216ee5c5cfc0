"""One call for every metric of a prediction set, and its Markdown rendering for reports and model card."""

from __future__ import annotations

import math
from collections.abc import Sequence

from partglee_ros.runtime.result import SegmentationResult
from training.data.hierarchy import ImageAnnotation
from training.evaluation.coco_ap import instance_ap
from training.evaluation.consistency import hierarchy_consistency
from training.evaluation.oracle_obj import OracleObjPartMIoU
from training.evaluation.part_miou import SETTINGS, semantic_part_miou
from training.evaluation.split import CategorySplit

_AP_COLUMNS = [(t, k) for t in ("bbox", "segm") for k in ("AP", "AP50", "AP75")]
_ROWS = [
    ("object", "objects"),
    ("part", "parts (object:part)"),
    ("part_name", "parts (generic name)"),
    ("part_hierarchical", "parts (PACO obj-part hierarchical)"),
]


def evaluate(
    gts: Sequence[ImageAnnotation],
    preds: Sequence[SegmentationResult],
    split: CategorySplit | None = None,
    part_classes: Sequence[str] | None = None,
    oracle: OracleObjPartMIoU | None = None,
) -> dict:
    """COCO box/mask AP at every level (+ base/novel with a split), part mIoU, and hierarchy consistency.
    ``gts[i]`` and ``preds[i]`` must describe the same image. ``part_classes``: the "obj:part" labels the
    model was asked for, scored in every mIoU setting (see ``semantic_part_miou``). Part mIoU comes in the
    settings of instance predictions (Pred-All, Oracle-Obj over the kept parts) and, given ``oracle`` (fed
    the same images' raw outputs), the papers' Oracle-Obj."""
    out = instance_ap(gts, preds, split)
    out["part_miou"] = {
        s: semantic_part_miou(gts, preds, split, setting=s, classes=part_classes) for s in SETTINGS
    }
    if oracle is not None:
        out["part_miou"]["oracle_obj"] = oracle.compute()
    out["hierarchy_consistency"] = hierarchy_consistency(preds)
    return out


def format_metric(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _ap_row(label: str, block: dict) -> str:
    return f"| {label} | " + " | ".join(format_metric(block[t][k]) for t, k in _AP_COLUMNS) + " |"


def metrics_to_markdown(metrics: dict, per_category: bool = False) -> str:
    """Render :func:`evaluate`'s dict as Markdown tables (fractions, 3 decimals; n/a = undefined)."""
    lines = [
        "| Category level | box AP | box AP50 | box AP75 | mask AP | mask AP50 | mask AP75 |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_ap_row(label, metrics[key]) for key, label in _ROWS]
    for subset in ("base", "novel"):
        if subset in metrics:
            lines += [
                _ap_row(f"{label} — {subset}", metrics[subset][key])
                for key, label in _ROWS
                if key in metrics[subset]
            ]
    if "part_miou" in metrics:
        lines += [
            "",
            "| Part mIoU setting | mIoU | mIoU seen | mIoU unseen | hIoU |",
            "|---|---|---|---|---|",
        ]
        for setting, m in metrics["part_miou"].items():
            values = " | ".join(format_metric(m[k]) for k in ("mIoU", "mIoU_seen", "mIoU_unseen", "hIoU"))
            lines.append(f"| {setting} | {values} |")
    if "operating_points" in metrics["object"]["segm"]:
        lines += [
            "",
            "Operating points: precision / recall / F1 of the masks scoring at least the threshold, every "
            "category pooled, matched as COCOeval matches them at mask IoU 0.5.",
            "",
            "| score threshold | objects: precision | recall | F1 | parts (object:part): precision | recall | F1 |",
            "|---|---|---|---|---|---|---|",
        ]
        for obj, part in zip(
            metrics["object"]["segm"]["operating_points"],
            metrics["part"]["segm"]["operating_points"],
            strict=True,
        ):
            cells = [format_metric(p[k]) for p in (obj, part) for k in ("precision", "recall", "f1")]
            lines.append(f"| {obj['threshold']:g} | " + " | ".join(cells) + " |")
    if "hierarchy_consistency" in metrics:
        hc = metrics["hierarchy_consistency"]
        lines += [
            "",
            f"Hierarchy consistency (part >= 95 % inside its parent) over {hc['num_parts']} predicted parts: "
            f"box {format_metric(hc['box'])}, mask {format_metric(hc['mask'])}.",
        ]
    if per_category:
        for key, label in _ROWS[:3]:
            names = sorted(
                set(metrics[key]["bbox"]["per_category"]) | set(metrics[key]["segm"]["per_category"])
            )
            lines += ["", f"| {label} | box AP | mask AP |", "|---|---|---|"]
            lines += [
                f"| {n} | {format_metric(metrics[key]['bbox']['per_category'].get(n, math.nan))} | "
                f"{format_metric(metrics[key]['segm']['per_category'].get(n, math.nan))} |"
                for n in names
            ]
    return "\n".join(lines) + "\n"
