"""LogIngest: per-trace messages keyed like the spans, untraced records, limits, redaction."""

from __future__ import annotations

import os

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from llmtap.collectors.config import CollectorConfig
from llmtap.collectors.log_ingest import LogIngest, LogIngestResult
from llmtap.collectors.trace_ingest import IngestTopics, RequestTooLarge
from llmtap.schemas.otlp import decode_logs_json
from llmtap.schemas.topics import Encoding, Header

TOPICS = IngestTopics(
    raw_spans="raw", raw_logs="raw-logs", dead_letter="dead", max_message_bytes=1024 * 1024
)


def make_request(trace_ids: list[bytes], *, text: str = "hello") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "opentelemetry.instrumentation.openai_v2"
    for trace_id in trace_ids:
        record = scope_logs.log_records.add(
            trace_id=trace_id,
            span_id=os.urandom(8) if trace_id else b"",
            event_name="gen_ai.user.message",
        )
        record.body.kvlist_value.values.add(key="content", value=AnyValue(string_value=text))
    return request


def records(request: ExportLogsServiceRequest) -> list[object]:
    return [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def ingest(request: ExportLogsServiceRequest, **config: object) -> LogIngestResult:
    return LogIngest(CollectorConfig(**config), TOPICS).ingest(  # type: ignore[arg-type]
        request.SerializeToString(), Encoding.OTLP_PROTO, tenant="t", source="test"
    )


def test_one_message_per_trace_keyed_by_hex_trace_id_as_spans_are() -> None:
    first, second = os.urandom(16), os.urandom(16)
    result = ingest(make_request([first, second, first]))
    assert result.accepted_records == 3
    by_key = {message.key: message for message in result.messages}
    assert set(by_key) == {first.hex().encode(), second.hex().encode()}
    part = ExportLogsServiceRequest.FromString(by_key[first.hex().encode()].value)
    assert [r.trace_id for r in records(part)] == [first, first]  # type: ignore[attr-defined]
    assert part.resource_logs[0].scope_logs[0].scope.name.endswith("openai_v2")
    assert all(message.topic == "raw-logs" for message in result.messages)
    headers = dict(result.messages[0].headers)
    assert headers[Header.TENANT.value] == b"t"
    assert headers[Header.ENCODING.value] == b"otlp_proto"


def test_records_without_trace_id_go_unkeyed_and_are_counted() -> None:
    trace_id = os.urandom(16)
    result = ingest(make_request([trace_id, b"", b""]))
    assert result.accepted_records == 3
    assert result.untraced_records == 2
    unkeyed = [message for message in result.messages if message.key is None]
    assert len(unkeyed) == 1
    assert len(records(ExportLogsServiceRequest.FromString(unkeyed[0].value))) == 2


def test_invalid_ids_are_rejected_with_partial_success_and_dead_lettered() -> None:
    request = make_request([os.urandom(16), bytes(16)])
    result = ingest(request)
    assert (result.accepted_records, result.rejected_records) == (1, 1)
    response = result.response()
    assert response.partial_success.rejected_log_records == 1
    assert "invalid trace id" in response.partial_success.error_message
    dead = [message for message in result.messages if message.topic == "dead"]
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers[Header.DEAD_LETTER_SOURCE_TOPIC.value] == b"raw-logs"


def test_too_many_records_is_refused_as_a_whole() -> None:
    with pytest.raises(RequestTooLarge, match="log records"):
        ingest(make_request([os.urandom(16)] * 3), max_spans_per_request=2)


def test_pii_in_bodies_is_redacted_before_kafka() -> None:
    request = make_request([os.urandom(16)], text="write to jane.doe@example.com")
    result = ingest(request, redaction={"enabled": True})
    part = ExportLogsServiceRequest.FromString(result.messages[0].value)
    body = records(part)[0].body  # type: ignore[attr-defined]
    assert body.kvlist_value.values[0].value.string_value == "write to [REDACTED:email]"
    assert result.redactions["email"] == 1
    assert Header.REDACTIONS.value in dict(result.messages[0].headers)


def test_otlp_json_logs_with_hex_ids_are_accepted() -> None:
    body = (
        b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"'
        + b"ab" * 16
        + b'","spanId":"'
        + b"cd" * 8
        + b'","eventName":"gen_ai.choice","body":{"stringValue":"x"}}]}]}]}'
    )
    decoded = decode_logs_json(body)
    assert records(decoded)[0].trace_id == bytes.fromhex("ab" * 16)  # type: ignore[attr-defined]
    result = LogIngest(CollectorConfig(), TOPICS).ingest(
        body, Encoding.OTLP_JSON, tenant="t", source="test"
    )
    assert result.messages[0].key == b"ab" * 16
