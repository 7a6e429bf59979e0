"""A faust table seen as the ``MutableMapping[str, bytes]`` that the pure stages keep state in.

The stages (windows, merge, alert evaluation) are plain Python, tested without Kafka; in the
worker their state lives in faust tables so a restarted or rebalanced worker recovers it from
the changelog. faust infers a changelog partition from the event being processed, which does
not exist when a whole batch is processed at once (``take_events``), so this adapter names the
partition itself: each key's partition is decided by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any


class FaustTableStore(MutableMapping[str, bytes]):
    """Writes go to the table's local store and, as a changelog record, to ``partition_of(key)``."""

    def __init__(self, table: Any, partition_of: Callable[[str], int]) -> None:
        self._table = table
        self._partition_of = partition_of

    def __getitem__(self, key: str) -> bytes:
        value = self._table.data.get(key.encode())
        if value is None:
            raise KeyError(key)
        return bytes(value)

    def __setitem__(self, key: str, value: bytes) -> None:
        raw_key = key.encode()
        self._table.data[raw_key] = value
        self._table.send_changelog(self._partition_of(key), raw_key, value)

    def __delitem__(self, key: str) -> None:
        raw_key = key.encode()
        if raw_key not in self._table.data:
            raise KeyError(key)
        del self._table.data[raw_key]
        self._table.send_changelog(self._partition_of(key), raw_key, None)  # a tombstone

    def __iter__(self) -> Iterator[str]:
        for key in list(self._table.data.keys()):
            yield key.decode() if isinstance(key, bytes) else str(key)

    def __len__(self) -> int:
        return len(self._table.data)
