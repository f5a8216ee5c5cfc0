"""Pascal-Part as converted by VLPart (``tools/pascal_part_mat2json.py``) into the hierarchy.

VLPart's JSON has only part annotations: categories ``"<object>:<part>"`` (``"dog:head"``,
``"potted plant:pot"``), RLE masks, ``image_id`` = the VOC name without ``_`` (2008_000002 ->
2008000002), no link from a part to its object. Parents are recovered by containment
(grouping.best_parent), with candidates taken from, in order of preference:
1. object annotations in the same JSON (a category name without ``:``), by mask containment;
2. the VOC2010 XML annotations (``Annotations/<name>.xml``) when ``voc_annotations_dir`` is given, by
   box containment (the object's mask is then the union of its parts, its box the VOC box);
3. otherwise each connected blob of same-object-class part pixels is one object.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path

import numpy as np

from training.data.coco_io import decode_segmentation, load_rgb, xywh_to_xyxy
from training.data.grouping import best_parent, box_region, instance_blobs
from training.data.hierarchy import (
    ImageAnnotation,
    LazyAnnotations,
    ObjectAnnotation,
    PartAnnotation,
    split_part_label,
)


def _norm(name: str) -> str:
    """VLPart writes "potted plant", VOC "pottedplant": compare without spaces."""
    return name.replace(" ", "").lower()


def read_voc_objects(xml_path: str | Path) -> list[tuple[str, np.ndarray]]:
    """(class name, xyxy box with exclusive x1/y1) for each <object> of a VOC XML file."""
    root = ET.parse(xml_path).getroot()
    out = []
    for obj in root.findall("object"):
        bb = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        out.append((obj.find("name").text.strip(), np.array([xmin - 1, ymin - 1, xmax, ymax], np.float32)))
    return out


def index_vlpart_pascal_part(
    json_path: str | Path,
    voc_annotations_dir: str | Path | None = None,
    image_dir: str | Path | None = None,
    min_containment: float = 0.5,
) -> LazyAnnotations:
    """Index a VLPart Pascal-Part JSON; images are decoded on demand (see :func:`read_vlpart_pascal_part`)."""
    data = json.loads(Path(json_path).read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    records = [(img, by_image.get(img["id"], [])) for img in data["images"]]
    voc = None if voc_annotations_dir is None else Path(voc_annotations_dir)
    images = None if image_dir is None else Path(image_dir)
    return LazyAnnotations(records, partial(_decode_image, names, voc, images, min_containment))


def read_vlpart_pascal_part(
    json_path: str | Path,
    voc_annotations_dir: str | Path | None = None,
    image_dir: str | Path | None = None,
    min_containment: float = 0.5,
) -> list[ImageAnnotation]:
    """Read a VLPart Pascal-Part JSON; parts no candidate contains (>= min_containment) are dropped. Images
    are loaded from ``image_dir`` when given; one missing there raises FileNotFoundError."""
    return index_vlpart_pascal_part(json_path, voc_annotations_dir, image_dir, min_containment).decode_all()


def _decode_image(
    names: dict[int, str],
    voc_annotations_dir: Path | None,
    image_dir: Path | None,
    min_containment: float,
    record: tuple[dict, list[dict]],
    load_image: bool,
) -> ImageAnnotation:
    img, anns = record
    h, w = int(img["height"]), int(img["width"])
    objects: list[ObjectAnnotation] = []
    parts: list[tuple[str, str, np.ndarray]] = []  # (object class, part name, mask)
    for ann in anns:
        mask = decode_segmentation(ann["segmentation"], h, w)
        name = names[ann["category_id"]]
        if ":" in name:
            obj_name, part = split_part_label(name)
            parts.append((obj_name, part, mask))
        else:
            objects.append(ObjectAnnotation(id=0, name=name, mask=mask, box=xywh_to_xyxy(ann["bbox"])))
    regions = [o.mask for o in objects]
    if not objects and voc_annotations_dir is not None:
        xml = voc_annotations_dir / (Path(img["file_name"]).stem + ".xml")
        for cls, box in read_voc_objects(xml):
            objects.append(ObjectAnnotation(id=0, name=cls, mask=np.zeros((h, w), bool), box=box))
            regions.append(box_region(box, h, w))
    if objects:
        members: list[list[tuple[str, np.ndarray]]] = [[] for _ in objects]
        for obj_name, part, mask in parts:
            same_class = [i for i, o in enumerate(objects) if _norm(o.name) == _norm(obj_name)]
            best = best_parent(mask, [regions[i] for i in same_class], min_containment)
            if best is not None:
                members[same_class[best]].append((part, mask))
    else:
        members, objects = _blob_objects(parts, h, w)
    out = ImageAnnotation(image_id=img["id"], file_name=img["file_name"], height=h, width=w)
    next_id = 1
    for obj, obj_parts in zip(objects, members, strict=True):
        if not obj_parts and not obj.mask.any():
            continue  # a VOC object without annotated parts (e.g. a chair) has no mask to offer
        if not obj.mask.any():
            obj.mask = np.any(np.stack([m for _, m in obj_parts]), axis=0)
        obj.id = next_id
        next_id += 1
        merged: dict[str, np.ndarray] = {}
        for part, mask in obj_parts:
            merged[part] = merged[part] | mask if part in merged else mask
        for part, mask in merged.items():
            obj.parts.append(PartAnnotation(id=next_id, name=part, mask=mask, parent_id=obj.id))
            next_id += 1
        out.objects.append(obj)
    if image_dir is not None and load_image:
        out.image = load_rgb(image_dir / img["file_name"])
    return out


def _blob_objects(parts: list[tuple[str, str, np.ndarray]], h: int, w: int):
    """Fallback without any object source: connected blobs of one object class's part pixels."""
    members: list[list[tuple[str, np.ndarray]]] = []
    objects: list[ObjectAnnotation] = []
    for obj_name in dict.fromkeys(o for o, _, _ in parts):
        same = [(p, m) for o, p, m in parts if o == obj_name and m.any()]
        if not same:
            continue
        blobs = instance_blobs([m for _, m in same])
        for blob in range(1, int(blobs.max()) + 1):
            region = blobs == blob
            objects.append(ObjectAnnotation(id=0, name=obj_name, mask=region))
            members.append([(p, m & region) for p, m in same if (m & region).any()])
    return members, objects
