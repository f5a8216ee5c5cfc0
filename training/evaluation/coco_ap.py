"""COCO box and mask AP for objects and parts, computed by pycocotools' own COCOeval.

Ground truth and predictions are turned into in-memory COCO objects (masks as RLE via pycocotools.mask) and
handed to COCOeval unchanged, so AP, AP50 and AP75 are exactly pycocotools' numbers (101-point interpolated
precision, IoU thresholds 0.50:0.95, maxDets 100, area range "all"). Nothing here re-implements matching or
interpolation: per-category and per-subset numbers are read from ``COCOeval.eval["precision"]`` the same way
``COCOeval.summarize`` reads it (mean of the entries > -1).

Three category levels are evaluated:

- ``object``: object categories ("mug");
- ``part``: object-specific parts ("mug:handle", PACO's object-part categories);
- ``part_name``: generic part names ("handle"), pooling every object's handles into one category.

Metric values are fractions in [0, 1]; NaN where no ground truth exists to score against.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from partglee_ros.runtime.result import SegmentationResult
from training.data.hierarchy import ImageAnnotation, part_label, split_part_label
from training.evaluation.split import CategorySplit

LEVELS = ("object", "part", "part_name")
# score thresholds whose precision / recall / F1 (at IoU 0.5) are reported: the node's object_threshold range
OPERATING_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
IOU_TYPES = ("bbox", "segm")
# Keys of COCOeval.stats[0:6], the box/mask AP summary of pycocotools.
_STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_THRESHOLD_KEYS = {"AP": None, "AP50": 0.5, "AP75": 0.75}


@dataclass
class _Instance:
    image_index: int
    category: str
    box: np.ndarray  # xyxy pixels
    mask: np.ndarray  # HxW bool
    score: float = 1.0
    iscrowd: bool = False  # ground truth only: COCOeval's ignore region (detections on it are not counted)


@dataclass
class CocoRun:
    """One finished COCOeval: what per-category and per-subset numbers are read from."""

    categories: list[str]  # category name of each K index of ``precision``
    precision: np.ndarray  # COCOeval.eval["precision"] restricted to area "all", maxDets 100: [T, R, K]
    iou_thresholds: np.ndarray  # [T]
    stats: dict[str, float]  # AP, AP50, AP75, APs, APm, APl over all categories
    # COCOeval's own matches (area "all", maxDets 100), every category pooled: each detection's score, whether
    # it matched ground truth and whether it counts (not on a crowd region) at each IoU threshold, [T, D]
    scores: np.ndarray
    matched: np.ndarray
    counted: np.ndarray
    num_truth: int  # ground-truth instances that count (crowd regions do not)

    def operating_point(self, threshold: float, iou: float = 0.5) -> dict[str, float]:
        """Precision, recall and F1 of the detections scoring at least `threshold`: what a node running at
        that threshold reports, matched as COCOeval matches them at `iou` (NaN where undefined)."""
        t = int(np.flatnonzero(np.isclose(self.iou_thresholds, iou))[0])
        keep = self.scores >= threshold
        hits = int((self.matched[t] & keep).sum())
        reported = int((self.counted[t] & keep).sum())
        precision = hits / reported if reported else float("nan")
        recall = hits / self.num_truth if self.num_truth else float("nan")
        f1 = 2 * hits / (reported + self.num_truth) if reported + self.num_truth else float("nan")
        return {"threshold": threshold, "precision": precision, "recall": recall, "f1": f1}

    def ap(self, categories: Iterable[str] | None = None, iou: float | None = None) -> float:
        """Mean precision over the given categories (all when None), as ``COCOeval.summarize`` averages it."""
        wanted = set(self.categories) if categories is None else set(categories)
        ks = [k for k, name in enumerate(self.categories) if name in wanted]
        s = self.precision[:, :, ks]
        if iou is not None:
            s = s[np.isclose(self.iou_thresholds, iou)]
        valid = s[s > -1]
        return float(valid.mean()) if valid.size else float("nan")

    def per_category(self, iou: float | None = None) -> dict[str, float]:
        """AP of every category that has ground truth (categories without any are left out, as in COCO)."""
        out = {name: self.ap([name], iou) for name in self.categories}
        return {name: v for name, v in out.items() if not np.isnan(v)}


def _gt_instances(gts: Sequence[ImageAnnotation], level: str, iou_type: str) -> list[_Instance]:
    """Ground truth of one level that COCOeval can score: for box AP every instance with a box of some area,
    PACO's box-only parts (empty segmentation) included, as pycocotools counts them; for mask AP only those with
    mask pixels (a box-only part has no mask to score, and PACO's own loader drops it; a fully occluded
    SynthParts part has neither box nor pixels)."""
    out = []
    for i, img in enumerate(gts):
        for obj in img.objects:
            if level == "object":
                out.append(_Instance(i, obj.name, obj.box, obj.mask, iscrowd=obj.iscrowd))
                continue
            for part in obj.parts:
                name = part_label(obj.name, part.name) if level == "part" else part.name
                out.append(_Instance(i, name, part.box, part.mask, iscrowd=part.iscrowd))
    if iou_type == "bbox":
        return [inst for inst in out if (inst.box[2:] > inst.box[:2]).all()]
    return [inst for inst in out if inst.mask.any()]


def _pred_instances(preds: Sequence[SegmentationResult], level: str) -> list[_Instance]:
    out = []
    for i, res in enumerate(preds):
        for obj in res.objects:
            if level == "object":
                out.append(_Instance(i, obj.label, obj.box, obj.mask, float(obj.score)))
                continue
            for part in obj.parts:
                name = part.object_label if level == "part" else part.label
                out.append(_Instance(i, name, part.box, part.mask, float(part.score)))
    return out


def _check_pairs(gts: Sequence[ImageAnnotation], preds: Sequence[SegmentationResult]) -> None:
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} predictions")
    for i, (g, p) in enumerate(zip(gts, preds, strict=True)):
        if (g.height, g.width) != (p.height, p.width):
            raise ValueError(
                f"image {i}: ground truth is {g.height}x{g.width}, prediction is {p.height}x{p.width}"
            )


def _xywh(box: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


class RleCache:
    """RLE of each mask array, encoded once although several runs (levels x IoU types) read the same masks."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[np.ndarray, dict]] = {}

    def __call__(self, mask: np.ndarray) -> dict:
        hit = self._by_id.get(id(mask))
        if hit is None or hit[0] is not mask:  # the stored array keeps its id from being reused
            hit = (mask, mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
            self._by_id[id(mask)] = hit
        return hit[1]


def _check_mask(inst: _Instance, shape: tuple[int, int]) -> None:
    if inst.mask.shape != shape:
        raise ValueError(
            f"mask of {inst.category!r} in image {inst.image_index} is {inst.mask.shape}, not {shape}"
        )


def _result_geometry(inst: _Instance, iou_type: str, rle: RleCache) -> dict:
    """Box results carry only the box and mask results only the mask, so that ``loadRes`` derives each
    result's area from the geometry being evaluated (detectron2's COCOEvaluator drops the box likewise)."""
    return {"bbox": _xywh(inst.box)} if iou_type == "bbox" else {"segmentation": rle(inst.mask)}


def run_coco_eval(
    gts: Sequence[ImageAnnotation],
    preds: Sequence[SegmentationResult],
    level: str,
    iou_type: str,
    rle: RleCache | None = None,
) -> CocoRun:
    """Evaluate one category level (object/part/part_name) with one IoU type (bbox/segm) by COCOeval."""
    if level not in LEVELS or iou_type not in IOU_TYPES:
        raise ValueError(f"level must be one of {LEVELS} and iou_type one of {IOU_TYPES}")
    rle = rle or RleCache()
    _check_pairs(gts, preds)
    gt_inst, dt_inst = _gt_instances(gts, level, iou_type), _pred_instances(preds, level)
    shapes = [(g.height, g.width) for g in gts]
    for inst in gt_inst + dt_inst:
        _check_mask(inst, shapes[inst.image_index])

    names = sorted({x.category for x in gt_inst} | {x.category for x in dt_inst})
    cat_id = {name: k + 1 for k, name in enumerate(names)}
    images = [{"id": i, "height": h, "width": w} for i, (h, w) in enumerate(shapes)]
    categories = [{"id": cat_id[n], "name": n} for n in names]
    annotations = [
        {
            "id": j + 1,
            "image_id": x.image_index,
            "category_id": cat_id[x.category],
            "bbox": _xywh(x.box),
            # COCO's GT area is the mask area for both box and mask AP (it only selects area ranges).
            "area": float(mask_utils.area(rle(x.mask))),
            "segmentation": rle(x.mask),
            "iscrowd": int(x.iscrowd),
        }
        for j, x in enumerate(gt_inst)
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress unconditionally
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": annotations}
        coco_gt.createIndex()
        dets = [
            {"image_id": x.image_index, "category_id": cat_id[x.category], "score": x.score}
            | _result_geometry(x, iou_type, rle)
            for x in dt_inst
        ]
        if dets:
            coco_dt = coco_gt.loadRes(dets)
        else:  # loadRes cannot take an empty list; an empty result set scores 0 AP against any GT
            coco_dt = COCO()
            coco_dt.dataset = {"images": images, "categories": categories, "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()

    p = ev.params
    area = p.areaRngLbl.index("all")
    max_det = p.maxDets.index(max(p.maxDets))
    precision = ev.eval["precision"][:, :, :, area, max_det]
    order = [next(c["name"] for c in categories if c["id"] == cid) for cid in p.catIds]
    stats = {k: (float(v) if v > -1 else float("nan")) for k, v in zip(_STAT_KEYS, ev.stats, strict=False)}
    return CocoRun(order, precision, np.asarray(p.iouThrs), stats, *_matches(ev))


def _matches(ev: COCOeval) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Scores, matched and counted [T, D] flags and counted ground truth from ``ev.evalImgs`` (area "all")."""
    everything = ev.params.areaRng[ev.params.areaRngLbl.index("all")]
    every = [e for e in ev.evalImgs if e is not None and e["aRng"] == everything]
    num_iou = len(ev.params.iouThrs)
    scores = np.concatenate([np.asarray(e["dtScores"], float) for e in every] or [np.zeros(0)])
    matched = np.concatenate(
        [np.asarray(e["dtMatches"]) > 0 for e in every] or [np.zeros((num_iou, 0), bool)], 1
    )
    counted = np.concatenate(
        [~np.asarray(e["dtIgnore"], bool) for e in every] or [np.zeros((num_iou, 0), bool)], 1
    )
    num_truth = int(sum(int((~np.asarray(e["gtIgnore"], bool)).sum()) for e in every))
    return scores, matched & counted, counted, num_truth


def hierarchical_ap(run: CocoRun, object_names: Iterable[str] | None = None) -> dict:
    """PACO's obj-part hierarchical AP from a ``part`` (object:part) run.

    Follows facebookresearch/paco ``paco/evaluation/paco_evaluation.py::_evaluate_predictions_on_lvis``
    ("obj-part-AP-heirarchical") with ``paco/evaluation/utils/paco_utils.py::get_mean_AP``: for each generic
    part name, the mean AP of its object-part categories ("handle" = mean(AP(mug:handle), AP(pan:handle),
    ...), categories without ground truth skipped), then the mean over part names. PACO runs LVIS's evaluator
    with 300 detections per image; this reads the same quantity from COCOeval (100 per image, non-federated).
    ``object_names`` restricts the object-parts to those objects (for base/novel reporting).
    """
    keep = None if object_names is None else set(object_names)
    by_part: dict[str, list[str]] = defaultdict(list)
    for name in run.categories:
        obj, part = split_part_label(name)
        if keep is None or obj in keep:
            by_part[part].append(name)
    out: dict = {}
    for key, iou in _THRESHOLD_KEYS.items():
        per_part = {part: nanmean([run.ap([c], iou) for c in cats]) for part, cats in sorted(by_part.items())}
        per_part = {part: v for part, v in per_part.items() if not np.isnan(v)}
        out[key] = nanmean(list(per_part.values()))
        if key == "AP":
            out["per_part"] = per_part
    return out


def nanmean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the defined (non-NaN) values; NaN, without numpy's empty-slice warning, when there are none."""
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _summary(run: CocoRun, categories: Iterable[str] | None = None) -> dict:
    """AP/AP50/AP75 over a category subset, read from the same COCOeval precision array."""
    cats = list(categories) if categories is not None else None
    return {key: run.ap(cats, iou) for key, iou in _THRESHOLD_KEYS.items()}


def instance_ap(
    gts: Sequence[ImageAnnotation], preds: Sequence[SegmentationResult], split: CategorySplit | None = None
) -> dict:
    """Box and mask AP at every category level, PACO's hierarchical part AP, and base/novel subsets.

    Returns ``{"object"|"part"|"part_name": {"bbox"|"segm": {AP, AP50, AP75, APs, APm, APl,
    per_category, operating_points}}, "part_hierarchical": {"bbox"|"segm": {AP, AP50, AP75, per_part}}}`` and, with a split,
    ``"base"``/``"novel"``: ``{"object"|"part"|"part_hierarchical": {"bbox"|"segm": {AP, AP50, AP75}}}``
    where parts count as base/novel by their object category. Restricting to a subset is the same as setting
    ``COCOeval.params.catIds`` to it, because COCO evaluates every category independently.
    """
    rle = RleCache()
    out: dict = {level: {} for level in LEVELS}
    out["part_hierarchical"] = {}
    subsets = (
        {}
        if split is None
        else {name: {"object": {}, "part": {}, "part_hierarchical": {}} for name in ("base", "novel")}
    )
    for iou_type in IOU_TYPES:
        runs = {level: run_coco_eval(gts, preds, level, iou_type, rle) for level in LEVELS}
        for level, run in runs.items():
            out[level][iou_type] = {
                **run.stats,
                "per_category": run.per_category(),
                "operating_points": [run.operating_point(t) for t in OPERATING_THRESHOLDS],
            }
        out["part_hierarchical"][iou_type] = hierarchical_ap(runs["part"])
        for name, sub in subsets.items():
            objects = split.subset(name)
            sub["object"][iou_type] = _summary(runs["object"], objects)
            part_cats = [c for c in runs["part"].categories if split_part_label(c)[0] in objects]
            sub["part"][iou_type] = _summary(runs["part"], part_cats)
            hier = hierarchical_ap(runs["part"], objects)
            sub["part_hierarchical"][iou_type] = {k: hier[k] for k in _THRESHOLD_KEYS}
    out.update(subsets)
    return out
