"""Evaluators against values worked out by hand on tiny scenes, and against direct COCOeval calls.

pycocotools' own published example (PythonAPI/pycocoEvalDemo on instances_val2014 with the "fakebbox100"
results) needs the 2014 COCO annotation file, which is not in the cocoapi repository and cannot be fetched
here, so the COCO part is checked instead against hand-computed 101-point interpolated AP and against
COCOeval run directly on hand-built COCO dicts.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import replace

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from partglee_ros.runtime.postprocess import Letterbox
from partglee_ros.runtime.result import ObjectResult, PartResult, SegmentationResult
from partglee_ros.runtime.segmenter import NetworkFrame, PreparedVocabulary
from partglee_ros.runtime.vocabulary import Vocabulary
from training.data.hierarchy import ImageAnnotation, ObjectAnnotation, PartAnnotation, mask_to_box
from training.evaluation import (
    CategorySplit,
    OracleObjPartMIoU,
    SemanticPartMIoU,
    evaluate,
    harmonic_mean,
    hierarchy_consistency,
    instance_ap,
    metrics_to_markdown,
    run_coco_eval,
    semantic_part_miou,
)
from training.evaluation.oracle_obj import largest_part_baseline, oracle_part_map
from training.evaluation.part_miou import UNSCORED
from training.validation import vocabulary_part_classes

H, W = 40, 60


def rect(x0: int, y0: int, x1: int, y1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def gt_image(i: int, objects: list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]]) -> ImageAnnotation:
    h, w = objects[0][1].shape if objects else (H, W)
    objs = []
    for k, (name, mask, parts) in enumerate(objects):
        oid = 100 * i + k
        objs.append(
            ObjectAnnotation(
                oid,
                name,
                mask,
                [PartAnnotation(10 * oid + j, pn, pm, oid) for j, (pn, pm) in enumerate(parts)],
            )
        )
    return ImageAnnotation(i, f"{i}.png", h, w, objs)


def pred_image(objects: list[tuple[str, float, np.ndarray, list[tuple[str, float, np.ndarray]]]], h=H, w=W):
    objs = []
    for k, (name, score, mask, parts) in enumerate(objects):
        parts_r = [
            PartResult(10 * k + j, pn, f"{name}:{pn}", ps, mask_to_box(pm), pm, k)
            for j, (pn, ps, pm) in enumerate(parts)
        ]
        objs.append(ObjectResult(k, name, score, mask_to_box(mask), mask, parts_r))
    return SegmentationResult(h, w, 0, objs)


# 101-point interpolation, recall thresholds 0.00, 0.01, ..., 1.00.
R = 101


# --- COCO AP -----------------------------------------------------------------------------------------------


def test_perfect_predictions_give_ap_one_at_every_level():
    mug, handle, body = rect(0, 0, 20, 20), rect(0, 5, 5, 15), rect(5, 0, 20, 20)
    gts = [gt_image(0, [("mug", mug, [("handle", handle), ("body", body)])])]
    preds = [pred_image([("mug", 0.9, mug, [("handle", 0.8, handle), ("body", 0.7, body)])])]
    m = instance_ap(gts, preds)
    for level in ("object", "part", "part_name", "part_hierarchical"):
        for iou_type in ("bbox", "segm"):
            assert m[level][iou_type]["AP"] == pytest.approx(1.0)
            assert m[level][iou_type]["AP50"] == pytest.approx(1.0)
            assert m[level][iou_type]["AP75"] == pytest.approx(1.0)
    assert m["part"]["segm"]["per_category"] == pytest.approx({"mug:handle": 1.0, "mug:body": 1.0})


def test_missed_instance_caps_recall_at_half():
    # 2 GT mugs (one per image), one found: precision 1 up to recall 0.5 -> 51 of 101 recall points.
    a, b = rect(0, 0, 10, 10), rect(20, 20, 30, 30)
    gts = [gt_image(0, [("mug", a, [])]), gt_image(1, [("mug", b, [])])]
    preds = [pred_image([("mug", 0.9, a, [])]), pred_image([])]
    m = instance_ap(gts, preds)["object"]
    for iou_type in ("bbox", "segm"):
        assert m[iou_type]["AP"] == pytest.approx(51 / R)
        assert m[iou_type]["AP75"] == pytest.approx(51 / R)


def test_false_positive_ranked_above_the_true_positive_halves_ap():
    # Ranked FP, TP: precision (0, 1/2) at recall (0, 1); interpolated 1/2 at every recall point -> AP 0.5.
    gt_mask, far = rect(0, 0, 10, 10), rect(40, 20, 50, 30)
    gts = [gt_image(0, [("mug", gt_mask, [])])]
    fp_first = [pred_image([("mug", 0.9, far, []), ("mug", 0.8, gt_mask, [])])]
    tp_first = [pred_image([("mug", 0.7, far, []), ("mug", 0.8, gt_mask, [])])]
    assert instance_ap(gts, fp_first)["object"]["segm"]["AP"] == pytest.approx(0.5)
    assert instance_ap(gts, tp_first)["object"]["segm"]["AP"] == pytest.approx(1.0)


def test_partial_overlap_counts_only_at_the_thresholds_it_reaches():
    # IoU 310/500 = 0.62 for box and mask: a match at 0.50, 0.55, 0.60 -> AP = 3/10, AP50 = 1, AP75 = 0.
    gts = [gt_image(0, [("mug", rect(0, 0, 50, 10), [])])]
    preds = [pred_image([("mug", 0.9, rect(0, 0, 31, 10), [])])]
    m = instance_ap(gts, preds)["object"]
    for iou_type in ("bbox", "segm"):
        assert m[iou_type]["AP"] == pytest.approx(0.3)
        assert m[iou_type]["AP50"] == pytest.approx(1.0)
        assert m[iou_type]["AP75"] == pytest.approx(0.0)


def test_operating_points_count_what_a_threshold_keeps():
    """Two mugs and a kettle; predictions: mug A (0.9, right), a mug where none is (0.6), the kettle called a
    mug (0.45, wrong label: a false positive), mug B (0.35, right). At 0.5: 1 of 2 reported right, 1 of 3
    found; at 0.3: 2 of 4 right, 2 of 3 found; at 0.1 the same; at 0.95 nothing reported."""
    a, b, kettle, empty = rect(0, 0, 10, 10), rect(20, 0, 30, 10), rect(40, 20, 55, 35), rect(0, 25, 10, 35)
    gts = [gt_image(0, [("mug", a, []), ("mug", b, []), ("kettle", kettle, [])])]
    preds = [
        pred_image(
            [("mug", 0.9, a, []), ("mug", 0.6, empty, []), ("mug", 0.45, kettle, []), ("mug", 0.35, b, [])]
        )
    ]
    points = {p["threshold"]: p for p in instance_ap(gts, preds)["object"]["segm"]["operating_points"]}
    assert (points[0.5]["precision"], points[0.5]["recall"]) == (0.5, pytest.approx(1 / 3))
    assert (points[0.3]["precision"], points[0.3]["recall"]) == (0.5, pytest.approx(2 / 3))
    assert points[0.3]["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert points[0.1] == points[0.3] | {"threshold": 0.1}
    run = run_coco_eval(gts, preds, "object", "segm")
    nothing = run.operating_point(0.95)
    assert math.isnan(nothing["precision"]) and nothing["recall"] == 0.0


def test_box_and_mask_ap_differ_when_only_the_mask_is_wrong():
    # Same box, but the predicted mask is a thin frame: box AP 1, mask IoU 64/400 = 0.16 -> mask AP 0.
    gt_mask = rect(0, 0, 20, 20)
    frame = rect(0, 0, 20, 20) & ~rect(2, 2, 18, 18)
    gts = [gt_image(0, [("mug", gt_mask, [])])]
    preds = [pred_image([("mug", 0.9, frame, [])])]
    m = instance_ap(gts, preds)["object"]
    assert m["bbox"]["AP"] == pytest.approx(1.0)
    assert m["segm"]["AP"] == pytest.approx(0.0)


def _mug_pan_scene():
    """mug (image 0) and pan (image 1), both with a handle; mug also has a body. A stray pan:handle FP
    (score 0.9) outranks the pan's true handle (0.8), the mug handle is found first (0.95)."""
    mug, mug_handle, mug_body = rect(0, 0, 20, 20), rect(0, 5, 5, 15), rect(5, 0, 20, 20)
    pan, pan_handle = rect(10, 10, 40, 30), rect(30, 15, 40, 25)
    stray = rect(45, 0, 55, 8)
    gts = [
        gt_image(0, [("mug", mug, [("handle", mug_handle), ("body", mug_body)])]),
        gt_image(1, [("pan", pan, [("handle", pan_handle)])]),
    ]
    preds = [
        pred_image([("mug", 0.9, mug, [("handle", 0.95, mug_handle), ("body", 0.7, mug_body)])]),
        pred_image([("pan", 0.9, pan, [("handle", 0.8, pan_handle), ("handle", 0.9, stray)])]),
    ]
    return gts, preds


