"""Fuzz: OTLP decoding, the collector's ingest and the OTLP/HTTP answers (issue #10).

The contract: a body is decoded, checked and split, or refused with ``OtlpDecodeError`` (the
receivers answer 400 with its text) or ``RequestTooLarge`` (413). Spans that break a limit are
dead-lettered with a reason. Nothing else may escape: an uncaught exception is a 500.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from typing import cast

from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import example, given, settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmtap.collectors.config import CollectorConfig
from llmtap.collectors.log_ingest import LogIngest
from llmtap.collectors.receiver import ReceiverCore
from llmtap.collectors.trace_ingest import IngestTopics, RequestTooLarge, TraceIngest
from llmtap.kafka_writer import AsyncKafkaWriter, OutboundMessage
from llmtap.schemas.otlp import (
    OtlpDecodeError,
    decode_logs,
    decode_traces,
    sniff_encoding,
)
from llmtap.schemas.topics import Encoding, Header
from llmtap.telemetry import ComponentTelemetry
from tests.unit.fuzz.hostile import (
    FUZZ_SETTINGS,
    logs_request,
    mutate,
    nested_json,
    random_bytes,
    seeded,
    to_otlp_json,
    trace_request,
)

TOPICS = IngestTopics(
    raw_spans="raw", dead_letter="dead", raw_logs="raw_logs", max_message_bytes=1024 * 1024
)
# Small limits, so generated requests reach every limit check (attribute count, value size).
CONFIG = CollectorConfig(
    max_spans_per_request=2,
    max_attributes_per_span=6,
    max_events_per_span=1,
    max_attribute_value_bytes=4_096,
)
TRACE_INGEST = TraceIngest(CONFIG, TOPICS)
LOG_INGEST = LogIngest(CONFIG, TOPICS)

_VALID = ExportTraceServiceRequest()
_SPAN = (
    _VALID.resource_spans.add()
    .scope_spans.add()
    .spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="chat MARK", start_time_unix_nano=1)
)
_SPAN.attributes.add(key="gen_ai.request.model").value.string_value = "MARK"
_SPAN.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 12
VALID_PROTO = _VALID.SerializeToString()
VALID_JSON = json.dumps(
    {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "01" * 16,
                                "spanId": "02" * 8,
                                "name": "chat",
                                "kind": 3,
                                "startTimeUnixNano": "1",
                                "attributes": [
                                    {"key": "k", "value": {"intValue": "12"}},
                                    {"key": "d", "value": {"doubleValue": 1.5}},
                                ],
                                "status": {"code": 2},
                            }
                        ]
                    }
                ]
            }
        ]
    }
).encode()
# JSON fragments that OTLP/JSON readers get wrong: every one must be a 400, not a crash.
_JSON_VALUES = (
    '"NaN"',
    '"Infinity"',
    "NaN",
    "1e400",
    "18446744073709551616",
    "-1",
    '"\\ud800"',
    "null",
    "[]",
    "{}",
    '"zz"',
    "true",
    '"' + "a" * 40 + '"',
    nested_json(5_000),
)


def _ingest(body: bytes, encoding: Encoding, logs: bool) -> None:
    """Ingest ``body``; assert the documented outcome, raising only the documented errors."""
    refusal: OtlpDecodeError | RequestTooLarge | None = None
    messages: list[OutboundMessage] = []
    rejected = 0
    try:
        if logs:
            log_result = LOG_INGEST.ingest(body, encoding, tenant="t", source="fuzz")
            messages, rejected = log_result.messages, log_result.rejected_records
        else:
            trace_result = TRACE_INGEST.ingest(body, encoding, tenant="t", source="fuzz")
            messages, rejected = trace_result.messages, trace_result.rejected_spans
    except (OtlpDecodeError, RequestTooLarge) as error:  # answered 400 / 413 with this text
        refusal = error
    if refusal is not None:
        assert str(refusal)
        return
    dead_letters = [message for message in messages if message.topic == TOPICS.dead_letter]
    assert len(dead_letters) == (1 if rejected else 0)
    for message in dead_letters:
        assert dict(message.headers)[Header.DEAD_LETTER_REASON.value]
    for message in messages:
        # What the collector writes must decode downstream (the normalizer's first step).
        if message.topic == TOPICS.raw_spans:
            decode_traces(message.value, sniff_encoding(message.value))
        elif message.topic == TOPICS.raw_logs:
            decode_logs(message.value, sniff_encoding(message.value))


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def deep_attribute_request(depth: int) -> bytes:
    """An ExportTraceServiceRequest whose one attribute nests arrays ``depth`` levels, written
    by hand: the protobuf library refuses to build what its parser refuses to read."""
    value = _field(1, b"x")  # AnyValue.string_value
    for _ in range(depth):
        value = _field(5, _field(1, value))  # AnyValue.array_value -> ArrayValue.values
    span = (
        _field(1, b"\x01" * 16)
        + _field(2, b"\x02" * 8)
        + _field(9, _field(1, b"k") + _field(2, value))
    )
    return _field(1, _field(2, _field(2, span)))  # request -> ResourceSpans -> ScopeSpans


def _hostile_body(rng: random.Random) -> tuple[bytes, Encoding, bool]:
    roll = rng.random()
    if roll < 0.2:
        body = random_bytes(rng)
    elif roll < 0.45:
        body = mutate(rng, VALID_PROTO)
    elif roll < 0.65:
        body = mutate(rng, VALID_JSON)
    elif roll < 0.72:  # invalid UTF-8 (and a surrogate's UTF-8 bytes) in protobuf string fields
        bad = rng.choice(
            (b"\xff\xfe\xfd\xfc", b"\xc3\x28AB", b"\xed\xa0\x80A", b"\xf8\x88\x80\x80")
        )
        body = VALID_PROTO.replace(b"MARK", bad, rng.randrange(1, 3))
    elif roll < 0.75:
        body = deep_attribute_request(rng.choice((40, 49, 50, 51, 100, 1_000)))
    else:  # a hostile JSON value where a number, an id or an enum belongs
        target = rng.choice((b'"12"', b'"' + b"01" * 16 + b'"', b"3", b"1.5", b'"1"'))
        body = VALID_JSON.replace(target, rng.choice(_JSON_VALUES).encode(), rng.randrange(1, 3))
    return body, rng.choice(list(Encoding)), rng.random() < 0.3


@FUZZ_SETTINGS
@given(seeded(_hostile_body))
@example((b"\x0a\x80\x80\x80\x80\x10", Encoding.OTLP_PROTO, False))  # a length beyond the body
@example((deep_attribute_request(1_000), Encoding.OTLP_PROTO, False))
@example((b'{"resourceSpans":' + nested_json(100_000).encode() + b"}", Encoding.OTLP_JSON, False))
@example(
    (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":7}]}]}]}', Encoding.OTLP_JSON, True)
)
@example(
    (VALID_JSON.replace(b'"kind": 3', b'"kind": "\\ud800"'), Encoding.OTLP_JSON, False)
)  # was a 500
@example(
    (VALID_JSON.replace(b'"kind": 3', b'"kind": 1e400'), Encoding.OTLP_JSON, False)
)  # was a 500
@example(
    (VALID_JSON.replace(b'"code": 2', b'"code": Infinity'), Encoding.OTLP_JSON, False)
)  # was a 500
def test_undecodable_bodies_are_refused_with_a_reason(case: tuple[bytes, Encoding, bool]) -> None:
    _ingest(*case)


def proto_that_looks_like_json() -> bytes:
    """A serialized request whose first bytes read "\\n{": field 1's tag, then a length of 123."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.scope_spans.add().spans.add(trace_id=b"\xff" * 16, span_id=b"\xfe" * 8)
    resource_spans.schema_url = "x" * (123 - 2 - resource_spans.ByteSize())
    body = request.SerializeToString()
    assert body[:2] == b"\n{"
    return body


