"""The current window of one key and feature: closes by count or by event time.

A window takes events until it holds ``window_events`` of them, or until an event arrives
``window_seconds`` (event time) after its first one; then it is tested and a new one starts.
A window closed by time with fewer than ``min_window_events`` events stays open (a quiet key is
tested on fewer, larger-in-time windows rather than on samples too small to mean anything).
``tick(now)`` closes windows of keys that went quiet. Rows live in one preallocated array, so
taking an event is one O(d) copy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class CurrentWindow:
    def __init__(self, *, capacity: int, width: int) -> None:
        self.capacity = capacity
        self._rows = np.zeros((capacity, width), dtype=np.float32)
        self.labels: list[object] = []
        self.size = 0
        self.start_seconds = 0.0
        self.end_seconds = 0.0

    @property
    def full(self) -> bool:
        return self.size >= self.capacity

    def add(self, row: npt.NDArray[np.float64], timestamp_seconds: float, label: object) -> None:
        if self.size == 0:
            self.start_seconds = timestamp_seconds
            self.end_seconds = timestamp_seconds
        self._rows[self.size] = row
        self.labels.append(label)
        self.size += 1
        self.start_seconds = min(self.start_seconds, timestamp_seconds)
        self.end_seconds = max(self.end_seconds, timestamp_seconds)

    def expired(self, now_seconds: float, window_seconds: float, min_events: int) -> bool:
        """Closed by time: ``window_seconds`` since the first event, with enough events."""
        return self.size >= min_events and now_seconds >= self.start_seconds + window_seconds

    @property
    def rows(self) -> npt.NDArray[np.float32]:
        return self._rows[: self.size]

    def clear(self) -> None:
        self.size = 0
        self.labels = []
