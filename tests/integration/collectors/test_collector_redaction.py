"""PII redaction on both trace receivers: nothing that was redacted reaches the raw topic."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmtap.collectors.redaction import RedactionConfig
from llmtap.dev.kafka_broker import BrokerState
from llmtap.schemas.topics import Header
from tests.integration.collectors.test_otlp_http_receiver import (
    emit_llm_spans,
    expected_request,
    post,
)
from tests.otlp_support import RunningCollector, collector_settings, read_topic

pytestmark = pytest.mark.integration

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PII = {
    "email": "jane.doe@example.com",
    "phone": "+44 20 7946 0958",
    "credit_card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "secret": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
}


def request_with_pii() -> ExportTraceServiceRequest:
    request = expected_request(emit_llm_spans(None, traces=1, spans_per_trace=2))
    prompt = "; ".join(f"{kind}: {value}" for kind, value in PII.items())
    for span in request.resource_spans[0].scope_spans[0].spans:
        for attribute in span.attributes:
            if attribute.key == "gen_ai.input.messages":
                attribute.value.string_value = json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
                )
    return request


@pytest.mark.parametrize("transport", ["otlp_http", "otlp_grpc"])
def test_both_receivers_redact_before_kafka(
    kafka_broker: BrokerState, tmp_path: Path, transport: str
) -> None:
    settings = collector_settings(
        kafka_broker.bootstrap_servers, tmp_path, redaction={"enabled": True}
    )
    body = request_with_pii().SerializeToString()
    with RunningCollector(settings) as running:
        if transport == "otlp_http":
            status, _, answer = post(running.traces_url, body, "application/x-protobuf")
            assert status == 200, answer
        else:
            with grpc.insecure_channel(f"127.0.0.1:{running.collector.grpc_port}") as channel:
                channel.unary_unary(EXPORT)(body, timeout=30)
        messages = read_topic(
            kafka_broker.bootstrap_servers, settings.topics.raw_spans, expect_spans=2
        )
    assert len(messages) == 1
    message = messages[0]
    assert message.headers[Header.SOURCE.value] == transport.encode()
    for kind, value in PII.items():
        assert value.encode() not in message.value, f"{kind} reached Kafka"
        assert f"[REDACTED:{kind}]".encode() in message.value
    assert json.loads(message.headers[Header.REDACTIONS.value]) == dict.fromkeys(PII, 1)
    # The header that lets the normalizer skip records the collector already redacted.
    fingerprint = RedactionConfig(enabled=True).fingerprint()
    assert message.headers[Header.REDACTED.value] == fingerprint.encode()
