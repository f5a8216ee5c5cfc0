"""Training inputs are refused where they are read, not where they are first used: the val section when the
config is parsed (evaluation first runs after many steps), a missing image file by the reader that was
asked for it (it surfaced as an unrelated error in a DataLoader worker). Also: visualize decodes only the
images it draws, and a resumed run keeps each evaluation once in eval_log.jsonl."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from partglee_ros import strict_json
from tests.test_training import REPO, TINY, _trainer
from training.data import coco_io
from training.data.coco_io import index_paco_json, write_paco_json
from training.data.hierarchy import LazyAnnotations
from training.data.partimagenet import index_partimagenet
from training.data.pascal_part import index_vlpart_pascal_part
from training.data.synthparts import generate_scene
from training.dataset import ListSource, StepBatches
from training.train_config import parse_train_config

SPLIT_CONFIG = str(REPO / "training/configs/synthparts.yaml")  # absolute: the CLI reads from tmp_path
VAL = {
    "name": "synthparts_val",
    "type": "synthparts",
    "split_config": SPLIT_CONFIG,
    "split": "val",
    "width": 128,
    "height": 96,
    "num_images": 1,
}


# --------------------------------------------------------------------------- the val section


@pytest.mark.parametrize(
    ("val", "message"),
    [
        (
            {"name": "paco_val", "type": "paco", "json": "val.json"},
            "runs on a synthparts split, got type 'paco'",
        ),
        ({**VAL, "object_threshold": 30}, "object_threshold must be in [0, 1], got 30"),
        ({**VAL, "part_threshold": -0.1}, "part_threshold must be in [0, 1], got -0.1"),
        ({**VAL, "num_images": 0}, "num_images must be >= 1, got 0"),
    ],
    ids=["paco", "percent-threshold", "negative-threshold", "no-images"],
)
def test_val_section_is_refused_when_the_config_is_read(val: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_train_config({**TINY, "val": val}, REPO)


def test_a_good_val_section_parses() -> None:
    cfg = parse_train_config({**TINY, "val": {**VAL, "object_threshold": 0.5}}, REPO)
    assert cfg.val is not None and cfg.val.postprocess().object_threshold == 0.5


@pytest.mark.parametrize(
    ("val", "message"),
    [
        ({"name": "paco_val", "type": "paco", "json": "val.json"}, "runs on a synthparts split"),
        ({**VAL, "split": "nosuch"}, "KeyError: 'nosuch'"),
        ({**VAL, "split_config": "absent_split.yaml"}, "FileNotFoundError"),
    ],
    ids=["paco", "unknown-split", "absent-split-config"],
)
def test_cli_refuses_a_bad_val_section_before_step_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], val: dict, message: str
) -> None:
    """Exit 2 with one line and nothing trained; the run used to train to its first evaluation, then die
    with a traceback before writing model/."""
    from training.train import main as train_main

    train = {**TINY["datasets"][0], "split_config": SPLIT_CONFIG}
    raw = {**TINY, "model": str(REPO / TINY["model"]), "datasets": [train], "val": val}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    args = ["--config", str(config), "--out", str(out), "--steps", "1", "--no-progress", "--no-tensorboard"]
    assert train_main(args) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("training: error: ") and message in last, last
    assert not (out / "checkpoints").exists() and not (out / "model").exists()


# --------------------------------------------------------------------------- missing images


def _coco_json(tmp_path: Path, file_name: str) -> Path:
    """One image entry and no annotations: all a reader needs to look for the image."""
    path = tmp_path / "annotations.json"
    image = {"id": 1, "file_name": file_name, "height": 8, "width": 8}
    path.write_text(json.dumps({"images": [image], "annotations": [], "categories": []}))
    return path


READERS: dict[str, Callable[[Path, Path], LazyAnnotations]] = {
    "paco": lambda path, images: index_paco_json(path, images),
    "partimagenet": lambda path, images: index_partimagenet(path, images),
    "pascal_part": lambda path, images: index_vlpart_pascal_part(path, image_dir=images),
}


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
def test_a_missing_image_is_named_by_the_reader(
    tmp_path: Path, reader: Callable[[Path, Path], LazyAnnotations]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    index = reader(_coco_json(tmp_path, "a.png"), images)
    assert index.get(0, load_image=False).image is None  # annotations alone need no pixels
    with pytest.raises(FileNotFoundError, match=re.escape(str(images / "a.png"))):
        index.get(0)
    (images / "a.png").write_bytes(b"not a PNG")  # there but undecodable: the same error
    with pytest.raises(FileNotFoundError, match=re.escape(str(images / "a.png"))):
        index.get(0)
    cv2.imwrite(str(images / "a.png"), np.full((8, 8, 3), 7, np.uint8))
    assert index.get(0).image.shape == (8, 8, 3)


def test_training_batches_name_the_missing_image(tmp_path: Path) -> None:
    """The report's case: one image of a PACO copy is gone; the source builds (its vocabulary needs no
    pixels) and drawing that image must name it."""
    scenes = [generate_scene(seed, 64, 48) for seed in range(2)]
    path = write_paco_json(scenes, tmp_path)
    missing = tmp_path / "images" / scenes[0].file_name
    missing.unlink()
    batches = StepBatches([ListSource("paco", index_paco_json(path))], [1.0], 2, (64, 48), hflip_prob=0.0)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        for step in range(4):  # two images, batch 2: drawn within the first steps
            batches[step]


# --------------------------------------------------------------------------- visualize


def test_visualize_decodes_only_the_images_it_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.data.visualize import main

    path = write_paco_json([generate_scene(seed, 64, 48) for seed in range(6)], tmp_path)
    loaded: list[str] = []
    load_rgb = coco_io.load_rgb
    monkeypatch.setattr(coco_io, "load_rgb", lambda p: loaded.append(p.name) or load_rgb(p))
    main(["--out", str(tmp_path / "vis"), "--paco-json", str(path), "--num", "2", "--scale", "1"])
    assert len(loaded) == 2, loaded
    assert len(os.listdir(tmp_path / "vis")) == 2


# --------------------------------------------------------------------------- eval log on resume


def test_resume_drops_evaluations_it_will_redo(tmp_path: Path) -> None:
    """A run killed after evaluating step 4 but before checkpointing it resumes at step 3 and evaluates step 4
    again: the log keeps that step once, the new row."""
    raw = {**TINY, "train": {**TINY["train"], "eval_every": 2, "checkpoint_every": 3}, "val": VAL}
    killed = _trainer(parse_train_config(raw, REPO), tmp_path)
    killed.step = 3  # its newest checkpoint: the weights in it do not matter here
    killed.save()
    stale = {"step": 4, "object_mask_ap_base": -1.0}
    (tmp_path / "eval_log.jsonl").write_text(
        "".join(strict_json.dumps(row) + "\n" for row in ({"step": 2, "object_mask_ap_base": -1.0}, stale))
    )
    resumed = _trainer(parse_train_config(raw, REPO), tmp_path)
    assert resumed.resume() and resumed.step == 3
    resumed.fit()
    rows = [json.loads(line) for line in (tmp_path / "eval_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2, 4]
    assert rows[0]["object_mask_ap_base"] == -1.0  # evaluations up to the restored step stay
    assert rows[1] != stale and {"part_mask_ap_novel", "part_hiou_oracle_obj"} <= rows[1].keys()


@pytest.mark.parametrize(
    ("spec", "missing"),
    [
        ({"type": "partimagenet", "json": "train_format.json"}, "['image_dir']"),
        (
            {"type": "pascal_part", "json": "train.json", "voc_annotations_dir": "Annotations"},
            "['image_dir']",
        ),
        ({"type": "paco", "image_dir": "images"}, "['json']"),
    ],
)
def test_a_dataset_without_its_files_is_refused_when_the_config_is_read(spec: dict, missing: str) -> None:
    """PartImageNet and Pascal-Part have no images beside their JSON: without image_dir the source built and
    the run failed at the first image drawn."""
    with pytest.raises(ValueError, match=re.escape(f"type {spec['type']} needs {missing}")):
        parse_train_config({**TINY, "datasets": [{"name": "d", **spec}]}, REPO)
