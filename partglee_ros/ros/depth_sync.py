"""Approximate time matching of depth + CameraInfo to colour frames (message_filters has no PyPI wheel).

The node keeps the last few depth and CameraInfo messages and, for each segmented colour frame, picks the
ones closest in stamp within `slop` seconds; they are republished with the segmentation so 3D consumers can
match all three exactly by stamp.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


def stamp_seconds(header: Any) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def stamp_ns(header: Any) -> int:
    """Exact, where seconds as a float lose ~0.2 us at today's epoch stamps."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def closest(t: float, *msgs: Any) -> Any | None:
    """The message stamped nearest to `t` among those given (None entries, lookups that found nothing, are
    skipped)."""
    return min(
        (m for m in msgs if m is not None), key=lambda m: abs(stamp_seconds(m.header) - t), default=None
    )


class NearestStampBuffer:
    def __init__(self, size: int = 10) -> None:
        self._items: deque = deque(maxlen=size)
        self._lock = threading.Lock()
        self.received = 0  # messages added since start: /diagnostics tells lost messages from skewed stamps

    def add(self, msg: Any) -> None:
        with self._lock:
            self._items.append(msg)
            self.received += 1

    def nearest(self, t: float, slop: float) -> Any | None:
        with self._lock:
            best = closest(t, *self._items)
        if best is None or abs(stamp_seconds(best.header) - t) > slop:
            return None
        return best
