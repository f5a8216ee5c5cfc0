"""Periodic evaluation: run the model through the runtime Segmenter (the code path a user gets) on held-out
images and score it with training.evaluation (pycocotools AP, part mIoU, hierarchy consistency)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from partglee_ros.model.text_encoder import TextEncoder
from partglee_ros.runtime.backends.torch_backend import TorchBackend
from partglee_ros.runtime.postprocess import PostprocessConfig
from partglee_ros.runtime.result import SegmentationResult
from partglee_ros.runtime.segmenter import Segmenter
from training.data.hierarchy import ImageAnnotation, part_label
from training.evaluation import CategorySplit, OracleObjPartMIoU, evaluate


def synthparts_vocabulary(categories: Sequence[str]) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """Objects, generic part names, and each object's part names: what a user would ask for."""
    from training.data.synthparts import CATEGORIES

    objects = list(categories)
    parts = sorted({p for c in objects for p in CATEGORIES[c]})
    return objects, parts, {c: list(CATEGORIES[c]) for c in objects}


def vocabulary_part_classes(vocabulary: tuple[list[str], list[str], dict[str, list[str]]]) -> list[str]:
    """Every "obj:part" label the vocabulary lets the model predict (an object without an ``object_parts``
    entry allows every part, as in ``partglee_ros.runtime.vocabulary``): the part mIoU class set."""
    objects, parts, object_parts = vocabulary
    return sorted({part_label(o, p) for o in objects for p in object_parts.get(o, parts)})


def segment_and_evaluate(
    segmenter: Segmenter,
    images: Sequence[ImageAnnotation],
    split: CategorySplit,
    part_classes: Sequence[str],
) -> dict:
    """Segment every image with the segmenter's active vocabulary and score the results: ``evaluate``'s
    metrics plus the papers' Oracle-Obj part mIoU, fed each frame's raw outputs before post-processing."""
    oracle = OracleObjPartMIoU(part_classes, split)
    preds: list[SegmentationResult] = []
    for image in images:
        frame = segmenter.infer(image.image)
        oracle.update(image, frame)
        preds.append(segmenter.finish(frame))
    return evaluate(images, preds, split, part_classes, oracle)


def evaluate_model(
    model: torch.nn.Module,
    text_encoder: TextEncoder,
    input_size: tuple[int, int],
    images: Sequence[ImageAnnotation],
    split: CategorySplit,
    postprocess: PostprocessConfig,
    device: str = "cpu",
) -> dict:
    """All metrics of ``segment_and_evaluate`` on SynthParts-style images of base + novel objects, through
    the runtime Segmenter (``model`` is left in train mode afterwards if it was before)."""
    vocab = synthparts_vocabulary([*sorted(split.base), *sorted(split.novel)])
    was_training = model.training
    segmenter = Segmenter(TorchBackend(model, device), text_encoder, input_size, postprocess)
    segmenter.set_vocabulary(*vocab)
    try:
        return segment_and_evaluate(segmenter, images, split, vocabulary_part_classes(vocab))
    finally:
        model.train(was_training)


def headline(metrics: dict) -> dict[str, float]:
    """The model card's headline numbers: object and part mask AP on base and novel objects, mask and box
    hierarchy consistency, and the Oracle-Obj part hIoU (``segment_and_evaluate``'s metrics)."""
    return {
        "object_mask_ap_base": metrics["base"]["object"]["segm"]["AP"],
        "part_mask_ap_base": metrics["base"]["part"]["segm"]["AP"],
        "part_mask_ap_novel": metrics["novel"]["part"]["segm"]["AP"],
        "object_mask_ap_novel": metrics["novel"]["object"]["segm"]["AP"],
        "hierarchy_consistency_mask": metrics["hierarchy_consistency"]["mask"],
        "hierarchy_consistency_box": metrics["hierarchy_consistency"]["box"],
        "part_hiou_oracle_obj": metrics["part_miou"]["oracle_obj"]["hIoU"],
    }
