"""Window assignment, sketch merging and exactly-once replay of the aggregation stages."""

from __future__ import annotations

import random
import time
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtap.processors.aggregates.accumulator import (
    Accumulator,
    new_sketch,
    quantile,
    sketch_from_bytes,
    sketch_to_bytes,
)
from llmtap.processors.aggregates.merge import PartialMerger, merge_partials
from llmtap.processors.aggregates.windows import WindowConfig, WindowedAggregator, window_start_of
from llmtap.schemas.aggregate_inputs import (
    MAX_SPANS_PER_MESSAGE,
    aggregate_input_of,
    decode_aggregate_inputs,
    decode_aggregate_span,
    encode_aggregate_inputs,
)
from llmtap.schemas.aggregates import (
    DIMENSION_SETS,
    Aggregate,
    decode_aggregate,
    decode_aggregates,
    encode_aggregate,
    encode_aggregates,
    join_encoded_aggregates,
)
from llmtap.schemas.llm_span import Cost, LlmSpan, TokenUsage, encode_span

NOW = int(time.time())
MINUTE_NANOS = 60 * 1_000_000_000


def make_span(rng: random.Random, start_seconds: int, **overrides: object) -> LlmSpan:
    duration = rng.randint(50, 20_000) * 1_000_000
    priced = rng.random() > 0.1
    fields: dict[str, object] = {
        "trace_id": f"{rng.getrandbits(128):032x}",
        "span_id": f"{rng.getrandbits(64):016x}",
        "start_time_unix_nano": start_seconds * 1_000_000_000 + rng.randint(0, 999_999_999),
        "span_type": "llm",
        "service_name": rng.choice(["chat", "search"]),
        "provider": "openai",
        "request_model": rng.choice(["gpt-4o", "gpt-4o-mini"]),
        "operation": "chat",
        "status": "error" if rng.random() < 0.1 else "ok",
        "usage": TokenUsage(input=rng.randint(1, 5000), output=rng.randint(1, 900)),
        "cost": Cost(priced=True, price_version="v", total=f"0.{rng.randint(1, 999999):06d}")
        if priced
        else Cost(priced=False, price_version="v", unpriced_reason="unknown model"),
        "finish_reasons": [rng.choice(["stop", "length"])],
        "user_id": rng.choice(["alice", "bob", None]),
    }
    fields.update(overrides)
    span = LlmSpan(**fields)  # type: ignore[arg-type]
    span.end_time_unix_nano = span.start_time_unix_nano + duration
    return span


@given(st.integers(min_value=0, max_value=2**62), st.sampled_from([1, 60, 300, 3600, 86400]))
def test_window_start_contains_the_timestamp(start_nanos: int, window_seconds: int) -> None:
    start = window_start_of(start_nanos, window_seconds)
    assert start % window_seconds == 0
    assert start <= start_nanos // 1_000_000_000 < start + window_seconds


@settings(max_examples=50)
@given(
    st.lists(st.floats(min_value=0.01, max_value=1e6), min_size=1, max_size=300),
    st.integers(min_value=1, max_value=5),
)
def test_sketches_merge_like_one_sketch(values: list[float], parts: int) -> None:
    whole = new_sketch()
    pieces = [new_sketch() for _ in range(parts)]
    for index, value in enumerate(values):
        whole.add(value)
        pieces[index % parts].add(value)
    merged = new_sketch()
    for piece in pieces:
        merged.merge(sketch_from_bytes(sketch_to_bytes(piece)))
    assert merged.count == whole.count
    for q in (0.5, 0.95, 0.99):
        assert quantile(merged, q) == quantile(whole, q)
        exact = sorted(values)[int(q * (len(values) - 1))]
        assert abs(quantile(merged, q) - exact) <= 0.02 * exact + 1e-9 or len(values) < 3


def totals_by_minute(spans: list[LlmSpan]) -> dict[tuple[int, str, str], tuple[int, Decimal, int]]:
    totals: dict[tuple[int, str, str], tuple[int, Decimal, int]] = {}
    for span in spans:
        key = (
            window_start_of(span.start_time_unix_nano, 60),
            span.service_name,
            span.request_model or "",
        )
        requests, cost, tokens = totals.get(key, (0, Decimal(0), 0))
        amount = Decimal(span.cost.total or "0") if span.cost and span.cost.priced else Decimal(0)
        totals[key] = (requests + 1, cost + amount, tokens + (span.usage.input or 0))
    return totals


def merged_minutes(
    merged: dict[str, Aggregate],
) -> dict[tuple[int, str, str], tuple[int, Decimal, int]]:
    return {
        (a.window_start, a.service_name, a.request_model): (
            a.requests,
            Decimal(a.cost_total),
            a.input_tokens,
        )
        for a in merged.values()
        if a.dimension_set == "model" and a.window_seconds == 60
    }


