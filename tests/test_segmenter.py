"""The ROS-free runtime (``partglee_ros/runtime``), tested directly.

* ``postprocess`` on hand-built raw outputs: object/part score thresholds, class-wise NMS, top-k (best
  first), parts only under surviving parents, the vocabulary's object->parts restriction, ids and
  ``object:part`` labels, boxes in input pixels (clamped), masks at the input resolution and exact under a
  non-square letterbox (padding never leaks), ``clip_parts_to_parent``.
* ``Segmenter`` over a real ``TorchBackend`` (small random checkpoint) and the offline text encoder its
  config names: mask shapes for many image sizes, clear ``ImageError``/``VocabularyError`` messages that
  leave the segmenter usable and the previous vocabulary active, increasing revisions carried by results.
* Thread safety: vocabulary swaps during inference never mix vocabularies within a result.
* ``factory.make_backend``: backend by name, unknown names, and the ``auto`` preference order.
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from partglee_ros.config import CONFIG_FILE, ONNX_FILE, WEIGHTS_FILE
from partglee_ros.model.preprocess import padded_size
from partglee_ros.model.text_encoder import TextEncoder
from partglee_ros.runtime.backends.base import INPUT_NAMES, OUTPUT_NAMES, Backend, BackendError, SizeRange
from partglee_ros.runtime.backends.torch_backend import TorchBackend
from partglee_ros.runtime.factory import load_segmenter, make_backend
from partglee_ros.runtime.postprocess import (
    Letterbox,
    PostprocessConfig,
    _masks_to_input,
    _select,
    postprocess,
    sigmoid,
)
from partglee_ros.runtime.result import ObjectResult, SegmentationResult
from partglee_ros.runtime.segmenter import (
    MAX_IMAGE_PIXELS,
    ImageError,
    Segmenter,
    letterbox,
    validate_image,
)
from partglee_ros.runtime.vocabulary import (
    MAX_NAME_LENGTH,
    MAX_NAMES_PER_LEVEL,
    Vocabulary,
    VocabularyError,
    make_vocabulary,
    parse_object_parts,
)
from tests.ros_testing import noise_image, small_checkpoint

NET_W, NET_H = 320, 240  # the small model's input_size
PAD_H, PAD_W = padded_size(NET_H, NET_W)  # (256, 320): the network input, padded to multiples of 32
MASK_H, MASK_W = PAD_H // 4, PAD_W // 4  # masks come at stride 4 over the padded input
LOW = -12.0  # a logit that is "off" everywhere
HIGH = 12.0


# ---------------------------------------------------------------------------------------------------------
# postprocess() on hand-built outputs


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def image_letterbox(height: int, width: int) -> Letterbox:
    """Where an image of this size lies in the network input: scaled to fit NET_W x NET_H, padded to
    PAD_W x PAD_H (the segmenter's ``letterbox``, which test_letterbox_helper_is_the_segmenters checks)."""
    scale = min(NET_W / width, NET_H / height)
    resized_w, resized_h = max(1, round(width * scale)), max(1, round(height * scale))
    return Letterbox(height, width, resized_w / width, resized_h / height, PAD_H, PAD_W)


@pytest.mark.parametrize("size", [(240, 320), (300, 500), (500, 300), (333, 517), (8, 99), (8000, 250)])
def test_letterbox_helper_is_the_segmenters(size: tuple[int, int]) -> None:
    tensor, lb = letterbox(np.zeros((*size, 3), np.uint8), (NET_W, NET_H))
    assert tensor.shape == (1, 3, PAD_H, PAD_W) and lb == image_letterbox(*size)


def raw_outputs(n_obj: int, k_obj: int, n_part: int, k_part: int) -> dict[str, np.ndarray]:
    """All-off scores (~6e-6), every query a small box of its own (no NMS overlap), masks covering the
    whole image (postprocess drops parts without mask pixels; mask tests set their own).

    Part query j belongs to object query j % n_obj unless a test sets ``part_parent``.
    """

    def boxes(n: int) -> np.ndarray:
        b = np.zeros((n, 4), np.float32)
        b[:, 0] = (np.arange(n) + 0.5) / n
        b[:, 1] = 0.5
        b[:, 2] = 0.5 / n
        b[:, 3] = 0.2
        return b

    return {
        "obj_logits": np.full((n_obj, k_obj), LOW, np.float32),
        "obj_boxes": boxes(n_obj),
        "obj_masks": np.full((n_obj, MASK_H, MASK_W), HIGH, np.float32),
        "part_logits": np.full((n_part, k_part), LOW, np.float32),
        "part_boxes": boxes(n_part),
        "part_masks": np.full((n_part, MASK_H, MASK_W), HIGH, np.float32),
        "part_parent": np.arange(n_part, dtype=np.int64) % n_obj,
    }


def run_postprocess(
    out: dict[str, np.ndarray],
    objects: tuple[str, ...] = ("mug", "bottle"),
    parts: tuple[str, ...] = ("handle", "cap", "label"),
    allowed: np.ndarray | None = None,
    size: tuple[int, int] = (240, 320),
    **config: object,
) -> list[ObjectResult]:
    if allowed is None:
        allowed = np.ones((len(objects), len(parts)), bool)
    cfg = PostprocessConfig(**config)
    cfg.validate()
    return postprocess(out, image_letterbox(*size), objects, parts, allowed, cfg)


def scores(objects: list[ObjectResult]) -> list[float]:
    return [round(o.score, 4) for o in objects]


def test_object_threshold_keeps_queries_at_or_above_it_best_first() -> None:
    out = raw_outputs(5, 2, 1, 3)
    for q, (label, p) in enumerate([(0, 0.5), (1, 0.9), (0, 0.29), (1, 0.31), (0, 0.1)]):
        out["obj_logits"][q, label] = logit(p)
    objs = run_postprocess(out, object_threshold=0.3)
    assert scores(objs) == [0.9, 0.5, 0.31]
    assert [o.label for o in objs] == ["bottle", "mug", "bottle"]
    assert run_postprocess(out, object_threshold=0.95) == []


def test_label_is_the_best_scoring_name_of_the_query() -> None:
    out = raw_outputs(1, 3, 1, 3)
    out["obj_logits"][0] = [logit(0.4), logit(0.8), logit(0.6)]
    (obj,) = run_postprocess(out, objects=("cup", "bowl", "plate"))
    assert (obj.label, round(obj.score, 4)) == ("bowl", 0.8)


def test_nms_suppresses_duplicates_of_one_label_only() -> None:
    out = raw_outputs(4, 2, 4, 3)
    # queries 0 and 1: the same box and label -> only the better one survives
    out["obj_boxes"][1] = out["obj_boxes"][0]
    out["obj_logits"][0, 0], out["obj_logits"][1, 0] = logit(0.9), logit(0.8)
    # queries 2 and 3: the same box, different labels -> both survive
    out["obj_boxes"][3] = out["obj_boxes"][2]
    out["obj_logits"][2, 0], out["obj_logits"][3, 1] = logit(0.7), logit(0.6)
    # one confident part under each query: the suppressed query's part must vanish with it
    out["part_parent"][:] = [0, 1, 2, 3]
    for j, p in enumerate([0.51, 0.52, 0.53, 0.54]):
        out["part_logits"][j, 0] = logit(p)
    objs = run_postprocess(out, object_threshold=0.3, nms_iou=0.7)
    assert [(o.label, round(o.score, 4)) for o in objs] == [("mug", 0.9), ("mug", 0.7), ("bottle", 0.6)]
    assert [[round(p.score, 4) for p in o.parts] for o in objs] == [[0.51], [0.53], [0.54]]


def test_nms_keeps_overlapping_boxes_below_the_iou_threshold() -> None:
    out = raw_outputs(2, 1, 1, 1)
    out["obj_boxes"][:] = [[0.5, 0.5, 0.2, 0.2], [0.52, 0.5, 0.2, 0.2]]  # IoU 0.82
    out["obj_logits"][:, 0] = [logit(0.9), logit(0.8)]
    assert len(run_postprocess(out, objects=("mug",), parts=("handle",), nms_iou=0.7)) == 1
    assert len(run_postprocess(out, objects=("mug",), parts=("handle",), nms_iou=0.9)) == 2


@pytest.mark.parametrize("seed", range(5))
def test_duplicate_suppression_is_torchvisions_batched_nms(seed: int) -> None:
    """OpenCV's NMS, which the runtime uses to run without PyTorch, keeps what torchvision's would: the same
    queries in the same order, over crowded boxes of a few labels (positive areas; the two differ on
    zero-area boxes, whose IoU is undefined)."""
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(seed)
    n = 200
    x1y1 = rng.uniform(0, 500, (n, 2))
    boxes = np.concatenate([x1y1, x1y1 + rng.uniform(1, 150, (n, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    labels = rng.integers(0, 4, n)
    for iou, threshold, k in [(0.5, 0.3, 1000), (0.7, 0.0, 15), (0.3, 0.9, 5)]:
        got = _select(scores, labels, boxes, iou, threshold, k)
        cand = torch.nonzero(torch.from_numpy(scores) >= threshold).flatten()
        ref = cand[batched_nms(*(torch.from_numpy(a)[cand] for a in (boxes, scores, labels)), iou)][:k]
        assert got.tolist() == ref.tolist()


def test_sigmoid_matches_pytorch_without_overflow() -> None:
    logits = np.linspace(-120, 120, 2001, dtype=np.float32)
    with np.errstate(all="raise"):
        probs = sigmoid(logits)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, torch.sigmoid(torch.from_numpy(logits)).numpy(), rtol=0, atol=1e-6)


def test_max_objects_keeps_the_best_in_order() -> None:
    out = raw_outputs(6, 2, 6, 3)
    for q, p in enumerate([0.4, 0.95, 0.6, 0.8, 0.35, 0.7]):
        out["obj_logits"][q, q % 2] = logit(p)
    # a confident part under every object: parts of objects cut by top-k must not appear anywhere
    out["part_logits"][:, 1] = logit(0.99)
    objs = run_postprocess(out, object_threshold=0.3, max_objects=3)
    assert scores(objs) == [0.95, 0.8, 0.7]
    assert [len(o.parts) for o in objs] == [1, 1, 1]
    assert scores(run_postprocess(out, object_threshold=0.3, max_objects=1)) == [0.95]


def test_part_threshold_and_max_parts_per_object() -> None:
    out = raw_outputs(1, 2, 5, 3)
    out["obj_logits"][0, 0] = logit(0.9)
    out["part_parent"][:] = 0
    for j, (label, p) in enumerate([(0, 0.5), (1, 0.9), (2, 0.2), (0, 0.7), (1, 0.31)]):
        out["part_logits"][j, label] = logit(p)
    (obj,) = run_postprocess(out, part_threshold=0.3, max_parts_per_object=8)
    assert [(p.label, round(p.score, 4)) for p in obj.parts] == [
        ("cap", 0.9),
        ("handle", 0.7),
        ("handle", 0.5),
        ("cap", 0.31),
    ]
    (obj,) = run_postprocess(out, part_threshold=0.3, max_parts_per_object=2)
    assert [round(p.score, 4) for p in obj.parts] == [0.9, 0.7]
    (obj,) = run_postprocess(out, part_threshold=0.6, max_parts_per_object=8)
    assert [round(p.score, 4) for p in obj.parts] == [0.9, 0.7]
    (obj,) = run_postprocess(out, part_threshold=0.3, max_parts_per_object=0)
    assert obj.parts == []


def test_part_nms_is_per_label_within_an_object() -> None:
    out = raw_outputs(1, 1, 3, 2)
    out["obj_logits"][0, 0] = logit(0.9)
    out["part_parent"][:] = 0
    out["part_boxes"][:] = [0.3, 0.3, 0.2, 0.2]  # three identical boxes
    out["part_logits"][0, 0], out["part_logits"][1, 0], out["part_logits"][2, 1] = (
        logit(0.8),
        logit(0.7),
        logit(0.6),
    )
    (obj,) = run_postprocess(out, objects=("mug",), parts=("handle", "body"))
    assert [(p.label, round(p.score, 4)) for p in obj.parts] == [("handle", 0.8), ("body", 0.6)]


def test_parts_only_appear_under_surviving_parents() -> None:
    out = raw_outputs(3, 2, 6, 3)
    out["obj_logits"][0, 0] = logit(0.9)  # survives
    out["obj_logits"][1, 1] = logit(0.1)  # below the threshold
    out["obj_logits"][2, 1] = logit(0.8)  # survives
    out["part_parent"][:] = [1, 1, 0, 2, 1, 2]
    for j, p in enumerate([0.99, 0.98, 0.61, 0.62, 0.97, 0.63]):
        out["part_logits"][j, j % 3] = logit(p)
    objs = run_postprocess(out, object_threshold=0.3, part_threshold=0.3)
    assert [o.label for o in objs] == ["mug", "bottle"]
    found = {round(p.score, 4): o.label for o in objs for p in o.parts}
    assert found == {0.61: "mug", 0.62: "bottle", 0.63: "bottle"}


def test_allowed_restricts_part_labels_per_object_label() -> None:
    out = raw_outputs(2, 2, 4, 3)
    out["obj_logits"][0, 0] = logit(0.9)  # mug: only handle
    out["obj_logits"][1, 1] = logit(0.8)  # bottle: cap and label
    out["part_parent"][:] = [0, 0, 1, 1]
    out["part_logits"][0] = [logit(0.6), logit(0.95), logit(0.1)]  # cap is best but not allowed -> handle
    out["part_logits"][1] = [logit(0.1), logit(0.9), logit(0.85)]  # only disallowed names pass -> dropped
    out["part_logits"][2] = [logit(0.99), logit(0.2), logit(0.7)]  # handle not allowed -> label
    out["part_logits"][3] = [logit(0.99), logit(0.05), logit(0.1)]  # nothing allowed passes -> dropped
    allowed = np.array([[True, False, False], [False, True, True]])
    mug, bottle = run_postprocess(out, allowed=allowed, part_threshold=0.3)
    assert [(p.label, round(p.score, 4)) for p in mug.parts] == [("handle", 0.6)]
    assert [(p.label, round(p.score, 4)) for p in bottle.parts] == [("label", 0.7)]
    # without the restriction the best name wins
    mug, bottle = run_postprocess(out, part_threshold=0.3)
    assert [p.label for p in mug.parts] == ["cap", "cap"]
    assert sorted(p.label for p in bottle.parts) == ["handle", "handle"]


@pytest.mark.parametrize(
    ("parts", "allowed_row"),
    [
        (("handle", "cap"), [False, False]),  # object_parts={"mug": []}
        (("part",), [False]),  # an objects-only vocabulary (the Segmenter's placeholder part name)
    ],
    ids=["object-restricted-to-no-parts", "objects-only-vocabulary"],
)
def test_disallowed_parts_never_appear_even_at_zero_part_threshold(
    parts: tuple[str, ...], allowed_row: list[bool]
) -> None:
    """part_threshold=0 is a valid config; a part no name is allowed for must still never be reported."""
    out = raw_outputs(1, 1, 2, len(parts))
    out["obj_logits"][0, 0] = logit(0.9)
    out["part_parent"][:] = 0
    out["part_logits"][:] = logit(0.9)
    (obj,) = run_postprocess(
        out, objects=("mug",), parts=parts, allowed=np.array([allowed_row]), part_threshold=0.0
    )
    assert [p.object_label for p in obj.parts] == []


def test_ids_parent_ids_and_labels() -> None:
    out = raw_outputs(2, 2, 4, 3)
    out["obj_logits"][0, 0], out["obj_logits"][1, 1] = logit(0.9), logit(0.8)
    out["part_parent"][:] = [0, 1, 0, 1]
    out["part_logits"][:, 2] = [logit(0.7), logit(0.6), logit(0.5), logit(0.4)]
    objs = run_postprocess(out)
    flat = [(o.id, o.label) for o in objs]
    assert flat == [(1, "mug"), (4, "bottle")]
    assert [(p.id, p.parent_id, p.label, p.object_label) for p in objs[0].parts] == [
        (2, 1, "label", "mug:label"),
        (3, 1, "label", "mug:label"),
    ]
    assert [(p.id, p.parent_id, p.object_label) for p in objs[1].parts] == [
        (5, 4, "bottle:label"),
        (6, 4, "bottle:label"),
    ]


def test_boxes_in_input_pixels_and_clamped() -> None:
    """300x500 into 320x240: scale 0.64, the image covers padded rows 0..192; boxes are relative to the
    padded 320x256, i.e. 500x400 image pixels."""
    out = raw_outputs(3, 1, 1, 1)
    out["obj_logits"][:, 0] = [logit(0.9), logit(0.8), logit(0.7)]
    out["obj_boxes"][:] = [
        [0.5, 0.5, 0.25, 0.5],  # inside
        [0.9, 0.9, 0.4, 0.4],  # past the right and bottom edges (and into the padding)
        [0.05, 0.1, 0.2, 0.4],  # past the left and top edges
    ]
    out["part_parent"][:] = 0
    out["part_logits"][0, 0] = logit(0.9)
    out["part_boxes"][0] = [0.25, 0.25, 0.1, 0.1]
    objs = run_postprocess(
        out, objects=("mug",), parts=("handle",), size=(300, 500), clip_parts_to_parent=False
    )
    boxes = np.stack([o.box for o in objs])
    np.testing.assert_allclose(
        boxes,
        [[187.5, 100.0, 312.5, 300.0], [350.0, 280.0, 500.0, 300.0], [0.0, 0.0, 75.0, 120.0]],
        atol=1e-3,
    )
    np.testing.assert_allclose(objs[0].parts[0].box, [100.0, 80.0, 150.0, 120.0], atol=1e-3)


def test_clipped_parts_are_cut_to_the_parent_box_and_dropped_when_empty() -> None:
    """240x320 at scale 1 (padded to 256x320): parent box x 80..240, y 64..192; parent mask = the left half
    of x 80..160, y 60..180."""
    out = raw_outputs(1, 1, 2, 1)
    out["obj_logits"][0, 0] = logit(0.9)
    out["obj_boxes"][0] = [0.5, 0.5, 0.5, 0.5]
    out["obj_masks"][0] = _box_logits((15, 45), (20, 40))
    out["part_parent"][:] = 0
    out["part_logits"][:, 0] = [logit(0.8), logit(0.7)]
    out["part_boxes"][0] = [0.25, 0.5, 0.5, 0.25]  # x 0..160: half outside the parent box
    out["part_masks"][1] = _box_logits((15, 45), (50, 60))  # only right of the parent mask
    clipped = run_postprocess(out, objects=("mug",), parts=("handle",))[0]
    assert [round(p.score, 4) for p in clipped.parts] == [0.8]  # the part outside the parent mask is gone
    np.testing.assert_allclose(clipped.parts[0].box, [80.0, 96.0, 160.0, 160.0], atol=1e-3)
    assert not (clipped.parts[0].mask & ~clipped.mask).any()
    unclipped = run_postprocess(out, objects=("mug",), parts=("handle",), clip_parts_to_parent=False)[0]
    assert [round(p.score, 4) for p in unclipped.parts] == [0.8, 0.7]
    np.testing.assert_allclose(unclipped.parts[0].box, [0.0, 96.0, 160.0, 160.0], atol=1e-3)


def _box_logits(rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    m = np.full((MASK_H, MASK_W), LOW, np.float32)
    m[rows[0] : rows[1], cols[0] : cols[1]] = -LOW
    return m


def test_boxes_use_each_axis_own_scale() -> None:
    """8000x250 into 320x240 is 8 px wide in the network (7.5 rounded up): network x = 4 is image x = 125, where
    the common fit scale (0.03) put it at 133."""
    out = raw_outputs(1, 1, 1, 1)
    out["obj_logits"][0, 0] = logit(0.9)
    out["obj_boxes"][0] = [2 / PAD_W, 0.5, 4 / PAD_W, 0.25]  # network x 0..4, y 96..160 of 256
    (obj,) = run_postprocess(out, objects=("mug",), parts=("handle",), size=(8000, 250))
    np.testing.assert_allclose(obj.box, [0.0, 3200.0, 125.0, 5333.333], rtol=1e-5)


@pytest.mark.parametrize(
    ("size", "rows", "cols"),
    [
        ((300, 500), (10, 20), (20, 40)),  # wide: scale 0.64, padding at the bottom
        ((500, 300), (30, 50), (5, 30)),  # tall: scale 0.48, padding at the right
        ((333, 517), (7, 33), (11, 61)),  # a scale that is not a round number
        ((300, 500), (40, 60), (60, 80)),  # the block reaches into the padding and the image's corner
        # 8 px wide in the network (7.5 rounded): 0.032 across, 0.03 down; at the one scale, 0.03, the block's
        # right edge landed at 133 px instead of 125
        ((8000, 250), (10, 30), (0, 1)),
    ],
)
def test_masks_map_to_the_letterboxed_pixels(
    size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]
) -> None:
    """A mask on a stride-4 block [r0, r1) x [c0, c1) covers input pixels [4 r0 / s, 4 r1 / s) (+-1 px),
    with each axis' own scale s.

    Its edges are exact; bilinear upsampling only rounds the corners, within half a cell (2 / s px) of both.
    """
    h, w = size
    out = raw_outputs(1, 1, 1, 1)
    out["obj_logits"][0, 0] = logit(0.9)
    out["obj_masks"][0] = _box_logits(rows, cols)
    (obj,) = run_postprocess(out, objects=("mug",), parts=("handle",), size=size)
    assert obj.mask.shape == (h, w) and obj.mask.dtype == bool
    lb = image_letterbox(h, w)
    top, bottom = (4 * v / lb.scale_y for v in rows)
    left, right = (4 * v / lb.scale_x for v in cols)
    bottom_in, right_in = min(bottom, h), min(right, w)  # where the image ends inside the block
    assert bottom_in - top > 8 and right_in - left > 8, "test setup: the block must be visible in the image"
    yc = np.arange(h)[:, None] + 0.5
    xc = np.arange(w)[None, :] + 0.5
    outside = (yc < top - 1) | (yc > bottom + 1) | (xc < left - 1) | (xc > right + 1)
    assert not obj.mask[outside].any()
    corner_y, corner_x = 2 / lb.scale_y + 1, 2 / lb.scale_x + 1
    core = (yc > top + corner_y) & (yc < bottom - corner_y) & (xc > left + corner_x) & (xc < right - corner_x)
    assert obj.mask[core].all()
    # the edges, measured through the middle of the block
    ys = np.nonzero(obj.mask[:, int((left + right_in) / 2)])[0]
    xs = np.nonzero(obj.mask[int((top + bottom_in) / 2)])[0]
    assert abs(ys[0] + 0.5 - top) <= 1 and abs(ys[-1] + 0.5 - bottom_in) <= 1, (ys[0], ys[-1], top, bottom)
    assert abs(xs[0] + 0.5 - left) <= 1 and abs(xs[-1] + 0.5 - right_in) <= 1, (xs[0], xs[-1], left, right)
    assert len(ys) == ys[-1] - ys[0] + 1 and len(xs) == xs[-1] - xs[0] + 1  # no holes


@pytest.mark.parametrize("size", [(480, 640), (333, 517), (500, 300), (1080, 1920), (8, 99)])
def test_mask_upsampling_equals_pytorch_bilinear_interpolation(size: tuple[int, int]) -> None:
    """The OpenCV resize samples where ``F.interpolate(scale_factor=letterbox scale, align_corners=False)``
    over the padded logits does: same pixels except where the logit is within rounding of 0."""
    lb = image_letterbox(*size)
    logits = np.random.default_rng(0).standard_normal((3, MASK_H, MASK_W)).astype(np.float32) * 4
    sy, sx = lb.padded_height / (MASK_H * lb.scale_y), lb.padded_width / (MASK_W * lb.scale_x)
    padded = F.pad(torch.from_numpy(logits)[None], (0, 1, 0, 1), mode="replicate")
    reference = F.interpolate(padded, scale_factor=(sy, sx), mode="bilinear", recompute_scale_factor=False)[
        0, :, : lb.height, : lb.width
    ]
    assert reference.shape[1:] == size, "test setup: the reference must cover the image"
    masks = _masks_to_input(logits, lb)
    assert masks.shape == (3, *size)
    differ = masks != (reference > 0).numpy()
    assert (reference.abs().numpy()[differ] < 1e-4).all(), reference.abs().numpy()[differ].max()


def test_padding_never_leaks_into_masks() -> None:
    """300x500 covers stride-4 rows 0..48 only; a mask that is on only below them is empty in the image."""
    out = raw_outputs(1, 1, 1, 1)
    out["obj_logits"][0, 0] = logit(0.9)
    out["obj_masks"][0] = _box_logits((50, MASK_H), (0, MASK_W))
    (obj,) = run_postprocess(out, objects=("mug",), parts=("handle",), size=(300, 500))
    assert obj.mask.shape == (300, 500) and not obj.mask.any()


def test_mask_shape_matches_the_image_for_any_size() -> None:
    out = raw_outputs(1, 1, 1, 1)
    out["obj_logits"][0, 0] = logit(0.9)
    out["obj_masks"][0] = -LOW
    out["part_logits"][0, 0] = logit(0.9)
    out["part_masks"][0] = -LOW
    wrong = []
    sizes = [(h, w) for h in range(8, 1100, 61) for w in range(8, 1100, 47)] + [
        (200, 385),
        (8, 99),
        (8192, 8),
    ]
    for h, w in sizes:
        (obj,) = run_postprocess(out, objects=("mug",), parts=("handle",), size=(h, w))
        if obj.mask.shape != (h, w) or obj.parts[0].mask.shape != (h, w) or not obj.mask.all():
            wrong.append(((h, w), obj.mask.shape))
    assert wrong == [], f"{len(wrong)} of {len(sizes)} image sizes get a mask of the wrong shape: {wrong[:8]}"


@pytest.mark.parametrize("clip", [True, False])
def test_clip_parts_to_parent(clip: bool) -> None:
    out = raw_outputs(1, 1, 1, 1)
    out["obj_logits"][0, 0] = logit(0.9)
    out["obj_masks"][0] = _box_logits((10, 30), (10, 40))
    out["part_logits"][0, 0] = logit(0.9)
    out["part_masks"][0] = _box_logits((20, 50), (30, 70))  # half outside the parent
    (obj,) = run_postprocess(out, objects=("mug",), parts=("handle",), clip_parts_to_parent=clip)
    (part,) = obj.parts
    unclipped = run_postprocess(out, objects=("mug",), parts=("handle",), clip_parts_to_parent=False)[
        0
    ].parts[0]
    assert (part.mask & ~obj.mask).any() != clip
    if clip:
        np.testing.assert_array_equal(part.mask, unclipped.mask & obj.mask)
        assert part.mask.any()
    else:
        # the part's own mask, untouched: stride-4 rows 20..50 x cols 30..70 at scale 1
        assert part.mask[85:195, 125:275].all() and not part.mask[:75].any()


def test_no_detections_gives_an_empty_list() -> None:
    assert run_postprocess(raw_outputs(4, 2, 8, 3), object_threshold=0.3) == []


# ---------------------------------------------------------------------------------------------------------
# Segmenter over a real TorchBackend


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("small_model"))


@pytest.fixture(scope="module")
def segmenter(model_dir: Path) -> Segmenter:
    """Thresholds at 0 so that a random-weight model always reports objects and parts."""
    post = PostprocessConfig(object_threshold=0.0, part_threshold=0.0, max_objects=6, max_parts_per_object=3)
    seg = load_segmenter(model_dir, backend="torch", postprocess_config=post)
    assert isinstance(seg.backend, TorchBackend)
    assert seg.input_size == (NET_W, NET_H)
    return seg


VOCAB_A = (("mug", "bottle"), ("handle", "cap"))
VOCAB_B = (("chair", "table", "lamp"), ("leg", "seat", "shade"))


def check_result(result: SegmentationResult, vocab: Vocabulary, height: int, width: int) -> None:
    assert (result.height, result.width) == (height, width)
    assert result.vocabulary_revision == vocab.revision
    assert result.objects, "thresholds are 0: a frame always has objects"
    for obj in result.objects:
        assert obj.label in vocab.objects
        assert obj.mask.shape == (height, width) and obj.mask.dtype == bool
        assert 0 <= obj.box[0] <= obj.box[2] <= width and 0 <= obj.box[1] <= obj.box[3] <= height
        for part in obj.parts:
            assert part.label in vocab.allowed_parts(obj.label)
            assert part.object_label == f"{obj.label}:{part.label}" and part.parent_id == obj.id
            assert part.mask.shape == (height, width)
            assert not (part.mask & ~obj.mask).any()  # clip_parts_to_parent defaults to true


@pytest.mark.parametrize(
    "size",
    [(480, 640), (240, 320), (333, 517), (100, 900), (900, 100), (200, 385)],
    ids=lambda s: f"{s[0]}x{s[1]}",
)
def test_segment_returns_masks_at_the_image_size(segmenter: Segmenter, size: tuple[int, int]) -> None:
    vocab = segmenter.set_vocabulary(*VOCAB_A)
    h, w = size
    result = segmenter.segment(noise_image(h * w, h, w))
    check_result(result, vocab, h, w)
    assert result.parts(), "part_threshold is 0: objects have parts"
    assert set(result.timings_ms) == {"preprocess", "inference", "postprocess", "total"}


def test_segment_accepts_a_non_contiguous_view(segmenter: Segmenter) -> None:
    """A BGR->RGB channel flip (``image[..., ::-1]``) is what a ROS bgr8 frame turns into."""
    vocab = segmenter.set_vocabulary(*VOCAB_A)
    image = noise_image(1, 240, 320)
    check_result(segmenter.segment(image[..., ::-1]), vocab, 240, 320)
    check_result(segmenter.segment(image[::2, ::2]), vocab, 120, 160)


def test_segment_is_deterministic_and_sees_the_image(segmenter: Segmenter) -> None:
    segmenter.set_vocabulary(*VOCAB_A)
    a, b = noise_image(1), noise_image(2)
    ra1, ra2, rb = segmenter.segment(a), segmenter.segment(a), segmenter.segment(b)
    assert [o.score for o in ra1.objects] == [o.score for o in ra2.objects]
    assert [o.score for o in ra1.objects] != [o.score for o in rb.objects]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((240, 320, 3), np.float32), "must be uint8, got float32"),
        (np.zeros((240, 320), np.uint8), r"HxWx3 RGB, got shape \(240, 320\)"),
        (np.zeros((240, 320, 4), np.uint8), r"HxWx3 RGB, got shape \(240, 320, 4\)"),
        (np.zeros((4, 4, 3), np.uint8), "4x4 is too small"),
        (np.zeros((8, 7, 3), np.uint8), "7x8 is too small"),
        (np.zeros((240, 320, 3), np.uint8).tolist(), "must be a numpy array, got list"),
        (np.zeros((10, 9000, 3), np.uint8), "9000x10 exceeds 8192 pixels per side"),
        # a view of one pixel: no memory for 16.8 MP
        (np.broadcast_to(np.zeros(3, np.uint8), (4097, 4096, 3)), "4096x4097 has 16781312 pixels, more than"),
    ],
    ids=["float", "2d", "rgba", "4x4", "7x8", "list", "9000px", "over-16.8MP"],
)
def test_bad_images_raise_image_error_and_the_segmenter_still_works(
    segmenter: Segmenter, image: object, message: str
) -> None:
    vocab = segmenter.set_vocabulary(*VOCAB_A)
    with pytest.raises(ImageError, match=message):
        segmenter.segment(image)  # type: ignore[arg-type]
    assert issubclass(ImageError, ValueError)
    check_result(segmenter.segment(noise_image(3, 64, 80)), vocab, 64, 80)


