"""PACO-style COCO JSON: write SynthParts (or any ImageAnnotation list) and read PACO / our own files.

PACO (LVIS-style) puts objects and parts in one ``annotations`` list. Categories are object names
(``mug``) and object-part names (``mug:handle``); a part annotation points at its object annotation via
``obj_ann_id`` and an object annotation has ``obj_ann_id == id``. Masks are COCO RLE (pycocotools).
We add optional keys PACO readers ignore: per image ``depth_file_name`` (uint16 PNG, millimetres) and
``intrinsics`` (3x3), per annotation ``pose`` ({center, axis, extent}, camera frame, metres).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from training.data.hierarchy import (
    ImageAnnotation,
    LazyAnnotations,
    ObjectAnnotation,
    PartAnnotation,
    PartPose,
    mask_to_box,
    part_label,
)


def encode_mask(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a bool mask, JSON-ready (counts as str)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_segmentation(segm: list | dict, height: int, width: int) -> np.ndarray:
    """Bool HxW mask from any COCO segmentation: polygons, uncompressed or compressed RLE, or []."""
    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        counts = segm["counts"]
        rle = {"size": segm["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def xywh_to_xyxy(bbox: Sequence[float]) -> np.ndarray:
    x, y, w, h = (float(v) for v in bbox)
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def _box_xywh(mask: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in mask_to_box(mask))
    return [x0, y0, x1 - x0, y1 - y0]


def _pose_json(pose: PartPose | None) -> dict | None:
    if pose is None:
        return None
    return {k: np.asarray(getattr(pose, k), dtype=float).tolist() for k in ("center", "axis", "extent")}


def _pose_from_json(raw: dict | None) -> PartPose | None:
    if raw is None:
        return None
    return PartPose(*(np.asarray(raw[k], dtype=np.float64) for k in ("center", "axis", "extent")))


def write_paco_json(
    annotations: Sequence[ImageAnnotation],
    out_dir: str | Path,
    json_name: str = "annotations.json",
    object_categories: Sequence[str] | None = None,
) -> Path:
    """Write images (PNG under ``images/``), depth (``depth/``) and one PACO-style JSON; returns its path.

    Category ids: objects 1..n in ``object_categories`` order (default: sorted names found), then
    ``object:part`` pairs sorted. Annotation ids are re-numbered 1.. across the whole file.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    objects = list(object_categories or sorted({o.name for a in annotations for o in a.objects}))
    pairs = sorted({(o.name, p.name) for a in annotations for o in a.objects for p in o.parts})
    cat_id = {name: i + 1 for i, name in enumerate(objects)}
    categories = [{"id": cat_id[n], "name": n, "supercategory": "OBJECT"} for n in objects]
    for obj_name, part_name in pairs:
        label = part_label(obj_name, part_name)
        cat_id[label] = len(cat_id) + 1
        categories.append({"id": cat_id[label], "name": label, "supercategory": "PART"})
    part_names = sorted({p for _, p in pairs})
    images, anns = [], []
    for a in annotations:
        entry: dict = {"id": int(a.image_id), "file_name": a.file_name, "height": a.height, "width": a.width}
        if a.image is not None:
            cv2.imwrite(str(out / "images" / a.file_name), cv2.cvtColor(a.image, cv2.COLOR_RGB2BGR))
        if a.depth is not None:
            (out / "depth").mkdir(exist_ok=True)
            entry["depth_file_name"] = str(Path(a.file_name).with_suffix(".png"))
            depth_mm = np.clip(np.round(a.depth * 1000.0), 0, 65535).astype(np.uint16)
            cv2.imwrite(str(out / "depth" / entry["depth_file_name"]), depth_mm)
        if a.intrinsics is not None:
            entry["intrinsics"] = np.asarray(a.intrinsics, dtype=float).tolist()
        images.append(entry)
        for o in a.objects:
            obj_ann_id = len(anns) + 1
            anns.append(_ann(obj_ann_id, a.image_id, cat_id[o.name], o, obj_ann_id))
            for p in o.parts:
                anns.append(
                    _ann(len(anns) + 1, a.image_id, cat_id[part_label(o.name, p.name)], p, obj_ann_id)
                )
    data = {
        "images": images,
        "annotations": anns,
        "categories": categories,
        "part_categories": [
            {"id": i + 1, "name": n, "supercategory": "PART"} for i, n in enumerate(part_names)
        ],
    }
    path = out / json_name
    path.write_text(json.dumps(data))
    return path


def _ann(
    ann_id: int, image_id: int, category_id: int, inst: ObjectAnnotation | PartAnnotation, obj_ann_id: int
) -> dict:
    ann = {
        "id": ann_id,
        "image_id": int(image_id),
        "category_id": category_id,
        "segmentation": encode_mask(inst.mask),
        "area": float(inst.mask.sum()),
        "bbox": _box_xywh(inst.mask),
        "iscrowd": int(inst.iscrowd),
        "obj_ann_id": obj_ann_id,
    }
    if inst.pose is not None:
        ann["pose"] = _pose_json(inst.pose)
    if getattr(inst, "track_id", 0):
        ann["track_id"] = int(inst.track_id)
    return ann


