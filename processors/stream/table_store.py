"""A faust table seen as the ``MutableMapping[str, bytes]`` that the pure stages keep state in.

The stages (windows, merge, alert evaluation) are plain Python, tested without Kafka; in the
worker their state lives in faust tables so a restarted or rebalanced worker recovers it from
the changelog. faust infers a changelog partition from the event being processed, which does
not exist when a whole batch is processed at once (``take_events``), so this adapter names the
partition itself: each key's partition is decided by the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any


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

    def add(self, future: asyncio.Future[Any]) -> None:
        self._pending.append(future)

    def __len__(self) -> int:
        return len(self._pending)

    async def wait(self) -> None:
        """Return once every record added so far is acknowledged; a failed send raises."""
        pending, self._pending = self._pending, []
        try:
            await asyncio.gather(*pending)
        except BaseException:
            # A record the broker refused is state this worker no longer holds durably: every
            # later commit must fail too, until the worker restarts from its changelog.
            self._pending[:0] = pending
            raise


class FaustTableStore(MutableMapping[str, bytes]):
    """Writes go to the table's local store and, as a changelog record, to ``partition_of(key)``."""

    def __init__(
        self,
        table: Any,
        partition_of: Callable[[str], int],
        writes: ChangelogWrites | None = None,
    ) -> None:
        self._table = table
        self._partition_of = partition_of
        self._writes = writes

    def __getitem__(self, key: str) -> bytes:
        value = self._table.data.get(key.encode())
        if value is None:
            raise KeyError(key)
        return bytes(value)

    def __setitem__(self, key: str, value: bytes) -> None:
        raw_key = key.encode()
        self._table.data[raw_key] = value
        self._sent(self._table.send_changelog(self._partition_of(key), raw_key, value))

    def __delitem__(self, key: str) -> None:
        raw_key = key.encode()
        if raw_key not in self._table.data:
            raise KeyError(key)
        del self._table.data[raw_key]
        self._sent(self._table.send_changelog(self._partition_of(key), raw_key, None))  # tombstone

    def _sent(self, future: Any) -> None:
        if self._writes is not None:
            self._writes.add(future)

    def __iter__(self) -> Iterator[str]:
        for key in list(self._table.data.keys()):
            yield key.decode() if isinstance(key, bytes) else str(key)

    def __len__(self) -> int:
        return len(self._table.data)
