"""Oracle-Obj part mIoU as OV-PARTS and PartCLIPSeg define it, from the network's raw part outputs.

The setting gives the ground-truth object's mask and class: each pixel of a ground-truth object is labelled
with the best of *that object's* part classes, and pixels outside every object are not scored. The
runtime's results cannot give this: their parts were kept or dropped under *predicted* objects (label, rank,
mask), so a part under a missed or misnamed object is gone (``"oracle_obj_kept"`` in
training/evaluation/part_miou.py scores them anyway, usually lower).

Here every part query of the frame votes, as Mask2Former's semantic inference sums its queries: the score of
part class c at a pixel is ``sum_q sigmoid(logit[q, c]) * sigmoid(mask[q])`` over all part queries (those of
the ``qformer_topk`` parsed objects), whatever their parent was predicted to be, restricted to the classes
``<ground-truth object>:<part>`` of the evaluated set. The sum is taken at the mask resolution (stride 4)
and resampled to the image as masks are (sigmoid before the resize, where Mask2Former resizes the logits
first: cheaper, and it differs only at mask edges).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from partglee_ros.runtime.postprocess import maps_to_input, sigmoid
from partglee_ros.runtime.segmenter import NetworkFrame
from training.data.hierarchy import ImageAnnotation, part_label
from training.evaluation.part_miou import UNSCORED, gt_part_map, part_metric
from training.evaluation.split import CategorySplit


def _owners(gt: ImageAnnotation) -> np.ndarray:
    """Index of the ground-truth object each pixel belongs to (-1: none): the last object whose mask covers
    it, except that a part pixel belongs to the part's object, as ``gt_part_map`` paints it, so that
    overlapping (amodal) object masks never score one object's part against another object's classes."""
    owner = np.full((gt.height, gt.width), -1, dtype=np.int64)
    for i, obj in enumerate(gt.objects):
        owner[obj.mask] = i
    for i, obj in enumerate(gt.objects):
        for part in obj.parts:
            owner[part.mask] = i
    return owner


def oracle_part_map(frame: NetworkFrame, gt: ImageAnnotation, class_index: dict[str, int]) -> np.ndarray:
    """Label map of the frame's image: each ground-truth object's pixels take the index (into
    ``class_index``) of that object's best-scoring part class. ``UNSCORED`` (a miss on a part pixel)
    outside the objects, inside objects with no evaluated part class among the vocabulary's parts, and
    where no part query votes at all (every score exactly 0)."""
    lb = frame.letterbox
    if (gt.height, gt.width) != (lb.height, lb.width):
        raise ValueError(
            f"image {gt.image_id}: frame of {lb.width}x{lb.height}, ground truth of {gt.width}x{gt.height}"
        )
    out = np.full((lb.height, lb.width), UNSCORED, dtype=np.int64)
    names = frame.vocabulary.vocabulary.parts  # not the placeholder of a vocabulary without parts
    probs = sigmoid(frame.outputs["part_logits"])  # (P, K_part)
    masks = sigmoid(frame.outputs["part_masks"])  # (P, h, w)
    owner = _owners(gt)
    votes_of: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}  # per object class: labels, score maps
    for i, obj in enumerate(gt.objects):
        if obj.name not in votes_of:
            columns = [c for c, name in enumerate(names) if part_label(obj.name, name) in class_index]
            votes_of[obj.name] = (
                (
                    np.array([class_index[part_label(obj.name, names[c])] for c in columns]),
                    maps_to_input(np.einsum("qc,qhw->chw", probs[:, columns], masks), lb),
                )
                if columns
                else None
            )
        if votes_of[obj.name] is None:
            continue
        labels, scores = votes_of[obj.name]
        pixels = owner == i
        votes = scores[:, pixels]
        out[pixels] = np.where(votes.max(0) > 0, labels[votes.argmax(0)], UNSCORED)
    return out


class OracleObjPartMIoU:
    """Accumulates the Oracle-Obj part mIoU frame by frame, so no raw outputs are kept (a frame's part masks
    are megabytes)."""

    def __init__(self, classes: Sequence[str], split: CategorySplit | None = None) -> None:
        self.metric = part_metric(list(classes), split)
        self.index = {c: i for i, c in enumerate(self.metric.class_names)}

    def update(self, gt: ImageAnnotation, frame: NetworkFrame) -> None:
        self.metric.update(gt_part_map(gt, self.index), oracle_part_map(frame, gt, self.index))

    def compute(self) -> dict:
        """``SemanticPartMIoU.compute``: mIoU, seen / unseen, hIoU and per-class IoU."""
        return self.metric.compute()


def largest_part_baseline(
    gts: Sequence[ImageAnnotation], classes: Sequence[str], split: CategorySplit | None = None
) -> dict:
    """Oracle-Obj part mIoU of a labeller that knows only each object's class: every pixel of a ground-truth
    object takes that object's part class with the most ground-truth pixels over ``gts``. What the oracle's
    knowledge alone scores, the floor a model's Oracle-Obj number must be read against (it is fitted to the
    scored images, so it flatters itself a little)."""
    index = {c: i for i, c in enumerate(classes)}
    area: dict[str, dict[str, int]] = {}  # object name -> its part labels' ground-truth pixels
    for gt in gts:
        for obj in gt.objects:
            for part in obj.parts:
                label = part_label(obj.name, part.name)
                per_object = area.setdefault(obj.name, {})
                per_object[label] = per_object.get(label, 0) + int(part.mask.sum())
    # ties: the first label in sorted order
    largest = {name: max(sorted(labels), key=labels.__getitem__) for name, labels in area.items()}
    metric = part_metric(list(classes), split)
    for gt in gts:
        pred = np.full((gt.height, gt.width), UNSCORED, dtype=np.int64)
        owner = _owners(gt)
        for i, obj in enumerate(gt.objects):
            if obj.name in largest:
                pred[owner == i] = index[largest[obj.name]]
        metric.update(gt_part_map(gt, index), pred)
    return metric.compute()
