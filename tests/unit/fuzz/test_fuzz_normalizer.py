"""Fuzz: the normalizer on hostile spans and GenAI event records (issue #10).

The stage hands every span to ``Normalizer.normalize_request`` with an ``on_error`` callback
and dead-letters whatever it reports. The readers promise more than that ("one odd attribute
never loses a span", ``attributes.py``): a hostile *attribute* must never fail the span, so
these tests assert that nothing reaches ``on_error`` at all, and that what comes out keeps the
invariants downstream relies on (token counts within UInt64 and window sums, finite floats, a
span that survives the Kafka encoding and becomes a ClickHouse row).
"""

from __future__ import annotations

import functools
import math
import random
from decimal import Decimal
from typing import Any, cast

import pytest
from google.protobuf import json_format
from hypothesis import example, given, settings
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmtap.processors.normalize.genai_events import EventJoiner, decode_genai_records
from llmtap.processors.normalize.normalizer import MAX_TOKEN_COUNT, Normalizer
from llmtap.processors.normalize.stage import NormalizerStage
from llmtap.processors.pricing import PriceTable
from llmtap.schemas.llm_span import LlmSpan, decode_span, encode_span
from llmtap.schemas.topics import Header
from llmtap.settings import Settings
from llmtap.sinks.clickhouse.rows import SPAN_COLUMNS, span_row
from tests.unit.fuzz.hostile import (
    FUZZ_SETTINGS,
    logs_request,
    mutate,
    seeded,
    to_otlp_json,
    trace_request,
)

PRICES = PriceTable.load()
NORMALIZER = Normalizer(PRICES.price, recent_retrievals=64)


def _request(*attributes: tuple[str, AnyValue]) -> ExportTraceServiceRequest:
    """A chat span with the given attributes: the regression examples below."""
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=b"\x01" * 16,
            span_id=b"\x02" * 8,
            start_time_unix_nano=1_767_225_600_000_000_000,
        )
    )
    span.attributes.extend(
        [
            KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
            KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o")),
            KeyValue(key="gen_ai.provider.name", value=AnyValue(string_value="openai")),
        ]
    )
    span.attributes.extend(KeyValue(key=key, value=value) for key, value in attributes)
    return request


