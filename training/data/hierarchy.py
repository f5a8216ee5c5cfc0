"""One annotation model for every dataset: images hold object instances, objects hold their parts.

Readers of real datasets (PACO, PartImageNet, Pascal-Part, OV-PARTS) and the SynthParts generator all
produce these types, so evaluators, the COCO writer and the bag tools only ever see one shape of data.
Boxes are (x0, y0, x1, y1) in pixels; masks are HxW bool arrays at the image's resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight xyxy box of a bool mask (x1/y1 exclusive, i.e. pixel edges); zeros for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4, dtype=np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


@dataclass
class PartPose:
    """Ground-truth 3D geometry of a part in the camera frame (metres), where a dataset knows it."""

    center: np.ndarray  # (3,)
    axis: np.ndarray  # (3,) unit vector along the part's long axis
    extent: np.ndarray  # (3,) full size along the part's own axes


@dataclass
class PartAnnotation:
    id: int
    name: str  # generic part name, e.g. "handle"
    mask: np.ndarray  # HxW bool (visible pixels)
    parent_id: int  # id of the ObjectAnnotation it belongs to
    box: np.ndarray | None = None  # xyxy; derived from the mask when None
    pose: PartPose | None = None
    iscrowd: bool = False  # COCO crowd region: no training target, an ignore region for COCO AP

    def __post_init__(self) -> None:
        if self.box is None:
            self.box = mask_to_box(self.mask)


@dataclass
class ObjectAnnotation:
    id: int
    name: str  # object category, e.g. "mug"
    mask: np.ndarray  # HxW bool (visible pixels)
    parts: list[PartAnnotation] = field(default_factory=list)
    box: np.ndarray | None = None
    pose: PartPose | None = None
    iscrowd: bool = False  # COCO crowd region: no training target (nor its parts), ignored by COCO AP
    track_id: int = 0  # the same physical object in every frame of a sequence; 0 = not known

    def __post_init__(self) -> None:
        if self.box is None:
            self.box = mask_to_box(self.mask)


@dataclass
class ImageAnnotation:
    """One image and its instance hierarchy. `image` may be None when only annotations were read."""

    image_id: int
    file_name: str
    height: int
    width: int
    objects: list[ObjectAnnotation] = field(default_factory=list)
    image: np.ndarray | None = None  # HxWx3 uint8 RGB
    depth: np.ndarray | None = None  # HxW float32 metres, 0 where unknown
    intrinsics: np.ndarray | None = None  # 3x3 K

    def parts(self) -> list[PartAnnotation]:
        return [p for o in self.objects for p in o.parts]


def part_label(object_name: str, part_name: str) -> str:
    """The object-specific part label used by PACO and our messages, e.g. ``mug:handle``."""
    return f"{object_name}:{part_name}"


def split_part_label(label: str) -> tuple[str, str]:
    """Inverse of :func:`part_label`: ``"mug:handle"`` -> ``("mug", "handle")``."""
    obj, sep, part = label.partition(":")
    if not sep:
        raise ValueError(f"not an object:part label: {label!r}")
    return obj, part


@dataclass
class LazyAnnotations:
    """A dataset as small per-image records (its JSON entries) and ``decode``, which builds one image's
    ``ImageAnnotation`` (masks, and pixels when ``load_image``) only when asked: a training source then holds
    the JSON in memory, not every full-size mask and image (COCO train2017 would need >100 GB)."""

    records: list[Any]
    decode: Callable[[Any, bool], ImageAnnotation]  # (record, load_image) -> annotation; picklable
    # record -> (object names, part names) read from the record alone, where the format allows it: building
    # a vocabulary then decodes no mask (for COCO train2017, ~860k of them)
    names: Callable[[Any], tuple[set[str], set[str]]] | None = None

    def names_of(self, index: int) -> tuple[set[str], set[str]]:
        if self.names is not None:
            return self.names(self.records[index])
        ann = self.get(index, load_image=False)
        return {o.name for o in ann.objects}, {p.name for p in ann.parts()}

    def __len__(self) -> int:
        return len(self.records)

    def get(self, index: int, load_image: bool = True) -> ImageAnnotation:
        return self.decode(self.records[index], load_image)

    def decode_all(self, load_images: bool = True) -> list[ImageAnnotation]:
        return [self.decode(r, load_images) for r in self.records]