def test_segment_without_vocabulary_is_refused(segmenter: Segmenter) -> None:
    fresh = Segmenter(segmenter.backend, segmenter.text_encoder, segmenter.input_size)
    assert fresh.vocabulary is None
    with pytest.raises(RuntimeError, match="no vocabulary set"):
        fresh.segment(noise_image(0))


def _too_many() -> list[str]:
    return [f"thing {i}" for i in range(MAX_NAMES_PER_LEVEL + 1)]


def _endless() -> Iterator[str]:
    """Names without end: validation must stop at the limit, not try to collect them all."""
    return (f"thing {i}" for i in itertools.count())


def test_image_pixel_limit_is_4096_squared() -> None:
    assert MAX_IMAGE_PIXELS == 4096 * 4096
    validate_image(np.broadcast_to(np.zeros(3, np.uint8), (4096, 4096, 3)))
    validate_image(np.broadcast_to(np.zeros(3, np.uint8), (8192, 2048, 3)))
    with pytest.raises(ImageError, match="more than 16777216"):
        validate_image(np.broadcast_to(np.zeros(3, np.uint8), (8192, 2049, 3)))


@pytest.mark.parametrize(
    ("objects", "parts", "mapping", "message"),
    [
        ([], ["handle"], None, "at least one object name"),
        (["mug", ""], [], None, "object name #1 is empty"),
        (["mug", "  \t "], [], None, "object name #1 is empty"),
        (["mug"], ["handle", ""], None, "part name #1 is empty"),
        (["Mug", "bottle", "mug"], [], None, r"duplicate object names \(.*\): Mug, mug"),
        (["mug"], ["Handle", "handle"], None, r"duplicate part names \(.*\): Handle, handle"),
        # one name to the text encoder: composed and decomposed accents, and no accent at all
        (["m\u00fag", "mu\u0301g"], [], None, "duplicate object names .*: m\u00fag, m\u00fag"),
        (["caf\u00e9", "cafe"], [], None, "duplicate object names .*: caf\u00e9, cafe"),
        # "_" is a space to the text encoder (category_prompt): these gave identical embeddings
        (["cup_holder", "cup holder"], [], None, "duplicate object names .*: cup_holder, cup holder"),
        (["mug"], ["lid", "lid_"], None, "duplicate part names .*: lid, lid_"),
        (["mug", "___"], [], None, r"object name #1 \('___'\) has no words"),
        # distinct names, but all unknown to the tokenizer ([UNK]): the second could never be reported
        (
            ["mug", "\U0001f37a", "\U0001f377"],
            [],
            None,
            "object names the text encoder cannot tell apart .*: \U0001f37a, \U0001f377",
        ),
        (["mug"], ["x" * 150 + "1", "x" * 150 + "2"], None, "part names the text encoder cannot tell apart"),
        (["mug:handle"], [], None, "'mug:handle' contains ':'"),
        (["mug"], ["lid:knob"], None, "'lid:knob' contains ':'"),
        (
            ["x" * (MAX_NAME_LENGTH + 1)],
            [],
            None,
            f"{MAX_NAME_LENGTH + 1} characters; the limit is {MAX_NAME_LENGTH}",
        ),
        (["mug\n2"], [], None, None),  # whitespace collapses: "mug 2" is fine
        (["mug\x07"], [], None, "control characters"),
        ("mug", [], None, "not one string"),
        (["mug", 3], [], None, "object name #1 is int"),
        (["mug"], ["handle"], {"cup": ["handle"]}, "object_parts names object 'cup'"),
        (["mug"], ["handle"], {"mug": ["handle", "spout"]}, "unknown parts: spout"),
        (
            _too_many(),
            [],
            None,
            f"more than {MAX_NAMES_PER_LEVEL} object names; the limit is {MAX_NAMES_PER_LEVEL}",
        ),
        (
            ["mug"],
            _too_many(),
            None,
            f"more than {MAX_NAMES_PER_LEVEL} part names; the limit is {MAX_NAMES_PER_LEVEL}",
        ),
        (_endless(), [], None, f"more than {MAX_NAMES_PER_LEVEL} object names"),
        (["mug"], _endless(), None, f"more than {MAX_NAMES_PER_LEVEL} part names"),
        (None, [], None, "object names must be a list of strings, got NoneType"),
        (["mug"], None, None, "part names must be a list of strings, got NoneType"),
        (["mug"], ["handle"], [("mug", ["handle"])], "object_parts must map object names .* got list"),
        (["mug"], ["handle"], {"mug": None}, "'mug' part names must be a list of strings, got NoneType"),
        (["mug"], ["handle"], {"mug": "handle"}, "'mug' part names must be a list of strings, not one"),
        (["mug"], ["handle"], {3: ["handle"]}, "object_parts key 3 is int, not an object name"),
        (
            ["mug"],
            ["handle", "lid"],
            {"mug": ["handle"], " mug ": []},
            "object_parts names object 'mug' twice",
        ),
    ],
    ids=[
        "no-objects",
        "empty-object",
        "blank-object",
        "empty-part",
        "case-duplicate-objects",
        "case-duplicate-parts",
        "composed-duplicate-objects",
        "accent-duplicate-objects",
        "underscore-duplicate-objects",
        "trailing-underscore-duplicate-parts",
        "underscores-only",
        "emoji-encode-alike",
        "overlong-words-encode-alike",
        "colon-object",
        "colon-part",
        "too-long",
        "newline-collapses-ok",
        "control-character",
        "one-string",
        "not-a-string",
        "mapping-unknown-object",
        "mapping-unknown-part",
        "too-many-objects",
        "too-many-parts",
        "endless-objects",
        "endless-parts",
        "objects-none",
        "parts-none",
        "mapping-not-a-mapping",
        "mapping-parts-none",
        "mapping-parts-one-string",
        "mapping-key-not-a-string",
        "mapping-object-twice",
    ],
)
def test_bad_vocabularies_are_rejected_and_the_previous_one_stays(
    segmenter: Segmenter,
    objects: list[str],
    parts: list[str],
    mapping: dict[str, list[str]] | None,
    message: str | None,
) -> None:
    before = segmenter.set_vocabulary(["cup", "plate"], ["rim"])
    if message is None:
        accepted = segmenter.set_vocabulary(objects, parts, mapping)
        assert accepted.revision == before.revision + 1 and accepted.objects == ("mug 2",)
        return
    with pytest.raises(VocabularyError, match=message):
        segmenter.set_vocabulary(objects, parts, mapping)
    assert issubclass(VocabularyError, ValueError)
    assert segmenter.vocabulary is before
    result = segmenter.segment(noise_image(4, 48, 64))
    assert result.vocabulary_revision == before.revision
    assert {o.label for o in result.objects} <= {"cup", "plate"}
    # the next accepted vocabulary continues the numbering: a rejected one consumed no revision
    assert segmenter.set_vocabulary(["cup"]).revision == before.revision + 1