def _text(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def _assert_invariants(span: LlmSpan, source: Span) -> None:
    for count in (
        span.usage.input,
        span.usage.output,
        span.usage.cache_read,
        span.usage.cache_write,
        span.usage.reasoning,
    ):
        # Output may include reasoning, input cache reads and writes: a few maxima at most.
        assert count is None or 0 <= count <= 3 * MAX_TOKEN_COUNT, span.usage
    request = span.request
    for number in (
        request.temperature,
        request.top_p,
        request.top_k,
        request.frequency_penalty,
        request.presence_penalty,
        span.time_to_first_token_ms,
        *(document.score for document in span.retrieved_documents),
    ):
        assert number is None or math.isfinite(number), span
    assert span.time_to_first_token_ms is None or span.time_to_first_token_ms >= 0
    if span.cost is not None and span.cost.priced:
        assert span.cost.total is not None
        assert Decimal(span.cost.total).is_finite()
    # Timestamps are passed through as sent (the sink dead-letters what ClickHouse refuses).
    assert span.start_time_unix_nano == source.start_time_unix_nano
    assert span.end_time_unix_nano == source.end_time_unix_nano
    assert span.duration_ms >= 0
    # What the stage writes to Kafka must decode on the other side, unchanged.
    assert decode_span(encode_span(span)) == span
    # OTLP times are uint64; DateTime64(9) ends at 2**63 - 1 nanoseconds (2262-04-11)
    if max(span.start_time_unix_nano, span.end_time_unix_nano) < 2**63:
        assert len(span_row(span, "normalized", 0, 0)) == len(SPAN_COLUMNS)
    else:  # refused with the reason the sink dead-letters it with
        with pytest.raises(ValueError, match=r"_time_unix_nano \d+ is outside ClickHouse's"):
            span_row(span, "normalized", 0, 0)


@FUZZ_SETTINGS
@given(seeded(trace_request))
@example(_request(("gen_ai.usage.input_tokens", _text("--5"))))
@example(_request(("gen_ai.usage.input_tokens", _text("²"))))
@example(_request(("gen_ai.usage.input_tokens", _text("9" * 5_000))))
@example(_request(("gen_ai.usage.input_tokens", _text("1" + "0" * 30))))
@example(_request(("gen_ai.usage.input_tokens", AnyValue(double_value=1e300))))
@example(_request(("langfuse.observation.usage_details", _text('{"input": 1' + "0" * 30 + "}"))))
@example(_request(("gen_ai.retrieval.documents", _text('[{"score": 1' + "0" * 400 + "}]"))))
@example(_request(("gen_ai.retrieval.documents", _text('[{"score": "nan"}]'))))
@example(_request(("llm.invocation_parameters", _text('{"temperature": 1' + "0" * 400 + "}"))))
@example(_request(("llm.invocation_parameters", _text('{"top_p": "-inf"}'))))
@example(_request(("gen_ai.response.time_to_first_chunk", AnyValue(double_value=1e308))))
@example(_request(("gen_ai.response.time_to_first_chunk", AnyValue(double_value=-2.0))))
def test_normalizer_never_loses_a_span_to_a_hostile_attribute(
    request: ExportTraceServiceRequest,
) -> None:
    failures: list[tuple[Span, Exception]] = []
    normalized = NORMALIZER.normalize_request(
        request,
        tenant="fuzz",
        received_at_unix_nano=1_767_225_600_000_000_000,
        on_error=lambda span, error: failures.append((span, error)),
    )
    assert failures == []
    sources = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    assert len(normalized) == len(sources)
    for span, source in zip(normalized, sources, strict=True):
        _assert_invariants(span, source)


def _spans_and_records(
    rng: random.Random,
) -> tuple[ExportTraceServiceRequest, ExportLogsServiceRequest, float]:
    traces = trace_request(rng)
    sources = [span for rs in traces.resource_spans for ss in rs.scope_spans for span in ss.spans]
    return traces, logs_request(rng, sources), rng.choice((0.0, 5.0))


@settings(FUZZ_SETTINGS, max_examples=2_000)
@given(seeded(_spans_and_records))
def test_genai_event_records_join_or_come_back_unmatched(
    case: tuple[ExportTraceServiceRequest, ExportLogsServiceRequest, float],
) -> None:
    """Hostile GenAI event records: decoded, joined to their spans (content from the events),
    or returned unmatched with a reason; never an exception."""
    traces, logs, wait = case
    decoded = decode_genai_records(logs, tenant="fuzz")  # the spans' tenant: they can join
    total = sum(len(scope.log_records) for rs in logs.resource_logs for scope in rs.scope_logs)
    assert len(decoded.records) + decoded.ignored == total
    joiner = EventJoiner(wait_seconds=wait)
    spans = NORMALIZER.normalize_request(traces, tenant="fuzz")
    emitted = [joined for span in spans if (joined := joiner.add_span(span, 0.0)) is not None]
    ready, unmatched = joiner.add_records(decoded.records, 0.0)
    emitted += ready
    expired, expired_unmatched = joiner.flush()
    emitted += expired
    unmatched += expired_unmatched
    assert all(item.reason for item in unmatched)
    assert len(emitted) <= len(spans)
    for span in emitted:
        assert decode_span(encode_span(span)) == span


# -- The stage itself: hostile raw messages and headers, a Kafka producer stand-in -------------


class _Message:
    """What the stage reads of a confluent_kafka Message."""

    def __init__(self, value: bytes, headers: list[tuple[str, bytes]], offset: int) -> None:
        self._value, self._headers, self._offset = value, headers, offset

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def key(self) -> bytes | None:
        return None

    def topic(self) -> str:
        return "raw"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class _Producer:
    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes, dict[str, bytes]]] = []

    def produce(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        self.produced.append((topic, value, dict(headers or [])))


_HEADER_VALUES = (
    b"",
    b"123",
    b"-5",
    "²".encode(),
    b"9" * 5_000,
    b"\xff\xfe",
    b"18446744073709551616",
)


def _raw_message(rng: random.Random) -> _Message:
    request = trace_request(rng)
    roll = rng.random()
    if roll < 0.6:
        value = request.SerializeToString()
    elif roll < 0.8:
        value = mutate(rng, request.SerializeToString())
    else:
        value = to_otlp_json(json_format.MessageToDict(request))
        value = mutate(rng, value) if rng.random() < 0.3 else value
    headers = [
        (Header.TENANT.value, rng.choice(_HEADER_VALUES)),
        (Header.RECEIVED_AT_NANOS.value, rng.choice(_HEADER_VALUES)),
    ]
    return _Message(value, headers, rng.randrange(2**31))


@functools.cache
def _stage() -> NormalizerStage:
    """Built on first use, inside the test (conftest isolates the environment it reads)."""
    return NormalizerStage(Settings())


@settings(FUZZ_SETTINGS, max_examples=2_000)
@given(seeded(_raw_message))
@example(
    _Message(_request().SerializeToString(), [(Header.RECEIVED_AT_NANOS.value, "²".encode())], 1)
)
@example(
    _Message(_request().SerializeToString(), [(Header.RECEIVED_AT_NANOS.value, b"9" * 5_000)], 1)
)
def test_stage_emits_or_dead_letters_every_raw_message(message: _Message) -> None:
    """``_process_message`` as the batch loop calls it: whatever the raw topic holds, spans
    come out (now or when their records' wait ends) or a dead letter with a reason does."""
    producer = _Producer()
    stage = _stage()
    stage._process_message(cast(Any, producer), cast(Any, message))
    spans, unmatched = stage._joiner.flush()
    assert unmatched == []
    topics = stage._settings.topics
    for topic, value, headers in producer.produced:
        if topic == topics.dead_letter:
            assert headers[Header.DEAD_LETTER_REASON.value]
        else:
            assert topic == topics.normalized_spans
            spans.append(decode_span(value))
    for span in spans:
        assert span.received_at_unix_nano is None or 0 <= span.received_at_unix_nano < 2**64
