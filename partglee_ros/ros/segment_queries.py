"""One-off segmentation queries (the `segment` service) waiting for the inference thread.

A planner asks "find the mug's handle, now": the answer must come from a camera frame received after the
question (the robot may have moved), with the question's own names, and must not change the vocabulary the
segmentation topic runs with. The service thread files a query here and waits; the inference thread, which
owns the backend (a TensorRT context must not run two frames at once), answers it with the next frame it
takes, or at once when the query brought its own image. "After" compares the frame's DDS reception time with
the request's arrival, both on the system clock: a frame that waited in the subscription's queue while the
request came in is older than the request, even if the node takes it later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from partglee_ros.msg import HierarchicalSegmentation
from partglee_ros.runtime.segmenter import PreparedVocabulary


@dataclass
class QueryAnswer:
    segmentation: HierarchicalSegmentation | None = None
    error: str = ""  # why there is no segmentation
    depth: Image | None = None  # with use_depth: the depth and camera_info matched to the frame
    camera_info: CameraInfo | None = None


@dataclass(eq=False)
class SegmentQuery:
    prepared: PreparedVocabulary | None  # None: the active vocabulary
    arrived_ns: int  # time.time_ns(): the system clock, as DDS reception times are
    image: np.ndarray | None = None  # None: the next camera frame
    header: Header | None = None  # the given image's header
    answer: QueryAnswer | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    def finish(self, answer: QueryAnswer) -> None:
        self.answer = answer
        self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)


class PendingQueries:
    """Thread-safe: the service threads add and withdraw, the inference thread takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[SegmentQuery] = []
        self._closed = False

    def add(self, query: SegmentQuery) -> bool:
        """False when closed: nothing would answer the query."""
        with self._lock:
            if not self._closed:
                self._pending.append(query)
            return not self._closed

    def open(self) -> None:
        with self._lock:
            self._closed = False

    def close(self, error: str) -> None:
        """Answer every waiting query with ``error`` and refuse new ones until open()."""
        with self._lock:
            self._closed = True
        for query in self._take(lambda q: True):
            query.finish(QueryAnswer(error=error))

    def waiting(self) -> bool:
        """Any query at all: a max_rate pause ends for it (node.py), since it asked for the next frame."""
        with self._lock:
            return bool(self._pending)

    def want_frame(self, received_ns: int) -> bool:
        """Whether take_for_frame(received_ns) would take a query."""
        with self._lock:
            return any(q.image is None and q.arrived_ns <= received_ns for q in self._pending)

    def take_with_images(self) -> list[SegmentQuery]:
        return self._take(lambda q: q.image is not None)

    def take_for_frame(self, received_ns: int) -> list[SegmentQuery]:
        """The frame queries that arrived before a frame DDS received at ``received_ns`` (time.time_ns)."""
        return self._take(lambda q: q.image is None and q.arrived_ns <= received_ns)

    def withdraw(self, query: SegmentQuery) -> bool:
        """Remove a query nobody has taken yet; False when the inference thread has it."""
        with self._lock:
            if query in self._pending:
                self._pending.remove(query)
                return True
            return False

    def _take(self, wanted: Callable[[SegmentQuery], bool]) -> list[SegmentQuery]:
        with self._lock:
            taken = [q for q in self._pending if wanted(q)]
            self._pending = [q for q in self._pending if not wanted(q)]
        return taken