def test_set_vocabulary_returns_increasing_revisions_carried_by_results(segmenter: Segmenter) -> None:
    first = segmenter.set_vocabulary(*VOCAB_A)
    second = segmenter.set_vocabulary(*VOCAB_B, object_parts={"lamp": ["shade"]})
    assert second.revision == first.revision + 1 and segmenter.vocabulary is second
    result = segmenter.segment(noise_image(5))
    check_result(result, second, 240, 320)
    assert all(p.label == "shade" for o in result.objects if o.label == "lamp" for p in o.parts)
    third = segmenter.set_vocabulary(*VOCAB_A)
    assert third.revision == second.revision + 1
    assert segmenter.segment(noise_image(5)).vocabulary_revision == third.revision


def test_a_prepared_vocabulary_runs_one_frame_and_leaves_the_active_one(segmenter: Segmenter) -> None:
    """What the node's segment service does: a query's own names for one frame, the stream unchanged."""
    active = segmenter.set_vocabulary(*VOCAB_A)
    query = make_vocabulary(*VOCAB_B, {"lamp": ["shade"]})
    prepared = segmenter.prepare(query)
    got = segmenter.segment(noise_image(8), prepared)
    assert segmenter.vocabulary is active
    check_result(got, query, 240, 320)
    assert got.vocabulary_revision == 0 and got.objects
    assert segmenter.segment(noise_image(8)).vocabulary_revision == active.revision
    separate = Segmenter(segmenter.backend, segmenter.text_encoder, segmenter.input_size, segmenter.config)
    separate.set_vocabulary(*VOCAB_B, object_parts={"lamp": ["shade"]})
    want = separate.segment(noise_image(8))
    assert [(o.label, o.score) for o in got.objects] == [(o.label, o.score) for o in want.objects]
    for g, w in zip(got.objects, want.objects, strict=True):
        assert np.array_equal(g.mask, w.mask)
        assert [(p.object_label, p.score) for p in g.parts] == [(p.object_label, p.score) for p in w.parts]
    limited = Segmenter(
        LimitedBackend(segmenter.backend, SizeRange(1, 1), SizeRange(1, 4)),
        segmenter.text_encoder,
        segmenter.input_size,
    )
    with pytest.raises(VocabularyError, match="built for 1 to 1 object names"):
        limited.prepare(query)


