"""HierarchicalSegmentation as rosbags message objects <-> SegmentationResult / ImageAnnotation.

The wire format is the node's (msg/ObjectInstance.msg): masks are mono8 crops to their tight box. Ground
truth travels in the same message type with score 1, so a bag can carry annotations next to the images.
These functions are the rosbags twin of `partglee_ros.ros.conversions` (which needs rclpy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from partglee_ros.bag.typestore import SEGMENTATION_TYPE, bag_typestore
from partglee_ros.runtime.result import ObjectResult, PartResult, SegmentationResult
from partglee_ros.sensor_images import paste_mask_crop
from training.data.hierarchy import ImageAnnotation, ObjectAnnotation, PartAnnotation, part_label


def header(stamp_ns: int, frame_id: str) -> Any:
    types = bag_typestore().types
    time = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def stamp_ns(hdr: Any) -> int:
    return int(hdr.stamp.sec) * 10**9 + int(hdr.stamp.nanosec)


def _crop(mask: np.ndarray, hdr: Any) -> tuple[Any, Any]:
    """Bool HxW mask -> (RegionOfInterest, mono8 crop Image), as the node encodes it."""
    types = bag_typestore().types
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        x0 = y0 = x1 = y1 = 0
    else:
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8) * np.uint8(255)
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=x0, y_offset=y0, height=y1 - y0, width=x1 - x0, do_rectify=False
    )
    image = types["sensor_msgs/msg/Image"](
        header=hdr,
        height=y1 - y0,
        width=x1 - x0,
        encoding="mono8",
        is_bigendian=0,
        step=x1 - x0,
        data=crop.reshape(-1),
    )
    return roi, image


def _box(roi: Any) -> np.ndarray:
    return np.array(
        [roi.x_offset, roi.y_offset, roi.x_offset + roi.width, roi.y_offset + roi.height], dtype=np.float32
    )


def _message(hdr: Any, height: int, width: int, revision: int, objects: list, time_ms: float) -> Any:
    return bag_typestore().types[SEGMENTATION_TYPE](
        header=hdr,
        vocabulary_revision=revision,
        image_height=height,
        image_width=width,
        objects=objects,
        processing_time_ms=time_ms,
    )


def result_to_bag_msg(result: SegmentationResult, hdr: Any) -> Any:
    types = bag_typestore().types
    objects = []
    for obj in result.objects:
        parts = []
        for p in obj.parts:
            roi, crop = _crop(p.mask, hdr)
            parts.append(
                types["partglee_ros/msg/PartInstance"](
                    id=p.id,
                    parent_id=p.parent_id,
                    label=p.label,
                    object_label=p.object_label,
                    score=float(np.float32(p.score)),
                    box=roi,
                    mask=crop,
                )
            )
        roi, crop = _crop(obj.mask, hdr)
        objects.append(
            types["partglee_ros/msg/ObjectInstance"](
                id=obj.id,
                track_id=obj.track_id,
                label=obj.label,
                score=float(np.float32(obj.score)),
                box=roi,
                mask=crop,
                parts=parts,
            )
        )
    total = float(result.timings_ms.get("total", 0.0))
    return _message(hdr, result.height, result.width, result.vocabulary_revision, objects, total)


def annotation_as_result(ann: ImageAnnotation) -> SegmentationResult:
    """Ground truth in result form, every instance with score 1: for the message and the overlays."""
    objects = [
        ObjectResult(
            o.id,
            o.name,
            1.0,
            o.box,
            o.mask,
            [PartResult(p.id, p.name, part_label(o.name, p.name), 1.0, p.box, p.mask, o.id) for p in o.parts],
            o.track_id,
        )
        for o in ann.objects
    ]
    return SegmentationResult(ann.height, ann.width, 0, objects)


def annotation_to_bag_msg(ann: ImageAnnotation, hdr: Any) -> Any:
    """Ground truth in the node's message type."""
    return result_to_bag_msg(annotation_as_result(ann), hdr)


def bag_msg_to_result(msg: Any) -> SegmentationResult:
    h, w = int(msg.image_height), int(msg.image_width)
    objects = []
    for o in msg.objects:
        parts = [
            PartResult(
                int(p.id),
                p.label,
                p.object_label,
                float(p.score),
                _box(p.box),
                paste_mask_crop(p.box, p.mask, h, w),
                int(p.parent_id),
            )
            for p in o.parts
        ]
        mask = paste_mask_crop(o.box, o.mask, h, w)
        # a bag recorded before ObjectInstance had track_id decodes without it (Bag.deserialize)
        track_id = int(getattr(o, "track_id", 0))
        objects.append(ObjectResult(int(o.id), o.label, float(o.score), _box(o.box), mask, parts, track_id))
    return SegmentationResult(
        h, w, int(msg.vocabulary_revision), objects, {"total": float(msg.processing_time_ms)}
    )


def bag_msg_to_annotation(msg: Any, image_id: int) -> ImageAnnotation:
    result = bag_msg_to_result(msg)
    objects = [
        ObjectAnnotation(
            o.id,
            o.label,
            o.mask,
            [PartAnnotation(p.id, p.label, p.mask, o.id, p.box) for p in o.parts],
            o.box,
            track_id=o.track_id,
        )
        for o in result.objects
    ]
    return ImageAnnotation(image_id, f"{stamp_ns(msg.header)}.png", result.height, result.width, objects)


def deserialize(raw: bytes, msgtype: str) -> Any:
    return bag_typestore().deserialize_cdr(raw, msgtype)
