"""What every backend does: run the network on one preprocessed image with given text embeddings.

Text embeddings are an *input*, so a vocabulary change never rebuilds a backend (or a TensorRT engine).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np

# Output names, in the order the ONNX graph and TensorRT engine produce them.
OUTPUT_NAMES = (
    "obj_logits",
    "obj_boxes",
    "obj_masks",
    "part_logits",
    "part_boxes",
    "part_masks",
    "part_parent",
)
INPUT_NAMES = ("image", "object_text", "part_text")


class BackendError(RuntimeError):
    """A backend cannot be created or run (missing file, wrong engine, missing library)."""


_DEVICE = re.compile(r"cpu|cuda(?::([0-9]+))?")


def parse_device(device: str) -> int | None:
    """``cpu`` -> None, ``cuda`` -> 0, ``cuda:N`` -> N. One parser for every backend, so a mistyped device
    ("gpu", "CPU", "cuda:x") is the same BackendError everywhere instead of whatever the library raises."""
    match = _DEVICE.fullmatch(device) if isinstance(device, str) else None
    if match is None:
        raise BackendError(f"device must be 'cpu', 'cuda' or 'cuda:N' (N = 0, 1, ...), got {device!r}")
    if device == "cpu":
        return None
    return int(match.group(1) or 0)


class SizeRange(NamedTuple):
    """The vocabulary sizes K a backend can run: min <= K <= max."""

    min: int
    max: int


class Backend(ABC):
    name: str
    device: str
    image_shape: tuple[int, ...] | None = None  # the one image shape a compiled graph/engine takes
    text_dim: int | None = None  # the text embedding width a compiled graph/engine takes (None: the model's)
    threads: int | None = None  # intra-op CPU threads it runs with (diagnostics); None: it runs on a GPU
    precision: str = "fp32"  # what it computes in (logs, diagnostics): an int8 graph looks like any other

    def describe(self) -> str:
        """name/device, precision: the line logs and diagnostics show."""
        return f"{self.name}/{self.device}, {self.precision}"

    @abstractmethod
    def infer(
        self, image: np.ndarray, object_text: np.ndarray, part_text: np.ndarray
    ) -> dict[str, np.ndarray]:
        """image (1,3,H,W) float32 normalised, texts (K,D) float32 -> OUTPUT_NAMES arrays (batch 1 dropped)."""

    def prepare(self, image_shape: tuple[int, ...], text_dim: int) -> None:  # noqa: B027 - optional hook
        """Do start-up work that depends on the input shapes (a compilation) before the first frame."""

    def vocabulary_limits(self) -> tuple[SizeRange, SizeRange] | None:
        """(K_obj, K_part) ranges the backend can run (a TensorRT engine's profiles); None: any size."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook; CPU backends hold nothing to release
        """Release accelerator memory (lifecycle deactivate)."""

    def open(self) -> None:  # noqa: B027 - optional hook, the inverse of close()
        """Take the accelerator again after close() (lifecycle activate)."""
