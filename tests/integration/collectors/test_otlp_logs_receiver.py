"""OTLP logs (HTTP ``/v1/logs`` and gRPC ``LogsService``) on the real broker: the raw logs topic
keyed like the spans, with the traces' auth, errors and redaction."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from llmtap.dev.kafka_broker import BrokerState
from llmtap.schemas.otlp import decode_logs_json
from llmtap.schemas.topics import Header
from llmtap.settings import Settings
from tests.otlp_support import RunningCollector, read_topic

pytestmark = pytest.mark.integration

GOLDEN_LOGS = (
    Path(__file__).resolve().parents[2] / "golden" / "openai_v2_chat_events_latest" / "logs.json"
)
EXPORT_LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
KEY = "logs-test-key-0123456789"


def logs_settings(bootstrap: str, tmp_path: Path, **collector: object) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        topics={  # type: ignore[arg-type]
            "raw_spans": f"test.raw.{suffix}",
            "raw_logs": f"test.raw-logs.{suffix}",
            "dead_letter": f"test.dead.{suffix}",
            "partitions": 3,
        },
        collector={"http_port": 0, "grpc_port": 0, **collector},  # type: ignore[arg-type]
    )


def post(url: str, body: bytes, content_type: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def record_keys(request: ExportLogsServiceRequest) -> set[bytes]:
    return {
        record.trace_id.hex().encode()
        for resource in request.resource_logs
        for scope in resource.scope_logs
        for record in scope.log_records
    }


def test_http_logs_in_both_encodings_are_keyed_by_trace_id(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    body_json = GOLDEN_LOGS.read_bytes()
    request = decode_logs_json(body_json)
    settings = logs_settings(kafka_broker.bootstrap_servers, tmp_path, api_keys=[KEY_ENTRY])
    with RunningCollector(settings) as running:
        url = running.base_url + "/v1/logs"
        assert post(url, body_json, "application/json")[0] == 401
        assert post(url, b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf", KEY)[0] == 400
        status, answer = post(url, body_json, "application/json", KEY)
        assert status == 200, answer
        status, answer = post(url, request.SerializeToString(), "application/x-protobuf", KEY)
        assert status == 200
        assert ExportLogsServiceResponse.FromString(answer) == ExportLogsServiceResponse()
        messages = read_topic(
            kafka_broker.bootstrap_servers, settings.topics.raw_logs, expect_messages=4
        )
    assert len(messages) == 4  # two traces, twice
    for message in messages:
        part = ExportLogsServiceRequest.FromString(message.value)
        assert record_keys(part) == {message.key}
        assert message.headers[Header.TENANT.value] == b"t1"
    assert {message.key for message in messages} == record_keys(request)


def test_grpc_logs_export_with_redaction(kafka_broker: BrokerState, tmp_path: Path) -> None:
    request = decode_logs_json(GOLDEN_LOGS.read_bytes())
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    record.body.string_value = "mail me at jane.doe@example.com"
    settings = logs_settings(kafka_broker.bootstrap_servers, tmp_path, redaction={"enabled": True})
    with RunningCollector(settings) as running:
        port = running.collector.grpc_port
        assert port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = channel.unary_unary(EXPORT_LOGS)(request.SerializeToString(), timeout=30)
        assert ExportLogsServiceResponse.FromString(answer) == ExportLogsServiceResponse()
        messages = read_topic(
            kafka_broker.bootstrap_servers, settings.topics.raw_logs, expect_messages=2
        )
    assert {message.headers[Header.SOURCE.value] for message in messages} == {b"otlp_grpc"}
    assert any(b"[REDACTED:email]" in message.value for message in messages)
    assert not any(b"jane.doe@example.com" in message.value for message in messages)


KEY_ENTRY = {"tenant": "t1", "key": KEY}