def run_pipeline(
    records: list[tuple[int, int, LlmSpan]], batches: list[int], replay_from: dict[int, int]
) -> dict[str, Aggregate]:
    """Both stages on durable stores; after batch 1, re-reads from the ``replay_from`` offsets."""
    window_store: dict[str, bytes] = {}
    merge_store: dict[str, bytes] = {}
    merged: dict[str, Aggregate] = {}
    partials: list[Aggregate] = []

    def deliver(aggregator: WindowedAggregator, chunk: list[tuple[int, int, LlmSpan]]) -> None:
        result = aggregator.process(chunk, now_seconds=NOW)
        partials.extend(result.changed)

    config = WindowConfig(grace_seconds=3600)  # no span is late here
    aggregator = WindowedAggregator(config, window_store)
    cut = batches[0]
    deliver(aggregator, records[:cut])
    # A crash: the in-memory cache is gone; records after each partition's committed offset
    # are read again by a fresh aggregator over the same durable store.
    aggregator = WindowedAggregator(config, window_store)
    replayed = [record for record in records if record[1] >= replay_from.get(record[0], cut)]
    position = 0
    for size in [*batches[1:], len(replayed)]:
        end = position + size
        # a message (one partition and offset) is never split between batches
        while 0 < end < len(replayed) and replayed[end][:2] == replayed[end - 1][:2]:
            end += 1
        deliver(aggregator, replayed[position:end])
        position = end
    # Partials go through the merger twice and shuffled, with a merger restart (state read
    # back from its store) half way: the result must not change.
    doubled = partials + partials
    random.Random(5).shuffle(doubled)
    half = len(doubled) // 2
    for chunk in (doubled[:half], doubled[half:]):
        merger = PartialMerger(merge_store)
        for aggregate in merger.process(chunk, now_seconds=NOW):
            current = merged.get(aggregate.window_key)
            if current is None or current.version < aggregate.version:
                merged[aggregate.window_key] = aggregate
    return merged


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=150))
def test_replays_and_duplicate_partials_count_every_span_once(seed: int, first_batch: int) -> None:
    rng = random.Random(seed)
    spans = [make_span(rng, NOW - rng.randint(0, 300)) for _ in range(200)]
    # three source partitions with their own offsets, in arrival order
    records: list[tuple[int, int, LlmSpan]] = []
    offsets = {0: 0, 1: 0, 2: 0}
    for span in spans:
        partition = rng.randint(0, 2)
        records.append((partition, offsets[partition], span))
        offsets[partition] += 1
    # the restarted worker re-reads from an offset at or before what it had processed
    processed = records[:first_batch]
    replay_from = {
        partition: rng.randint(0, max([o for p, o, _ in processed if p == partition] + [0]))
        for partition in offsets
    }
    merged = run_pipeline(records, [first_batch, 17, 40], replay_from)
    assert merged_minutes(merged) == totals_by_minute(spans)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=60))
def test_messages_of_many_spans_count_every_span_once(seed: int, first_messages: int) -> None:
    """Aggregate inputs messages hold several spans under one offset: each span of a message
    is added once, and a message read again after a crash is skipped whole."""
    rng = random.Random(seed)
    spans = [make_span(rng, NOW - rng.randint(0, 300)) for _ in range(200)]
    messages: list[list[tuple[int, int, LlmSpan]]] = []
    offsets = {0: 0, 1: 0, 2: 0}
    position = 0
    while position < len(spans):
        size, partition = rng.randint(1, 8), rng.randint(0, 2)
        batch = spans[position : position + size]
        messages.append([(partition, offsets[partition], span) for span in batch])
        offsets[partition] += 1
        position += size
    records = [record for message in messages for record in message]
    processed = [record for message in messages[:first_messages] for record in message]
    replay_from = {
        partition: rng.randint(0, max([o for p, o, _ in processed if p == partition] + [0]))
        for partition in offsets
    }
    merged = run_pipeline(records, [len(processed), 17, 40], replay_from)
    assert merged_minutes(merged) == totals_by_minute(spans)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_a_message_delivered_twice_in_one_batch_counts_once(seed: int) -> None:
    """After a rebalance the consumer seeks back to the committed offset and fetches again:
    one batch can then hold a message, later messages, and the same message again (the
    SIGKILL fault test double counted one message's spans this way)."""
    rng = random.Random(seed)
    spans = [make_span(rng, NOW - rng.randint(0, 300)) for _ in range(120)]
    messages: list[tuple[int, int, list[LlmSpan]]] = []
    offsets = {0: 0, 1: 0}
    position = 0
    while position < len(spans):
        size, partition = rng.randint(1, 6), rng.randint(0, 1)
        messages.append((partition, offsets[partition], spans[position : position + size]))
        offsets[partition] += 1
        position += size
    cut = rng.randint(1, len(messages))
    seek_back = rng.randint(0, cut - 1)
    aggregator = WindowedAggregator(WindowConfig(grace_seconds=3600), {})
    merged: dict[str, Aggregate] = {}
    result = aggregator.process_messages(messages[:cut] + messages[seek_back:], now_seconds=NOW)
    for aggregate in PartialMerger({}).process(result.changed, now_seconds=NOW):
        merged[aggregate.window_key] = aggregate
    assert merged_minutes(merged) == totals_by_minute(spans)