def test_objects_only_vocabulary(segmenter: Segmenter) -> None:
    """No part names: the network still gets one placeholder part, which is never reported, even with both
    thresholds at 0 (with which the same model reports parts for a vocabulary that has them)."""
    seg = Segmenter(segmenter.backend, segmenter.text_encoder, segmenter.input_size, segmenter.config)
    assert (seg.config.object_threshold, seg.config.part_threshold) == (0.0, 0.0)
    vocab = seg.set_vocabulary(["mug", "bottle"])
    result = seg.segment(noise_image(6))
    check_result(result, vocab, 240, 320)
    assert result.parts() == []
    assert seg.set_vocabulary(["mug", "bottle"], ["part"]) and seg.segment(noise_image(6)).parts()


def test_object_parts_lines_are_parsed_once_per_object() -> None:
    assert parse_object_parts(["mug: handle, body", "  big   kettle : lid", "cup:"]) == {
        "mug": ["handle", "body"],
        "big kettle": ["lid"],
        "cup": [],
    }
    for lines, message in [
        (["mug: handle", "mug: lid"], "two entries for 'mug'"),
        (["mug: handle", " mug :lid"], "two entries for 'mug'"),
        (["mug handle"], "not of the form"),
        (["mug: handle", 3], "entry #1 is int"),
        ("mug: handle", "must be a list"),
        (None, "must be a list"),
        ((f"thing {i}: x" for i in itertools.count()), f"more than {MAX_NAMES_PER_LEVEL}"),
    ]:
        with pytest.raises(VocabularyError, match=message):
            parse_object_parts(lines)  # type: ignore[arg-type]


