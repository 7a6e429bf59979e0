"""OTLP/gRPC shares the HTTP receiver's core: same topic format, same auth and errors."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from llmtap.dev.kafka_broker import BrokerState
from tests.integration.collectors.test_otlp_http_receiver import (
    emit_llm_spans,
    expected_request,
    spans_by_id,
)
from tests.otlp_support import RunningCollector, collector_settings, read_topic, spans_of

pytestmark = pytest.mark.integration

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def export(port: int, body: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(EXPORT)
        return bytes(call(body, metadata=metadata, timeout=30))


def test_grpc_export_arrives_on_the_raw_topic(kafka_broker: BrokerState, tmp_path: Path) -> None:
    request = expected_request(emit_llm_spans(None, traces=3))
    settings = collector_settings(kafka_broker.bootstrap_servers, tmp_path)
    with RunningCollector(settings) as running:
        assert running.collector.grpc_port
        answer = export(running.collector.grpc_port, request.SerializeToString())
        assert ExportTraceServiceResponse.FromString(answer) == ExportTraceServiceResponse()
        messages = read_topic(
            kafka_broker.bootstrap_servers, settings.topics.raw_spans, expect_spans=9
        )
    assert {span.span_id: span for _, span in spans_of(messages)} == spans_by_id(request)
    assert {message.headers["llmtap.source"] for message in messages} == {b"otlp_grpc"}


def test_grpc_refusals_use_otlp_status_codes(kafka_broker: BrokerState, tmp_path: Path) -> None:
    settings = collector_settings(
        kafka_broker.bootstrap_servers, tmp_path, api_keys=[{"tenant": "t1", "key": "g" * 20}]
    )
    body = expected_request(emit_llm_spans(None, traces=1)).SerializeToString()
    with RunningCollector(settings) as running:
        port = running.collector.grpc_port
        assert port
        with pytest.raises(grpc.RpcError) as unauthenticated:
            export(port, body)
        assert unauthenticated.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as invalid:
            export(port, b"\x0a\xff\xff\xff\xff\x0f", (("authorization", "Bearer " + "g" * 20),))
        assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        export(port, body, (("authorization", "Bearer " + "g" * 20),))
