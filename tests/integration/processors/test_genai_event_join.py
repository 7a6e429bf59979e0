"""GenAI event log records joined to their spans by the normalizer stage, on the real broker.

The spans and records are what ``opentelemetry-instrumentation-openai-v2`` emitted in
``event_only`` mode (the golden case ``openai_v2_chat_events_latest``): no content on the spans,
one operation-details log record per call.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmtap.dev.kafka_broker import BrokerState
from llmtap.schemas.otlp import decode_logs_json, decode_traces_json
from llmtap.schemas.topics import Header
from llmtap.settings import Settings
from tests.integration.processors.test_normalizer_stage import RunningStage, normalized, produce
from tests.otlp_support import RunningCollector, read_topic

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
CASE = GOLDEN / "openai_v2_chat_events_latest"
SPAN_MODE = GOLDEN / "openai_v2_chat_latest" / "expected.jsonl"


def join_settings(bootstrap: str, tmp_path: Path, wait_seconds: float) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        topics={  # type: ignore[arg-type]
            "raw_spans": f"test.raw.{suffix}",
            "raw_logs": f"test.raw-logs.{suffix}",
            "normalized_spans": f"test.normalized.{suffix}",
            "dead_letter": f"test.dead.{suffix}",
            "partitions": 2,
        },
        collector={"http_port": 0, "grpc_port": 0},  # type: ignore[arg-type]
        processor={  # type: ignore[arg-type]
            "consumer_group": f"test-normalizer-{suffix}",
            "poll_timeout_seconds": 0.1,
            "genai_event_wait_seconds": wait_seconds,
        },
    )


def logs_of_span(logs: ExportLogsServiceRequest, span_id: bytes) -> ExportLogsServiceRequest:
    part = ExportLogsServiceRequest()
    part.CopyFrom(logs)
    for resource in part.resource_logs:
        for scope in resource.scope_logs:
            kept = [record for record in scope.log_records if record.span_id == span_id]
            del scope.log_records[:]
            scope.log_records.extend(kept)
    return part


def span_mode_content() -> list[tuple[str, str]]:
    lines = [json.loads(line) for line in SPAN_MODE.read_text().splitlines()]
    return sorted((line["prompt_text"], line["completion_text"]) for line in lines)


def post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/x-protobuf"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_records_before_and_after_their_span_both_land_on_it_and_orphans_are_kept(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = join_settings(bootstrap, tmp_path, wait_seconds=3)
    traces = decode_traces_json((CASE / "input.json").read_bytes())
    logs = decode_logs_json((CASE / "logs.json").read_bytes())
    first, second = [span.span_id for span in traces.resource_spans[0].scope_spans[0].spans]
    orphan = logs_of_span(logs, first)
    orphan.resource_logs[0].scope_logs[0].log_records[0].span_id = os.urandom(8)
    with RunningCollector(settings) as collector, RunningStage(settings) as running:
        post(collector.base_url + "/v1/logs", logs_of_span(logs, first).SerializeToString())
        time.sleep(1)  # the first span's records are read (and held) before the span
        post(collector.base_url + "/v1/traces", traces.SerializeToString())
        time.sleep(1)  # the second span is read (and held) before its records
        post(collector.base_url + "/v1/logs", logs_of_span(logs, second).SerializeToString())
        post(collector.base_url + "/v1/logs", orphan.SerializeToString())
        spans = normalized(bootstrap, settings.topics.normalized_spans, expect=2)
        dead = read_topic(bootstrap, settings.topics.dead_letter, expect_messages=1)
        assert running.stage._joiner.held_spans == 0
    assert len(spans) == 2
    assert sorted((s.prompt_text, s.completion_text) for s in spans) == span_mode_content()
    assert all(span.system_instructions for span in spans)
    assert len(dead) == 1
    assert dead[0].headers[Header.DEAD_LETTER_REASON.value] == (
        b"unmatched genai event record (span not seen within 3s)"
    )
    assert (
        dead[0].headers[Header.DEAD_LETTER_SOURCE_TOPIC.value] == settings.topics.raw_logs.encode()
    )
    stored = ExportLogsServiceRequest.FromString(dead[0].value)
    assert stored.resource_logs[0].scope_logs[0].log_records[0].span_id == (
        orphan.resource_logs[0].scope_logs[0].log_records[0].span_id
    )


def test_a_span_held_at_a_restart_is_read_again_and_nothing_else_twice(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    """The held span's offset is not committed; the spans after it (same partition, emitted by
    committed transactions) are not emitted again when the partition is re-read."""
    bootstrap = kafka_broker.bootstrap_servers
    settings = join_settings(bootstrap, tmp_path, wait_seconds=60)
    traces = decode_traces_json((CASE / "input.json").read_bytes())
    logs = decode_logs_json((CASE / "logs.json").read_bytes())
    content_span = ExportTraceServiceRequest.FromString(
        decode_traces_json(
            (GOLDEN / "openai_v2_chat_latest" / "input.json").read_bytes()
        ).SerializeToString()
    )
    key = b"one-partition"  # everything on one partition: held span first, emitted ones after
    with RunningStage(settings):
        produce(bootstrap, settings.topics.raw_spans, [(key, traces.SerializeToString())])
        time.sleep(1)
        produce(bootstrap, settings.topics.raw_spans, [(key, content_span.SerializeToString())])
        before = normalized(bootstrap, settings.topics.normalized_spans, expect=2)
    # the two span-mode spans went out; the two event-mode spans were held, then the stage stopped
    assert all(span.input_messages for span in before)
    produce(bootstrap, settings.topics.raw_logs, [(key, logs.SerializeToString())])
    with RunningStage(settings):
        spans = normalized(bootstrap, settings.topics.normalized_spans, expect=4)
    identities = Counter((span.trace_id, span.span_id) for span in spans)
    assert len(identities) == 4
    assert set(identities.values()) == {1}, "nothing emitted twice across the restart"
    assert all(span.prompt_text and span.completion_text for span in spans)
