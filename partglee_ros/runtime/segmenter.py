"""The Segmenter: `set_vocabulary(...)` once, then `segment(image)` per frame.

Input size policy: every image is scaled (aspect kept) to fit `input_size` (W, H) of the model and padded
bottom/right to a multiple of 32, so every backend always sees one fixed input shape (what a TensorRT
engine or a static ONNX graph wants); only the vocabulary size K varies.

Thread safety: the active vocabulary (names, embeddings, restriction) is one immutable snapshot. `segment`
reads the reference once and never waits for a vocabulary change, so a frame is computed entirely with one
revision. `set_vocabulary` and `apply_vocabulary` validate and encode outside any lock (the text encoder's
cache is thread-safe; a large vocabulary must not hold up a small one) and swap under one update lock, so
the active revision only grows: a caller-numbered vocabulary not newer than the active one is refused, and
`set_vocabulary` numbers at the swap (of unsynchronised callers, the change that finishes last wins).
`prepare` encodes a vocabulary without activating it, for one-off queries (`segment(image, prepared)`) that
must not change what every other frame is segmented with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import cv2
import numpy as np

from partglee_ros.model.preprocess import PIXEL_MEAN, PIXEL_STD, padded_size
from partglee_ros.model.text_encoder import TextEncoder
from partglee_ros.runtime.backends.base import Backend
from partglee_ros.runtime.postprocess import Letterbox, PostprocessConfig, postprocess
from partglee_ros.runtime.result import SegmentationResult
from partglee_ros.runtime.vocabulary import Vocabulary, VocabularyError, make_vocabulary

MAX_IMAGE_SIDE = 8192
# Results carry full-resolution masks: with the default 20 objects x (1 + 8 parts) that is 180 bytes per
# pixel. 4096 x 4096 (16.8 MP) holds every usual camera (4K UHD is 8.3 MP, a 12 MP still 4000 x 3000) and
# bounds those masks at ~3 GB; 8192 x 8192 would need ~12 GB.
MAX_IMAGE_PIXELS = 4096 * 4096
# Names encoded at once between checks of a deadline: ~0.1-0.5 s each on 2 CPU cores.
ENCODE_CHUNK = 64
# The network needs K_part >= 1: a vocabulary without parts encodes this one name, allowed under no object.
PLACEHOLDER_PART = "part"
_MEAN = np.array(PIXEL_MEAN, np.float32)
_INV_STD = 1.0 / np.array(PIXEL_STD, np.float32)


class ImageError(ValueError):
    """The image cannot be segmented (wrong type, shape or size)."""


@dataclass(frozen=True)
class PreparedVocabulary:
    """A vocabulary ready to run: validated against the backend's limits, its names encoded."""

    vocabulary: Vocabulary
    part_names: tuple[str, ...]  # the vocabulary's parts, or (PLACEHOLDER_PART,) when it has none
    object_text: np.ndarray  # (K_obj, D) float32
    part_text: np.ndarray  # (K_part, D) float32, one row per part name
    allowed: np.ndarray  # (K_obj, K_part) bool


@dataclass(frozen=True)
class NetworkFrame:
    """One frame's raw network outputs, where the image lies in the network input, and the vocabulary they
    answer: what post-processing reads, and what evaluators that need every query read (the Oracle-Obj part
    mIoU, training/evaluation/oracle_obj.py)."""

    outputs: dict[str, np.ndarray]  # the backend's arrays (Backend.infer)
    letterbox: Letterbox
    vocabulary: PreparedVocabulary
    timings_ms: dict[str, float]  # preprocess, inference


def letterbox(image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """HxWx3 uint8 RGB -> the (1, 3, H32, W32) normalised network input: scaled (aspect kept) to fit
    ``input_size`` (W, H), padded bottom/right to a multiple of 32; and where the image lies in it.

    A function of its own because int8 calibration (engines/build_engine.py) must feed exactly this."""
    h, w = image.shape[:2]
    in_w, in_h = input_size
    scale = min(in_w / w, in_h / h)
    rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
    ph, pw = padded_size(in_h, in_w)
    resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    tensor = np.zeros((1, 3, ph, pw), np.float32)
    tensor[0, :, :rh, :rw] = ((resized.astype(np.float32) - _MEAN) * _INV_STD).transpose(2, 0, 1)
    return tensor, Letterbox(h, w, rw / w, rh / h, ph, pw)


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
    if h * w > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"image of {w}x{h} has {h * w} pixels, more than {MAX_IMAGE_PIXELS} (4096x4096); downscale it"
        )


