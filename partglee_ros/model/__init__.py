"""PartGLEE in PyTorch: image encoder, early fusion, object decoder, Q-Former, part decoder and heads."""

from partglee_ros.model.partglee import PartGLEE, build_model
from partglee_ros.model.preprocess import PIXEL_MEAN, PIXEL_STD, SIZE_DIVISIBILITY, images_to_tensor

__all__ = ["PIXEL_MEAN", "PIXEL_STD", "SIZE_DIVISIBILITY", "PartGLEE", "build_model", "images_to_tensor"]