class LimitedBackend(Backend):
    """Wraps a backend and reports vocabulary size ranges, as a TensorRT engine's profiles do."""

    name = "limited"

    def __init__(self, inner: Backend, objects: SizeRange, parts: SizeRange) -> None:
        self.inner, self.device, self.limits = inner, inner.device, (objects, parts)

    def infer(
        self, image: np.ndarray, object_text: np.ndarray, part_text: np.ndarray
    ) -> dict[str, np.ndarray]:
        (objects, parts), k_obj, k_part = self.limits, object_text.shape[0], part_text.shape[0]
        assert objects.min <= k_obj <= objects.max and parts.min <= k_part <= parts.max
        return self.inner.infer(image, object_text, part_text)

    def vocabulary_limits(self) -> tuple[SizeRange, SizeRange] | None:
        return self.limits


@pytest.mark.parametrize(
    ("objects", "parts", "message"),
    [
        (["a", "b", "c", "d"], ["x", "y"], "built for 2 to 3 object names, this vocabulary has 4;"),
        (["a"], ["x", "y"], "built for 2 to 3 object names, this vocabulary has 1;"),
        (["a", "b"], ["x", "y", "z"], "built for 1 to 2 part names, this vocabulary has 3;"),
    ],
    ids=["objects-above-max", "objects-below-min", "parts-above-max"],
)
def test_vocabulary_outside_the_backend_limits_is_refused(
    segmenter: Segmenter, objects: list[str], parts: list[str], message: str
) -> None:
    backend = LimitedBackend(segmenter.backend, SizeRange(2, 3), SizeRange(1, 2))
    seg = Segmenter(backend, segmenter.text_encoder, segmenter.input_size)
    before = seg.set_vocabulary(*VOCAB_A)  # 2 objects, 2 parts: fits
    with pytest.raises(VocabularyError, match=f"limited backend was {message}"):
        seg.set_vocabulary(objects, parts)
    assert seg.vocabulary is before
    assert seg.segment(noise_image(7, 48, 64)).vocabulary_revision == before.revision
    assert (
        seg.set_vocabulary(["a", "b"]).revision == before.revision + 1
    )  # objects only: one placeholder part


