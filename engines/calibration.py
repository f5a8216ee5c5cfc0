"""Calibration inputs for 8-bit graphs: the network inputs the Segmenter would feed for a folder of images.

Shared by the TensorRT INT8 build (engines.build_engine) and the ONNX Runtime INT8 graph
(engines.quantize_onnx), so both calibrate their ranges on what the node will really run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def calibration_feeds(model_dir: Path, images_dir: Path, limit: int) -> list[dict[str, np.ndarray]]:
    """Letterboxed images from ``images_dir`` with the model's default vocabulary text, as the Segmenter
    would feed them (so int8 ranges are calibrated on real inputs)."""
    import cv2

    from partglee_ros.runtime.factory import make_text_encoder, read_model_config
    from partglee_ros.runtime.segmenter import letterbox
    from training.data.synthparts import CATEGORIES

    config = read_model_config(model_dir)
    encoder = make_text_encoder(config, model_dir)
    objects = sorted(CATEGORIES)
    parts = sorted({p for ps in CATEGORIES.values() for p in ps})
    object_text = encoder.encode(objects)
    part_text = encoder.encode(parts)
    feeds = []
    for path in sorted(images_dir.iterdir())[:limit]:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        tensor, _ = letterbox(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), config.input_size)
        feeds.append({"image": tensor, "object_text": object_text, "part_text": part_text})
    if not feeds:
        raise RuntimeError(f"no readable images in {images_dir}")
    return feeds
