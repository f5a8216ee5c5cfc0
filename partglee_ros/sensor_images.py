"""Decode camera messages (sensor_msgs Image / CompressedImage) to HxWx3 uint8 RGB: the live node's
subscriptions (rclpy messages) and recorded bags (rosbags' messages) share this, so a replay into the node
and an offline evaluation accept the same frames.

Covers what robot cameras send: 8-bit colour and grey, 16-bit grey (scaled to 8 bit), Bayer mosaics
(demosaiced like cv_bridge), packed YUV 4:2:2 (USB cameras' YUYV/UYVY, usb_cam's default; converted like
cv_bridge) and JPEG/PNG compressed images. Every failure is an `ImageDecodeError` that says
which field is wrong, so one bad frame is reported and skipped instead of stopping the node or the evaluation.
No ROS imports: messages are read by their fields.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from partglee_ros.runtime.segmenter import MAX_IMAGE_PIXELS  # refused before decoding, not after

# encoding -> (channels, bytes per channel, OpenCV conversion to RGB or None for "already RGB")
ENCODINGS: dict[str, tuple[int, int, int | None]] = {
    "rgb8": (3, 1, None),
    "8UC3": (3, 1, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 1, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, 1, cv2.COLOR_GRAY2RGB),
    "mono16": (1, 2, cv2.COLOR_GRAY2RGB),
    "16UC1": (1, 2, cv2.COLOR_GRAY2RGB),
    # OpenCV names a Bayer pattern by the 2x2 block starting at pixel (1, 1); cv_bridge uses the same table.
    "bayer_rggb8": (1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, 1, cv2.COLOR_BayerGB2RGB),
    # packed 4:2:2, two bytes a pixel: sensor_msgs' "yuv422" is U Y V Y, "yuv422_yuy2" Y U Y V
    "yuv422": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
}


class ImageDecodeError(ValueError):
    """A camera image (live or recorded) cannot be turned into an RGB frame; the message says why."""


def quoted(text: str, limit: int = 40) -> str:
    """A sender's string (an encoding, a format) as an error message quotes it: bounded, since it comes
    from the wire and ends up in logs and /diagnostics."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def raw_image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (any object with its fields) -> HxWx3 uint8 RGB, a new array."""
    encoding = str(msg.encoding)
    if encoding not in ENCODINGS:
        raise ImageDecodeError(f"unsupported encoding {quoted(encoding)}; supported: {', '.join(ENCODINGS)}")
    channels, depth, conversion = ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise ImageDecodeError(f"empty image ({w}x{h})")
    if h * w > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(f"image of {w}x{h} exceeds the limit of {MAX_IMAGE_PIXELS} pixels")
    if channels == 2 and w % 2:  # two pixels share one U and one V
        raise ImageDecodeError(f"{encoding} needs an even width, got {w}")
    row_bytes = w * channels * depth
    if step < row_bytes:
        raise ImageDecodeError(f"step {step} < width*channels*bytes = {row_bytes} for {encoding}")
    data = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if data.size != step * h:
        raise ImageDecodeError(f"data has {data.size} bytes, expected step*height = {step * h}")
    rows = data.reshape(h, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        # 16-bit grey (often depth or IR) is stretched to its own range, so a dim image stays visible.
        values = rows.copy().view(dtype).reshape(h, w).astype(np.float32)
        span = max(float(values.max() - values.min()), 1.0)
        array = np.round((values - values.min()) * (255.0 / span)).astype(np.uint8)
    else:
        array = np.ascontiguousarray(rows.reshape(h, w, channels) if channels > 1 else rows.reshape(h, w))
    return array.copy() if conversion is None else cv2.cvtColor(array, conversion)


def compressed_image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png; format as image_transport writes it) -> HxWx3 uint8 RGB."""
    buffer = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    except cv2.error:  # over OPENCV_IO_MAX_IMAGE_PIXELS (the node sets it to the runtime's limit)
        bgr = None
    if bgr is None:
        raise ImageDecodeError(
            f"cannot decode compressed image (format {quoted(str(msg.format))}, {buffer.size} bytes): corrupt, or over "
            f"the limit of {MAX_IMAGE_PIXELS} pixels"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_to_rgb(msg: Any, msgtype: str) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        return compressed_image_to_rgb(msg)
    return raw_image_to_rgb(msg)


def paste_mask_crop(roi: Any, crop: Any, height: int, width: int) -> np.ndarray:
    """A mask as the node sends it (mono8 crop + its box, msg/ObjectInstance.msg) -> bool HxW mask."""
    mask = np.zeros((height, width), dtype=bool)
    if roi.width == 0 or roi.height == 0:
        return mask
    if crop.encoding != "mono8" or crop.height != roi.height or crop.width != roi.width:
        raise ImageDecodeError(
            f"mask crop ({crop.encoding} {crop.width}x{crop.height}) does not match its box"
        )
    if roi.x_offset + roi.width > width or roi.y_offset + roi.height > height:
        raise ImageDecodeError(
            f"mask box {roi.x_offset},{roi.y_offset},{roi.width}x{roi.height} leaves the {width}x{height} image"
        )
    data = np.frombuffer(memoryview(crop.data).cast("B"), dtype=np.uint8)
    if crop.step < crop.width or data.size != crop.step * crop.height:
        raise ImageDecodeError(f"mask crop has {data.size} bytes for step {crop.step} x {crop.height} rows")
    rows = data.reshape(crop.height, crop.step)[:, : crop.width]
    mask[roi.y_offset : roi.y_offset + roi.height, roi.x_offset : roi.x_offset + roi.width] = rows > 0
    return mask