def test_a_vocabulary_without_parts_needs_a_profile_that_runs_one_part(segmenter: Segmenter) -> None:
    backend = LimitedBackend(segmenter.backend, SizeRange(1, 3), SizeRange(2, 4))
    seg = Segmenter(backend, segmenter.text_encoder, segmenter.input_size)
    with pytest.raises(
        VocabularyError, match="this vocabulary has 1 \\(the placeholder of a vocabulary without"
    ):
        seg.set_vocabulary(["mug"])
    assert seg.vocabulary is None
    assert seg.set_vocabulary(["mug"], ["handle", "body"]).revision == 1


# ---------------------------------------------------------------------------------------------------------
# thread safety


class SwapDuringInference(Backend):
    """Wraps a backend; while each frame is being inferred, another thread swaps the vocabulary."""

    name = "swap-during-inference"

    def __init__(self, inner: Backend) -> None:
        self.inner, self.device = inner, inner.device
        self.in_flight, self.swapped = threading.Event(), threading.Event()
        self.object_counts: list[int] = []

    def infer(
        self, image: np.ndarray, object_text: np.ndarray, part_text: np.ndarray
    ) -> dict[str, np.ndarray]:
        self.object_counts.append(object_text.shape[0])
        self.swapped.clear()
        self.in_flight.set()
        assert self.swapped.wait(30), "the vocabulary thread did not swap in time"
        return self.inner.infer(image, object_text, part_text)