def _generated_request(rng: random.Random) -> tuple[bytes, Encoding, bool]:
    logs = rng.random() < 0.3
    request = logs_request(rng) if logs else trace_request(rng)
    if rng.random() < 0.3:  # OTLP/JSON: hex ids, NaN/Infinity doubles as proto3 JSON strings
        return to_otlp_json(json_format.MessageToDict(request)), Encoding.OTLP_JSON, logs
    return request.SerializeToString(), Encoding.OTLP_PROTO, logs


@FUZZ_SETTINGS
@given(seeded(_generated_request))
@example((proto_that_looks_like_json(), Encoding.OTLP_PROTO, False))  # was sniffed as JSON
def test_generated_requests_are_ingested_or_refused_with_a_reason(
    case: tuple[bytes, Encoding, bool],
) -> None:
    """Deep AnyValue nesting, huge strings, NaN/inf, unknown enums, extreme timestamps, broken
    ids, too many spans, attributes or events: split and addressed, or refused with a reason."""
    _ingest(*case)


# -- OTLP/HTTP, in process: the handler's status for hostile bodies and headers ---------------


class _AcceptingWriter:
    """Kafka stand-in: acknowledges everything (the broker is not what is under test here)."""

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []

    async def send(self, messages: list[OutboundMessage]) -> None:
        self.sent.extend(messages)