def load_rgb(path: Path) -> np.ndarray:
    """RGB pixels of ``path``. A missing or undecodable file raises here, naming it: as ``None`` it would
    surface only as an unrelated error wherever the image is first used (mid-training, in a worker)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(errno.ENOENT, "missing or unreadable image", str(path))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def index_paco_json(path: str | Path, image_dir: str | Path | None = None) -> LazyAnnotations:
    """Index a PACO (PACO-LVIS / PACO-EGO4D), COCO or SynthParts JSON: per image its JSON entry and
    annotations, decoded into the hierarchy on demand (see :func:`read_paco_json`)."""
    path = Path(path)
    data = json.loads(path.read_text())
    image_root = Path(image_dir) if image_dir is not None else path.parent / "images"
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    records = [(img, by_image.get(img["id"], [])) for img in data["images"]]
    return LazyAnnotations(
        records,
        partial(_decode_paco_image, names, image_root, path.parent / "depth"),
        partial(_paco_names, names),
    )


def _is_object(ann: dict) -> bool:
    return ann.get("obj_ann_id", ann["id"]) == ann["id"]


def _generic_part_name(label: str) -> str:
    """PACO names part categories ``mug:handle``; a part category without ``:`` is taken whole."""
    return label.split(":", 1)[-1]


def _paco_names(names: dict[int, str], record: tuple[dict, list[dict]]) -> tuple[set[str], set[str]]:
    anns = record[1]
    objects = {names[a["category_id"]] for a in anns if _is_object(a)}
    return objects, {_generic_part_name(names[a["category_id"]]) for a in anns if not _is_object(a)}


def read_paco_json(
    path: str | Path, image_dir: str | Path | None = None, load_images: bool = True
) -> list[ImageAnnotation]:
    """Read a PACO (PACO-LVIS / PACO-EGO4D) or SynthParts JSON into the hierarchy.

    ``image_dir`` defaults to ``images/`` beside the JSON. With ``load_images`` every image must be there
    (FileNotFoundError names the first that is not); our depth PNGs are loaded when they exist. Object
    annotations are those with ``obj_ann_id == id``; every other annotation is a part of the object its
    ``obj_ann_id`` names, its generic name the text after ``:``. COCO crowd annotations (``iscrowd: 1``)
    are kept with ``iscrowd=True``: no training target, ignored by COCO AP. An object's identity across
    the images of a sequence is its ``track_id`` (TAO's key, a positive integer), written when known.
    PACO-EGO4D's ``instance_id`` is not read as one: it names an instance across clips, not a track
    through consecutive frames.
    """
    return index_paco_json(path, image_dir).decode_all(load_images)


def _track_id(ann: dict) -> int:
    """0 (not tracked) without the key; ids must be positive: 0 already means "not tracked"."""
    raw = ann.get("track_id")
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise ValueError(f"annotation {ann.get('id')}: track_id must be a positive integer, got {raw!r}")
    return raw


def _decode_paco_image(
    names: dict[int, str],
    image_root: Path,
    depth_root: Path,
    record: tuple[dict, list[dict]],
    load_image: bool,
) -> ImageAnnotation:
    img, anns = record
    h, w = int(img["height"]), int(img["width"])
    objects: dict[int, ObjectAnnotation] = {}
    for ann in anns:
        if _is_object(ann):
            objects[ann["id"]] = ObjectAnnotation(
                id=ann["id"],
                name=names[ann["category_id"]],
                mask=decode_segmentation(ann["segmentation"], h, w),
                box=xywh_to_xyxy(ann["bbox"]),
                pose=_pose_from_json(ann.get("pose")),
                iscrowd=bool(ann.get("iscrowd", 0)),
                track_id=_track_id(ann),
            )
    for ann in anns:
        if _is_object(ann):
            continue
        parent = objects.get(ann["obj_ann_id"])
        if parent is None:
            raise ValueError(f"part annotation {ann['id']} links to missing object {ann['obj_ann_id']}")
        parent.parts.append(
            PartAnnotation(
                id=ann["id"],
                name=_generic_part_name(names[ann["category_id"]]),
                mask=decode_segmentation(ann["segmentation"], h, w),
                parent_id=parent.id,
                box=xywh_to_xyxy(ann["bbox"]),
                pose=_pose_from_json(ann.get("pose")),
                iscrowd=bool(ann.get("iscrowd", 0)),
            )
        )
    out = ImageAnnotation(
        image_id=img["id"], file_name=img["file_name"], height=h, width=w, objects=list(objects.values())
    )
    if "intrinsics" in img:
        out.intrinsics = np.asarray(img["intrinsics"], dtype=np.float64)
    if load_image:
        out.image = load_rgb(image_root / img["file_name"])
        if "depth_file_name" in img:
            raw = cv2.imread(str(depth_root / img["depth_file_name"]), cv2.IMREAD_UNCHANGED)
            out.depth = None if raw is None else raw.astype(np.float32) / 1000.0
    return out
