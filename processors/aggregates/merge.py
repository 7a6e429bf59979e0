"""Stage two of aggregation: combine each window's per-partition partials into one aggregate.

Partials arrive keyed by window and group, so one worker sees every partial of a window. Each
source partition's latest partial *replaces* its previous one (higher version wins), so a
partial delivered twice or out of order changes nothing: the merge is idempotent. The merged
version is the sum of the partial versions, which only grows as partials do.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping

import msgspec

from llmtap.processors.aggregates.accumulator import Accumulator
from llmtap.schemas.aggregates import Aggregate

_EVICTION_INTERVAL_SECONDS = 30.0


class _Partials(msgspec.Struct):
    window_end: int
    by_partition: dict[int, Aggregate] = {}


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Partials)


class PartialMerger:
    """``store`` (window key -> encoded partials) is the durable state, as for the windows."""

    def __init__(self, store: MutableMapping[str, bytes], retention_seconds: int = 7200) -> None:
        self._store = store
        self._retention_seconds = retention_seconds
        self._newest_window_end = 0
        self._last_eviction = 0.0

    def process(
        self, partials: list[Aggregate], now_seconds: float | None = None
    ) -> list[Aggregate]:
        """Apply a batch of partials; returns the merged aggregates that changed."""
        changed: dict[str, _Partials] = {}
        for partial in partials:
            key = partial.window_key
            state = changed.get(key)
            if state is None:
                stored = self._store.get(key)
                state = (
                    _decoder.decode(stored)
                    if stored
                    else _Partials(partial.window_start + partial.window_seconds)
                )
            current = state.by_partition.get(partial.source_partition)
            if current is not None and current.version >= partial.version:
                continue
            state.by_partition[partial.source_partition] = partial
            changed[key] = state
            self._newest_window_end = max(self._newest_window_end, state.window_end)
        merged = []
        for key, state in changed.items():
            self._store[key] = _encoder.encode(state)
            merged.append(merge_partials(list(state.by_partition.values())))
        self._evict(time.time() if now_seconds is None else now_seconds)
        return merged

    def _evict(self, now: float) -> None:
        if now - self._last_eviction < _EVICTION_INTERVAL_SECONDS:
            return
        self._last_eviction = now
        horizon = self._newest_window_end - self._retention_seconds
        for key in list(self._store.keys()):
            parts = key.split("|", 3)
            if len(parts) >= 3 and int(parts[2]) + int(parts[1]) < horizon:
                self._store.pop(key, None)


def merge_partials(partials: list[Aggregate]) -> Aggregate:
    """One aggregate from partials of the same window and group (source_partition -1)."""
    if len(partials) == 1 and not partials[0].latency_sketch and not partials[0].ttft_sketch:
        # nothing to merge and no quantile to read: the partial is the aggregate
        only = partials[0]
        return msgspec.structs.replace(only, source_partition=-1)
    total = Accumulator(keeps_sketches=partials[0].dimension_set != "user")
    for partial in partials:
        total.merge(Accumulator.from_aggregate(partial))
    version = sum(partial.version for partial in partials)
    return total.to_aggregate(partials[0], version=version, source_partition=-1)
