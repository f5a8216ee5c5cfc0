"""Training data: sources (SynthParts rendered on the fly, real datasets through their readers) mixed by
sampling ratio, one source per step, as in GLEE/PartGLEE joint training.

Every batch is a pure function of ``(seed, step, rank)``: which source, which images and which flips are
drawn from ``numpy.random.default_rng([seed, step, ...])``. Resuming at step ``s`` therefore continues with
exactly the batches an uninterrupted run would have seen, without any sampler state, and DDP ranks draw
disjoint streams. A step holds images of one source only because the text embeddings (the vocabulary) are
an input of the whole batch.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from partglee_ros.model.preprocess import images_to_tensor
from training.data.hierarchy import ImageAnnotation, LazyAnnotations, ObjectAnnotation, PartAnnotation
from training.targets import build_targets
from training.train_config import DatasetSpec

PLACEHOLDER_PART = "part"  # the network needs one part name even for object-only data (COCO)
_SIDE = re.compile(r"(?<![a-z])(left|right)(?![a-z])")  # a whole word of a name: left_button, left wing


class Source(ABC):
    """Random access to one dataset's images and the vocabulary its labels live in. ``has_parts`` is False
    for object-only data (COCO): its steps train no part loss (``SetCriterion(part_level=False)``)."""

    name: str
    object_vocab: list[str]
    part_vocab: list[str]
    has_parts: bool = True

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def get(self, index: int) -> ImageAnnotation: ...


class SynthPartsSource(Source):
    """Scenes of one SynthParts split, rendered when asked (options: split_config, split, max_scenes,
    width, height). ``max_scenes`` restricts the split to its first seeds: a fixed pool."""

    def __init__(self, name: str, options: dict) -> None:
        from training.data.synthparts import CATEGORIES, load_split_config

        self.name = name
        self.config = load_split_config(options["split_config"])
        self.split = options.get("split", "train")
        self.width = int(options.get("width", self.config.width))
        self.height = int(options.get("height", self.config.height))
        start, stop = self.config.seeds[self.split]
        if options.get("max_scenes"):
            stop = min(stop, start + int(options["max_scenes"]))
        self.start, self.stop = start, stop
        self.categories = list(self.config.categories_for(self.split))
        self.object_vocab = self.categories
        self.part_vocab = sorted({p for c in self.categories for p in CATEGORIES[c]})

    def __len__(self) -> int:
        return self.stop - self.start

    def get(self, index: int) -> ImageAnnotation:
        from training.data.synthparts import generate_scene

        return generate_scene(self.start + index, self.width, self.height, categories=self.categories)


class ListSource(Source):
    """A dataset a reader indexes (PACO, COCO, PartImageNet, Pascal-Part): only its per-image records stay in
    memory and ``get`` decodes the image drawn (masks, pixels). The vocabulary comes from one pass over the
    records when the source is built (from the category names where the reader can, else decoding masks)."""

    def __init__(self, name: str, annotations: LazyAnnotations) -> None:
        if not len(annotations):
            raise ValueError(f"dataset {name!r} has no images")
        self.name = name
        self.annotations = annotations
        objects: set[str] = set()
        parts: set[str] = set()
        for index in range(len(annotations)):
            found_objects, found_parts = annotations.names_of(index)
            objects |= found_objects
            parts |= found_parts
        self.object_vocab = sorted(objects)
        self.has_parts = bool(parts)
        self.part_vocab = sorted(parts) or [PLACEHOLDER_PART]

    def __len__(self) -> int:
        return len(self.annotations)

    def get(self, index: int) -> ImageAnnotation:
        return self.annotations.get(index)


def build_source(spec: DatasetSpec) -> Source:
    o = spec.options
    if spec.type == "synthparts":
        return SynthPartsSource(spec.name, o)
    if spec.type in ("paco", "coco"):  # a COCO JSON reads as objects without parts
        from training.data.coco_io import index_paco_json

        return ListSource(spec.name, index_paco_json(o["json"], o.get("image_dir")))
    if spec.type == "partimagenet":
        from training.data.partimagenet import index_partimagenet

        anns = index_partimagenet(o["json"], o.get("image_dir"), o.get("object_name", "supercategory"))
        return ListSource(spec.name, anns)
    from training.data.pascal_part import index_vlpart_pascal_part

    anns = index_vlpart_pascal_part(o["json"], o.get("voc_annotations_dir"), o.get("image_dir"))
    return ListSource(spec.name, anns)


def _box_flip(box: np.ndarray, width: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([width - x1, y0, width - x0, y1], dtype=np.float32)


def mirrored_names(names: Iterable[str]) -> dict[str, str]:
    """Each side-specific name -> the other side's name (``left_button`` <-> ``right_button``), for the names
    whose other side is in ``names`` too: what a mirrored image's labels become."""
    names = set(names)
    other = {n: _SIDE.sub(lambda m: "right" if m[1] == "left" else "left", n) for n in names}
    return {n: o for n, o in other.items() if o != n and o in names}