def test_part_levels_and_paco_hierarchical_ap():
    gts, preds = _mug_pan_scene()
    m = instance_ap(gts, preds, CategorySplit(base=["mug"], novel=["pan"]))
    for iou_type in ("bbox", "segm"):
        # object:part: mug:handle 1, mug:body 1, pan:handle 0.5 (FP ranked first).
        assert m["part"][iou_type]["per_category"] == pytest.approx(
            {"mug:handle": 1.0, "mug:body": 1.0, "pan:handle": 0.5}
        )
        assert m["part"][iou_type]["AP"] == pytest.approx(2.5 / 3)
        # PACO hierarchical: handle = mean(1, 0.5) = 0.75, body = 1 -> 0.875.
        hier = m["part_hierarchical"][iou_type]
        assert hier["per_part"] == pytest.approx({"handle": 0.75, "body": 1.0})
        assert hier["AP"] == pytest.approx(0.875)
        # Generic "handle" pools both images: ranked TP(.95), FP(.9), TP(.8) over 2 GT -> precision 1 up to
        # recall 0.5 (51 points), then 2/3 (50 points).
        handle = (51 + 50 * 2 / 3) / R
        assert m["part_name"][iou_type]["per_category"] == pytest.approx({"handle": handle, "body": 1.0})
        assert m["part_name"][iou_type]["AP"] == pytest.approx((handle + 1.0) / 2)
        # Base/novel by object category.
        assert m["base"]["object"][iou_type]["AP"] == pytest.approx(1.0)
        assert m["novel"]["object"][iou_type]["AP"] == pytest.approx(1.0)
        assert m["base"]["part"][iou_type]["AP"] == pytest.approx(1.0)
        assert m["novel"]["part"][iou_type]["AP"] == pytest.approx(0.5)
        assert m["base"]["part_hierarchical"][iou_type]["AP"] == pytest.approx(1.0)
        assert m["novel"]["part_hierarchical"][iou_type]["AP"] == pytest.approx(0.5)