def test_late_spans_are_counted_not_merged() -> None:
    rng = random.Random(1)
    aggregator = WindowedAggregator(WindowConfig(grace_seconds=60), {})
    old_minute = NOW - NOW % 60 - 600
    fields = {"user_id": None, "service_name": "chat", "request_model": "gpt-4o"}
    on_time = make_span(rng, old_minute + 5, **fields)
    recent = make_span(rng, NOW, **fields)
    late = make_span(rng, old_minute + 10, **fields)
    result = aggregator.process([(0, 0, on_time), (0, 1, recent), (0, 2, late)], now_seconds=NOW)
    (minute,) = [
        a for a in result.changed if a.window_seconds == 60 and a.window_start == old_minute
    ]
    assert minute.requests == 1
    assert minute.late_spans == 1
    assert result.late_spans >= 1


def test_state_survives_a_restart_through_the_store() -> None:
    rng = random.Random(4)
    store: dict[str, bytes] = {}
    spans = [make_span(rng, NOW - rng.randint(0, 30)) for _ in range(300)]
    first = WindowedAggregator(WindowConfig(), store)
    first.process([(0, offset, span) for offset, span in enumerate(spans[:200])], NOW)
    assert len(store) < 100  # bucketed: far fewer stored records than windows x groups
    again = WindowedAggregator(WindowConfig(), store)  # a new worker, same changelog
    result = again.process(
        [(0, offset, span) for offset, span in enumerate(spans) if offset >= 150], NOW
    )
    minutes = [a for a in result.changed if a.dimension_set == "model" and a.window_seconds == 60]
    assert result.skipped_replayed > 0
    latest_state = WindowedAggregator(WindowConfig(), store)
    final = latest_state.process([(0, 10_000, make_span(rng, NOW, user_id=None))], NOW)
    assert final.changed
    assert minutes


def test_accumulator_round_trips_through_the_record() -> None:
    rng = random.Random(3)
    accumulator = Accumulator()
    for _ in range(50):
        accumulator.add_span(make_span(rng, NOW, time_to_first_token_ms=rng.uniform(10, 900)))
    template = Aggregate(window_start=NOW - NOW % 60, window_seconds=60)
    record = accumulator.to_aggregate(template, version=7, source_partition=2)
    again = Accumulator.from_aggregate(decode_aggregate(encode_aggregate(record)))
    copy = again.to_aggregate(template, version=7, source_partition=2)
    assert copy.requests == record.requests
    assert copy.cost_total == record.cost_total
    assert copy.latency_p95_ms == pytest.approx(record.latency_p95_ms, rel=1e-9)
    assert copy.ttft_p95_ms == pytest.approx(record.ttft_p95_ms, rel=1e-9)
    assert record.ttft_count == 50
    assert record.latency_p95_ms >= record.latency_p50_ms > 0
    assert merge_partials([record, record]).requests == 100


def test_aggregation_reads_the_normalized_span_encoding() -> None:
    span = make_span(random.Random(2), NOW)
    decoded = decode_aggregate_span(encode_span(span))
    assert decoded.is_llm_call
    assert decoded.usage == span.usage
    assert decoded.cost == span.cost


def test_aggregate_inputs_carry_what_the_normalized_span_encoding_gives() -> None:
    rng = random.Random(3)
    spans = [make_span(rng, NOW, time_to_first_token_ms=120.5) for _ in range(5)]
    inputs = [aggregate_input_of(span) for span in spans]
    (value,) = encode_aggregate_inputs(inputs)
    assert decode_aggregate_inputs(value) == [decode_aggregate_span(encode_span(s)) for s in spans]