def _refuse_indistinct(level: str, names: tuple[str, ...], embeddings: np.ndarray) -> None:
    """VocabularyError for names that encode alike: the later one could never win a detection."""
    _, group, counts = np.unique(embeddings.round(5), axis=0, return_inverse=True, return_counts=True)
    alike = [name for name, g in zip(names, group.ravel(), strict=True) if counts[g] > 1]
    if alike:
        raise VocabularyError(
            f"{level} names the text encoder cannot tell apart (the same embedding; characters or words it "
            f"does not know, such as emoji): {', '.join(alike)}"
        )


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
        # Serialises the swaps of vocabulary changes (their encoding runs outside it); segment() never takes
        # it (it reads the _active reference once).
        self._update_lock = threading.Lock()
        self._active: PreparedVocabulary | None = None

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
        prepared = self.prepare(make_vocabulary(objects, parts, object_parts, revision=0))
        with self._update_lock:  # concurrent callers get distinct, increasing revisions
            revision = (self._active.vocabulary.revision if self._active else 0) + 1
            vocab = replace(prepared.vocabulary, revision=revision)
            self._active = replace(prepared, vocabulary=vocab)
        return vocab

    def apply_vocabulary(self, vocab: Vocabulary) -> None:
        """Activate an already validated vocabulary whose revision its caller numbered (the ROS service, the
        bag tools); VocabularyError if it is not newer than the active one, which then stays."""
        self._check_newer(vocab)  # before encoding too: a stale request costs nothing
        prepared = self.prepare(vocab)
        with self._update_lock:
            self._check_newer(vocab)
            self._active = prepared

    def _check_newer(self, vocab: Vocabulary) -> None:
        current = self._active
        if current is not None and vocab.revision <= current.vocabulary.revision:
            raise VocabularyError(
                f"vocabulary revision {vocab.revision} is not newer than the active revision "
                f"{current.vocabulary.revision}"
            )

    def prepare(self, vocab: Vocabulary, deadline: float | None = None) -> PreparedVocabulary:
        """Check ``vocab`` against the backend and encode its names, without activating it. Outside the
        update lock: encoding thousands of names takes seconds, and no swap must wait for that.

        ``deadline`` (``time.monotonic()``): TimeoutError once it has passed, checked between chunks of
        ENCODE_CHUNK names, so a request's timeout also bounds the encoding of its names."""
        part_names = vocab.parts or (PLACEHOLDER_PART,)
        limits = self.backend.vocabulary_limits()
        if limits:
            # Refused here, not per frame: the engine could not run a single frame with this vocabulary.
            sizes = {"object": len(vocab.objects), "part": len(part_names)}
            for (level, k), (low, high) in zip(sizes.items(), limits, strict=True):
                if not low <= k <= high:
                    note = " (the placeholder of a vocabulary without parts)" if level == "part" else ""
                    raise VocabularyError(
                        f"the {self.backend.name} backend was built for {low} to {high} {level} names, "
                        f"this vocabulary has {k}{note if not vocab.parts else ''}; rebuild the engine "
                        "with a --k-obj/--k-part profile that covers it"
                    )
        names = [*vocab.objects, *part_names]
        chunks = []
        for start in range(0, len(names), ENCODE_CHUNK):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"encoded {start} of its {len(names)} names")
            chunks.append(self.text_encoder.encode(names[start : start + ENCODE_CHUNK]))
        text = np.concatenate(chunks).astype(np.float32, copy=False)
        object_text, part_text = text[: len(vocab.objects)], text[len(vocab.objects) :]
        _refuse_indistinct("object", vocab.objects, object_text)
        _refuse_indistinct("part", part_names, part_text)
        allowed = np.zeros((len(vocab.objects), len(part_names)), dtype=bool)
        index = {p: i for i, p in enumerate(vocab.parts)}
        for i, obj in enumerate(vocab.objects):
            for p in vocab.allowed_parts(obj):
                allowed[i, index[p]] = True
        return PreparedVocabulary(vocab, part_names, object_text, part_text, allowed)

    def infer(self, image: np.ndarray, vocabulary: PreparedVocabulary | None = None) -> NetworkFrame:
        """Letterbox and run the network on an HxWx3 uint8 RGB image, with the active vocabulary or with
        ``vocabulary`` from `prepare`; `finish` turns the frame into results."""
        validate_image(image)
        active = vocabulary if vocabulary is not None else self._active  # one snapshot per frame
        if active is None:
            raise RuntimeError("no vocabulary set: call set_vocabulary() first")
        t0 = time.perf_counter()
        tensor, lb = letterbox(image, self.input_size)
        t1 = time.perf_counter()
        outputs = self.backend.infer(tensor, active.object_text, active.part_text)
        t2 = time.perf_counter()
        return NetworkFrame(
            outputs, lb, active, {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3}
        )

    def finish(self, frame: NetworkFrame) -> SegmentationResult:
        """Post-process a frame of `infer`: objects with parts, masks and boxes in the image's pixels."""
        t0 = time.perf_counter()
        vocab = frame.vocabulary.vocabulary
        objects = postprocess(
            frame.outputs,
            frame.letterbox,
            vocab.objects,
            frame.vocabulary.part_names,
            frame.vocabulary.allowed,
            self.config,
        )
        timings = {**frame.timings_ms, "postprocess": (time.perf_counter() - t0) * 1e3}
        timings["total"] = sum(timings.values())
        return SegmentationResult(
            frame.letterbox.height, frame.letterbox.width, vocab.revision, objects, timings
        )

    def segment(self, image: np.ndarray, vocabulary: PreparedVocabulary | None = None) -> SegmentationResult:
        """HxWx3 uint8 RGB of any size -> objects with parts, masks and boxes in the image's pixels; with the
        active vocabulary, or with ``vocabulary`` from `prepare` for this frame only."""
        return self.finish(self.infer(image, vocabulary))
