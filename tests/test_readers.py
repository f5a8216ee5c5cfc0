"""Readers and writers: SynthParts <-> PACO JSON round trip, and each real dataset's published format.

Every fixture is built here, in a tmp dir, in the exact layout and JSON/PNG encoding its dataset ships
(field names, id conventions, polygon vs RLE, ignore values), from masks whose hierarchy we know.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO

from training.data.coco_io import read_paco_json, write_paco_json
from training.data.ovparts import read_ade20k_part_234, read_pascal_part_116
from training.data.ovparts_classes import (
    ADE20K_PART_234_OBJECTS,
    ADE20K_PART_234_PARTS,
    PASCAL_PART_116_OBJECTS,
    PASCAL_PART_116_PARTS,
)
from training.data.partimagenet import read_partimagenet
from training.data.pascal_part import read_vlpart_pascal_part
from training.data.synthparts import generate_scene

H, W = 60, 80


def _rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def _poly(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    """COCO polygon covering pixels [x0, x1) x [y0, y1) (pycocotools rasterises pixel edges)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _hierarchy(record) -> list[tuple[str, list[str]]]:
    return sorted((o.name, sorted(p.name for p in o.parts)) for o in record.objects)


# --------------------------------------------------------------------------- SynthParts <-> PACO JSON


def test_synthparts_paco_round_trip(tmp_path):
    scenes = [generate_scene(seed) for seed in (3, 4, 5)]
    path = write_paco_json(scenes, tmp_path)
    coco = COCO(str(path))  # the file is valid COCO for pycocotools
    assert len(coco.getImgIds()) == 3
    raw = json.loads(path.read_text())
    by_id = {a["id"]: a for a in raw["annotations"]}
    for ann in raw["annotations"]:
        parent = by_id[ann["obj_ann_id"]]
        assert parent["obj_ann_id"] == parent["id"] and parent["image_id"] == ann["image_id"]
    back = read_paco_json(path)
    assert len(back) == len(scenes)
    for orig, got in zip(scenes, back, strict=True):
        assert (got.image_id, got.file_name, got.height, got.width) == (
            orig.image_id,
            orig.file_name,
            orig.height,
            orig.width,
        )
        assert got.image.tobytes() == orig.image.tobytes()
        assert np.abs(got.depth - orig.depth).max() <= 0.0005 + 1e-6  # millimetre PNG
        np.testing.assert_allclose(got.intrinsics, orig.intrinsics)
        assert len(got.objects) == len(orig.objects)
        for o, g in zip(orig.objects, got.objects, strict=True):
            assert g.name == o.name and np.array_equal(g.mask, o.mask)
            np.testing.assert_array_equal(g.box, o.box)
            np.testing.assert_allclose(g.pose.center, o.pose.center)
            assert [p.name for p in g.parts] == [p.name for p in o.parts]
            for p, q in zip(o.parts, g.parts, strict=True):
                assert q.parent_id == g.id
                assert np.array_equal(q.mask, p.mask)
                np.testing.assert_allclose(q.pose.axis, p.pose.axis)


# --------------------------------------------------------------------------- PACO (LVIS-style JSON)


