"""Stage two of aggregation: combine each window's per-partition partials into one aggregate.

Partials arrive keyed by window and group, so one worker sees every partial of a window. Each
source partition's latest partial *replaces* its previous one (higher version wins), so a
partial delivered twice or out of order changes nothing: the merge is idempotent. The merged
version is the sum of the partial versions, which only grows as partials do.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import MutableMapping

import msgspec

from llmtap.processors.aggregates.accumulator import Accumulator
from llmtap.schemas.aggregates import Aggregate

_EVICTION_INTERVAL_SECONDS = 30.0
_BUCKET_SHARDS = 16


class _Partials(msgspec.Struct):
    window_end: int
    by_partition: dict[int, Aggregate] = {}


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[str, _Partials])


def merge_bucket_of(partition: int, window_key: str) -> str:
    """Store key of a window's bucket: the partials partition it arrives on (its changelog
    partition: a bucket must never be written from two), its window and a shard of its group."""
    dimension_set, window_seconds, window_start, group = window_key.split("|", 3)
    shard = zlib.crc32(group.encode()) % _BUCKET_SHARDS
    return f"{partition}|{dimension_set}|{window_seconds}|{window_start}|#{shard}"


class PartialMerger:
    """``store`` (bucket -> encoded partials of its windows) is the durable state."""

    def __init__(self, store: MutableMapping[str, bytes], retention_seconds: int = 7200) -> None:
        self._store = store
        self._retention_seconds = retention_seconds
        self._buckets: dict[str, dict[str, _Partials]] = {}
        # Each bucket entry's msgpack bytes (key and value): a batch re-encodes only the
        # windows it changed, not every window of the buckets it touched.
        self._encoded: dict[str, dict[str, bytes]] = {}
        self._newest_window_end = 0
        self._last_eviction = 0.0

    def process(
        self, partials: list[Aggregate], now_seconds: float | None = None, partition: int = 0
    ) -> list[Aggregate]:
        """Apply partials that arrived on ``partition``; returns the merged aggregates changed.

        Every partial of a window arrives on the same partition (they are routed by window).
        """
        changed: dict[str, _Partials] = {}
        dirty_buckets: set[str] = set()
        for partial in partials:
            key = partial.window_key
            bucket_key = merge_bucket_of(partition, key)
            bucket = self._bucket(bucket_key)
            state = bucket.get(key)
            if state is None:
                state = bucket[key] = _Partials(partial.window_start + partial.window_seconds)
            current = state.by_partition.get(partial.source_partition)
            if current is not None and current.version >= partial.version:
                continue
            state.by_partition[partial.source_partition] = partial
            changed[key] = state
            dirty_buckets.add(bucket_key)
            self._newest_window_end = max(self._newest_window_end, state.window_end)
        for key, state in changed.items():
            bucket_key = merge_bucket_of(partition, key)
            self._encoded[bucket_key][key] = _encoder.encode(key) + _encoder.encode(state)
        for bucket_key in dirty_buckets:
            entries = self._encoded[bucket_key]
            self._store[bucket_key] = _map_header(len(entries)) + b"".join(entries.values())
        merged = [merge_partials(list(state.by_partition.values())) for state in changed.values()]
        self._evict(time.time() if now_seconds is None else now_seconds)
        return merged

    def forget(self) -> None:
        """Drop the cache (after a rebalance): buckets are read again from the store."""
        self._buckets.clear()
        self._encoded.clear()

    def _bucket(self, bucket_key: str) -> dict[str, _Partials]:
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            stored = self._store.get(bucket_key)
            bucket = self._buckets[bucket_key] = _decoder.decode(stored) if stored else {}
            self._encoded[bucket_key] = {
                key: _encoder.encode(key) + _encoder.encode(state) for key, state in bucket.items()
            }
        return bucket

    def _evict(self, now: float) -> None:
        if now - self._last_eviction < _EVICTION_INTERVAL_SECONDS:
            return
        self._last_eviction = now
        horizon = self._newest_window_end - self._retention_seconds
        for key in list(self._store.keys()):
            parts = key.split("|", 4)
            if len(parts) >= 4 and int(parts[3]) + int(parts[2]) < horizon:
                self._store.pop(key, None)
                self._buckets.pop(key, None)
                self._encoded.pop(key, None)


def _map_header(length: int) -> bytes:
    if length < 16:
        return bytes((0x80 | length,))
    if length < 1 << 16:
        return b"\xde" + length.to_bytes(2, "big")
    return b"\xdf" + length.to_bytes(4, "big")


def merge_partials(partials: list[Aggregate]) -> Aggregate:
    """One aggregate from partials of the same window and group (source_partition -1)."""
    if len(partials) == 1 and not partials[0].latency_sketch and not partials[0].ttft_sketch:
        # nothing to merge and no quantile to read: the partial is the aggregate
        only = partials[0]
        return msgspec.structs.replace(only, source_partition=-1)
    total = Accumulator(keeps_sketches=partials[0].dimension_set != "user")
    for partial in partials:
        total.merge_aggregate(partial)
    version = sum(partial.version for partial in partials)
    return total.to_aggregate(partials[0], version=version, source_partition=-1)
