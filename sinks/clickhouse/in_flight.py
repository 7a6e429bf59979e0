"""One write at a time on a background thread, so the next batch is read while this one is stored.

ClickHouse (the embedded engine too) releases the GIL while it parses and writes an insert, so
a sink that consumes, decodes and builds rows on one thread while the previous batch is being
inserted on another uses both cores instead of taking turns on one. Exactly one write is in
flight: writes stay in order (what ClickHouse holds of a partition is always a prefix of it),
and memory holds at most the batch being written plus the one being filled.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class OneInFlight(Generic[T]):
    """Runs ``write`` callables one after the other on a single worker thread.

    ``start`` hands over a write together with what to do once it succeeded (``then``, run on
    the caller's thread by ``finish``: committing offsets belongs to the thread that owns the
    Kafka consumer). An exception raised by a write is raised again by ``finish``. Used from one
    thread only (the consumer's).
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._future: Future[T] | None = None
        self._then: Callable[[T], None] | None = None

    def done(self) -> bool:
        """Nothing in flight, or the write in flight has ended (``finish`` will not wait)."""
        return self._future is None or self._future.done()

    def start(self, write: Callable[[], T], then: Callable[[T], None]) -> None:
        """Finish the write in flight (waiting for it), then start ``write``."""
        self.finish()
        self._future = self._executor.submit(write)
        self._then = then

    def finish(self) -> None:
        """Wait for the write in flight, if any, and run its ``then``; re-raise its error."""
        future, then = self._future, self._then
        self._future = self._then = None
        if future is None or then is None:
            return
        then(future.result())

    def close(self) -> None:
        """Wait for the write in flight (without its ``then``) and stop the worker thread."""
        self._executor.shutdown(wait=True)