_CONTENT_TYPES = (
    "application/x-protobuf",
    "application/json",
    "application/protobuf",
    "text/plain",
    "",
)
_CONTENT_ENCODINGS = ("identity", "gzip", "deflate", "br", "")
HttpCase = tuple[str, bytes, dict[str, str]]


def _http_request(rng: random.Random) -> HttpCase:
    path = rng.choice(("/v1/traces", "/v1/logs"))
    roll = rng.random()
    if roll < 0.5:
        body, _, _ = _hostile_body(rng)
    elif roll < 0.8:
        body, _, _ = _generated_request(rng)
    else:
        body = rng.choice((VALID_PROTO, VALID_JSON, b"x" * 70_000))  # the last above the limit
    content_encoding = rng.choice(_CONTENT_ENCODINGS)
    if content_encoding == "gzip" and rng.random() < 0.7:
        body = gzip.compress(body)
        if rng.random() < 0.3:
            body = body[: rng.randrange(len(body) + 1)]
    headers = {"Content-Type": rng.choice(_CONTENT_TYPES)}
    if content_encoding:
        headers["Content-Encoding"] = content_encoding
    return path, body, headers


def _http_requests(rng: random.Random) -> list[HttpCase]:
    return [_http_request(rng) for _ in range(rng.randrange(1, 5))]


_GZIP_BOMB = (
    "/v1/traces",
    gzip.compress(b"\0" * 300_000),
    {"Content-Type": "application/json", "Content-Encoding": "gzip"},
)


@settings(FUZZ_SETTINGS, max_examples=1_500)
@given(seeded(_http_requests))
@example([_GZIP_BOMB])
@example(
    [
        (
            "/v1/traces",
            VALID_JSON.replace(b'"kind": 3', b'"kind": "\\ud800"'),
            {"Content-Type": "application/json"},
        )
    ]
)
def test_http_answers_400_413_415_never_500(requests: list[HttpCase]) -> None:
    """Bodies and headers through the real aiohttp app and ReceiverCore (Kafka acknowledged by
    a stand-in): every answer is 200, 400, 413 or 415, and a refusal carries its reason."""
    from aiohttp.test_utils import TestClient, TestServer

    from llmtap.collectors.otlp_http import build_http_app

    config = CollectorConfig(
        max_request_bytes=65_536, max_decompressed_bytes=131_072, max_spans_per_request=2
    )
    core = ReceiverCore(
        config,
        TOPICS,
        cast(AsyncKafkaWriter, _AcceptingWriter()),
        ComponentTelemetry("fuzz_collector"),
    )

    async def exchange() -> list[tuple[int, bytes, str]]:
        answers = []
        async with TestClient(TestServer(build_http_app(core))) as client:
            for path, body, headers in requests:
                async with client.post(path, data=body, headers=headers) as response:
                    answers.append((response.status, await response.read(), response.content_type))
        return answers

    for status, body, content_type in asyncio.run(exchange()):
        assert status in (200, 400, 413, 415), status
        if status != 200:  # a google.rpc.Status with the reason, in the request's encoding
            if content_type == "application/json":
                message = json.loads(body)["message"]
            else:
                message = status_pb2.Status.FromString(body).message
            assert message
