"""The OTLP/HTTP receiver against the real local Kafka broker: what arrives, and every refusal."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
import zlib
from collections import defaultdict
from pathlib import Path

import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmtap.dev.kafka_broker import BrokerState
from llmtap.schemas.topics import Header
from tests.otlp_support import (
    RunningCollector,
    collector_settings,
    count_spans,
    read_topic,
    spans_of,
    to_otlp_json,
)

pytestmark = pytest.mark.integration


def emit_llm_spans(
    endpoint: str | None, traces: int = 4, spans_per_trace: int = 3
) -> list[ReadableSpan]:
    """Emit spans through the real OpenTelemetry SDK; export them over OTLP/HTTP if asked."""
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout-assistant"}))
    captured = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(captured))
    if endpoint is not None:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    tracer = provider.get_tracer("llmtap.tests", "1.0")
    for trace_index in range(traces):
        with tracer.start_as_current_span("invoke_agent support") as root:
            root.set_attribute("gen_ai.operation.name", "invoke_agent")
            for index in range(spans_per_trace - 1):
                with tracer.start_as_current_span("chat gpt-4o-mini") as span:
                    span.set_attribute("gen_ai.provider.name", "openai")
                    span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
                    span.set_attribute("gen_ai.usage.input_tokens", 100 + index)
                    span.set_attribute("gen_ai.usage.output_tokens", 20 + trace_index)
                    span.set_attribute("gen_ai.request.temperature", 0.2)
                    span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
                    span.set_attribute(
                        "gen_ai.input.messages",
                        json.dumps(
                            [
                                {
                                    "role": "user",
                                    "parts": [{"type": "text", "content": "Où est ma commande ?"}],
                                }
                            ]
                        ),
                    )
                    span.add_event("gen_ai.choice", {"index": 0})
    provider.shutdown()
    return list(captured.get_finished_spans())


def post(
    url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def expected_request(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return encode_spans(spans)


def spans_by_id(request: ExportTraceServiceRequest) -> dict[bytes, object]:
    return {
        span.span_id: span
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }


@pytest.fixture
def running(kafka_broker: BrokerState, tmp_path: Path):  # type: ignore[no-untyped-def]
    with RunningCollector(collector_settings(kafka_broker.bootstrap_servers, tmp_path)) as running:
        yield running


def test_sdk_protobuf_export_arrives_intact_keyed_by_trace(
    running: RunningCollector, kafka_broker: BrokerState
) -> None:
    spans = emit_llm_spans(running.traces_url)
    messages = read_topic(
        kafka_broker.bootstrap_servers, running.settings.topics.raw_spans, expect_spans=len(spans)
    )

    expected = spans_by_id(expected_request(spans))
    received = {span.span_id: span for _, span in spans_of(messages)}
    assert received == expected, "every span arrives exactly as the SDK encoded it"
    assert count_spans(messages) == len(spans), "and only once"

    partitions_by_trace: dict[bytes, set[int]] = defaultdict(set)
    for message, span in spans_of(messages):
        assert message.key == span.trace_id.hex().encode(), "key is the hex trace id"
        partitions_by_trace[span.trace_id].add(message.partition)
        assert message.headers[Header.TENANT.value] == b"default"
        assert message.headers[Header.SOURCE.value] == b"otlp_http"
    assert all(len(partitions) == 1 for partitions in partitions_by_trace.values())

    resources = [
        ExportTraceServiceRequest.FromString(message.value).resource_spans[0].resource
        for message in messages
    ]
    assert all(
        resource == expected_request(spans).resource_spans[0].resource for resource in resources
    )


def test_otlp_json_export_arrives_intact_and_is_answered_in_json(
    running: RunningCollector, kafka_broker: BrokerState
) -> None:
    spans = emit_llm_spans(None, traces=2)
    request = expected_request(spans)
    status, headers, body = post(running.traces_url, to_otlp_json(request), "application/json")
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {}
    messages = read_topic(
        kafka_broker.bootstrap_servers, running.settings.topics.raw_spans, expect_spans=len(spans)
    )
    assert {span.span_id: span for _, span in spans_of(messages)} == spans_by_id(request)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies_are_accepted(
    running: RunningCollector, kafka_broker: BrokerState, encoding: str
) -> None:
    request = expected_request(emit_llm_spans(None, traces=1))
    raw = request.SerializeToString()
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    status, _, answer = post(
        running.traces_url, body, "application/x-protobuf", {"Content-Encoding": encoding}
    )
    assert status == 200, answer
    assert ExportTraceServiceResponse.FromString(answer) == ExportTraceServiceResponse()


def decode_status(body: bytes, json_encoded: bool = False) -> status_pb2.Status:
    if json_encoded:
        document = json.loads(body)
        return status_pb2.Status(code=document.get("code", 0), message=document.get("message", ""))
    return status_pb2.Status.FromString(body)


def test_unknown_content_type_is_415(running: RunningCollector) -> None:
    status, _, _ = post(running.traces_url, b"hello", "text/plain")
    assert status == 415


def test_unknown_content_encoding_is_415(running: RunningCollector) -> None:
    status, _, _ = post(
        running.traces_url, b"x", "application/x-protobuf", {"Content-Encoding": "br"}
    )
    assert status == 415


def test_undecodable_protobuf_is_400_with_a_status_body(running: RunningCollector) -> None:
    status, headers, body = post(
        running.traces_url, b"\x0a\xff\xff\xff\xff\x0f garbage", "application/x-protobuf"
    )
    assert status == 400
    assert headers["Content-Type"].startswith("application/x-protobuf")
    assert "invalid OTLP protobuf" in decode_status(body).message


def test_undecodable_json_is_400_with_a_json_status_body(running: RunningCollector) -> None:
    status, _, body = post(
        running.traces_url,
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
        "application/json",
    )
    assert status == 400
    assert "not hex" in decode_status(body, json_encoded=True).message


def test_corrupt_gzip_is_400(running: RunningCollector) -> None:
    status, _, _ = post(
        running.traces_url,
        b"\x1f\x8b\x08\x00garbage",
        "application/x-protobuf",
        {"Content-Encoding": "gzip"},
    )
    assert status == 400


def test_gzip_bomb_is_413_without_inflating_it(kafka_broker: BrokerState, tmp_path: Path) -> None:
    settings = collector_settings(
        kafka_broker.bootstrap_servers,
        tmp_path,
        max_request_bytes=1 << 20,
        max_decompressed_bytes=4 << 20,
    )
    bomb = gzip.compress(b"\x00" * (512 << 20), compresslevel=9)  # 512 MiB of zeros in ~0.5 MiB
    assert len(bomb) < 1 << 20
    with RunningCollector(settings) as running:
        status, _, body = post(
            running.traces_url, bomb, "application/x-protobuf", {"Content-Encoding": "gzip"}
        )
    assert status == 413
    assert "decompressed body exceeds" in decode_status(body).message


def test_oversize_body_is_413(kafka_broker: BrokerState, tmp_path: Path) -> None:
    settings = collector_settings(
        kafka_broker.bootstrap_servers,
        tmp_path,
        max_request_bytes=64 << 10,
        max_decompressed_bytes=64 << 10,
    )
    with RunningCollector(settings) as running:
        status, _, _ = post(running.traces_url, b"\x0a" * (128 << 10), "application/x-protobuf")
    assert status == 413


def test_too_many_spans_is_413(kafka_broker: BrokerState, tmp_path: Path) -> None:
    settings = collector_settings(kafka_broker.bootstrap_servers, tmp_path, max_spans_per_request=5)
    request = expected_request(emit_llm_spans(None, traces=3, spans_per_trace=3))
    with RunningCollector(settings) as running:
        status, _, body = post(
            running.traces_url, request.SerializeToString(), "application/x-protobuf"
        )
    assert status == 413
    assert "9 spans" in decode_status(body).message


def test_invalid_spans_get_partial_success_and_go_to_the_dead_letter_topic(
    running: RunningCollector, kafka_broker: BrokerState
) -> None:
    request = expected_request(emit_llm_spans(None, traces=2, spans_per_trace=2))
    bad = request.resource_spans[0].scope_spans[0].spans[0]
    bad.trace_id = bytes(16)
    status, _, body = post(
        running.traces_url, request.SerializeToString(), "application/x-protobuf"
    )
    assert status == 200
    response = ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 1
    assert "invalid trace id" in response.partial_success.error_message

    raw = read_topic(
        kafka_broker.bootstrap_servers, running.settings.topics.raw_spans, expect_spans=3
    )
    assert count_spans(raw) == 3
    dead = read_topic(
        kafka_broker.bootstrap_servers, running.settings.topics.dead_letter, expect_spans=1
    )
    assert [span.span_id for _, span in spans_of(dead)] == [bad.span_id]
    assert b"invalid trace id" in dead[0].headers[Header.DEAD_LETTER_REASON.value]


def test_api_keys_authenticate_and_set_the_tenant(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    settings = collector_settings(
        kafka_broker.bootstrap_servers,
        tmp_path,
        api_keys=[{"tenant": "acme-health", "key": "k" * 24}],
    )
    body = expected_request(emit_llm_spans(None, traces=1)).SerializeToString()
    with RunningCollector(settings) as running:
        assert post(running.traces_url, body, "application/x-protobuf")[0] == 401
        assert (
            post(
                running.traces_url,
                body,
                "application/x-protobuf",
                {"Authorization": "Bearer wrong-key-wrong-key"},
            )[0]
            == 401
        )
        status, _, _ = post(
            running.traces_url,
            body,
            "application/x-protobuf",
            {"Authorization": "Bearer " + "k" * 24},
        )
        assert status == 200
        messages = read_topic(
            kafka_broker.bootstrap_servers, settings.topics.raw_spans, expect_spans=2
        )
    assert {message.headers[Header.TENANT.value] for message in messages} == {b"acme-health"}


def test_metrics_endpoint_reports_component_counters(running: RunningCollector) -> None:
    emit_llm_spans(running.traces_url, traces=1, spans_per_trace=2)
    post(running.traces_url, b"junk", "application/x-protobuf")
    with urllib.request.urlopen(running.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'llmtap_component_received_events_total{component="collector"} 2.0' in text
    assert 'llmtap_component_sent_events_total{component="collector"} 2.0' in text
    assert (
        "llmtap_component_errors_total"
        '{component="collector",error_type="decode",stage="receiving"} 1.0' in text
    )
