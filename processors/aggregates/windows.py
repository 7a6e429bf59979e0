"""Tumbling windows per source partition, made exactly-once by offsets kept beside the totals.

The aggregator keeps one partial per (source partition, dimension set, window length, window
start, group). Each partial records the highest source offset it includes, in the same stored
value as its totals, so when a worker restarts and reads some messages again (its changelog and
its consumer offsets are not written atomically), every partial skips exactly the messages it
already holds: nothing is counted twice and nothing is lost. A message holds many spans (see
:mod:`llmtap.schemas.aggregate_inputs`) and is applied whole within one batch, so the spans of
the message a partial last took are added only in the batch that took it.

Event time is the span's start. Each partition has a clock, the latest span start it has seen;
a span whose window ended more than ``grace_seconds`` before that clock is *late*: it is counted
in the window's ``late_spans`` but its tokens and cost are not merged (the window was already
reported as final). Windows older than the retention are evicted.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field

import msgspec

from llmtap.processors.aggregates.accumulator import Accumulator, SpanCosts
from llmtap.schemas.aggregate_inputs import AggregateSpan
from llmtap.schemas.aggregates import (
    Aggregate,
    decode_aggregates,
    encode_aggregate,
    join_encoded_aggregates,
)
from llmtap.schemas.llm_span import LlmSpan

_NANOS = 1_000_000_000
# A span stamped further than this in the future does not move the partition clock (a client
# with a wrong clock must not make everyone else's spans late).
_MAX_FUTURE_SKEW_SECONDS = 300
_CLOCK_KEY = "clock"
_EVICTION_INTERVAL_SECONDS = 30.0
_BUCKET_SHARDS = 16


class _Clock(msgspec.Struct):
    seconds: int = 0


_clock_encoder = msgspec.msgpack.Encoder()
_clock_decoder = msgspec.msgpack.Decoder(_Clock)


@dataclass(frozen=True)
class WindowConfig:
    window_seconds: tuple[int, ...] = (60, 3600)
    grace_seconds: int = 60
    retention_seconds: int = 7200
    per_user: bool = True


@dataclass
class _Partial:
    template: Aggregate
    accumulator: Accumulator
    offset: int  # highest source offset included (-1: none yet)
    record: Aggregate | None = None  # as last stored
    encoded: bytes = b""  # ``record`` encoded: unchanged members of a bucket are not re-encoded
    bucket: str = ""  # ``bucket_of`` its key, computed once


def bucket_of(key: str) -> str:
    """The store key of a partial's bucket: its partition, window, and a hash shard of its group.

    State is stored per bucket, not per partial: a batch touching thousands of groups (users)
    writes a few dozen changelog records, not thousands.
    """
    partition, dimension_set, window_seconds, window_start, group = key.split("|", 4)
    shard = zlib.crc32(group.encode()) % _BUCKET_SHARDS
    return f"{partition}|{dimension_set}|{window_seconds}|{window_start}|#{shard}"


@dataclass
class BatchResult:
    changed: list[Aggregate] = field(default_factory=list)  # partials to emit
    changed_encoded: list[bytes] = field(default_factory=list)  # the same, encoded
    evicted: list[str] = field(default_factory=list)  # store keys removed
    late_spans: int = 0
    skipped_replayed: int = 0


def group_of(span: AggregateSpan | LlmSpan) -> dict[str, str]:
    """The dimension values of a span, as stored (missing values are "")."""
    return {
        "tenant": span.tenant,
        "service_name": span.service_name,
        "environment": span.environment or "",
        "provider": span.provider or "",
        "request_model": span.request_model or span.response_model or "",
        "operation": span.operation or "",
        "prompt_template_version": span.prompt_template_version or "",
        "user_id": span.user_id or "",
    }


def _template(
    dimension_set: str, window_seconds: int, window_start: int, span: AggregateSpan | LlmSpan
) -> Aggregate:
    """The window and group fields of a new partial (its totals are the accumulator's)."""
    if dimension_set == "user":
        return Aggregate(
            dimension_set="user",
            window_start=window_start,
            window_seconds=window_seconds,
            tenant=span.tenant,
            user_id=span.user_id or "",
        )
    values = group_of(span)
    return Aggregate(
        dimension_set="model",
        window_start=window_start,
        window_seconds=window_seconds,
        tenant=values["tenant"],
        service_name=values["service_name"],
        environment=values["environment"],
        provider=values["provider"],
        request_model=values["request_model"],
        operation=values["operation"],
        prompt_template_version=values["prompt_template_version"],
    )


def window_start_of(start_time_unix_nano: int, window_seconds: int) -> int:
    seconds = start_time_unix_nano // _NANOS
    return seconds - seconds % window_seconds


class WindowedAggregator:
    """Stage one of aggregation: spans of the partitions this worker owns into partials.

    ``store`` maps keys to encoded partials and per-partition clocks; it is the durable state
    (a faust table with a changelog in the stream app, a dict in tests). Decoded partials are
    cached in memory and written back to ``store`` once per batch.
    """

    def __init__(self, config: WindowConfig, store: MutableMapping[str, bytes]) -> None:
        self._config = config
        self._store = store
        self._partials: dict[str, _Partial] = {}
        self._buckets: dict[str, set[str]] = {}  # loaded bucket -> keys of its partials
        self._clocks: dict[int, int] = {}
        self._last_eviction: dict[int, float] = {}

    def process(
        self,
        records: Iterable[tuple[int, int, AggregateSpan | LlmSpan]],
        now_seconds: float | None = None,
    ) -> BatchResult:
        """Apply ``(partition, offset, span)`` records; returns the partials that changed.

        The records of one message (one offset) must all come in the same call.
        """
        now = time.time() if now_seconds is None else now_seconds
        result = BatchResult()
        dirty: dict[str, _Partial] = {}
        touched_partitions: set[int] = set()
        config = self._config
        grace = config.grace_seconds
        # Per-user totals only for the shortest window: longer spans of time are sums of those
        # (cost and counts add up exactly), and user cardinality makes every window costly.
        user_window = min(config.window_seconds)
        partials = self._partials
        for partition, offset, span in records:
            if not span.is_llm_call:
                continue
            touched_partitions.add(partition)
            clock = self._clock(partition)
            start_seconds = span.start_time_unix_nano // _NANOS
            costs = SpanCosts(span)
            model_group = "|".join(
                (
                    span.tenant,
                    span.service_name,
                    span.environment or "",
                    span.provider or "",
                    span.request_model or span.response_model or "",
                    span.operation or "",
                    span.prompt_template_version or "",
                )
            )
            user_id = span.user_id if config.per_user else None
            for window_seconds in config.window_seconds:
                window_start = start_seconds - start_seconds % window_seconds
                late = window_start + window_seconds + grace <= clock
                window = f"{window_seconds}|{window_start}"
                keys = [(f"{partition}|model|{window}|{model_group}", "model")]
                if user_id and window_seconds == user_window:
                    keys.append((f"{partition}|user|{window}|{span.tenant}|{user_id}", "user"))
                for key, dimension_set in keys:
                    partial = partials.get(key)
                    if partial is None:
                        partial = self._partial(
                            key,
                            _template(dimension_set, window_seconds, window_start, span),
                        )
                    if offset < partial.offset or (offset == partial.offset and key not in dirty):
                        result.skipped_replayed += 1
                        continue
                    partial.offset = offset
                    if late:
                        partial.accumulator.late_spans += 1
                        result.late_spans += 1
                    else:
                        partial.accumulator.add_span(span, costs)
                    dirty[key] = partial
            if clock < start_seconds <= now + _MAX_FUTURE_SKEW_SECONDS:
                self._clocks[partition] = start_seconds
        dirty_buckets: set[str] = set()
        for key, partial in dirty.items():
            aggregate = partial.accumulator.to_aggregate(
                partial.template,
                version=partial.offset + 1,
                source_partition=_partition_of(key),
                with_quantiles=False,
            )
            partial.record = aggregate
            partial.encoded = encode_aggregate(aggregate)
            dirty_buckets.add(partial.bucket)
            result.changed.append(aggregate)
            result.changed_encoded.append(partial.encoded)
        for bucket in dirty_buckets:
            members = [self._partials[key] for key in self._buckets[bucket]]
            self._store[bucket] = join_encoded_aggregates(
                [member.encoded for member in members if member.encoded]
            )
        for partition in touched_partitions:
            self._store[f"{partition}|{_CLOCK_KEY}"] = _clock_encoder.encode(
                _Clock(self._clocks[partition])
            )
            result.evicted.extend(self._evict(partition, now))
        return result

    def process_messages(
        self,
        messages: Iterable[tuple[int, int, Sequence[AggregateSpan | LlmSpan]]],
        now_seconds: float | None = None,
    ) -> BatchResult:
        """Apply ``(partition, offset, spans)`` messages, each message once.

        After a rebalance the consumer seeks back to its committed offset and fetches again,
        so one batch can hold a message twice. :meth:`process` cannot tell a message read
        twice from the many spans of one message, and would add the repeat's spans again.
        """
        seen: set[tuple[int, int]] = set()
        records: list[tuple[int, int, AggregateSpan | LlmSpan]] = []
        repeated = 0
        for partition, offset, spans in messages:
            if (partition, offset) in seen:
                repeated += 1
                continue
            seen.add((partition, offset))
            records.extend([(partition, offset, span) for span in spans])
        result = self.process(records, now_seconds)
        result.skipped_replayed += repeated
        return result

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop the cache of partitions moved to another worker (their store stays durable)."""
        gone = {str(partition) for partition in partitions}
        for key in [key for key in self._partials if key.split("|", 1)[0] in gone]:
            del self._partials[key]
        for bucket in [bucket for bucket in self._buckets if bucket.split("|", 1)[0] in gone]:
            del self._buckets[bucket]
        for partition in partitions:
            self._clocks.pop(partition, None)

    def _partial(self, key: str, template: Aggregate) -> _Partial:
        partial = self._partials.get(key)
        if partial is not None:
            return partial
        bucket = bucket_of(key)
        if bucket not in self._buckets:
            self._load(bucket, _partition_of(key))
            partial = self._partials.get(key)
            if partial is not None:
                return partial
        partial = _Partial(template, Accumulator(template.dimension_set != "user"), -1)
        partial.bucket = bucket
        self._partials[key] = partial
        self._buckets[bucket].add(key)
        return partial

    def _load(self, bucket: str, partition: int) -> None:
        """Decode a stored bucket (after a restart or a rebalance) into the cache."""
        members: set[str] = set()
        stored = self._store.get(bucket)
        for aggregate in decode_aggregates(stored) if stored else []:
            key = f"{partition}|{aggregate.window_key}"
            self._partials[key] = _Partial(
                aggregate,
                Accumulator.from_aggregate(aggregate),
                aggregate.version - 1,
                aggregate,
                encode_aggregate(aggregate),
                bucket,
            )
            members.add(key)
        self._buckets[bucket] = members

    def _clock(self, partition: int) -> int:
        clock = self._clocks.get(partition)
        if clock is None:
            stored = self._store.get(f"{partition}|{_CLOCK_KEY}")
            clock = _clock_decoder.decode(stored).seconds if stored else 0
            self._clocks[partition] = clock
        return clock

    def _evict(self, partition: int, now: float) -> list[str]:
        """Remove the partition's windows older than the retention (a store scan, rate-limited)."""
        if now - self._last_eviction.get(partition, 0.0) < _EVICTION_INTERVAL_SECONDS:
            return []
        self._last_eviction[partition] = now
        horizon = self._clocks[partition] - self._config.retention_seconds
        prefix = f"{partition}|"
        evicted = []
        for key in [key for key in list(self._store.keys()) if key.startswith(prefix)]:
            parts = key.split("|", 4)
            if len(parts) < 4 or parts[1] == _CLOCK_KEY:
                continue
            window_seconds, window_start = int(parts[2]), int(parts[3])
            if window_start + window_seconds < horizon:
                for member in self._buckets.pop(key, set()):
                    self._partials.pop(member, None)
                self._store.pop(key, None)
                evicted.append(key)
        return evicted


def _partition_of(key: str) -> int:
    return int(key.split("|", 1)[0])
