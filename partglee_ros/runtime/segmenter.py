"""The Segmenter: `set_vocabulary(...)` once, then `segment(image)` per frame.

Input size policy: every image is scaled (aspect kept) to fit `input_size` (W, H) of the model and padded
bottom/right to a multiple of 32, so every backend always sees one fixed input shape (what a TensorRT
engine or a static ONNX graph wants); only the vocabulary size K varies.

Thread safety: `segment` takes a consistent snapshot (vocabulary, embeddings, restriction) under a lock and
runs without holding it; `set_vocabulary` encodes text outside the lock and swaps the snapshot in one step.
A frame is therefore computed entirely with one vocabulary revision, whatever happens concurrently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from partglee_ros.model.preprocess import PIXEL_MEAN, PIXEL_STD, padded_size
from partglee_ros.model.text_encoder import TextEncoder
from partglee_ros.runtime.backends.base import Backend
from partglee_ros.runtime.postprocess import Letterbox, PostprocessConfig, postprocess
from partglee_ros.runtime.result import SegmentationResult
from partglee_ros.runtime.vocabulary import Vocabulary, VocabularyError, make_vocabulary

MAX_IMAGE_SIDE = 8192


class ImageError(ValueError):
    """The image cannot be segmented (wrong type, shape or size)."""


@dataclass(frozen=True)
class _ActiveVocabulary:
    vocabulary: Vocabulary
    object_text: np.ndarray  # (K_obj, D) float32
    part_text: np.ndarray  # (K_part, D) float32, at least one row
    allowed: np.ndarray  # (K_obj, K_part) bool


def validate_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"image must be HxWx3 RGB, got shape {image.shape}")
    h, w = image.shape[:2]
    if h < 8 or w < 8:
        raise ImageError(f"image of {w}x{h} is too small (at least 8x8)")
    if max(h, w) > MAX_IMAGE_SIDE:
        raise ImageError(f"image of {w}x{h} exceeds {MAX_IMAGE_SIDE} pixels per side")


class Segmenter:
    def __init__(
        self,
        backend: Backend,
        text_encoder: TextEncoder,
        input_size: tuple[int, int],
        postprocess_config: PostprocessConfig | None = None,
    ) -> None:
        self.backend = backend
        self.text_encoder = text_encoder
        self.input_size = input_size  # (W, H)
        self.config = postprocess_config or PostprocessConfig()
        self.config.validate()
        self._lock = threading.Lock()
        self._update_lock = threading.Lock()
        self._active: _ActiveVocabulary | None = None
        self._mean = np.array(PIXEL_MEAN, np.float32)
        self._inv_std = 1.0 / np.array(PIXEL_STD, np.float32)

    @property
    def vocabulary(self) -> Vocabulary | None:
        active = self._active
        return active.vocabulary if active else None

    def set_vocabulary(
        self,
        objects: Iterable[str],
        parts: Iterable[str] = (),
        object_parts: Mapping[str, Iterable[str]] | None = None,
    ) -> Vocabulary:
        """Validate, encode the names once, and activate; returns the vocabulary with its new revision."""
        with self._update_lock:  # concurrent callers get distinct, increasing revisions
            revision = (self._active.vocabulary.revision if self._active else 0) + 1
            vocab = make_vocabulary(objects, parts, object_parts, revision=revision)
            self.apply_vocabulary(vocab)
        return vocab

    def apply_vocabulary(self, vocab: Vocabulary) -> None:
        """Activate an already validated vocabulary (the ROS service validates and numbers revisions itself)."""
        limits = self.backend.vocabulary_limits()
        if limits and (len(vocab.objects) > limits[0] or max(len(vocab.parts), 1) > limits[1]):
            # Refused here, not per frame: the engine could not run a single frame with this vocabulary.
            raise VocabularyError(
                f"{len(vocab.objects)} object / {len(vocab.parts)} part names exceed what the "
                f"{self.backend.name} backend was built for ({limits[0]} / {limits[1]}); "
                "rebuild the engine with a larger --k-obj/--k-part profile"
            )
        # The network needs K_part >= 1; with no parts a single name is encoded and every part is disallowed.
        part_names = list(vocab.parts) or ["part"]
        text = self.text_encoder.encode([*vocab.objects, *part_names]).astype(np.float32, copy=False)
        object_text, part_text = text[: len(vocab.objects)], text[len(vocab.objects) :]
        allowed = np.zeros((len(vocab.objects), len(part_names)), dtype=bool)
        index = {p: i for i, p in enumerate(vocab.parts)}
        for i, obj in enumerate(vocab.objects):
            for p in vocab.allowed_parts(obj):
                allowed[i, index[p]] = True
        active = _ActiveVocabulary(vocab, object_text, part_text, allowed)
        with self._lock:
            self._active = active

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        h, w = image.shape[:2]
        in_w, in_h = self.input_size
        scale = min(in_w / w, in_h / h)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        ph, pw = padded_size(in_h, in_w)
        resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        tensor = np.zeros((1, 3, ph, pw), np.float32)
        tensor[0, :, :rh, :rw] = ((resized.astype(np.float32) - self._mean) * self._inv_std).transpose(
            2, 0, 1
        )
        return tensor, Letterbox(h, w, scale, ph, pw)

    def segment(self, image: np.ndarray) -> SegmentationResult:
        """HxWx3 uint8 RGB of any size -> objects with parts, masks and boxes in the image's pixels."""
        validate_image(image)
        with self._lock:
            active = self._active
        if active is None:
            raise RuntimeError("no vocabulary set: call set_vocabulary() first")
        t0 = time.perf_counter()
        tensor, lb = self.preprocess(image)
        t1 = time.perf_counter()
        outputs = self.backend.infer(tensor, active.object_text, active.part_text)
        t2 = time.perf_counter()
        vocab = active.vocabulary
        objects = postprocess(
            outputs, lb, vocab.objects, vocab.parts or ("part",), active.allowed, self.config
        )
        t3 = time.perf_counter()
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            "inference": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        return SegmentationResult(lb.height, lb.width, vocab.revision, objects, timings)
