"""A one-frame mailbox between the subscription callback and the inference thread: latest frame wins.

The callback never blocks (it only swaps a reference); a frame that arrives while the previous one is still
waiting replaces it and is counted as dropped, so the node never works through a queue of stale frames. Under
a rate cap the node keeps up with, frames it leaves are counted as skipped instead: dropped frames mean the
node cannot keep up, skipped ones that it was asked not to.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestFrameSlot(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self._woken = False
        self.received = 0
        self.dropped = 0
        self.skipped = 0
        self._capped = False

    def put(self, item: T) -> None:
        with self._cond:
            self.received += 1
            if self._item is not None:
                if self._capped:
                    self.skipped += 1
                else:
                    self.dropped += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout: float | None = None) -> T | None:
        """The newest frame, or None on timeout, after close() or wake()."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed or self._woken, timeout)
            item, self._item, self._woken = self._item, None, False
            return item

    def capped(self, on: bool) -> None:
        """Count replaced frames as skipped (on: a rate cap the taker keeps up with) or as dropped."""
        with self._cond:
            self._capped = on

    def skip(self) -> None:
        """Count a taken frame the taker leaves unused (not due under the cap)."""
        with self._cond:
            self.skipped += 1

    def wake(self) -> None:
        """Let a waiting take() return now, frame or not: the taker has other work (a query with its image)."""
        with self._cond:
            self._woken = True
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
