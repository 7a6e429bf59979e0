"""One window's running totals for one group: what a span adds, and how two partials merge.

Counts are integers and money is :class:`~decimal.Decimal`, so totals are exact and equal to a
recomputation from the stored spans. Latency and time-to-first-token go into DDSketches
(relative accuracy 1 %): unlike averages or fixed histograms they merge across windows and
workers without loss, which is what makes 1-hour rollups and multi-worker totals correct.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
from ddsketch import DDSketch
from ddsketch.pb.ddsketch_pb2 import DDSketch as DDSketchMessage
from ddsketch.pb.proto import DDSketchProto
from ddsketch.store import DenseStore

from llmtap.schemas.aggregate_inputs import AggregateSpan
from llmtap.schemas.aggregates import Aggregate
from llmtap.schemas.llm_span import LlmSpan

SKETCH_RELATIVE_ACCURACY = 0.01
_ZERO = Decimal(0)
_COST_PARTS = ("input", "output", "cache_read", "cache_write", "reasoning")


def new_sketch() -> DDSketch:
    return DDSketch(relative_accuracy=SKETCH_RELATIVE_ACCURACY)


def sketch_to_bytes(sketch: DDSketch) -> bytes:
    if sketch.count == 0:
        return b""
    return bytes(DDSketchProto.to_proto(sketch).SerializeToString())  # type: ignore[no-untyped-call]


def sketch_from_bytes(data: bytes) -> DDSketch:
    """Decode a serialized DDSketch in O(bins).

    ``DDSketchProto.from_proto`` re-adds every bin one at a time (about 0.5 ms per sketch, the
    merge stage's whole budget); a sketch with llmtap's own mapping is rebuilt by assigning its
    dense stores directly. Any other mapping takes the library's path.
    """
    if not data:
        return new_sketch()
    message = DDSketchMessage()
    message.ParseFromString(data)
    sketch = new_sketch()
    mapping = sketch._mapping
    if (
        abs(message.mapping.gamma - mapping.gamma) > 1e-12
        or abs(message.mapping.indexOffset - mapping._offset) > 1e-12
        or message.mapping.interpolation != DDSketchMessage().mapping.NONE
    ):
        return DDSketchProto.from_proto(message)  # type: ignore[no-untyped-call,no-any-return]
    _fill_store(sketch._store, message.positiveValues)
    _fill_store(sketch._negative_store, message.negativeValues)
    sketch._zero_count = message.zeroCount
    sketch._count = sketch._store.count + sketch._negative_store.count + sketch._zero_count
    return sketch


def _fill_store(store: DenseStore, message: Any) -> None:
    counts = list(message.contiguousBinCounts)
    first = next((index for index, count in enumerate(counts) if count), None)
    if first is None:
        return
    last = max(index for index, count in enumerate(counts) if count)
    store.bins = counts
    store.offset = message.contiguousBinIndexOffset
    store.min_key = store.offset + first
    store.max_key = store.offset + last
    store.count = float(sum(counts))


def quantile(sketch: DDSketch, q: float) -> float:
    return quantiles(sketch, (q,))[0]


def quantiles(sketch: DDSketch, qs: tuple[float, ...]) -> list[float]:
    """Several quantiles in one vectorised pass (DDSketch's own lookup walks the bins in Python).

    Same definition as ``DDSketch.get_quantile_value`` for positive values: the lower key whose
    running count exceeds ``q * (count - 1)``. llmtap's sketches hold no negative values.
    """
    count = sketch.count
    if count == 0:
        return [0.0 for _ in qs]
    store = sketch._store
    if sketch._negative_store.count or not store.count:
        return [float(sketch.get_quantile_value(q) or 0.0) for q in qs]
    running = np.cumsum(np.asarray(store.bins, dtype=np.float64))
    results = []
    for q in qs:
        rank = q * (count - 1) - sketch._zero_count
        if rank < 0:
            results.append(0.0)
            continue
        index = min(int(np.searchsorted(running, rank, side="right")), len(running) - 1)
        results.append(float(sketch._mapping.value(index + store.offset)))
    return results


class SpanCosts:
    """A span's priced cost as Decimals, converted once for all the windows the span joins."""

    __slots__ = ("amounts", "currency")

    def __init__(self, span: AggregateSpan | LlmSpan) -> None:
        cost = span.cost
        self.currency = "USD"
        self.amounts: tuple[tuple[str, Decimal], ...] | None = None  # None: unpriced
        if cost is not None and cost.priced:
            self.currency = cost.currency
            amounts = [("total", Decimal(cost.total or "0"))]
            for part in _COST_PARTS:
                amount = getattr(cost, part)
                if amount:
                    amounts.append((part, Decimal(amount)))
            self.amounts = tuple(amounts)


class Accumulator:
    """Mutable totals of one (window, group), built from spans or by merging partials."""

    __slots__ = (
        "cache_read_tokens",
        "cache_write_tokens",
        "costs",
        "currency",
        "errors",
        "finish_reasons",
        "input_tokens",
        "keeps_sketches",
        "late_spans",
        "latency",
        "output_tokens",
        "reasoning_tokens",
        "requests",
        "ttft",
        "unpriced_requests",
    )

    def __init__(self, keeps_sketches: bool = True) -> None:
        # Per-user windows report cost and counts only: no sketches to build or ship.
        self.keeps_sketches = keeps_sketches
        self.requests = 0
        self.errors = 0
        self.unpriced_requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.currency = "USD"
        self.costs: dict[str, Decimal] = {
            "total": _ZERO,
            "input": _ZERO,
            "output": _ZERO,
            "cache_read": _ZERO,
            "cache_write": _ZERO,
            "reasoning": _ZERO,
        }
        # Created on first use: most windows of a high-cardinality group see few spans.
        self.latency: DDSketch | None = None
        self.ttft: DDSketch | None = None
        self.finish_reasons: dict[str, int] = {}  # not a Counter: ~4 µs to create each
        self.late_spans = 0

    def add_span(self, span: AggregateSpan | LlmSpan, costs: SpanCosts | None = None) -> None:
        """Add one span; ``costs`` (its :class:`SpanCosts`) saves converting them again."""
        self.requests += 1
        if span.status == "error":
            self.errors += 1
        usage = span.usage
        self.input_tokens += usage.input or 0
        self.output_tokens += usage.output or 0
        self.cache_read_tokens += usage.cache_read or 0
        self.cache_write_tokens += usage.cache_write or 0
        self.reasoning_tokens += usage.reasoning or 0
        if costs is None:
            costs = SpanCosts(span)
        if costs.amounts is None:
            self.unpriced_requests += 1
        else:
            self.currency = costs.currency
            totals = self.costs
            for part, amount in costs.amounts:
                totals[part] += amount
        if self.keeps_sketches:
            if self.latency is None:
                self.latency = new_sketch()
            self.latency.add(max(span.duration_ms, 0.001))
            ttft = span.time_to_first_token_ms
            if ttft is not None and ttft >= 0:
                if self.ttft is None:
                    self.ttft = new_sketch()
                self.ttft.add(max(ttft, 0.001))
        reasons = self.finish_reasons
        for reason in span.finish_reasons:
            reasons[reason] = reasons.get(reason, 0) + 1

    def merge(self, other: Accumulator) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.unpriced_requests += other.unpriced_requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens
        if other.requests > other.unpriced_requests:
            self.currency = other.currency
        for part, amount in other.costs.items():
            self.costs[part] += amount
        if other.latency is not None and other.latency.count:
            if self.latency is None:
                self.latency = new_sketch()
            self.latency.merge(other.latency)
        if other.ttft is not None and other.ttft.count:
            if self.ttft is None:
                self.ttft = new_sketch()
            self.ttft.merge(other.ttft)
        reasons = self.finish_reasons
        for reason, count in other.finish_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
        self.late_spans += other.late_spans

    def merge_aggregate(self, aggregate: Aggregate) -> None:
        """``merge(Accumulator.from_aggregate(aggregate))`` without building the accumulator:
        the merge stage adds every partial it receives (most are per-user, without sketches)."""
        self.requests += aggregate.requests
        self.errors += aggregate.errors
        self.unpriced_requests += aggregate.unpriced_requests
        self.input_tokens += aggregate.input_tokens
        self.output_tokens += aggregate.output_tokens
        self.cache_read_tokens += aggregate.cache_read_tokens
        self.cache_write_tokens += aggregate.cache_write_tokens
        self.reasoning_tokens += aggregate.reasoning_tokens
        if aggregate.requests > aggregate.unpriced_requests:
            self.currency = aggregate.currency
        costs = self.costs
        for part, text in (
            ("total", aggregate.cost_total),
            ("input", aggregate.cost_input),
            ("output", aggregate.cost_output),
            ("cache_read", aggregate.cost_cache_read),
            ("cache_write", aggregate.cost_cache_write),
            ("reasoning", aggregate.cost_reasoning),
        ):
            if text != "0":
                costs[part] += Decimal(text)
        if aggregate.latency_sketch:
            other = sketch_from_bytes(aggregate.latency_sketch)
            if other.count:
                if self.latency is None:
                    self.latency = new_sketch()
                self.latency.merge(other)
        if aggregate.ttft_sketch:
            other = sketch_from_bytes(aggregate.ttft_sketch)
            if other.count:
                if self.ttft is None:
                    self.ttft = new_sketch()
                self.ttft.merge(other)
        reasons = self.finish_reasons
        for reason, count in aggregate.finish_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
        self.late_spans += aggregate.late_spans

    def to_aggregate(
        self,
        template: Aggregate,
        version: int,
        source_partition: int,
        with_quantiles: bool = True,
    ) -> Aggregate:
        """The record for this window: ``template`` gives the window and group fields.

        Partials skip the quantiles (only the merged aggregate is read by people).
        """
        costs = self.costs
        record = Aggregate(
            dimension_set=template.dimension_set,
            window_start=template.window_start,
            window_seconds=template.window_seconds,
            tenant=template.tenant,
            service_name=template.service_name,
            environment=template.environment,
            provider=template.provider,
            request_model=template.request_model,
            operation=template.operation,
            prompt_template_version=template.prompt_template_version,
            user_id=template.user_id,
            requests=self.requests,
            errors=self.errors,
            unpriced_requests=self.unpriced_requests,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens,
            currency=self.currency,
            cost_total=_decimal_text(costs["total"]),
            cost_input=_decimal_text(costs["input"]),
            cost_output=_decimal_text(costs["output"]),
            cost_cache_read=_decimal_text(costs["cache_read"]),
            cost_cache_write=_decimal_text(costs["cache_write"]),
            cost_reasoning=_decimal_text(costs["reasoning"]),
            finish_reasons=dict(self.finish_reasons),
            late_spans=self.late_spans,
            version=version,
            source_partition=source_partition,
        )
        # Sketch and quantile fields are set only where there is a sketch (no per-user
        # partial has one): the others keep their defaults, and the call above stays short.
        if self.latency is not None:
            record.latency_sketch = sketch_to_bytes(self.latency)
            if with_quantiles:
                quantile_values = quantiles(self.latency, (0.5, 0.95, 0.99))
                record.latency_p50_ms, record.latency_p95_ms, record.latency_p99_ms = (
                    quantile_values
                )
        if self.ttft is not None:
            record.ttft_count = int(self.ttft.count)
            record.ttft_sketch = sketch_to_bytes(self.ttft)
            if with_quantiles:
                record.ttft_p50_ms, record.ttft_p95_ms = quantiles(self.ttft, (0.5, 0.95))
        return record

    @classmethod
    def from_aggregate(cls, aggregate: Aggregate) -> Accumulator:
        accumulator = cls(keeps_sketches=aggregate.dimension_set != "user")
        accumulator.requests = aggregate.requests
        accumulator.errors = aggregate.errors
        accumulator.unpriced_requests = aggregate.unpriced_requests
        accumulator.input_tokens = aggregate.input_tokens
        accumulator.output_tokens = aggregate.output_tokens
        accumulator.cache_read_tokens = aggregate.cache_read_tokens
        accumulator.cache_write_tokens = aggregate.cache_write_tokens
        accumulator.reasoning_tokens = aggregate.reasoning_tokens
        accumulator.currency = aggregate.currency
        accumulator.costs = {
            "total": _decimal(aggregate.cost_total),
            "input": _decimal(aggregate.cost_input),
            "output": _decimal(aggregate.cost_output),
            "cache_read": _decimal(aggregate.cost_cache_read),
            "cache_write": _decimal(aggregate.cost_cache_write),
            "reasoning": _decimal(aggregate.cost_reasoning),
        }
        if aggregate.latency_sketch:
            accumulator.latency = sketch_from_bytes(aggregate.latency_sketch)
        if aggregate.ttft_sketch:
            accumulator.ttft = sketch_from_bytes(aggregate.ttft_sketch)
        accumulator.finish_reasons = dict(aggregate.finish_reasons)
        accumulator.late_spans = aggregate.late_spans
        return accumulator


def _decimal(text: str) -> Decimal:
    return _ZERO if text == "0" else Decimal(text)


def _decimal_text(amount: Decimal) -> str:
    if amount == 0:
        return "0"
    return format(amount.normalize(), "f")
