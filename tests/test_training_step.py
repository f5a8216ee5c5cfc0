"""One training step: what reaches the losses (float32 under autocast, no part loss for object-only
sources), how real-dataset sources hold their images, and the per-step time the CSV log reports."""

from __future__ import annotations

import csv
import types
from pathlib import Path

import numpy as np
import torch
from torch.utils._pytree import tree_leaves

import training.loop
from tests.test_training import REPO, TINY, _trainer, tiny_config
from training.data.coco_io import write_paco_json
from training.data.hierarchy import ImageAnnotation, LazyAnnotations, ObjectAnnotation, PartAnnotation
from training.data.synthparts import generate_scene
from training.dataset import PLACEHOLDER_PART, Batch, ListSource, build_source, to_device
from training.loop import CsvLog
from training.train_config import DatasetSpec, parse_train_config


def _spy_criterion(trainer: training.loop.Trainer) -> list[tuple[dict, tuple]]:
    """Record what the trainer hands its criterion."""
    calls = []
    criterion = trainer.criterion

    def spy(outputs: dict, targets: list, *args) -> tuple:
        calls.append((outputs, args))
        return criterion(outputs, targets, *args)

    trainer.criterion = spy
    return calls


def test_autocast_outputs_reach_the_losses_in_float32(tmp_path: Path) -> None:
    """bf16 autocast (CPU here, CUDA in real runs): the nested sets (aux layers, encoder proposals, denoising
    layers) must be cast too, not only the top-level tensors."""
    overrides = {**TINY["model_overrides"], "loss": {"num_points": 256, "dn_enabled": True}}
    trainer = _trainer(parse_train_config({**TINY, "model_overrides": overrides}, REPO), tmp_path)
    trainer.amp, trainer.amp_dtype = True, torch.bfloat16
    calls = _spy_criterion(trainer)
    loss, _, _ = trainer.train_step(trainer.model, to_device(trainer.batches[0], trainer.ctx.device))
    ((outputs, _),) = calls
    assert {"obj_aux", "part_aux", "obj_enc", "obj_dn"} <= set(outputs)
    nested = tree_leaves({k: outputs[k] for k in ("obj_aux", "part_aux", "obj_enc", "obj_dn")})
    floats = [v for v in tree_leaves(outputs) if torch.is_tensor(v) and v.is_floating_point()]
    assert len(nested) > 10 and all(v.dtype == torch.float32 for v in floats)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_object_only_source_trains_no_part_loss(tmp_path: Path) -> None:
    trainer = _trainer(tiny_config(), tmp_path)
    calls = _spy_criterion(trainer)
    batch = to_device(trainer.batches[0], trainer.ctx.device)
    _, terms, _ = trainer.train_step(trainer.model, batch)
    assert any(k.startswith("part") for k in terms)  # SynthParts has parts
    trainer.sources[batch.source].has_parts = False  # as a COCO source
    _, terms, _ = trainer.train_step(trainer.model, batch)
    assert calls[-1][1] == (False,)
    assert "obj_cls" in terms and not any(k.startswith("part") for k in terms)


def _as_is(record: ImageAnnotation, load_image: bool) -> ImageAnnotation:
    return record


def test_list_source_knows_whether_it_has_parts() -> None:
    mask = np.ones((4, 4), bool)
    handle = PartAnnotation(2, "handle", mask, 1)
    with_parts = ImageAnnotation(0, "a.png", 4, 4, [ObjectAnnotation(1, "mug", mask, [handle])])
    objects_only = ImageAnnotation(1, "b.png", 4, 4, [ObjectAnnotation(1, "mug", mask)])
    coco = ListSource("coco", LazyAnnotations([objects_only], _as_is))
    assert not coco.has_parts and coco.part_vocab == [PLACEHOLDER_PART]
    paco = ListSource("paco", LazyAnnotations([with_parts, objects_only], _as_is))
    assert paco.has_parts and paco.part_vocab == ["handle"]


def test_list_source_decodes_an_image_only_when_drawn(tmp_path: Path, monkeypatch) -> None:
    """Only the JSON records stay in memory: building the source decodes nothing, ``get`` decodes one image."""
    import training.data.coco_io as coco_io

    scenes = [generate_scene(seed, 64, 48) for seed in range(3)]
    path = write_paco_json(scenes, tmp_path)
    loaded, decoded = [], []
    load_rgb, decode_segmentation = coco_io.load_rgb, coco_io.decode_segmentation
    monkeypatch.setattr(coco_io, "load_rgb", lambda p: loaded.append(p.name) or load_rgb(p))
    monkeypatch.setattr(
        coco_io, "decode_segmentation", lambda *a: decoded.append(1) or decode_segmentation(*a)
    )
    spec = DatasetSpec("paco", "paco", options={"json": str(path)})
    source = build_source(spec)
    # the vocabulary comes from the category names: no pixels and no masks decoded to build it
    assert loaded == [] and decoded == [] and isinstance(source.annotations, LazyAnnotations)
    assert source.object_vocab == sorted({o.name for a in scenes for o in a.objects})
    assert source.part_vocab == sorted({p.name for a in scenes for p in a.parts()}) and source.has_parts
    got = source.get(1)
    assert loaded == [scenes[1].file_name] and np.array_equal(got.image, scenes[1].image)
    want = {o.name: o.mask for o in scenes[1].objects}
    assert {o.name: o.mask.tolist() for o in got.objects} == {k: v.tolist() for k, v in want.items()}


def test_sec_per_step_divides_by_the_steps_since_the_last_row(tmp_path: Path, monkeypatch) -> None:
    """Each step takes exactly 1 s on a fake clock: every row must say 1.0, also the first row after a resume
    and the last, partial interval."""
    clock = [0.0]
    monkeypatch.setattr(training.loop, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    step = training.loop.Trainer.train_step

    def timed_step(self: training.loop.Trainer, net: torch.nn.Module, batch: Batch) -> tuple:
        clock[0] += 1.0
        return step(self, net, batch)

    monkeypatch.setattr(training.loop.Trainer, "train_step", timed_step)
    _trainer(tiny_config(steps=5, log_every=2), tmp_path).fit(stop_after=3)
    resumed = _trainer(tiny_config(steps=5, log_every=2), tmp_path)
    assert resumed.resume() and resumed.step == 3
    resumed.fit()
    log = np.genfromtxt(tmp_path / "train_log.csv", delimiter=",", names=True)
    assert log["step"].tolist() == [2, 4, 5]
    assert log["sec_per_step"].tolist() == [1.0, 1.0, 1.0]


def test_log_widens_when_part_terms_first_appear_after_object_only_steps(tmp_path) -> None:
    path = tmp_path / "train_log.csv"
    log = CsvLog(path, keep_until=None)
    log.write({"step": 5, "loss": 1.0, "obj_cls": 0.5})  # a COCO batch: no part terms
    log.write({"step": 10, "loss": 2.0, "obj_cls": 0.4, "part_cls": 0.7})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["part_cls"] for r in rows] == ["", "0.7"]
    resumed = CsvLog(path, keep_until=5)  # a resume keeps the widened header
    resumed.write({"step": 10, "loss": 2.5, "obj_cls": 0.3, "part_cls": 0.6})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["part_cls"]) for r in rows] == [("5", ""), ("10", "0.6")]
