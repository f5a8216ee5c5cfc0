"""How well track ids follow objects through a sequence: CLEAR MOT and identity metrics by py-motmetrics.

Each frame's ground-truth objects with a track id are matched to the predicted objects of the same label by
mask IoU (pycocotools); pairs below `iou_threshold` may not match. motmetrics then does the rest exactly as
in the MOT benchmarks: MOTA (misses, false positives and identity switches against the ground truth),
IDF1 (the share of detections whose identity agrees under the best one-to-one track correspondence over the
whole sequence), switches and fragmentations. Frames are scored in the order given, so pass them as the
camera saw them. Association is also scored with labels ignored (`IDF1_any_label`, `id_switches_any_label`:
a match needs only the IoU), as TETA separates association from classification: a track that keeps its id
while the detector wavers between two names for one object is a kept identity there, where the labelled
scores see a miss and a false positive in the wavering frame whatever its id.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from partglee_ros.runtime.result import SegmentationResult
from training.data.hierarchy import ImageAnnotation
from training.evaluation.report import format_metric

IOU_THRESHOLD = 0.5
# motmetrics name -> key in the result
METRICS = {
    "num_frames": "frames",
    "num_unique_objects": "ground_truth_tracks",
    "num_objects": "ground_truth_objects",
    "num_predictions": "predicted_objects",
    "mota": "MOTA",
    "motp": "MOTP_iou",
    "idf1": "IDF1",
    "idp": "IDP",
    "idr": "IDR",
    "num_switches": "id_switches",
    "num_fragmentations": "fragmentations",
    "mostly_tracked": "mostly_tracked",
    "mostly_lost": "mostly_lost",
    "num_misses": "misses",
    "num_false_positives": "false_positives",
}


def _rles(masks: list[np.ndarray]) -> list[dict]:
    return [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


def _distances(
    truth: ImageAnnotation, pred: SegmentationResult, iou_threshold: float
) -> dict[bool, np.ndarray]:
    """1 - mask IoU, [truth, predicted], with labels (key True) and without (False): NaN (may not match)
    below the threshold and, with labels, across labels. The IoU is computed once for both."""
    gts = [o for o in truth.objects if o.track_id]
    out = {labels: np.full((len(gts), len(pred.objects)), np.nan) for labels in (True, False)}
    if not gts or not pred.objects:
        return out
    iou = mask_utils.iou(_rles([o.mask for o in pred.objects]), _rles([o.mask for o in gts]), [0] * len(gts))
    iou = np.asarray(iou).T
    close = iou >= iou_threshold
    same = np.array([[g.name == p.label for p in pred.objects] for g in gts])
    for labels, ok in ((True, close & same), (False, close)):
        out[labels][ok] = 1.0 - iou[ok]
    return out


def has_tracks(truth: Sequence[ImageAnnotation]) -> bool:
    return any(o.track_id for ann in truth for o in ann.objects)


def tracking_metrics(
    truth: Sequence[ImageAnnotation],
    preds: Sequence[SegmentationResult | None],
    iou_threshold: float = IOU_THRESHOLD,
) -> dict | None:
    """Metrics of `preds[i]` (None: no result for that frame, all its objects missed) against `truth[i]`,
    frame by frame in order; None when the ground truth carries no track ids. Predictions without a track
    id (tracking off) each count as a new identity. MOTP_iou is the mean IoU of matched pairs."""
    if len(truth) != len(preds):
        raise ValueError(f"{len(truth)} ground-truth frames but {len(preds)} predictions")
    if not has_tracks(truth):
        return None
    import motmetrics as mm  # pandas with it: only where tracking is scored

    accumulators = {True: mm.MOTAccumulator(auto_id=True), False: mm.MOTAccumulator(auto_id=True)}
    untracked = itertools.count(-1, -1)  # distinct ids for objects without a track id
    for ann, pred in zip(truth, preds, strict=True):
        pred = pred or SegmentationResult(ann.height, ann.width, 0)
        gt_ids = [o.track_id for o in ann.objects if o.track_id]
        pred_ids = [o.track_id or next(untracked) for o in pred.objects]
        distances = _distances(ann, pred, iou_threshold)
        for labels, accumulator in accumulators.items():
            accumulator.update(gt_ids, pred_ids, distances[labels])
    metrics = mm.metrics.create()
    summary = metrics.compute(accumulators[True], metrics=list(METRICS), name="run")
    out = {key: summary[name].iloc[0].item() for name, key in METRICS.items()}
    out["MOTP_iou"] = 1.0 - out["MOTP_iou"]  # motmetrics averages the distance, 1 - IoU
    agnostic = metrics.compute(accumulators[False], metrics=["idf1", "num_switches"], name="run")
    out["IDF1_any_label"] = agnostic["idf1"].iloc[0].item()
    out["id_switches_any_label"] = agnostic["num_switches"].iloc[0].item()
    out["iou_threshold"] = iou_threshold
    return out


def tracking_to_markdown(metrics: dict) -> str:
    rows = [
        ("IDF1", "IDF1 (identity F1)"),
        ("IDP", "IDP"),
        ("IDR", "IDR"),
        ("MOTA", "MOTA"),
        ("MOTP_iou", "MOTP (mean IoU of matches)"),
        ("id_switches", "identity switches"),
        ("IDF1_any_label", "IDF1, labels ignored"),
        ("id_switches_any_label", "identity switches, labels ignored"),
        ("fragmentations", "fragmentations"),
        ("mostly_tracked", "mostly tracked tracks"),
        ("mostly_lost", "mostly lost tracks"),
        ("ground_truth_tracks", "ground-truth tracks"),
        ("ground_truth_objects", "ground-truth objects"),
        ("misses", "misses"),
        ("false_positives", "false positives"),
        ("frames", "frames"),
    ]
    lines = ["| metric | value |", "|---|---|"]
    for key, label in rows:
        value = metrics[key]
        lines.append(f"| {label} | {format_metric(value) if isinstance(value, float) else value} |")
    return "\n".join(lines)
