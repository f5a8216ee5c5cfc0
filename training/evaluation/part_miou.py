"""OV-PARTS semantic part mIoU: seen/unseen mIoU, their harmonic mean (hIoU), Oracle-Obj and Pred-All.

The protocol follows OV-PARTS (OpenRobotLab/OV_PARTS
``baselines/evaluation/generalized_sem_seg_evaluation.py``) and PartCLIPSeg (kaist-cvml/part-clipseg
``baselines/evaluation/partclipseg_evaluation.py``; paper
"Understanding Multi-Granularity for Open-Vocabulary Part Segmentation", Sec. 4.1 "Evaluation Protocols"):

- classes are object-specific parts ("dog:head"); seen/unseen are the object-parts of base/novel objects;
- one confusion matrix is accumulated over the whole dataset (intersections and unions summed over images,
  as detectron2's SemSegEvaluator), then IoU per class = TP / (GT + Pred - TP);
- ground truth is the part label map with every non-part pixel (background, object pixels outside any
  annotated part) set to the ignore label: those pixels never count, so only part pixels are scored;
- a class whose IoU is defined (it occurs in the ground truth or in the predictions on scored pixels) enters
  the mean; one only predicted counts as 0 (the reference's ``sum(iou[acc_valid]) / sum(iou_valid)``);
- mIoU-seen / mIoU-unseen are means over those classes; hIoU = 2 * seen * unseen / (seen + unseen);
- Oracle-Obj: the ground-truth object mask and class are given: predictions outside the object are ignored
  and the part is predicted among the given object's parts; Pred-All: everything comes from the model.

Scored here from instance predictions (the runtime's results, or results read back from a bag): Pred-All
(``"pred_all"``) and ``"oracle_obj_kept"``, an Oracle-Obj over the parts the runtime kept, which were
already kept or dropped by their predicted parent (its label, rank and mask), so it usually scores below the
papers' oracle. The papers' Oracle-Obj needs every part query's raw output: training/evaluation/oracle_obj.py.

Background in the prediction: a part pixel predicted as background (no part) is a miss for that part's class
by default (``background_is_miss=True``). The reference code maps predicted background to the same bucket as
ignore and drops that bucket from the GT totals too (``conf_matrix[:-1, :-1]``), so a part pixel the model
leaves as background costs nothing there; ``background_is_miss=False`` reproduces that accounting exactly.

Values are fractions in [0, 1] (the papers print them x100).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from partglee_ros.runtime.result import SegmentationResult
from training.data.hierarchy import ImageAnnotation, part_label, split_part_label
from training.evaluation.coco_ap import nanmean
from training.evaluation.split import CategorySplit

IGNORE_LABEL = 255  # the ignore value of OV-PARTS label maps (uint8 PNGs, so at most 255 classes)
# Label maps made here from instances are int64: -1 is outside every class range (PACO has 456 object-parts,
# 16 objects x 16 parts make 256, and 255 would be a class).
UNSCORED = -1
SETTINGS = ("pred_all", "oracle_obj_kept")


class SemanticPartMIoU:
    """Dataset-level confusion matrix over semantic part label maps.

    Label maps are integer arrays of class indices into ``class_names``; ``ignore_label`` marks unscored
    pixels in the ground truth and "background / no part" in the prediction. This is also the entry point
    for readers that produce semantic label maps directly (the OV-PARTS layout).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        seen: Iterable[str] = (),
        unseen: Iterable[str] = (),
        ignore_label: int = IGNORE_LABEL,
        background_is_miss: bool = True,
    ) -> None:
        self.class_names = list(class_names)
        if ignore_label in range(len(self.class_names)):
            raise ValueError(f"ignore label {ignore_label} collides with a class index")
        index = {n: i for i, n in enumerate(self.class_names)}
        unknown = (set(seen) | set(unseen)) - set(index)
        if unknown:
            raise ValueError(f"seen/unseen classes not in class_names: {sorted(unknown)}")
        self.seen = sorted(index[n] for n in set(seen))
        self.unseen = sorted(index[n] for n in set(unseen))
        self.ignore_label = ignore_label
        self.background_is_miss = background_is_miss
        n = len(self.class_names) + 1  # last row/column: ignore (GT) or background (prediction)
        self.confusion = np.zeros((n, n), dtype=np.int64)  # [gt, pred]

    def _to_bucket(self, labels: np.ndarray, what: str) -> np.ndarray:
        labels = np.asarray(labels).astype(np.int64)
        n = len(self.class_names)
        bad = (labels != self.ignore_label) & ((labels < 0) | (labels >= n))
        if bad.any():
            raise ValueError(f"{what} label map has values outside [0, {n}) and the ignore label")
        return np.where(labels == self.ignore_label, n, labels)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image: ``gt`` and ``pred`` are HxW label maps of the same shape."""
        if np.shape(gt) != np.shape(pred):
            raise ValueError(f"label maps differ in shape: {np.shape(gt)} vs {np.shape(pred)}")
        n = len(self.class_names) + 1
        g, p = self._to_bucket(gt, "ground-truth"), self._to_bucket(pred, "predicted")
        self.confusion += np.bincount((g * n + p).ravel(), minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN where a class is neither in the ground truth nor predicted on scored pixels."""
        scored = self.confusion[:-1]  # GT-ignore pixels never count
        tp = np.diag(scored[:, :-1]).astype(float)
        pos_gt = (scored.sum(axis=1) if self.background_is_miss else scored[:, :-1].sum(axis=1)).astype(float)
        pos_pred = scored[:, :-1].sum(axis=0).astype(float)
        union = pos_gt + pos_pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def compute(self) -> dict:
        """``{"mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "per_class"}``; NaN where nothing can be scored."""
        iou = self.iou()
        seen, unseen = nanmean(iou[self.seen]), nanmean(iou[self.unseen])
        return {
            "mIoU": nanmean(iou),
            "mIoU_seen": seen,
            "mIoU_unseen": unseen,
            "hIoU": harmonic_mean(seen, unseen),
            "per_class": {n: float(v) for n, v in zip(self.class_names, iou, strict=True) if not np.isnan(v)},
        }


