"""OV-PARTS semantic part layouts: Pascal-Part-116 and ADE20K-Part-234.

These benchmarks are semantic, not instance-level, so the reader returns `SemanticPartSample`: a part
label map (indices into the benchmark's ``"<object>'s <part>"`` class tuple, -1 = ignore/background,
normalised from the files' 255 (uint8 PNG, Pascal) and 65535 (uint16 PNG, ADE)), the class tuple, and
the object regions the benchmark provides: per object *class* for Pascal-Part-116 (the semantic
``annotations_detectron2_obj`` PNG, 255 = background) and per object *instance* for ADE20K-Part-234
(COCO ``ade20k_instance_{train,val}.json``, ``category_id`` indexing the object tuple).
`SemanticPartSample.to_image_annotation` turns a sample into the shared hierarchy: one object per
region, its parts the pixels of its own class's part labels inside the region.

Layout (as shipped by OpenRobotLab/OV_PARTS)::

    PascalPart116/images/{train,val}/*.jpg
    PascalPart116/annotations_detectron2_part/{train,val}/*.png   uint8, 255 ignore
    PascalPart116/annotations_detectron2_obj/{train,val}/*.png    uint8, 255 background
    ADE20KPart234/images/{training,validation}/*.jpg
    ADE20KPart234/annotations_detectron2_part/{training,validation}/*.png   uint16, 65535 ignore
    ADE20KPart234/ade20k_instance_{train,val}.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from training.data.coco_io import decode_segmentation
from training.data.hierarchy import ImageAnnotation, ObjectAnnotation, PartAnnotation
from training.data.ovparts_classes import (
    ADE20K_PART_234_OBJECTS,
    ADE20K_PART_234_PARTS,
    PASCAL_PART_116_OBJECTS,
    PASCAL_PART_116_PARTS,
)

PASCAL_IGNORE = 255
ADE_IGNORE = 65535


def split_class(name: str) -> tuple[str, str]:
    """``"chest of drawers's drawer"`` -> (``"chest of drawers"``, ``"drawer"``)."""
    obj, sep, part = name.partition("'s ")
    if not sep:
        raise ValueError(f"not an OV-PARTS part class: {name!r}")
    return obj, part


@dataclass
class SemanticPartSample:
    file_name: str
    height: int
    width: int
    part_labels: np.ndarray  # HxW int32: index into part_classes, -1 = ignore / background
    part_classes: tuple[str, ...]  # "dog's head", ...
    objects: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (object class, HxW bool)
    image: np.ndarray | None = None

    def to_image_annotation(self, image_id: int = 0) -> ImageAnnotation:
        """One ObjectAnnotation per object region; its parts are its own class's part pixels inside it."""
        classes_of = {}
        for idx, name in enumerate(self.part_classes):
            obj, part = split_class(name)
            classes_of.setdefault(obj, []).append((idx, part))
        record = ImageAnnotation(image_id, self.file_name, self.height, self.width, image=self.image)
        next_id = 1
        for obj_name, region in self.objects:
            obj = ObjectAnnotation(id=next_id, name=obj_name, mask=region)
            next_id += 1
            for idx, part in classes_of.get(obj_name, []):
                mask = (self.part_labels == idx) & region
                if mask.any():
                    obj.parts.append(PartAnnotation(id=next_id, name=part, mask=mask, parent_id=obj.id))
                    next_id += 1
            record.objects.append(obj)
        return record


def _read_labels(path: Path, ignore: int) -> np.ndarray:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise FileNotFoundError(path)
    if raw.ndim == 3:
        raw = raw[:, :, 0]
    return np.where(raw == ignore, -1, raw.astype(np.int32))


def _read_image(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_pascal_part_116(
    root: str | Path, split: str = "val", load_images: bool = False
) -> list[SemanticPartSample]:
    """Read ``root`` = the PascalPart116 folder; samples are sorted by file name."""
    root = Path(root)
    part_dir, obj_dir = (
        root / "annotations_detectron2_part" / split,
        root / "annotations_detectron2_obj" / split,
    )
    out = []
    for part_png in sorted(part_dir.glob("*.png")):
        labels = _read_labels(part_png, PASCAL_IGNORE)
        obj_labels = _read_labels(obj_dir / part_png.name, PASCAL_IGNORE)
        objects = [
            (PASCAL_PART_116_OBJECTS[k], obj_labels == k) for k in np.unique(obj_labels[obj_labels >= 0])
        ]
        image_path = root / "images" / split / (part_png.stem + ".jpg")
        out.append(
            SemanticPartSample(
                file_name=image_path.name,
                height=labels.shape[0],
                width=labels.shape[1],
                part_labels=labels,
                part_classes=PASCAL_PART_116_PARTS,
                objects=objects,
                image=_read_image(image_path) if load_images else None,
            )
        )
    return out


def read_ade20k_part_234(
    root: str | Path, split: str = "validation", load_images: bool = False
) -> list[SemanticPartSample]:
    """Read ``root`` = the ADE20KPart234 folder; ``split`` is "training" or "validation"."""
    root = Path(root)
    json_name = {"training": "ade20k_instance_train.json", "validation": "ade20k_instance_val.json"}[split]
    data = json.loads((root / json_name).read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    out = []
    for img in sorted(data["images"], key=lambda i: i["file_name"]):
        h, w = int(img["height"]), int(img["width"])
        stem = Path(img["file_name"]).stem
        labels = _read_labels(root / "annotations_detectron2_part" / split / (stem + ".png"), ADE_IGNORE)
        objects = [
            (ADE20K_PART_234_OBJECTS[ann["category_id"]], decode_segmentation(ann["segmentation"], h, w))
            for ann in by_image.get(img["id"], [])
        ]
        image_path = root / "images" / split / Path(img["file_name"]).name
        out.append(
            SemanticPartSample(
                file_name=image_path.name,
                height=h,
                width=w,
                part_labels=labels,
                part_classes=ADE20K_PART_234_PARTS,
                objects=objects,
                image=_read_image(image_path) if load_images else None,
            )
        )
    return out