def _run_threads(*targets: Callable[[], None]) -> list[BaseException]:
    """Run the targets in threads, wait (bounded) for all of them, and return what they raised."""
    errors: list[BaseException] = []

    def guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=guard, args=(t,), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a thread did not finish"
    return errors


def test_vocabulary_swapped_mid_frame_never_mixes_into_that_frame(segmenter: Segmenter) -> None:
    backend = SwapDuringInference(segmenter.backend)
    seg = Segmenter(backend, segmenter.text_encoder, segmenter.input_size, segmenter.config)
    frames = 8
    issued: dict[int, Vocabulary] = {}
    first = seg.set_vocabulary(*VOCAB_A)
    issued[first.revision] = first
    results: list[SegmentationResult] = []

    def segment_loop() -> None:
        for i in range(frames):
            results.append(seg.segment(noise_image(i, 96, 128)))

    def swap_loop() -> None:
        for i in range(frames):
            assert backend.in_flight.wait(30), "no frame started"
            backend.in_flight.clear()
            vocab = seg.set_vocabulary(*(VOCAB_B if i % 2 == 0 else VOCAB_A))
            issued[vocab.revision] = vocab
            backend.swapped.set()

    assert _run_threads(segment_loop, swap_loop) == []
    assert [r.vocabulary_revision for r in results] == list(range(first.revision, first.revision + frames))
    for result, count in zip(results, backend.object_counts, strict=True):
        vocab = issued[result.vocabulary_revision]
        assert count == len(vocab.objects)
        check_result(result, vocab, 96, 128)
    assert {issued[r.vocabulary_revision].objects for r in results} == {VOCAB_A[0], VOCAB_B[0]}


def test_free_running_vocabulary_swaps_keep_every_result_consistent(segmenter: Segmenter) -> None:
    seg = Segmenter(segmenter.backend, segmenter.text_encoder, segmenter.input_size, segmenter.config)
    issued: dict[int, Vocabulary] = {}
    for names in (VOCAB_B, VOCAB_A):  # both in the text encoder's cache: swaps then take no time
        vocab = seg.set_vocabulary(*names)
        issued[vocab.revision] = vocab
    results: list[SegmentationResult] = []
    done = threading.Event()

    def segment_loop() -> None:
        try:
            for i in range(10):
                results.append(seg.segment(noise_image(i, 64, 96)))
        finally:
            done.set()

    def swap_loop() -> None:
        i = 0
        while not done.is_set():
            vocab = seg.set_vocabulary(*(VOCAB_A if i % 2 == 0 else VOCAB_B))
            issued[vocab.revision] = vocab
            i += 1
            done.wait(0.002)

    assert _run_threads(segment_loop, swap_loop) == []
    revisions = [r.vocabulary_revision for r in results]
    assert len(results) == 10 and revisions == sorted(revisions)
    for result in results:
        check_result(result, issued[result.vocabulary_revision], 64, 96)


class GatedEncoder(TextEncoder):
    """Wraps an encoder; once ``armed``, its next call signals ``entered`` and then waits (at most ``hold``
    s) for ``release``, so a test can act while a vocabulary change is in the middle of encoding."""

    def __init__(self, inner: TextEncoder, hold: float = 30.0) -> None:
        self.inner, self.dim, self.hold = inner, inner.dim, hold
        self.entered, self.release = threading.Event(), threading.Event()
        self.armed = False

    def encode(self, names: list[str]) -> np.ndarray:
        if self.armed:
            self.armed = False
            self.entered.set()
            self.release.wait(self.hold)
        return self.inner.encode(names)


@pytest.mark.parametrize("first", ["set_vocabulary", "apply_vocabulary"])
def test_a_slow_vocabulary_change_does_not_hold_up_a_newer_one(segmenter: Segmenter, first: str) -> None:
    """Revision 2 is slow to encode; revision 3 arrives meanwhile and is active at once: names are encoded
    outside the lock that swaps vocabularies in. When 2 is done, a caller-numbered one (apply_vocabulary) is
    refused as not newer; set_vocabulary numbers at the swap, so it becomes revision 4 (of unsynchronised
    callers, the change that finishes last wins; the ROS service serialises its requests itself)."""
    encoder = GatedEncoder(segmenter.text_encoder)
    seg = Segmenter(segmenter.backend, encoder, segmenter.input_size, segmenter.config)
    seg.apply_vocabulary(make_vocabulary(*VOCAB_A, revision=1))
    encoder.armed = True
    newer = make_vocabulary(*VOCAB_B, revision=3)
    outcome: list[object] = []
    active_while_held: list[object] = []

    def slow() -> None:
        if first == "set_vocabulary":
            outcome.append(seg.set_vocabulary(*VOCAB_B).revision)
            return
        try:
            seg.apply_vocabulary(make_vocabulary(*VOCAB_B, revision=2))
        except VocabularyError as err:
            outcome.append(str(err))

    def fast() -> None:
        assert encoder.entered.wait(30)
        seg.apply_vocabulary(newer)
        active_while_held.append(seg.vocabulary)
        encoder.release.set()

    assert _run_threads(slow, fast) == []
    assert active_while_held == [newer]
    if first == "set_vocabulary":
        assert outcome == [4] and seg.vocabulary.revision == 4
    else:
        assert outcome == ["vocabulary revision 2 is not newer than the active revision 3"]
        assert seg.vocabulary is newer
    assert seg.segment(noise_image(8, 48, 64)).vocabulary_revision == seg.vocabulary.revision


def test_segment_does_not_wait_for_a_vocabulary_change(segmenter: Segmenter) -> None:
    encoder = GatedEncoder(segmenter.text_encoder)
    seg = Segmenter(segmenter.backend, encoder, segmenter.input_size, segmenter.config)
    seg.apply_vocabulary(make_vocabulary(*VOCAB_A, revision=1))
    encoder.armed = True
    changer = threading.Thread(target=seg.set_vocabulary, args=VOCAB_B, daemon=True)
    changer.start()
    assert encoder.entered.wait(30)
    results: list[SegmentationResult] = []
    frame = threading.Thread(target=lambda: results.append(seg.segment(noise_image(9, 48, 64))), daemon=True)
    frame.start()
    frame.join(20)
    done = not frame.is_alive()
    encoder.release.set()
    changer.join(60)
    assert done, "segment() waited for the vocabulary change"
    assert [r.vocabulary_revision for r in results] == [1]
    assert seg.vocabulary is not None and seg.vocabulary.revision == 2


def test_apply_vocabulary_refuses_a_revision_not_newer_than_the_active_one(segmenter: Segmenter) -> None:
    seg = Segmenter(segmenter.backend, segmenter.text_encoder, segmenter.input_size, segmenter.config)
    active = make_vocabulary(*VOCAB_A, revision=5)
    seg.apply_vocabulary(active)
    for revision in (5, 4):
        with pytest.raises(
            VocabularyError, match=f"revision {revision} is not newer than the active revision 5"
        ):
            seg.apply_vocabulary(make_vocabulary(*VOCAB_B, revision=revision))
        assert seg.vocabulary is active
    assert seg.set_vocabulary(*VOCAB_B).revision == 6


# ---------------------------------------------------------------------------------------------------------
# backend selection


