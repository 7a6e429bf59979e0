"""TraceIngest: per-trace messages, limits with partial success, chunking, redaction."""

from __future__ import annotations

import json
import os

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from llmtap.collectors.config import CollectorConfig
from llmtap.collectors.trace_ingest import IngestTopics, RequestTooLarge, TraceIngest
from llmtap.schemas.otlp import OtlpDecodeError
from llmtap.schemas.topics import Encoding, Header

TOPICS = IngestTopics(raw_spans="raw", dead_letter="dead", max_message_bytes=1024 * 1024)


def make_request(
    traces: int, spans_per_trace: int, *, scopes: int = 1, text: str = "hello"
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    trace_ids = [os.urandom(16) for _ in range(traces)]
    for scope_index in range(scopes):
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = f"scope-{scope_index}"
        for trace_id in trace_ids:
            for _ in range(spans_per_trace):
                span = scope_spans.spans.add(trace_id=trace_id, span_id=os.urandom(8), name="chat")
                span.attributes.add(key="gen_ai.input.messages", value=AnyValue(string_value=text))
    return request


def all_spans(request: ExportTraceServiceRequest) -> list[object]:
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def ingest(request: ExportTraceServiceRequest, **config: object) -> object:
    return TraceIngest(CollectorConfig(**config), TOPICS).ingest(  # type: ignore[arg-type]
        request.SerializeToString(), Encoding.OTLP_PROTO, tenant="t", source="test"
    )


def test_one_message_per_trace_keyed_by_hex_trace_id() -> None:
    request = make_request(traces=5, spans_per_trace=3, scopes=2)
    result = ingest(request)
    assert len(result.messages) == 5
    seen = []
    for message in result.messages:
        part = ExportTraceServiceRequest.FromString(message.value)
        trace_ids = {span.trace_id for span in all_spans(part)}
        assert len(trace_ids) == 1
        assert message.key == next(iter(trace_ids)).hex().encode()
        assert [ss.scope.name for ss in part.resource_spans[0].scope_spans] == [
            "scope-0",
            "scope-1",
        ]
        assert part.resource_spans[0].resource == request.resource_spans[0].resource
        seen.extend(all_spans(part))
    assert sorted(s.SerializeToString() for s in seen) == sorted(
        s.SerializeToString() for s in all_spans(request)
    )
    assert result.accepted_spans == 30
    assert result.rejected_spans == 0


def test_a_single_trace_request_is_forwarded_byte_for_byte() -> None:
    request = make_request(traces=1, spans_per_trace=4)
    body = request.SerializeToString()
    result = TraceIngest(CollectorConfig(), TOPICS).ingest(
        body, Encoding.OTLP_PROTO, tenant="t", source="s"
    )
    assert [message.value for message in result.messages] == [body]
    headers = dict(result.messages[0].headers)
    assert headers[Header.TENANT.value] == b"t"
    assert headers[Header.ENCODING.value] == b"otlp_proto"


def test_limits_reject_spans_with_partial_success_and_dead_letter() -> None:
    request = make_request(traces=2, spans_per_trace=2)
    spans = all_spans(request)
    spans[0].span_id = b"\x00" * 8
    for index in range(5):
        spans[1].attributes.add(key=f"extra.{index}", value=AnyValue(int_value=index))
    result = ingest(request, max_attributes_per_span=3)
    assert result.rejected_spans == 2
    assert result.accepted_spans == 2
    assert "invalid span id" in result.rejection_reason
    assert "more than 3 attributes" in result.rejection_reason
    response = result.response()
    assert response.partial_success.rejected_spans == 2
    dead = [message for message in result.messages if message.topic == "dead"]
    assert len(dead) == 1
    assert len(all_spans(ExportTraceServiceRequest.FromString(dead[0].value))) == 2
    assert b"invalid span id" in dict(dead[0].headers)[Header.DEAD_LETTER_REASON.value]


def test_oversize_values_are_found_in_nested_and_event_attributes() -> None:
    request = make_request(traces=1, spans_per_trace=2)
    nested = AnyValue()
    nested.kvlist_value.values.add(key="inner", value=AnyValue(string_value="x" * 5000))
    all_spans(request)[0].events.add(name="e").attributes.add(key="deep", value=nested)
    result = ingest(request, max_attribute_value_bytes=1000)
    assert result.rejected_spans == 1
    assert "longer than 1000 bytes" in result.rejection_reason


def test_too_many_spans_refuses_the_whole_request() -> None:
    with pytest.raises(RequestTooLarge, match="6 spans"):
        ingest(make_request(traces=2, spans_per_trace=3), max_spans_per_request=5)


def test_a_trace_larger_than_a_kafka_message_is_split_without_losing_spans() -> None:
    request = make_request(traces=1, spans_per_trace=40, text="y" * 60_000)  # ~2.4 MB, one trace
    result = TraceIngest(CollectorConfig(), TOPICS).ingest(
        request.SerializeToString(), Encoding.OTLP_PROTO, tenant="t", source="s"
    )
    assert len(result.messages) > 1
    assert all(len(message.value) <= TOPICS.max_message_bytes for message in result.messages)
    keys = {message.key for message in result.messages}
    assert len(keys) == 1
    spans = [
        span
        for message in result.messages
        for span in all_spans(ExportTraceServiceRequest.FromString(message.value))
    ]
    assert len(spans) == 40


def test_redaction_applies_before_kafka_and_is_counted_in_a_header() -> None:
    request = make_request(traces=1, spans_per_trace=1, text="mail me at jane.doe@example.com")
    result = ingest(request, redaction={"enabled": True})
    value = ExportTraceServiceRequest.FromString(result.messages[0].value)
    text = all_spans(value)[0].attributes[0].value.string_value
    assert "jane.doe@example.com" not in text
    assert json.loads(dict(result.messages[0].headers)[Header.REDACTIONS.value]) == {"email": 1}


def test_json_and_protobuf_bodies_give_the_same_messages() -> None:
    from tests.otlp_support import to_otlp_json

    request = make_request(traces=2, spans_per_trace=2)
    ingest_ = TraceIngest(CollectorConfig(), TOPICS)
    from_proto = ingest_.ingest(
        request.SerializeToString(), Encoding.OTLP_PROTO, tenant="t", source="s"
    )
    from_json = ingest_.ingest(to_otlp_json(request), Encoding.OTLP_JSON, tenant="t", source="s")
    assert sorted(m.value for m in from_proto.messages) == sorted(
        m.value for m in from_json.messages
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[]", "top level must be an object"),
        (b'{"resourceSpans": {}}', "must be an array"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "abc"}]}]}]}', "not hex"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "00ff"}]}]}]}',
            "32 hex digits",
        ),
        (b"[" * 100_000, "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
    ],
)
def test_bad_json_is_explained(body: bytes, reason: str) -> None:
    with pytest.raises(OtlpDecodeError, match=reason):
        TraceIngest(CollectorConfig(), TOPICS).ingest(
            body, Encoding.OTLP_JSON, tenant="t", source="s"
        )


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, encoded by hand (the library refuses to build these)."""
    length = len(payload)
    varint = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([(number << 3) | 2]) + bytes(varint) + payload


def test_deeply_nested_protobuf_is_a_decode_error_not_a_crash() -> None:
    value = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(500):
        value = _field(5, _field(1, value))  # AnyValue.array_value.values[0]
    attribute = _field(1, b"deep") + _field(2, value)
    span = _field(1, os.urandom(16)) + _field(2, os.urandom(8)) + _field(9, attribute)
    body = _field(1, _field(2, _field(2, span)))
    with pytest.raises(OtlpDecodeError):
        TraceIngest(CollectorConfig(), TOPICS).ingest(
            body, Encoding.OTLP_PROTO, tenant="t", source="s"
        )