def test_paco_published_format(tmp_path):
    mug, handle, body = _rect(10, 10, 40, 50), _rect(30, 20, 40, 40), _rect(10, 10, 30, 50)
    knife, blade = _rect(45, 5, 75, 15), _rect(55, 5, 75, 15)
    common = {
        "attribute_ids": [],
        "dom_color_ids": [],
        "unknown_color": 0,
        "unknown_pattern_marking": 0,
        "unknown_material": 0,
        "unknown_transparency": 0,
    }
    data = {
        "images": [
            {
                "id": 397133,
                "file_name": "val2017/000000397133.jpg",
                "width": W,
                "height": H,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
                "neg_category_ids_attrs": [],
                "not_exhaustive_category_ids_attrs": [],
                "license": 1,
            }
        ],
        # ids are unique across object and part annotations; objects have obj_ann_id == id
        "annotations": [
            {
                "id": 900,
                "obj_ann_id": 900,
                "category_id": 24,
                "segmentation": _rle(mug),
                "bbox": [10, 10, 30, 40],
            },
            {
                "id": 901,
                "obj_ann_id": 900,
                "category_id": 300,
                "segmentation": _rle(handle),
                "bbox": [30, 20, 10, 20],
            },
            {
                "id": 902,
                "obj_ann_id": 900,
                "category_id": 301,
                "segmentation": _poly(10, 10, 30, 50),
                "bbox": [10, 10, 20, 40],
            },
            {
                "id": 903,
                "obj_ann_id": 903,
                "category_id": 23,
                "segmentation": _poly(45, 5, 75, 15),
                "bbox": [45, 5, 30, 10],
            },
            {
                "id": 904,
                "obj_ann_id": 903,
                "category_id": 310,
                "segmentation": _rle(blade),
                "bbox": [55, 5, 20, 10],
            },
            {"id": 905, "obj_ann_id": 903, "category_id": 311, "segmentation": [], "bbox": [45, 5, 10, 10]},
        ],
        "categories": [
            {
                "supercategory": "OBJECT",
                "id": 23,
                "name": "knife",
                "image_count": 1,
                "instance_count": 1,
                "synset": "knife.n.01",
                "frequency": "f",
            },
            {
                "supercategory": "OBJECT",
                "id": 24,
                "name": "mug",
                "image_count": 1,
                "instance_count": 1,
                "synset": "mug.n.04",
                "frequency": "f",
            },
            {"supercategory": "PART", "id": 300, "name": "mug:handle"},
            {"supercategory": "PART", "id": 301, "name": "mug:body"},
            {"supercategory": "PART", "id": 310, "name": "knife:blade"},
            {"supercategory": "PART", "id": 311, "name": "knife:handle"},
        ],
        "part_categories": [{"supercategory": "PART", "id": 1, "name": "blade"}],
        "attributes": [{"supercategory": "ATTR", "id": 0, "name": "black"}],
    }
    for ann in data["annotations"]:
        ann.update(common, image_id=397133, area=float(ann["bbox"][2] * ann["bbox"][3]))
    path = tmp_path / "paco_lvis_v1_val.json"
    path.write_text(json.dumps(data))
    (got,) = read_paco_json(path, load_images=False)  # annotations only (a missing image is an error)
    assert got.image is None
    assert _hierarchy(got) == [("knife", ["blade", "handle"]), ("mug", ["body", "handle"])]
    objs = {o.name: o for o in got.objects}
    assert np.array_equal(objs["mug"].mask, mug) and np.array_equal(objs["knife"].mask, knife)
    parts = {p.name: p for p in objs["mug"].parts}
    assert np.array_equal(parts["handle"].mask, handle) and np.array_equal(parts["body"].mask, body)
    assert all(p.parent_id == objs["mug"].id == 900 for p in objs["mug"].parts)
    knife_parts = {p.name: p for p in objs["knife"].parts}
    assert np.array_equal(knife_parts["blade"].mask, blade)
    assert not knife_parts["handle"].mask.any()  # empty segmentation: box only
    np.testing.assert_array_equal(knife_parts["handle"].box, [45, 5, 55, 15])


def test_coco_crowd_annotations_are_no_training_target_and_ignored_by_ap(tmp_path):
    from partglee_ros.runtime.result import ObjectResult, SegmentationResult
    from training.evaluation import instance_ap
    from training.targets import build_targets

    person, crowd = _rect(5, 5, 25, 55), _rect(40, 10, 78, 50)
    flat = crowd.ravel(order="F").astype(int)  # COCO stores crowds as uncompressed RLE: column-major runs
    runs = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()  # starts with a 0-run
    data = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": W, "height": H}],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "segmentation": _poly(5, 5, 25, 55),
                "bbox": [5, 5, 20, 50],
                "area": 1000.0,
                "iscrowd": 0,
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 1,
                "segmentation": {"size": [H, W], "counts": runs},
                "bbox": [40, 10, 38, 40],
                "area": 1520.0,
                "iscrowd": 1,
            },
        ],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    (got,) = read_paco_json(path, load_images=False)
    objs = {o.id: o for o in got.objects}
    assert not objs[10].iscrowd and objs[11].iscrowd and np.array_equal(objs[11].mask, crowd)
    targets = build_targets(got, ["person"], ["part"])
    assert targets["objects"]["labels"].tolist() == [0]  # the crowd is no instance to detect
    assert np.array_equal(targets["objects"]["masks"][0].numpy(), person)
    (again,) = read_paco_json(write_paco_json([got], tmp_path / "out"), load_images=False)
    assert [o.iscrowd for o in again.objects] == [False, True]
    # COCO AP: the crowd is no instance to find, and a detection inside it (IoU 0.26 with the whole crowd)
    # is ignored, not a false positive ranked above the true one.
    dets = [
        ObjectResult(0, "person", 0.9, np.array([40, 10, 50, 50], np.float32), _rect(40, 10, 50, 50), []),
        ObjectResult(1, "person", 0.5, np.array([5, 5, 25, 55], np.float32), person, []),
    ]
    ap = instance_ap([got], [SegmentationResult(H, W, 0, dets)])
    assert ap["object"]["segm"]["AP"] == pytest.approx(1.0) and ap["object"]["bbox"]["AP"] == pytest.approx(
        1.0
    )


