"""Helpers for the bag tests: small scene sets and a segmenter/CLI setup shared by offline and replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from partglee_ros.bag.segmentation_msgs import bag_msg_to_result, header, result_to_bag_msg
from partglee_ros.runtime.factory import load_segmenter
from partglee_ros.runtime.postprocess import PostprocessConfig
from partglee_ros.runtime.result import SegmentationResult
from partglee_ros.runtime.segmenter import Segmenter
from partglee_ros.runtime.vocabulary import Vocabulary, make_vocabulary
from training.data.hierarchy import ImageAnnotation

REPO = Path(__file__).resolve().parents[1]
SAMPLE_BAG = REPO / "data" / "sample_bag" / "bag"
SAMPLE_GT_JSON = REPO / "data" / "sample_bag" / "ground_truth.json"
GT_TOPIC = "/ground_truth/segmentation"
# Thresholds 0: a random model then reports many instances, so metrics are not trivially empty.
THRESHOLDS = {"object_threshold": 0.0, "part_threshold": 0.0, "max_objects": 10, "max_parts_per_object": 4}


def vocabulary_of(scenes: list[ImageAnnotation]) -> Vocabulary:
    """What the CLI uses by default: every object and part name of the ground truth, sorted."""
    objects = sorted({o.name for s in scenes for o in s.objects})
    parts = sorted({p.name for s in scenes for p in s.parts()})
    return make_vocabulary(objects, parts, revision=1)


def segmenter_for(model_dir: Path, vocab: Vocabulary) -> Segmenter:
    segmenter = load_segmenter(model_dir, backend="torch", postprocess_config=PostprocessConfig(**THRESHOLDS))
    segmenter.apply_vocabulary(vocab)
    return segmenter


def published(result: SegmentationResult) -> SegmentationResult:
    """A result as the node publishes it and a bag evaluation scores it: tight mask boxes, float32 scores."""
    return bag_msg_to_result(result_to_bag_msg(result, header(0, "")))


def cli_thresholds(params_dir: Path) -> list[str]:
    """A node-style params file with THRESHOLDS, as --params-file arguments."""
    import yaml

    path = params_dir / "thresholds.yaml"
    path.write_text(yaml.safe_dump({"partglee": {"ros__parameters": THRESHOLDS}}))
    return ["--params-file", str(path)]


def noise_scene(seed: int, height: int = 240, width: int = 320) -> ImageAnnotation:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return ImageAnnotation(seed, f"{seed}.png", height, width, [], image=image)


def assert_same_results(got, want) -> None:
    """Same instances, labels, ids, masks; scores equal to float32 precision (the message's type)."""
    assert (got.height, got.width) == (want.height, want.width)
    assert [(o.id, o.label) for o in got.objects] == [(o.id, o.label) for o in want.objects]
    for g, w in zip(got.objects, want.objects, strict=True):
        assert abs(g.score - w.score) < 1e-6 and np.array_equal(g.mask, w.mask)
        assert [(p.id, p.object_label, p.parent_id) for p in g.parts] == [
            (p.id, p.object_label, p.parent_id) for p in w.parts
        ]
        for gp, wp in zip(g.parts, w.parts, strict=True):
            assert abs(gp.score - wp.score) < 1e-6 and np.array_equal(gp.mask, wp.mask)


def assert_same_metrics(a: object, b: object, path: str = "metrics") -> None:
    """Recursive equality of evaluate() dicts, NaN equal to NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys differ"
        for k in a:
            assert_same_metrics(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_metrics(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert isinstance(b, float) and (a == b or (np.isnan(a) and np.isnan(b))), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a} != {b}"


def from_json(value: object) -> object:
    """metrics.json stores NaN as null; turn it back so it compares with evaluate()'s dict."""
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return float("nan") if value is None else value
