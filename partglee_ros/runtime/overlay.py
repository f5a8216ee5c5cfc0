"""Draw a segmentation result over its image: objects outlined and labelled, parts filled and labelled.

Used by the node's debug image, the demo and the bag-evaluation report, so all show the same picture.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from partglee_ros.runtime.result import SegmentationResult


def _color(index: int, saturation: float = 0.85) -> tuple[int, int, int]:
    hue = (index * 0.618033988749895) % 1.0  # golden-ratio hues stay apart for any count
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = int(np.clip(x, 0, max(0, canvas.shape[1] - tw - 2)))
    y = int(np.clip(y, th + base + 1, canvas.shape[0] - 1))
    cv2.rectangle(canvas, (x, y - th - base - 1), (x + tw + 2, y), color, -1)
    cv2.putText(canvas, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def draw_overlay(image: np.ndarray, result: SegmentationResult, alpha: float = 0.45) -> np.ndarray:
    """HxWx3 uint8 RGB -> a new RGB image with the hierarchy drawn on it."""
    canvas = image.copy()
    scale = max(0.35, min(image.shape[:2]) / 900)
    part_names = sorted({p.label for p in result.parts()})
    part_color = {name: _color(i + 3, 0.6) for i, name in enumerate(part_names)}
    fill = canvas.copy()
    for obj in result.objects:
        for part in obj.parts:
            fill[part.mask] = part_color[part.label]
    mixed = cv2.addWeighted(fill, alpha, canvas, 1 - alpha, 0)
    any_part = np.zeros(image.shape[:2], bool)
    for part in result.parts():
        any_part |= part.mask
    canvas[any_part] = mixed[any_part]
    for obj in result.objects:
        color = _color(obj.track_id or obj.id)  # a tracked object keeps its colour from frame to frame
        contours, _ = cv2.findContours(obj.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, color, 2)
        x0, y0 = int(obj.box[0]), int(obj.box[1])
        track = f" #{obj.track_id}" if obj.track_id else ""
        _label(canvas, f"{obj.label}{track} {obj.score:.2f}", x0, y0, color, scale)
        for part in obj.parts:
            ys, xs = np.nonzero(part.mask)
            if len(xs):
                _label(
                    canvas,
                    part.label,
                    int(xs.mean()) - 10,
                    int(ys.mean()),
                    part_color[part.label],
                    scale * 0.8,
                )
    return canvas