def hflip(ann: ImageAnnotation, mirrored: Mapping[str, str] | None = None) -> ImageAnnotation:
    """Mirror image, masks and boxes left-right; names in ``mirrored`` (``mirrored_names`` of the source's
    vocabulary) change sides with the image, since PACO's mouse has a left and a right button."""
    w, mirrored = ann.width, mirrored or {}
    objects = []
    for o in ann.objects:
        parts = [
            PartAnnotation(
                p.id,
                mirrored.get(p.name, p.name),
                p.mask[:, ::-1].copy(),
                p.parent_id,
                _box_flip(p.box, w),
                iscrowd=p.iscrowd,
            )
            for p in o.parts
        ]
        objects.append(
            ObjectAnnotation(
                o.id,
                mirrored.get(o.name, o.name),
                o.mask[:, ::-1].copy(),
                parts,
                _box_flip(o.box, w),
                iscrowd=o.iscrowd,
            )
        )
    image = ann.image[:, ::-1].copy()
    return ImageAnnotation(ann.image_id, ann.file_name, ann.height, w, objects, image)


def fit_to_input(ann: ImageAnnotation, input_size: tuple[int, int]) -> ImageAnnotation:
    """Scale (aspect kept) to fit the network input (W, H), as the Segmenter does at run time."""
    in_w, in_h = input_size
    scale = min(in_w / ann.width, in_h / ann.height)
    if scale == 1.0:
        return ann
    w, h = max(1, round(ann.width * scale)), max(1, round(ann.height * scale))

    def rs(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)

    objects = [
        ObjectAnnotation(
            o.id,
            o.name,
            rs(o.mask),
            [PartAnnotation(p.id, p.name, rs(p.mask), p.parent_id, iscrowd=p.iscrowd) for p in o.parts],
            iscrowd=o.iscrowd,
        )
        for o in ann.objects
    ]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(ann.image, (w, h), interpolation=interp)
    return ImageAnnotation(ann.image_id, ann.file_name, h, w, objects, image)


@dataclass
class Batch:
    source: int  # index into the source list (selects the vocabulary / text embeddings)
    images: Tensor  # (B, 3, H, W) normalised, padded to a multiple of 32
    targets: list[dict]  # training.targets.build_targets per image


class StepBatches(Dataset):
    """Map-style dataset indexed by the global step: item ``s`` is this rank's batch of step ``s``."""

    def __init__(
        self,
        sources: list[Source],
        ratios: list[float],
        batch_size: int,
        input_size: tuple[int, int],
        seed: int = 0,
        rank: int = 0,
        hflip_prob: float = 0.5,
    ) -> None:
        p = np.asarray(ratios, dtype=float)
        self.sources, self.p = sources, p / p.sum()
        self.batch_size, self.input_size = batch_size, input_size
        self.seed, self.rank, self.hflip_prob = seed, rank, hflip_prob
        # Per source: object names, and part names as annotated (a vocabulary of object:part labels names
        # each part after its last colon).
        self.mirrored = [
            mirrored_names(s.object_vocab) | mirrored_names(n.rpartition(":")[2] for n in s.part_vocab)
            for s in sources
        ]

    def __len__(self) -> int:
        return 2**62

    def source_of(self, step: int) -> int:
        """Shared by every rank (seeded by the step alone), so a DDP step sees one vocabulary."""
        return int(np.random.default_rng([self.seed, step]).choice(len(self.sources), p=self.p))

    def annotations(self, step: int) -> tuple[int, list[ImageAnnotation]]:
        k = self.source_of(step)
        src = self.sources[k]
        rng = np.random.default_rng([self.seed, step, self.rank + 1])
        anns = []
        for index in rng.integers(0, len(src), size=self.batch_size):
            ann = fit_to_input(src.get(int(index)), self.input_size)
            anns.append(hflip(ann, self.mirrored[k]) if rng.random() < self.hflip_prob else ann)
        return k, anns

    def __getitem__(self, step: int) -> Batch:
        k, anns = self.annotations(step)
        images = images_to_tensor([a.image for a in anns])
        size = tuple(images.shape[-2:])
        src = self.sources[k]
        targets = [build_targets(a, src.object_vocab, src.part_vocab, size) for a in anns]
        return Batch(k, images, targets)


def _as_is(batch: Batch) -> Batch:
    return batch


def step_loader(batches: StepBatches, start_step: int, end_step: int, num_workers: int) -> DataLoader:
    """Batches of steps [start_step, end_step) in order, prepared by ``num_workers`` processes.

    The loader gets its own generator: creating an iterator draws a seed from it, and drawing from the
    global RNG instead would shift the criterion's random point sampling after every resume."""
    return DataLoader(
        batches,
        batch_size=None,
        sampler=range(start_step, end_step),
        num_workers=num_workers,
        collate_fn=_as_is,
        persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
        generator=torch.Generator().manual_seed(start_step),
    )


def to_device(batch: Batch, device: torch.device) -> Batch:
    targets = [{lvl: {k: v.to(device) for k, v in t[lvl].items()} for lvl in t} for t in batch.targets]
    return Batch(batch.source, batch.images.to(device), targets)
