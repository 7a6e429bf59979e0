"""A faust table seen as the ``MutableMapping[str, bytes]`` that the pure stages keep state in.

The stages (windows, merge, alert evaluation) are plain Python, tested without Kafka; in the
worker their state lives in faust tables so a restarted or rebalanced worker recovers it from
the changelog. faust infers a changelog partition from the event being processed, which does
not exist when a whole batch is processed at once (``take_events``), so this adapter names the
partition itself: each key's partition is decided by the caller.

A store may hold its changelog records back until the next commit (``coalesce``), as Kafka
Streams' record cache does: a key changed by every batch between two commits is written once,
with its last value. The recovered state is then the state at a commit, and the changelog
carries a fraction of the bytes (the aggregation buckets are rewritten whole on each change).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any


def partition_prefix(key: str) -> int:
    """The changelog partition of an aggregation store key: both stores begin every key with it
    (``windows.bucket_of``, ``merge.merge_bucket_of``), so a delete made while another
    partition's batch is processed (eviction scans every key) still goes to the right one."""
    return int(key.split("|", 1)[0])


class ChangelogWrites:
    """Changelog records sent but not yet acknowledged by the broker.

    Before committing source offsets, faust flushes its producer buffer only until no record
    leaves it for 0.1 s. A batch that holds the event loop longer than that lets the commit go
    ahead of records still buffered; a SIGKILL then loses the counts those records carried while
    the offsets that produced them stay committed (the counts were short, never over). The
    worker's consumer awaits :meth:`wait` before every commit.
    """

    def __init__(self) -> None:
        self._pending: list[asyncio.Future[Any]] = []
        self._held_back: list[Callable[[], None]] = []

    def add(self, future: asyncio.Future[Any]) -> None:
        self._pending.append(future)

    def hold_back(self, flush: Callable[[], None]) -> None:
        """Register a store's ``flush``: it sends what the store held back, before each wait."""
        self._held_back.append(flush)

    def __len__(self) -> int:
        return len(self._pending)

    async def wait(self) -> None:
        """Send what the coalescing stores hold back, then return once every record so far is
        acknowledged; a failed send raises."""
        for flush in self._held_back:
            flush()
        pending, self._pending = self._pending, []
        try:
            await asyncio.gather(*pending)
        except BaseException:
            # A record the broker refused is state this worker no longer holds durably: every
            # later commit must fail too, until the worker restarts from its changelog.
            self._pending[:0] = pending
            raise


class FaustTableStore(MutableMapping[str, bytes]):
    """Writes go to the table's local store and, as a changelog record, to ``partition_of(key)``.

    With ``coalesce``, changelog records wait in the store until ``writes`` is awaited (before
    every commit), one per key with its last value. Only for tables changed while processing
    consumed messages: a commit follows every such change, so nothing waits long.
    """

    def __init__(
        self,
        table: Any,
        partition_of: Callable[[str], int],
        writes: ChangelogWrites | None = None,
        *,
        coalesce: bool = False,
    ) -> None:
        self._table = table
        self._partition_of = partition_of
        self._writes = writes
        # raw key -> (changelog partition, last value; None: deleted), in first-change order
        self._held: dict[bytes, tuple[int, bytes | None]] | None = None
        if coalesce:
            if writes is None:
                raise ValueError("a coalescing store needs the ChangelogWrites that flushes it")
            self._held = {}
            writes.hold_back(self.flush)

    def __getitem__(self, key: str) -> bytes:
        value = self._table.data.get(key.encode())
        if value is None:
            raise KeyError(key)
        return bytes(value)

    def __setitem__(self, key: str, value: bytes) -> None:
        raw_key = key.encode()
        self._table.data[raw_key] = value
        self._changed(self._partition_of(key), raw_key, value)

    def __delitem__(self, key: str) -> None:
        raw_key = key.encode()
        if raw_key not in self._table.data:
            raise KeyError(key)
        del self._table.data[raw_key]
        self._changed(self._partition_of(key), raw_key, None)  # a tombstone

    def _changed(self, partition: int, raw_key: bytes, value: bytes | None) -> None:
        if self._held is not None:
            self._held[raw_key] = (partition, value)
        else:
            self._send(partition, raw_key, value)

    def flush(self) -> None:
        """Send the held-back records (a no-op for a store that does not coalesce)."""
        if not self._held:
            return
        held, self._held = self._held, {}
        for raw_key, (partition, value) in held.items():
            self._send(partition, raw_key, value)

    def _send(self, partition: int, raw_key: bytes, value: bytes | None) -> None:
        future = self._table.send_changelog(partition, raw_key, value)
        if self._writes is not None:
            self._writes.add(future)

    def __iter__(self) -> Iterator[str]:
        for key in list(self._table.data.keys()):
            yield key.decode() if isinstance(key, bytes) else str(key)

    def __len__(self) -> int:
        return len(self._table.data)