def fake_onnx(path: Path, text_dim: int = 384) -> Path:
    """A graph with the runtime's input/output names and the small model's static image shape (it computes
    nothing useful)."""
    inputs = [
        helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, PAD_H, PAD_W]),
        helper.make_tensor_value_info("object_text", TensorProto.FLOAT, ["K_obj", text_dim]),
        helper.make_tensor_value_info("part_text", TensorProto.FLOAT, ["K_part", text_dim]),
    ]
    assert [i.name for i in inputs] == list(INPUT_NAMES)
    nodes = [helper.make_node("Identity", ["object_text"], [name]) for name in OUTPUT_NAMES]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in OUTPUT_NAMES]
    graph = helper.make_graph(nodes, "fake", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture()
def weights_dir(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the small checkpoint that a test may put a model.onnx next to."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copy(model_dir / name, tmp_path / name)
    return tmp_path


def test_backend_by_name_torch(model_dir: Path) -> None:
    backend = make_backend(model_dir, "torch")
    assert isinstance(backend, TorchBackend) and backend.name == "torch" and backend.device == "cpu"


def test_unknown_backend_name_is_a_clear_error(model_dir: Path) -> None:
    with pytest.raises(
        BackendError, match=r"unknown backend 'tflite'; choose one of auto, torch, onnx, tensorrt"
    ):
        make_backend(model_dir, "tflite")
    with pytest.raises(BackendError, match="unknown backend 'Torch'"):
        load_segmenter(model_dir, backend="Torch")


def test_missing_model_directory_and_weights(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="model directory not found"):
        load_segmenter(tmp_path / "nowhere")
    with pytest.raises(BackendError, match="model weights not found"):
        make_backend(tmp_path, "torch")


def test_auto_without_onnx_or_engine_is_torch(weights_dir: Path) -> None:
    assert make_backend(weights_dir, "auto").name == "torch"
    seg = load_segmenter(weights_dir)  # auto is the default
    assert seg.backend.name == "torch"


def test_auto_prefers_onnx_when_model_onnx_exists(weights_dir: Path) -> None:
    fake_onnx(weights_dir / ONNX_FILE)
    assert make_backend(weights_dir, "auto").name == "onnx"


def test_auto_skips_onnx_for_fp16(weights_dir: Path) -> None:
    """ONNX is only chosen for fp32; fp16 goes to torch, which refuses fp16 on the CPU."""
    fake_onnx(weights_dir / ONNX_FILE)
    with pytest.raises(BackendError, match="fp16 needs a CUDA device") as info:
        make_backend(weights_dir, "auto", precision="fp16")
    assert "onnx" not in str(info.value).lower()


def test_auto_falls_back_to_torch_when_onnx_and_engine_fail(weights_dir: Path) -> None:
    (weights_dir / ONNX_FILE).write_bytes(b"not an onnx graph")
    engine = str(weights_dir / "missing.engine")
    assert make_backend(weights_dir, "auto", engine_path=engine).name == "torch"


def test_auto_reports_every_failure_when_nothing_loads(tmp_path: Path) -> None:
    (tmp_path / ONNX_FILE).write_bytes(b"not an onnx graph")
    with pytest.raises(BackendError) as info:
        make_backend(tmp_path, "auto")
    message = str(info.value)
    assert f"cannot load ONNX model {tmp_path / ONNX_FILE}" in message
    assert f"model weights not found: {tmp_path / WEIGHTS_FILE}" in message


@pytest.mark.parametrize("backend", ["auto", "torch", "onnx", "tensorrt"])
@pytest.mark.parametrize("device", ["gpu", "CPU", "cuda:x", "cudafoo", "cuda:", "cuda:-1", "cuda:\u00b2", ""])
def test_a_mistyped_device_is_one_clear_backend_error(weights_dir: Path, backend: str, device: str) -> None:
    """Whatever the backend (auto included, which would otherwise try each one), before anything loads."""
    fake_onnx(weights_dir / ONNX_FILE)
    engine = str(weights_dir / "model.engine")
    with pytest.raises(BackendError, match=r"^device must be 'cpu', 'cuda' or 'cuda:N' .*, got '") as info:
        make_backend(weights_dir, backend, device=device, engine_path=engine)
    assert ";" not in str(info.value)  # one message, not one per backend auto tried


def test_device_parser_accepts_cpu_cuda_and_cuda_n() -> None:
    from partglee_ros.runtime.backends.base import parse_device

    assert [parse_device(d) for d in ("cpu", "cuda", "cuda:0", "cuda:3", "cuda:12")] == [None, 0, 0, 3, 12]
    with pytest.raises(BackendError, match="got None"):
        parse_device(None)  # type: ignore[arg-type]


def test_precision_given_with_the_onnx_backend_is_said_to_be_ignored(weights_dir: Path, caplog) -> None:
    fake_onnx(weights_dir / ONNX_FILE)
    with caplog.at_level(logging.WARNING):
        assert make_backend(weights_dir, "onnx", precision="fp32").name == "onnx"
    assert "does not apply" not in caplog.text
    with caplog.at_level(logging.WARNING):
        assert make_backend(weights_dir, "onnx", precision="fp16").name == "onnx"
    assert "precision fp16 does not apply to backend onnx; ignored" in caplog.text


def test_a_graph_for_other_text_embeddings_is_refused_at_load(weights_dir: Path) -> None:
    fake_onnx(weights_dir / ONNX_FILE, text_dim=512)
    with pytest.raises(BackendError, match="takes text embeddings of width 512, but .* says text_dim 384"):
        load_segmenter(weights_dir, backend="onnx")
    fake_onnx(weights_dir / ONNX_FILE)
    assert load_segmenter(weights_dir, backend="onnx").backend.name == "onnx"


class WideEncoder(TextEncoder):
    dim = 512

    def encode(self, names: list[str]) -> np.ndarray:
        return np.zeros((len(names), self.dim), np.float32)


def test_a_text_encoder_of_another_width_is_refused_at_load(weights_dir: Path, monkeypatch) -> None:
    import partglee_ros.runtime.factory as factory

    monkeypatch.setattr(factory, "make_text_encoder", lambda config, model_dir: WideEncoder())
    with pytest.raises(
        BackendError, match="'minilm' gives 512-d embeddings, but the model takes text_dim 384"
    ):
        load_segmenter(weights_dir, backend="torch")


@pytest.mark.parametrize("size", [(-320, 240), (320, 0.5), ("320", 240), (320,)])
def test_an_invalid_input_size_is_refused_at_load(weights_dir: Path, size: tuple) -> None:
    with pytest.raises(BackendError, match="input size must be two positive integers"):
        load_segmenter(weights_dir, backend="torch", input_size=size)


@pytest.mark.parametrize("size", [(32, 32), (8, 8)])
def test_an_input_too_small_for_the_object_queries_is_refused_at_load(weights_dir: Path, size: tuple) -> None:
    """Fewer encoder tokens than object queries: every frame would fail in the query selection."""
    with pytest.raises(BackendError, match=f"input size {size[0]}x{size[1]} is too small for this model"):
        load_segmenter(weights_dir, backend="torch", input_size=size)
    smallest = load_segmenter(weights_dir, backend="torch", input_size=(64, 48))  # 84 tokens: it runs
    smallest.set_vocabulary(*VOCAB_A)
    assert smallest.segment(noise_image(1, 48, 64)).width == 64


def test_names_are_composed_so_object_parts_keys_match_however_they_were_typed() -> None:
    vocab = make_vocabulary(["mu\u0301g"], ["handle", "lid"], {"m\u00fag": ["handle"]})
    assert vocab.objects == ("m\u00fag",) and vocab.allowed_parts("m\u00fag") == ("handle",)