# --------------------------------------------------------------------------- PartImageNet


def test_partimagenet_published_format(tmp_path):
    # two dogs in one image (parts only; the merged "Quadruped Foot" annotation spans both)
    head1, body1, head2, body2 = (
        _rect(5, 5, 15, 15),
        _rect(15, 8, 35, 25),
        _rect(45, 5, 55, 15),
        _rect(55, 8, 75, 25),
    )
    feet = _rect(18, 25, 22, 30) | _rect(60, 25, 64, 30)
    cats = [
        {"id": 0, "name": "Quadruped Head", "supercategory": "Quadruped"},
        {"id": 1, "name": "Quadruped Body", "supercategory": "Quadruped"},
        {"id": 2, "name": "Quadruped Foot", "supercategory": "Quadruped"},
        {"id": 3, "name": "Quadruped Tail", "supercategory": "Quadruped"},
        {"id": 24, "name": "Car Side Mirror", "supercategory": "Car"},
    ]
    anns = [
        (0, _poly(5, 5, 15, 15)),
        (1, _poly(15, 8, 35, 25)),
        (0, _poly(45, 5, 55, 15)),
        (1, _poly(55, 8, 75, 25)),
        (2, _poly(18, 25, 22, 30) + _poly(60, 25, 64, 30)),
    ]
    data = {
        "images": [{"id": 7, "file_name": "n02085620_1234.JPEG", "width": W, "height": H}],
        "annotations": [
            {
                "id": i,
                "image_id": 7,
                "category_id": c,
                "segmentation": seg,
                "iscrowd": 0,
                "area": 1.0,
                "bbox": [0, 0, 1, 1],
            }
            for i, (c, seg) in enumerate(anns)
        ],
        "categories": cats,
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    (got,) = read_partimagenet(path)
    assert _hierarchy(got) == [("quadruped", ["body", "foot", "head"])] * 2
    left, right = sorted(got.objects, key=lambda o: o.box[0])
    assert np.array_equal({p.name: p.mask for p in left.parts}["foot"], feet & (np.arange(W) < 40)[None, :])
    assert np.array_equal({p.name: p.mask for p in right.parts}["head"], head2)
    assert np.array_equal(left.mask, head1 | body1 | (feet & (np.arange(W) < 40)[None, :]))
    assert not (right.mask & (body1 | head1)).any() and (right.mask & body2).sum() == body2.sum()
    (by_wnid,) = read_partimagenet(path, object_name="wnid")
    assert {o.name for o in by_wnid.objects} == {"n02085620"}


# --------------------------------------------------------------------------- Pascal-Part (VLPart JSON)


def _vlpart_json(tmp_path, with_objects: bool = False):
    # VLPart: categories "object:part", RLE masks, bbox = (min, min, max-min, max-min), id from the VOC name
    dog1_head, dog1_torso = _rect(2, 2, 12, 12), _rect(10, 10, 30, 30)
    dog2_head, dog2_torso = _rect(40, 2, 50, 12), _rect(48, 10, 70, 30)
    person_head = _rect(60, 40, 70, 55)
    cats = [
        {"id": 49, "name": "dog:head"},
        {"id": 58, "name": "dog:torso"},
        {"id": 72, "name": "person:head"},
    ]
    parts = [(49, dog1_head), (58, dog1_torso), (49, dog2_head), (58, dog2_torso), (72, person_head)]
    anns = []
    for i, (cat, mask) in enumerate(parts):
        ys, xs = np.nonzero(mask)
        box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]
        anns.append(
            {
                "id": i,
                "segmentation": _rle(mask),
                "bbox": box,
                "category_id": cat,
                "image_id": 2008000002,
                "iscrowd": 0,
                "area": box[2] * box[3],
            }
        )
    if with_objects:  # a joint file that also carries object masks (names without ':')
        cats += [{"id": 200, "name": "dog"}, {"id": 201, "name": "person"}]
        for i, (cat, mask) in enumerate(
            [(200, dog1_head | dog1_torso), (200, dog2_head | dog2_torso), (201, _rect(58, 35, 75, 60))]
        ):
            anns.append(
                {
                    "id": 100 + i,
                    "segmentation": _rle(mask),
                    "bbox": [0, 0, 1, 1],
                    "category_id": cat,
                    "image_id": 2008000002,
                    "iscrowd": 0,
                    "area": 1.0,
                }
            )
    data = {
        "categories": cats,
        "images": [{"id": 2008000002, "file_name": "2008_000002.jpg", "height": H, "width": W}],
        "annotations": anns,
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    return path, {"dog1": dog1_head | dog1_torso, "dog2": dog2_head | dog2_torso, "person": person_head}


VOC_XML = """<annotation>
  <folder>VOC2010</folder>
  <filename>2008_000002.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  <segmented>0</segmented>
  <object><name>dog</name><pose>Left</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>31</xmax><ymax>31</ymax></bndbox></object>
  <object><name>dog</name><pose>Right</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>39</xmin><ymin>1</ymin><xmax>71</xmax><ymax>31</ymax></bndbox></object>
  <object><name>person</name><pose>Frontal</pose><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>58</xmin><ymin>36</ymin><xmax>76</xmax><ymax>60</ymax></bndbox></object>
  <object><name>chair</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>2</xmin><ymin>40</ymin><xmax>20</xmax><ymax>58</ymax></bndbox></object>
</annotation>
"""


def _check_two_dogs(record, truth, object_masks_from_parts: bool):
    assert _hierarchy(record) == [
        ("dog", ["head", "torso"]),
        ("dog", ["head", "torso"]),
        ("person", ["head"]),
    ]
    dogs = sorted((o for o in record.objects if o.name == "dog"), key=lambda o: o.box[0])
    for dog, key in zip(dogs, ("dog1", "dog2"), strict=True):
        union = np.any(np.stack([p.mask for p in dog.parts]), axis=0)
        assert np.array_equal(union, truth[key]), "each part must go to the dog that contains it"
        if object_masks_from_parts:
            assert np.array_equal(dog.mask, truth[key])


def test_pascal_part_vlpart_with_voc_boxes(tmp_path):
    path, truth = _vlpart_json(tmp_path)
    voc = tmp_path / "Annotations"
    voc.mkdir()
    (voc / "2008_000002.xml").write_text(VOC_XML.format(w=W, h=H))
    (got,) = read_vlpart_pascal_part(path, voc_annotations_dir=voc)
    _check_two_dogs(got, truth, object_masks_from_parts=True)
    person = next(o for o in got.objects if o.name == "person")
    np.testing.assert_array_equal(person.box, [57, 35, 76, 60])  # VOC 1-based inclusive -> 0-based exclusive


def test_pascal_part_vlpart_with_object_masks_and_blob_fallback(tmp_path):
    path, truth = _vlpart_json(tmp_path, with_objects=True)
    (got,) = read_vlpart_pascal_part(path)
    _check_two_dogs(got, truth, object_masks_from_parts=False)
    assert next(o for o in got.objects if o.name == "person").mask.sum() == 17 * 25
    path, truth = _vlpart_json(tmp_path)
    (blobs,) = read_vlpart_pascal_part(path)  # no object source: connected blobs per object class
    _check_two_dogs(blobs, truth, object_masks_from_parts=True)


# --------------------------------------------------------------------------- OV-PARTS


def test_ovparts_pascal_part_116_layout(tmp_path):
    root = tmp_path / "PascalPart116"
    for sub in ("images/val", "annotations_detectron2_part/val", "annotations_detectron2_obj/val"):
        (root / sub).mkdir(parents=True)
    dog, cat = PASCAL_PART_116_OBJECTS.index("dog"), PASCAL_PART_116_OBJECTS.index("cat")
    head, torso = PASCAL_PART_116_PARTS.index("dog's head"), PASCAL_PART_116_PARTS.index("dog's torso")
    cat_eye = PASCAL_PART_116_PARTS.index("cat's eye")
    part = np.full((H, W), 255, np.uint8)
    obj = np.full((H, W), 255, np.uint8)
    obj[5:40, 5:40] = dog
    part[5:15, 5:15], part[15:40, 5:40] = head, torso
    part[30:35, 30:35] = 255  # ignore inside the object (unlabelled part pixels)
    obj[10:30, 50:70] = cat
    part[12:15, 52:55] = cat_eye
    cv2.imwrite(str(root / "annotations_detectron2_part/val/2008_000123.png"), part)
    cv2.imwrite(str(root / "annotations_detectron2_obj/val/2008_000123.png"), obj)
    cv2.imwrite(str(root / "images/val/2008_000123.jpg"), np.zeros((H, W, 3), np.uint8))
    (sample,) = read_pascal_part_116(root, "val", load_images=True)
    assert sample.part_labels.dtype == np.int32 and sample.part_labels[0, 0] == -1
    assert sample.part_labels[6, 6] == head and sample.part_labels[32, 32] == -1
    assert sample.image.shape == (H, W, 3)
    record = sample.to_image_annotation(image_id=123)
    assert _hierarchy(record) == [("cat", ["eye"]), ("dog", ["head", "torso"])]
    dog_obj = next(o for o in record.objects if o.name == "dog")
    assert np.array_equal(dog_obj.mask, _rect(5, 5, 40, 40))
    torso_mask = next(p for p in dog_obj.parts if p.name == "torso").mask
    assert torso_mask.sum() == 25 * 35 - 25


def test_ovparts_ade20k_part_234_layout(tmp_path):
    root = tmp_path / "ADE20KPart234"
    (root / "annotations_detectron2_part/validation").mkdir(parents=True)
    (root / "images/validation").mkdir(parents=True)
    door, chair = ADE20K_PART_234_OBJECTS.index("door"), ADE20K_PART_234_OBJECTS.index("chair")
    handle, panel = ADE20K_PART_234_PARTS.index("door's handle"), ADE20K_PART_234_PARTS.index("door's panel")
    leg = ADE20K_PART_234_PARTS.index("chair's leg")
    labels = np.full((H, W), 65535, np.uint16)  # uint16: 234 classes do not fit uint8
    labels[0:50, 0:30] = panel
    labels[20:25, 22:27] = handle
    labels[40:60, 40:44] = leg
    labels[40:60, 60:64] = leg
    cv2.imwrite(str(root / "annotations_detectron2_part/validation/ADE_val_00000001.png"), labels)
    # two chairs share the semantic "chair's leg" label; instance masks separate them
    data = {
        "images": [{"id": 1, "file_name": "ADE_val_00000001.jpg", "height": H, "width": W}],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": door,
                "segmentation": _poly(0, 0, 30, 50),
                "bbox": [0, 0, 30, 50],
                "iscrowd": 0,
                "area": 1500.0,
                "part_category_id": [handle, panel],
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": chair,
                "segmentation": _rle(_rect(38, 30, 50, 60)),
                "bbox": [38, 30, 12, 30],
                "iscrowd": 0,
                "area": 360.0,
                "part_category_id": [leg],
            },
            {
                "id": 12,
                "image_id": 1,
                "category_id": chair,
                "segmentation": _rle(_rect(56, 30, 70, 60)),
                "bbox": [56, 30, 14, 30],
                "iscrowd": 0,
                "area": 420.0,
                "part_category_id": [leg],
            },
        ],
        "categories": [{"id": i, "name": n} for i, n in enumerate(ADE20K_PART_234_OBJECTS)],
    }
    (root / "ade20k_instance_val.json").write_text(json.dumps(data))
    (sample,) = read_ade20k_part_234(root, "validation")
    assert sample.part_labels.max() == max(handle, panel, leg) and sample.part_labels.min() == -1
    assert len(sample.part_classes) == 234
    record = sample.to_image_annotation()
    assert _hierarchy(record) == [("chair", ["leg"]), ("chair", ["leg"]), ("door", ["handle", "panel"])]
    chairs = [o for o in record.objects if o.name == "chair"]
    assert [int(c.parts[0].mask.sum()) for c in chairs] == [80, 80]
    assert not (chairs[0].parts[0].mask & chairs[1].parts[0].mask).any()


def test_label_tables_match_published_sizes():
    assert (len(PASCAL_PART_116_PARTS), len(PASCAL_PART_116_OBJECTS)) == (116, 20)
    assert (len(ADE20K_PART_234_PARTS), len(ADE20K_PART_234_OBJECTS)) == (234, 44)
    with pytest.raises(ValueError):
        from training.data.ovparts import split_class

        split_class("no possessive")