def harmonic_mean(seen: float, unseen: float) -> float:
    """hIoU = 2ab / (a + b); 0 when both are 0, NaN when either is undefined."""
    if np.isnan(seen) or np.isnan(unseen):
        return float("nan")
    return 0.0 if seen + unseen == 0 else 2.0 * seen * unseen / (seen + unseen)


def gt_part_map(gt: ImageAnnotation, class_index: dict[str, int], ignore_label: int = UNSCORED) -> np.ndarray:
    """Ground-truth object-part label map; every pixel outside an annotated part is ``ignore_label``."""
    out = np.full((gt.height, gt.width), ignore_label, dtype=np.int64)
    for obj in gt.objects:
        for part in obj.parts:
            label = part_label(obj.name, part.name)
            if label not in class_index:
                raise ValueError(f"ground-truth part {label!r} is not in the evaluated classes")
            out[part.mask] = class_index[label]
    return out


def pred_part_map(
    pred: SegmentationResult,
    class_index: dict[str, int],
    gt: ImageAnnotation | None = None,
    ignore_label: int = UNSCORED,
) -> np.ndarray:
    """Semantic part label map from instance predictions; ``ignore_label`` where no part is predicted.

    Overlaps are resolved by score: parts are painted in ascending score order, so each pixel takes the label
    of the highest-scoring part mask covering it (ties keep result order). With ``gt`` (Oracle-Obj kept), each
    ground-truth object's pixels are labelled ``<gt object>:<predicted part name>`` from the predicted parts
    covering them, a part name the object does not have (not in ``class_index``) is dropped as OV-PARTS drops
    other objects' parts, and pixels outside every ground-truth object stay ``ignore_label``.
    Pred-All labels each part by its own ``object_label``, which must be in ``class_index``.
    """
    parts = sorted(pred.parts(), key=lambda p: p.score)  # stable: equal scores keep result order
    out = np.full((pred.height, pred.width), ignore_label, dtype=np.int64)
    if gt is None:
        for part in parts:
            if part.object_label not in class_index:
                raise ValueError(f"predicted part {part.object_label!r} is not in the evaluated classes")
            out[part.mask] = class_index[part.object_label]
        return out
    for obj in gt.objects:
        region = np.full_like(out, ignore_label)
        for part in parts:
            label = part_label(obj.name, part.label)
            if label in class_index:
                region[part.mask] = class_index[label]
        out[obj.mask] = region[obj.mask]
    return out


def occurring_part_labels(gts: Sequence[ImageAnnotation], preds: Sequence[SegmentationResult]) -> set[str]:
    """Every "obj:part" label of the ground truth and of the predictions."""
    truth = {part_label(o.name, p.name) for g in gts for o in g.objects for p in o.parts}
    return truth | {p.object_label for r in preds for p in r.parts()}


def part_metric(
    classes: Sequence[str], split: CategorySplit | None, background_is_miss: bool = True
) -> SemanticPartMIoU:
    """An empty confusion matrix over "obj:part" ``classes`` whose label maps use ``UNSCORED`` as ignore;
    seen/unseen are the object-parts of ``split.base``/``split.novel`` (all seen without a split)."""
    objects_of = {c: split_part_label(c)[0] for c in classes}
    seen = [c for c in classes if split is None or objects_of[c] in split.base]
    unseen = [] if split is None else [c for c in classes if objects_of[c] in split.novel]
    return SemanticPartMIoU(
        classes, seen, unseen, ignore_label=UNSCORED, background_is_miss=background_is_miss
    )


def semantic_part_miou(
    gts: Sequence[ImageAnnotation],
    preds: Sequence[SegmentationResult],
    split: CategorySplit | None = None,
    setting: str = "pred_all",
    classes: Sequence[str] | None = None,
    background_is_miss: bool = True,
) -> dict:
    """OV-PARTS part mIoU of instance predictions in the ``"pred_all"`` or ``"oracle_obj_kept"`` setting.

    ``classes`` is the object-part vocabulary ("obj:part" labels); by default the union of ground-truth and
    predicted labels, the same set in both settings. Pass the full vocabulary the model was given: Oracle-Obj
    drops a predicted part whose ``<gt object>:<part>`` label is not a class, so with a smaller set a
    higher-scoring wrong part (a "lid" on a mug whose ground truth has none) would vanish and let a
    lower-scoring part show through. Seen/unseen are the object-parts of ``split.base``/``split.novel``
    (without a split every class is seen and hIoU is NaN).
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} predictions")
    if classes is None:
        classes = sorted(occurring_part_labels(gts, preds))
    metric = part_metric(classes, split, background_is_miss)
    index = {c: i for i, c in enumerate(classes)}
    for gt, pred in zip(gts, preds, strict=True):
        if (gt.height, gt.width) != (pred.height, pred.width):
            raise ValueError(f"image {gt.image_id}: prediction size differs from the ground truth")
        oracle = gt if setting == "oracle_obj_kept" else None
        metric.update(gt_part_map(gt, index), pred_part_map(pred, index, oracle))
    return metric.compute()