def test_aggregate_inputs_are_split_into_bounded_messages() -> None:
    span = aggregate_input_of(make_span(random.Random(4), NOW))
    values = encode_aggregate_inputs([span] * (2 * MAX_SPANS_PER_MESSAGE + 1))
    assert [len(decode_aggregate_inputs(value)) for value in values] == [
        MAX_SPANS_PER_MESSAGE,
        MAX_SPANS_PER_MESSAGE,
        1,
    ]
    assert encode_aggregate_inputs([]) == []
    # long (hostile) names: split by size too, nothing lost, order kept
    named = [
        aggregate_input_of(make_span(random.Random(index), NOW, user_id=f"{index}:" + "u" * 5000))
        for index in range(300)
    ]
    values = encode_aggregate_inputs(named, max_bytes=100_000)
    assert len(values) > 1
    assert all(len(value) <= 100_000 for value in values)
    assert [span for value in values for span in decode_aggregate_inputs(value)] == named
    (alone,) = encode_aggregate_inputs(named[:1], max_bytes=100)  # one span: its own message
    assert decode_aggregate_inputs(alone) == named[:1]
    too_long = msgspec.msgpack.encode([span] * (MAX_SPANS_PER_MESSAGE + 1))
    with pytest.raises(ValueError, match="at most"):
        decode_aggregate_inputs(too_long)
    with pytest.raises(msgspec.DecodeError):
        decode_aggregate_inputs(b"\x91\xc1")


def test_per_user_totals_are_kept_for_the_shortest_window_only() -> None:
    rng = random.Random(8)
    spans = sorted(
        (make_span(rng, NOW - rng.randint(0, 600)) for _ in range(300)),
        key=lambda span: span.start_time_unix_nano,  # in time order: none is late
    )
    aggregator = WindowedAggregator(WindowConfig(window_seconds=(60, 3600)), {})
    result = aggregator.process([(0, offset, span) for offset, span in enumerate(spans)], NOW)
    users = [a for a in result.changed if a.dimension_set == "user"]
    assert {a.window_seconds for a in users} == {60}
    expected: dict[tuple[int, str], tuple[int, Decimal]] = {}
    for span in spans:
        if span.user_id:
            minute = window_start_of(span.start_time_unix_nano, 60)
            requests, cost = expected.get((minute, span.user_id), (0, Decimal(0)))
            priced = span.cost is not None and span.cost.priced
            amount = Decimal(span.cost.total or "0") if priced and span.cost else Decimal(0)
            expected[(minute, span.user_id)] = (requests + 1, cost + amount)
    assert {(a.window_start, a.user_id): (a.requests, Decimal(a.cost_total)) for a in users} == (
        expected
    )
    # the longer window still has every span, per model group
    hours = [a for a in result.changed if a.dimension_set == "model" and a.window_seconds == 3600]
    assert sum(a.requests for a in hours) == len(spans)


@given(st.integers(min_value=0, max_value=70_000))
@settings(max_examples=12, deadline=None)
def test_joined_records_decode_like_one_encoded_list(count: int) -> None:
    records = [Aggregate(window_start=index, window_seconds=60) for index in range(count)]
    joined = join_encoded_aggregates([encode_aggregate(record) for record in records])
    assert joined == encode_aggregates(records)
    assert decode_aggregates(joined) == records


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=0, max_value=10_000),
    st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_adding_records_equals_merging_their_accumulators(
    seed: int, sizes: list[int], user: bool, with_ttft: bool
) -> None:
    """The merge stage adds partial records directly (``merge_aggregate``); the result must be
    what decoding each into an accumulator and merging gives, sketches and money included."""
    rng = random.Random(seed)
    template = Aggregate(
        dimension_set="user" if user else "model",
        window_start=NOW - NOW % 60,
        window_seconds=60,
        tenant="t",
        user_id="alice" if user else "",
    )
    records = []
    for index, size in enumerate(sizes):
        part = Accumulator(keeps_sketches=not user)
        for _ in range(size):
            ttft = rng.uniform(10, 900) if with_ttft and rng.random() < 0.7 else None
            part.add_span(make_span(rng, NOW, time_to_first_token_ms=ttft))
        part.late_spans = rng.randint(0, 2)
        record = part.to_aggregate(template, version=size + 1, source_partition=index)
        records.append(decode_aggregate(encode_aggregate(record)))
    added, merged = Accumulator(not user), Accumulator(not user)
    for record in records:
        added.merge_aggregate(record)
        merged.merge(Accumulator.from_aggregate(record))
    assert added.to_aggregate(template, 1, -1) == merged.to_aggregate(template, 1, -1)


def test_group_lists_the_dimensions_of_its_set() -> None:
    record = Aggregate(
        window_start=0,
        window_seconds=60,
        **{name: f"value of {name}" for name in DIMENSION_SETS["model"] + ("user_id",)},
    )
    for dimension_set, names in DIMENSION_SETS.items():
        record.dimension_set = dimension_set
        assert record.group == tuple(getattr(record, name) for name in names)
