"""Conversions between ROS messages and the runtime's numpy/dataclass types.

Masks travel as mono8 crops to their tight box (see msg/ObjectInstance.msg): exact at the input
resolution, and a few kilobytes instead of a full HxW image per instance.
"""

from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from partglee_ros.msg import HierarchicalSegmentation, ObjectInstance, ObjectParts, PartInstance
from partglee_ros.msg import Vocabulary as VocabularyMsg
from partglee_ros.runtime.result import ObjectResult, PartResult, SegmentationResult
from partglee_ros.runtime.vocabulary import Vocabulary, VocabularyError
from partglee_ros.sensor_images import paste_mask_crop, quoted


class ImageConversionError(ValueError):
    """A mask crop or depth image message cannot be converted; the message says why. (Camera frames are
    decoded by partglee_ros.sensor_images.)"""


def rgb_to_image_msg(rgb: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """HxWx3 uint8 RGB -> sensor_msgs/Image in rgb8 or bgr8."""
    array = rgb if encoding == "rgb8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding)
    msg.is_bigendian = 0
    msg.step = array.shape[1] * 3
    msg.data = array.tobytes()
    return msg


def mask_to_crop(mask: np.ndarray, header: Header) -> tuple[RegionOfInterest, Image]:
    """Bool HxW mask -> (tight integer box, mono8 crop of the mask to that box)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return RegionOfInterest(), Image(header=header, encoding="mono8")
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8) * np.uint8(255)
    roi = RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0, height=y1 - y0, do_rectify=False)
    image = Image(header=header, height=y1 - y0, width=x1 - x0, encoding="mono8", step=x1 - x0)
    image.data = crop.tobytes()
    return roi, image


def _box_of(roi: RegionOfInterest) -> np.ndarray:
    return np.array(
        [roi.x_offset, roi.y_offset, roi.x_offset + roi.width, roi.y_offset + roi.height], dtype=np.float32
    )


def _f32(value: float) -> float:
    """Round to float32 now, so a message compares equal to itself after crossing the wire."""
    return float(np.float32(value))


def result_to_msg(result: SegmentationResult, header: Header) -> HierarchicalSegmentation:
    msg = HierarchicalSegmentation(header=header, vocabulary_revision=result.vocabulary_revision)
    msg.image_height, msg.image_width = result.height, result.width
    msg.processing_time_ms = _f32(result.timings_ms.get("total", 0.0))
    for obj in result.objects:
        box, mask = mask_to_crop(obj.mask, header)
        out = ObjectInstance(
            id=obj.id, track_id=obj.track_id, label=obj.label, score=_f32(obj.score), box=box, mask=mask
        )
        for part in obj.parts:
            pbox, pmask = mask_to_crop(part.mask, header)
            out.parts.append(
                PartInstance(
                    id=part.id,
                    parent_id=part.parent_id,
                    label=part.label,
                    object_label=part.object_label,
                    score=_f32(part.score),
                    box=pbox,
                    mask=pmask,
                )
            )
        msg.objects.append(out)
    return msg


def msg_to_result(msg: HierarchicalSegmentation) -> SegmentationResult:
    """Decode a message back to full-resolution masks (for consumers, evaluation and tests)."""
    h, w = msg.image_height, msg.image_width
    objects = []
    for obj in msg.objects:
        parts = [
            PartResult(
                id=p.id,
                label=p.label,
                object_label=p.object_label,
                score=p.score,
                box=_box_of(p.box),
                mask=paste_mask_crop(p.box, p.mask, h, w),
                parent_id=p.parent_id,
            )
            for p in obj.parts
        ]
        mask = paste_mask_crop(obj.box, obj.mask, h, w)
        objects.append(
            ObjectResult(obj.id, obj.label, obj.score, _box_of(obj.box), mask, parts, obj.track_id)
        )
    timings = {"total": float(msg.processing_time_ms)}
    return SegmentationResult(h, w, msg.vocabulary_revision, objects, timings)


def vocabulary_to_msg(vocab: Vocabulary) -> VocabularyMsg:
    msg = VocabularyMsg(revision=vocab.revision, objects=list(vocab.objects), parts=list(vocab.parts))
    msg.object_parts = [ObjectParts(object=o, parts=list(p)) for o, p in vocab.object_parts.items()]
    return msg


def object_parts_from_msgs(entries: list[ObjectParts]) -> dict[str, list[str]]:
    """The service's object -> parts list as a mapping; an object listed twice is refused, not overwritten."""
    mapping: dict[str, list[str]] = {}
    for e in entries:
        if e.object in mapping:
            raise VocabularyError(f"object_parts names object {e.object!r} twice")
        mapping[e.object] = list(e.parts)
    return mapping


_DEPTH_DTYPES = {"16UC1": np.dtype(np.uint16), "mono16": np.dtype(np.uint16), "32FC1": np.dtype(np.float32)}


def depth_msg_to_array(msg: Image) -> np.ndarray:
    """A depth image (16UC1/mono16 millimetres or 32FC1 metres) as an HxW array of its own dtype."""
    if msg.encoding not in _DEPTH_DTYPES:
        raise ImageConversionError(
            f"unsupported depth encoding {quoted(msg.encoding)}; use 16UC1 (mm) or 32FC1 (m)"
        )
    dtype = _DEPTH_DTYPES[msg.encoding].newbyteorder(">" if msg.is_bigendian else "<")
    h, w = int(msg.height), int(msg.width)
    row_bytes = w * dtype.itemsize
    if h == 0 or w == 0 or msg.step < row_bytes or len(msg.data) != msg.step * h:
        raise ImageConversionError(
            f"depth image {w}x{h} step {msg.step} does not match its {len(msg.data)} bytes"
        )
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(h, msg.step)[:, :row_bytes]
    return rows.copy().view(dtype).reshape(h, w).astype(dtype.newbyteorder("="))


def depth_array_to_msg(depth: np.ndarray, header: Header) -> Image:
    """HxW uint16 (mm) -> 16UC1, float32 (m) -> 32FC1."""
    encoding = {np.dtype(np.uint16): "16UC1", np.dtype(np.float32): "32FC1"}[depth.dtype]
    array = np.ascontiguousarray(depth)
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0)
    msg.step = array.shape[1] * array.itemsize
    msg.data = array.tobytes()
    return msg
