"""The reference sample of one key and feature, maintained incrementally (O(d) per event).

A reference holds a bounded sample of rows (an embedding, or one scalar value as a 1-wide row)
and running sums over every event it has taken (count, sum, sum of squared norms), so its mean
and total variance cover the whole reference even when the sample holds only part of it.

- ``fixed``: the first ``reference_events`` events; the sample is a uniform reservoir of them
  (Vitter's algorithm R), then the reference is frozen.
- ``trailing``: the last ``capacity`` events, a ring buffer; the running sums add the new row and
  subtract the one it overwrites.

``reset_on_change`` is ``fixed`` plus :meth:`reset`, which the detector calls on a new version.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


class Reference:
    def __init__(
        self,
        *,
        trailing: bool,
        capacity: int,
        reference_events: int,
        width: int,
        rng: np.random.Generator,
    ) -> None:
        self.trailing = trailing
        self.capacity = capacity
        self.reference_events = reference_events
        self.width = width
        self._rng = rng
        self._rows = np.zeros((capacity, width), dtype=np.float32)
        self._labels: list[object] = [None] * capacity  # what each row was: ids for evidence
        self.reset()

    def reset(self) -> None:
        self.size = 0  # rows in the sample
        self.events = 0  # events taken since the last reset
        self._next = 0  # ring position (trailing)
        self._sum = np.zeros(self.width, dtype=np.float64)
        self._squared_norms = 0.0

    @property
    def frozen(self) -> bool:
        """A fixed reference takes no more events once complete."""
        return not self.trailing and self.events >= self.reference_events

    @property
    def ready(self) -> bool:
        """Enough events to test windows against."""
        if self.trailing:
            return self.size >= self.capacity
        return self.events >= self.reference_events

    def add(self, row: Array, label: object = None) -> None:
        if self.frozen:
            return
        if self.trailing:
            slot = self._next
            if self.size == self.capacity:
                old = self._rows[slot].astype(np.float64)
                self._sum -= old
                self._squared_norms -= float(old @ old)
            else:
                self.size += 1
            self._next = (slot + 1) % self.capacity
            self._store(slot, row, label)
            self._sum += row
            self._squared_norms += float(row @ row)
            self.events += 1
            return
        self.events += 1
        self._sum += row
        self._squared_norms += float(row @ row)
        if self.size < self.capacity:
            self._store(self.size, row, label)
            self.size += 1
            return
        slot = int(self._rng.integers(0, self.events))  # algorithm R: keep with p = k / n
        if slot < self.capacity:
            self._store(slot, row, label)

    def add_many(self, rows: Array, labels: list[object] | None = None) -> None:
        for index in range(rows.shape[0]):
            self.add(rows[index], None if labels is None else labels[index])

    def _store(self, slot: int, row: Array, label: object) -> None:
        self._rows[slot] = row
        self._labels[slot] = label

    @property
    def sample(self) -> npt.NDArray[np.float32]:
        return self._rows[: self.size]

    @property
    def labels(self) -> list[object]:
        return self._labels[: self.size]

    @property
    def count(self) -> int:
        """Events the running sums cover."""
        return self.size if self.trailing else self.events

    @property
    def total(self) -> Array:
        """Sum of every row the running sums cover (one-hot rows: exact category counts)."""
        return self._sum

    @property
    def mean(self) -> Array:
        return self._sum / max(self.count, 1)

    @property
    def total_variance(self) -> float:
        """Trace of the covariance over every event the sums cover."""
        count = max(self.count, 1)
        mean = self.mean
        return max(self._squared_norms / count - float(mean @ mean), 0.0)
