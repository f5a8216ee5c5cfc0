"""Evaluators: COCO box/mask AP (objects, parts, PACO hierarchical, base/novel), OV-PARTS part mIoU, and
hierarchy consistency, over ``ImageAnnotation`` ground truth and ``SegmentationResult`` predictions."""

from training.data.hierarchy import split_part_label
from training.evaluation.coco_ap import CocoRun, hierarchical_ap, instance_ap, run_coco_eval
from training.evaluation.consistency import hierarchy_consistency
from training.evaluation.oracle_obj import OracleObjPartMIoU
from training.evaluation.part_miou import SemanticPartMIoU, harmonic_mean, semantic_part_miou
from training.evaluation.report import evaluate, metrics_to_markdown
from training.evaluation.split import CategorySplit

__all__ = [
    "CategorySplit",
    "CocoRun",
    "OracleObjPartMIoU",
    "SemanticPartMIoU",
    "evaluate",
    "harmonic_mean",
    "hierarchical_ap",
    "hierarchy_consistency",
    "instance_ap",
    "metrics_to_markdown",
    "run_coco_eval",
    "semantic_part_miou",
    "split_part_label",
]
