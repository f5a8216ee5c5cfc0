"""PartImageNet reader (COCO JSON, parts only) into the object -> part hierarchy.

PartImageNet's categories are parts named ``"<Supercategory> <Part>"`` (``"Quadruped Head"``) with
``supercategory`` set to one of its 11 super-categories, and image file names start with the ImageNet
WNID (``n01440764_10043.JPEG``). There are no object annotations: an object is a connected blob of part
pixels (grouping.instance_blobs), named by the supercategory (default) or the WNID, and a part
annotation that spans several blobs is split between them.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np

from training.data.coco_io import decode_segmentation, load_rgb
from training.data.grouping import instance_blobs
from training.data.hierarchy import ImageAnnotation, LazyAnnotations, ObjectAnnotation, PartAnnotation


def part_name(category: dict) -> str:
    """``"Quadruped Head"`` with supercategory ``"Quadruped"`` -> ``"head"``; ``"Car Side Mirror"`` ->
    ``"side mirror"``."""
    name, sup = category["name"].strip(), category.get("supercategory", "").strip()
    if sup and name.lower().startswith(sup.lower() + " "):
        name = name[len(sup) + 1 :]
    return name.lower()


def wnid(file_name: str) -> str:
    return Path(file_name).name.split("_")[0]


def index_partimagenet(
    json_path: str | Path, image_dir: str | Path | None = None, object_name: str = "supercategory"
) -> LazyAnnotations:
    """Index one PartImageNet split JSON; images are decoded on demand (see :func:`read_partimagenet`)."""
    if object_name not in ("supercategory", "wnid"):
        raise ValueError(f"object_name must be 'supercategory' or 'wnid', not {object_name!r}")
    data = json.loads(Path(json_path).read_text())
    cats = {c["id"]: c for c in data["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    records = [(img, by_image.get(img["id"], [])) for img in data["images"]]
    image_root = None if image_dir is None else Path(image_dir)
    return LazyAnnotations(records, partial(_decode_image, cats, image_root, object_name))


def read_partimagenet(
    json_path: str | Path, image_dir: str | Path | None = None, object_name: str = "supercategory"
) -> list[ImageAnnotation]:
    """Read one PartImageNet split JSON. ``object_name``: "supercategory" (``quadruped``) or "wnid".

    Images are loaded from ``image_dir`` (``file_name`` relative to it; VLPart's formatted JSON uses
    ``<wnid>/<file>``) when given; one missing there raises FileNotFoundError.
    """
    return index_partimagenet(json_path, image_dir, object_name).decode_all()


def _decode_image(
    cats: dict[int, dict],
    image_root: Path | None,
    object_name: str,
    record: tuple[dict, list[dict]],
    load_image: bool,
) -> ImageAnnotation:
    img, anns = record
    h, w = int(img["height"]), int(img["width"])
    parts = []
    for ann in anns:
        mask = decode_segmentation(ann["segmentation"], h, w)
        if mask.any():
            parts.append((ann, cats[ann["category_id"]], mask))
    out = ImageAnnotation(image_id=img["id"], file_name=img["file_name"], height=h, width=w)
    if parts:
        blobs = instance_blobs([m for _, _, m in parts])
        next_id = 1
        for blob in range(1, int(blobs.max()) + 1):
            region = blobs == blob
            members = [(ann, cat, m & region) for ann, cat, m in parts if (m & region).any()]
            if not members:
                continue
            sup = members[0][1].get("supercategory", "").strip().lower()
            obj = ObjectAnnotation(
                id=next_id,
                name=sup if object_name == "supercategory" else wnid(img["file_name"]),
                mask=region,
            )
            next_id += 1
            merged: dict[str, np.ndarray] = {}
            for _, cat, m in members:  # one part per name per object, as PACO merges them
                name = part_name(cat)
                merged[name] = merged[name] | m if name in merged else m
            for name, m in merged.items():
                obj.parts.append(PartAnnotation(id=next_id, name=name, mask=m, parent_id=obj.id))
                next_id += 1
            out.objects.append(obj)
    if image_root is not None and load_image:
        out.image = load_rgb(image_root / img["file_name"])
    return out