def test_no_predictions_scores_zero_and_prediction_only_categories_are_not_reported():
    gts = [gt_image(0, [("mug", rect(0, 0, 10, 10), [])])]
    assert instance_ap(gts, [pred_image([])])["object"]["segm"]["AP"] == 0.0
    m = instance_ap(
        gts, [pred_image([("mug", 0.9, rect(0, 0, 10, 10), []), ("cat", 0.9, rect(30, 0, 40, 9), [])])]
    )
    assert m["object"]["segm"]["per_category"] == pytest.approx({"mug": 1.0})
    assert m["object"]["segm"]["AP"] == pytest.approx(1.0)


def test_mismatched_inputs_are_rejected():
    gts = [gt_image(0, [("mug", rect(0, 0, 10, 10), [])])]
    with pytest.raises(ValueError, match="predictions"):
        instance_ap(gts, [])
    with pytest.raises(ValueError, match="40x60"):
        instance_ap(gts, [SegmentationResult(20, 20, 0, [])])


def _direct_coco_ap(images, gt_boxes, dt_boxes, cat_ids=None) -> float:
    """COCOeval on COCO dicts written out by hand (xywh boxes), optionally restricted with params.catIds."""
    cats = sorted({c for _, c, _ in gt_boxes} | {c for _, c, _, _ in dt_boxes})
    gt = {
        "images": [{"id": i, "height": H, "width": W} for i in images],
        "categories": [{"id": c} for c in cats],
        "annotations": [
            {"id": j + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for j, (i, c, b) in enumerate(gt_boxes)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(
            [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in dt_boxes]
        )
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def test_box_ap_matches_a_direct_cocoeval_call_including_category_subsets():
    rng = np.random.default_rng(0)
    names = {1: "mug", 2: "pan", 3: "cup"}
    gt_boxes, dt_boxes, gts, preds = [], [], [], []
    for i in range(4):
        objs, pobjs = [], []
        for c in rng.integers(1, 4, size=3):
            x, y = int(rng.integers(0, 40)), int(rng.integers(0, 25))
            w, h = int(rng.integers(5, 20)), int(rng.integers(5, 15))
            w, h = min(w, W - x), min(h, H - y)
            gt_boxes.append((i, int(c), [x, y, w, h]))
            objs.append((names[int(c)], rect(x, y, x + w, y + h), []))
            if rng.random() < 0.8:  # found, with a jittered box and a random score
                dx, dy = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
                px, py = max(x + dx, 0), max(y + dy, 0)
                s = float(rng.random())
                dt_boxes.append((i, int(c), [px, py, min(w, W - px), min(h, H - py)], s))
                pobjs.append((names[int(c)], s, rect(px, py, px + w, py + h), []))
            if rng.random() < 0.3:  # a false positive somewhere
                s, fc = float(rng.random()), int(rng.integers(1, 4))
                dt_boxes.append((i, fc, [50, 30, 8, 8], s))
                pobjs.append((names[fc], s, rect(50, 30, 58, 38), []))
        gts.append(gt_image(i, objs))
        preds.append(pred_image(pobjs))
    m = instance_ap(gts, preds, CategorySplit(base=["mug", "cup"], novel=["pan"]))
    assert m["object"]["bbox"]["AP"] == pytest.approx(_direct_coco_ap(range(4), gt_boxes, dt_boxes))
    assert m["base"]["object"]["bbox"]["AP"] == pytest.approx(
        _direct_coco_ap(range(4), gt_boxes, dt_boxes, [1, 3])
    )
    assert m["novel"]["object"]["bbox"]["AP"] == pytest.approx(
        _direct_coco_ap(range(4), gt_boxes, dt_boxes, [2])
    )
    assert 0.0 < m["object"]["bbox"]["AP"] < 1.0


def test_box_only_ground_truth_counts_in_box_ap_only():
    """A PACO part with a box but an empty segmentation: pycocotools scores a box on it as a hit in box AP
    (here 1.0, as COCOeval called directly gives; dropped, that detection became a false positive: 0.5), and
    mask AP has no mask to score it against, so it is left out there."""
    gts, preds = [], []
    for i, box_only in enumerate((True, False)):
        handle = PartAnnotation(
            10 * i, "handle", np.zeros((H, W), bool) if box_only else rect(10, 10, 25, 30), i
        )
        handle.box = np.array([10, 10, 25, 30], np.float32)
        gts.append(
            ImageAnnotation(
                i, f"{i}.png", H, W, [ObjectAnnotation(i, "knife", rect(10, 10, 50, 30), [handle])]
            )
        )
        score = 0.9 if box_only else 0.5  # the box-only part's detection ranks first
        preds.append(
            pred_image([("knife", 0.9, rect(10, 10, 50, 30), [("handle", score, rect(10, 10, 25, 30))])])
        )
    box = run_coco_eval(gts, preds, "part", "bbox")
    assert box.stats["AP"] == pytest.approx(
        _direct_coco_ap(
            range(2),
            [(0, 1, [10, 10, 15, 20]), (1, 1, [10, 10, 15, 20])],
            [(0, 1, [10, 10, 15, 20], 0.9), (1, 1, [10, 10, 15, 20], 0.5)],
        )
    )
    assert box.stats["AP"] == pytest.approx(1.0)
    mask = run_coco_eval(gts, preds, "part", "segm")
    assert mask.stats["AP"] == pytest.approx(
        0.5
    )  # the first-ranked mask has no ground truth: half the precision


# --- semantic part mIoU -------------------------------------------------------------------------------------


CLASSES = ["a:x", "a:y", "b:x"]


def test_miou_from_label_maps_accumulates_over_the_dataset():
    metric = SemanticPartMIoU(CLASSES, seen=["a:x", "a:y"], unseen=["b:x"])
    metric.update(np.array([[0, 0, 1, 1], [255, 255, 2, 2]]), np.array([[0, 1, 1, 1], [0, 255, 2, 255]]))
    # class 0: TP 1, GT 2, pred 1 on scored pixels (the pred at a GT-ignore pixel does not count) -> 1/2
    # class 1: TP 2, GT 2, pred 3 -> 2/3; class 2: TP 1, GT 2 (one left as background = miss), pred 1 -> 1/2
    assert metric.iou() == pytest.approx([0.5, 2 / 3, 0.5])
    metric.update(np.array([[2, 2, 2, 2]]), np.array([[2, 2, 2, 2]]))
    # class 2 over both images: TP 5, GT 6, pred 5 -> 5/6 (not the per-image mean 0.75)
    r = metric.compute()
    assert r["per_class"] == pytest.approx({"a:x": 0.5, "a:y": 2 / 3, "b:x": 5 / 6})
    assert r["mIoU"] == pytest.approx((0.5 + 2 / 3 + 5 / 6) / 3)
    assert r["mIoU_seen"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert r["mIoU_unseen"] == pytest.approx(5 / 6)
    seen, unseen = (0.5 + 2 / 3) / 2, 5 / 6
    assert r["hIoU"] == pytest.approx(2 * seen * unseen / (seen + unseen))


def test_reference_accounting_drops_parts_left_as_background():
    metric = SemanticPartMIoU(CLASSES, background_is_miss=False)
    metric.update(np.array([[0, 0, 1, 1], [255, 255, 2, 2]]), np.array([[0, 1, 1, 1], [0, 255, 2, 255]]))
    # class 2: the pixel predicted as background leaves the GT total too -> TP 1, GT 1, pred 1 -> 1.
    assert metric.iou() == pytest.approx([0.5, 2 / 3, 1.0])


def test_predicted_only_class_counts_zero_and_absent_class_is_skipped():
    metric = SemanticPartMIoU(CLASSES + ["b:y"])
    metric.update(np.array([[0, 0, 255]]), np.array([[0, 3, 3]]))
    iou = metric.iou()
    assert iou[0] == pytest.approx(0.5) and iou[3] == 0.0
    assert math.isnan(iou[1]) and math.isnan(iou[2])
    assert metric.compute()["mIoU"] == pytest.approx(0.25)


def test_label_map_validation():
    metric = SemanticPartMIoU(CLASSES)
    with pytest.raises(ValueError, match="outside"):
        metric.update(np.array([[7]]), np.array([[0]]))
    with pytest.raises(ValueError, match="shape"):
        metric.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="collides"):
        SemanticPartMIoU([f"c:{i}" for i in range(300)])


def test_harmonic_mean():
    assert harmonic_mean(0.5, 0.25) == pytest.approx(2 * 0.125 / 0.75)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(0.5, float("nan")))


def _mug_gt():
    # 4x6 image; mug in columns 0-3: handle column 0 (4 px), body columns 1-3 (12 px); columns 4-5 background.
    mug, handle, body = rect(0, 0, 4, 4, 4, 6), rect(0, 0, 1, 4, 4, 6), rect(1, 0, 4, 4, 4, 6)
    return gt_image(0, [("mug", mug, [("handle", handle), ("body", body)])]), mug


def test_instance_predictions_overlap_resolved_by_score():
    gt, mug = _mug_gt()
    wide_handle, body = rect(0, 0, 2, 4, 4, 6), rect(1, 0, 4, 4, 4, 6)
    # The wider handle outranks the body: column 1 becomes handle -> handle 4/8, body 8/12.
    handle_first = pred_image([("mug", 0.9, mug, [("handle", 0.95, wide_handle), ("body", 0.9, body)])], 4, 6)
    r = semantic_part_miou([gt], [handle_first])
    assert r["per_class"] == pytest.approx({"mug:handle": 0.5, "mug:body": 2 / 3})
    body_first = pred_image([("mug", 0.9, mug, [("handle", 0.5, wide_handle), ("body", 0.9, body)])], 4, 6)
    assert semantic_part_miou([gt], [body_first])["mIoU"] == pytest.approx(1.0)


def test_oracle_obj_kept_knows_the_object_class_pred_all_does_not():
    gt, mug = _mug_gt()
    handle, body, outside = rect(0, 0, 1, 4, 4, 6), rect(1, 0, 4, 4, 4, 6), rect(4, 0, 6, 4, 4, 6)
    # Right parts on the wrong object class, plus a part outside the GT object.
    pred = pred_image(
        [("pan", 0.9, mug, [("handle", 0.9, handle), ("body", 0.8, body), ("lid", 0.7, outside)])], 4, 6
    )
    pred_all = semantic_part_miou([gt], [pred], setting="pred_all")
    # Pred-All: GT classes mug:* get nothing right; pan:handle and pan:body are predicted on scored pixels
    # (IoU 0); pan:lid lies only on ignored background pixels, so it has no defined IoU.
    assert pred_all["per_class"] == {"mug:body": 0.0, "mug:handle": 0.0, "pan:body": 0.0, "pan:handle": 0.0}
    oracle = semantic_part_miou([gt], [pred], setting="oracle_obj_kept")
    assert oracle["per_class"] == pytest.approx({"mug:handle": 1.0, "mug:body": 1.0})


def test_oracle_obj_kept_scores_a_wrong_part_of_a_class_the_ground_truth_lacks():
    """A higher-scoring "lid" over half the mug body must cost the body half its IoU in both settings,
    not vanish in Oracle-Obj because no ground truth holds a mug:lid."""
    gt, mug = _mug_gt()
    handle, body, lid = rect(0, 0, 1, 4, 4, 6), rect(1, 0, 4, 4, 4, 6), rect(1, 0, 4, 2, 4, 6)
    pred = pred_image(
        [("mug", 0.9, mug, [("handle", 0.9, handle), ("body", 0.5, body), ("lid", 0.8, lid)])], 4, 6
    )
    expected = {"mug:handle": 1.0, "mug:body": 0.5, "mug:lid": 0.0}
    vocabulary = (["mug"], ["body", "handle", "lid"], {"mug": ["body", "handle", "lid"]})
    classes = vocabulary_part_classes(vocabulary)
    assert classes == ["mug:body", "mug:handle", "mug:lid"]
    for part_classes in (
        classes,
        None,
    ):  # the vocabulary, or by default the labels seen in GT and predictions
        m = evaluate([gt], [pred], part_classes=part_classes)["part_miou"]
        for setting in ("pred_all", "oracle_obj_kept"):
            assert m[setting]["per_class"] == pytest.approx(expected), (part_classes, setting)
            assert m[setting]["mIoU"] == pytest.approx(0.5)


def test_labels_outside_the_given_vocabulary_are_rejected():
    gt, mug = _mug_gt()
    pred = pred_image([("mug", 0.9, mug, [("lid", 0.9, rect(0, 0, 1, 4, 4, 6))])], 4, 6)
    with pytest.raises(ValueError, match="mug:lid"):
        semantic_part_miou([gt], [pred], classes=["mug:handle", "mug:body"])
    with pytest.raises(ValueError, match="mug:handle"):
        semantic_part_miou([gt], [pred], classes=["mug:body", "mug:lid"])
    with pytest.raises(ValueError, match="setting"):
        semantic_part_miou([gt], [pred], setting="pred_obj")


def test_missed_part_and_seen_unseen_from_instances():
    gt, mug = _mug_gt()
    dog, head, tail = rect(0, 0, 6, 4, 4, 6), rect(0, 0, 3, 4, 4, 6), rect(3, 0, 6, 4, 4, 6)
    gts = [gt, gt_image(1, [("dog", dog, [("head", head), ("tail", tail)])])]
    preds = [
        pred_image(
            [
                (
                    "mug",
                    0.9,
                    mug,
                    [("handle", 0.9, rect(0, 0, 1, 4, 4, 6)), ("body", 0.8, rect(1, 0, 4, 4, 4, 6))],
                )
            ],
            4,
            6,
        ),
        pred_image([("dog", 0.9, dog, [("head", 0.9, head)])], 4, 6),  # tail missed
    ]
    split = CategorySplit(base=["mug"], novel=["dog"])
    r = semantic_part_miou(gts, preds, split)
    assert r["mIoU_seen"] == pytest.approx(1.0)
    assert r["mIoU_unseen"] == pytest.approx(0.5)  # head 1, tail 0
    assert r["hIoU"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    lenient = semantic_part_miou(gts, preds, split, background_is_miss=False)
    assert lenient["mIoU_unseen"] == pytest.approx(1.0)  # the missed tail has no defined IoU there


def test_vocabularies_of_256_and_more_object_parts_are_scored():
    """16 objects x 16 parts: class 255 is "o15:p15", which the ignore label 255 made unscorable (a
    ValueError after the whole run); PACO has 456 object-parts. Scores equal those over the labels that occur."""
    classes = [f"o{i}:p{j}" for i in range(16) for j in range(16)]
    whole, top, bottom = rect(0, 0, 6, 4, 4, 6), rect(0, 0, 6, 2, 4, 6), rect(0, 2, 6, 4, 4, 6)
    gt = gt_image(0, [("o15", whole, [("p15", top), ("p14", bottom)])])
    pred = pred_image([("o15", 0.9, whole, [("p15", 0.9, top), ("p14", 0.8, rect(0, 2, 3, 4, 4, 6))])], 4, 6)
    for setting in ("pred_all", "oracle_obj_kept"):
        got = semantic_part_miou([gt], [pred], setting=setting, classes=classes)
        assert got["per_class"] == pytest.approx({"o15:p15": 1.0, "o15:p14": 0.5}), setting
        occurring = semantic_part_miou([gt], [pred], setting=setting)
        assert got["per_class"] == occurring["per_class"] and got["mIoU"] == occurring["mIoU"] == 0.75
    metrics = evaluate([gt], [pred], part_classes=classes)
    assert metrics["part_miou"]["pred_all"]["mIoU"] == metrics["part_miou"]["oracle_obj_kept"]["mIoU"] == 0.75


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _frame(part_names: tuple[str, ...], queries: list[tuple[dict[str, float], np.ndarray]]) -> NetworkFrame:
    """Raw outputs of part queries, each (part-name probabilities, HxW bool mask), on a 4x6 image whose
    masks are at full resolution (a letterbox of scale 1, no padding)."""
    logits = np.full((len(queries), len(part_names)), _logit(1e-4), np.float32)
    masks = np.full((len(queries), 4, 6), -12.0, np.float32)
    for q, (probs, mask) in enumerate(queries):
        for name, prob in probs.items():
            logits[q, part_names.index(name)] = _logit(prob)
        masks[q][mask] = 12.0
    vocab = Vocabulary(("mug",), part_names)
    prepared = PreparedVocabulary(
        vocab,
        part_names,
        np.zeros((1, 8), np.float32),
        np.zeros((len(part_names), 8), np.float32),
        np.ones((1, len(part_names)), bool),
    )
    outputs = {"part_logits": logits, "part_masks": masks}
    return NetworkFrame(outputs, Letterbox(4, 6, 1.0, 1.0, 4, 6), prepared, {})


def test_oracle_obj_scores_parts_whose_parent_was_not_kept():
    """The runtime kept no object here (so no part): the kept-parts oracle scores 0, the papers' oracle
    labels the ground-truth mug's pixels from the raw part queries."""
    gt, _ = _mug_gt()
    handle, body = rect(0, 0, 1, 4, 4, 6), rect(1, 0, 4, 4, 4, 6)
    frame = _frame(("body", "handle"), [({"handle": 0.6}, handle), ({"body": 0.7}, body)])
    classes = ["mug:body", "mug:handle"]
    oracle = OracleObjPartMIoU(classes)
    oracle.update(gt, frame)
    m = evaluate([gt], [SegmentationResult(4, 6, 0, [])], part_classes=classes, oracle=oracle)["part_miou"]
    assert m["oracle_obj_kept"]["mIoU"] == 0.0
    assert m["oracle_obj"]["per_class"] == pytest.approx({"mug:handle": 1.0, "mug:body": 1.0})


def test_oracle_obj_picks_among_the_ground_truth_objects_parts_by_summed_votes():
    """On the mug's handle column the best part name is "lid", which a mug does not have: the oracle picks
    among mug:body / mug:handle. On the body, two half-sure "body" queries outvote one surer "handle" query
    (Mask2Former's sum over queries). Background pixels are not labelled."""
    gt, _ = _mug_gt()
    handle, body = rect(0, 0, 1, 4, 4, 6), rect(1, 0, 4, 4, 4, 6)
    frame = _frame(
        ("body", "handle", "lid"),
        [
            ({"lid": 0.95, "handle": 0.6, "body": 0.2}, handle),
            ({"handle": 0.8}, body),
            ({"body": 0.5}, body),
            ({"body": 0.5}, body),
            ({"handle": 0.99}, rect(4, 0, 6, 4, 4, 6)),  # off the mug
        ],
    )
    classes = ["kettle:lid", "mug:body", "mug:handle"]
    got = oracle_part_map(frame, gt, {c: i for i, c in enumerate(classes)})
    want = np.full((4, 6), UNSCORED)
    want[handle], want[body] = 2, 1
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="ground truth of 6x5"):
        oracle_part_map(frame, gt_image(1, [("mug", rect(0, 0, 4, 4, 5, 6), [])]), {})


def test_oracle_obj_on_overlapping_objects_no_votes_and_no_parts():
    """A kettle's amodal mask over the whole mug: the mug's part pixels are still scored among the mug's
    classes (the ground truth's owner). No part query at all, or a vocabulary without parts (the network's
    placeholder part name), labels nothing: a miss, not the object's first part."""
    mug, handle, body = rect(0, 0, 4, 4, 4, 6), rect(0, 0, 1, 4, 4, 6), rect(1, 0, 4, 4, 4, 6)
    whole, kettle_body = rect(0, 0, 6, 4, 4, 6), rect(4, 0, 6, 4, 4, 6)
    gt = gt_image(
        0, [("mug", mug, [("handle", handle), ("body", body)]), ("kettle", whole, [("body", kettle_body)])]
    )
    frame = _frame(("body", "handle"), [({"handle": 0.9}, handle), ({"body": 0.9}, ~handle)])
    classes = ["kettle:body", "kettle:handle", "mug:body", "mug:handle"]
    index = {c: i for i, c in enumerate(classes)}
    want = np.full((4, 6), 2)
    want[handle], want[kettle_body] = 3, 0
    np.testing.assert_array_equal(oracle_part_map(frame, gt, index), want)
    silent = _frame(("body", "handle"), [])
    np.testing.assert_array_equal(oracle_part_map(silent, gt, index), np.full((4, 6), UNSCORED))
    placeholder = _frame(("part",), [({"part": 0.9}, rect(0, 0, 6, 4, 4, 6))])
    placeholder = replace(
        placeholder, vocabulary=replace(placeholder.vocabulary, vocabulary=Vocabulary(("mug",), ()))
    )
    assert (oracle_part_map(placeholder, gt, {"mug:part": 0, "kettle:part": 1}) == UNSCORED).all()
    assert largest_part_baseline([gt], classes)["per_class"] == pytest.approx(
        {"mug:body": 0.75, "mug:handle": 0.0, "kettle:body": 1.0}
    )


def test_largest_part_baseline_labels_each_object_with_its_largest_part():
    gt, _ = _mug_gt()  # handle 4 px, body 12 px: every mug pixel becomes body
    classes = ["mug:body", "mug:handle"]
    assert largest_part_baseline([gt], classes)["per_class"] == pytest.approx(
        {"mug:body": 0.75, "mug:handle": 0.0}
    )


# --- hierarchy consistency ----------------------------------------------------------------------------------


def test_hierarchy_consistency_box_and_mask():
    h = w = 12
    parent_mask = rect(0, 0, 10, 10, h, w) & ~rect(6, 6, 10, 10, h, w)  # a 10x10 box with a notch
    near_edge = rect(0, 0, 10, 1, h, w) | rect(0, 1, 9, 2, h, w)
    near_edge[1, 10] = True  # 19 of 20 pixels inside; box [0, 0, 11, 2]: 20 of 22 px inside
    parts = [
        ("inside", rect(2, 2, 5, 5, h, w), 0),
        ("straddling", rect(8, 0, 11, 10, h, w), 0),  # 2/3 inside by box and by mask
        ("in_notch", rect(6, 6, 10, 10, h, w), 0),  # box inside, mask entirely outside
        ("orphan", rect(2, 2, 5, 5, h, w), 7),  # parent id of no object
        ("near_edge", near_edge, 0),
    ]
    pred = SegmentationResult(
        h,
        w,
        0,
        [
            ObjectResult(
                0,
                "mug",
                0.9,
                np.array([0, 0, 10, 10], dtype=np.float32),
                parent_mask,
                [
                    PartResult(j, n, f"mug:{n}", 0.5, mask_to_box(m), m, pid)
                    for j, (n, m, pid) in enumerate(parts)
                ],
            )
        ],
    )
    r = hierarchy_consistency([pred])
    assert r == {"box": pytest.approx(2 / 5), "mask": pytest.approx(2 / 5), "num_parts": 5}
    loose = hierarchy_consistency([pred], min_inside=0.9)
    assert loose["box"] == pytest.approx(3 / 5) and loose["mask"] == pytest.approx(2 / 5)
    assert math.isnan(hierarchy_consistency([SegmentationResult(h, w, 0, [])])["box"])


# --- evaluate + Markdown ------------------------------------------------------------------------------------


def test_evaluate_and_markdown():
    gts, preds = _mug_pan_scene()
    m = evaluate(gts, preds, CategorySplit(base=["mug"], novel=["pan"]))
    assert m["part_hierarchical"]["segm"]["AP"] == pytest.approx(0.875)
    assert m["hierarchy_consistency"]["num_parts"] == 4
    assert m["part_miou"]["oracle_obj_kept"]["mIoU_seen"] == pytest.approx(1.0)
    md = metrics_to_markdown(m, per_category=True)
    assert "| parts (PACO obj-part hierarchical) | 0.875 | 0.875 | 0.875 | 0.875 | 0.875 | 0.875 |" in md
    assert "| parts (object:part) — novel | 0.500 |" in md
    assert "| pan:handle | 0.500 | 0.500 |" in md
    assert "| oracle_obj_kept |" in md and "| pred_all |" in md
    assert "| score threshold | objects: precision |" in md and "\n| 0.3 | " in md
    no_split = metrics_to_markdown(evaluate(gts[:1], preds[:1]))
    assert "— base" not in no_split and "n/a" in no_split  # hIoU undefined without a split
