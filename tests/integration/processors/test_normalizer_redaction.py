"""Redaction on the Kafka ingestion path: raw records that bypassed llmtap's collector (an
OpenTelemetry Collector's Kafka exporter writes them straight into the raw topic) are redacted
by the normalizer before anything is written downstream."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from llmtap.collectors.redaction import RedactionConfig
from llmtap.dev.kafka_broker import BrokerState
from llmtap.schemas.llm_span import decode_span
from llmtap.schemas.topics import Header
from llmtap.settings import Settings
from tests.integration.collectors.test_otlp_http_receiver import emit_llm_spans, expected_request
from tests.integration.processors.test_normalizer_stage import RunningStage, produce
from tests.otlp_support import read_topic

pytestmark = pytest.mark.integration

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"


def redacting_settings(bootstrap: str, tmp_path: Path) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        topics={  # type: ignore[arg-type]
            "raw_spans": f"test.raw.{suffix}",
            "raw_logs": f"test.raw-logs.{suffix}",
            "normalized_spans": f"test.normalized.{suffix}",
            "dead_letter": f"test.dead.{suffix}",
            "partitions": 1,
        },
        processor={"consumer_group": f"test-normalizer-{suffix}", "poll_timeout_seconds": 0.1},  # type: ignore[arg-type]
        collector={"redaction": {"enabled": True}},  # type: ignore[arg-type]
    )


def request_with_pii(prompt: str) -> tuple[ExportTraceServiceRequest, str]:
    """One trace (an agent span and an LLM span) whose LLM span holds ``prompt``; its trace id."""
    request = expected_request(emit_llm_spans(None, traces=1, spans_per_trace=2))
    for span in request.resource_spans[0].scope_spans[0].spans:
        for attribute in span.attributes:
            if attribute.key == "gen_ai.input.messages":
                attribute.value.string_value = json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
                )
        span.attributes.add(key="app.billing_account", value=AnyValue(string_value=IBAN))
    trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    return request, trace_id


def test_records_written_straight_to_the_raw_topic_are_redacted(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = redacting_settings(bootstrap, tmp_path)
    prompt = f"mail {EMAIL} and charge {CARD}"
    direct, direct_trace = request_with_pii(prompt)
    trusted, trusted_trace = request_with_pii(prompt)
    stale, stale_trace = request_with_pii(prompt)
    fingerprint = RedactionConfig(enabled=True).fingerprint().encode()
    with RunningStage(settings) as running:
        # As an OTel Collector's Kafka exporter writes it: no llmtap header at all.
        produce(bootstrap, settings.topics.raw_spans, [(None, direct.SerializeToString())])
        # As llmtap's collector writes it with the same settings: already redacted, trusted.
        produce(
            bootstrap,
            settings.topics.raw_spans,
            [(None, trusted.SerializeToString())],
            [(Header.REDACTED.value, fingerprint)],
        )
        # Redacted by a collector with other settings: redacted again with these.
        produce(
            bootstrap,
            settings.topics.raw_spans,
            [(None, stale.SerializeToString())],
            [(Header.REDACTED.value, b"0123456789abcdef")],
        )
        messages = read_topic(
            bootstrap, settings.topics.normalized_spans, expect_messages=6, idle_seconds=1.0
        )
        telemetry = running.stage.telemetry
        redactions = {
            kind: telemetry.value("llmtap_component_redactions_total", kind=kind)
            for kind in ("email", "credit_card", "iban")
        }
    by_trace: dict[str, list[bytes]] = {}
    for message in messages:
        by_trace.setdefault(decode_span(message.value).trace_id, []).append(message.value)
    assert {trace: len(values) for trace, values in by_trace.items()} == {
        direct_trace: 2,
        trusted_trace: 2,
        stale_trace: 2,
    }
    for trace in (direct_trace, stale_trace):
        stored = b"".join(by_trace[trace])
        for secret in (EMAIL, CARD, IBAN):
            assert secret.encode() not in stored, f"{secret} reached the normalized topic"
        spans = [decode_span(value) for value in by_trace[trace]]
        prompts = [span.prompt_text for span in spans if span.prompt_text]
        assert prompts == ["mail [REDACTED:email] and charge [REDACTED:credit_card]"]
        assert {span.attributes.get("app.billing_account") for span in spans} == {"[REDACTED:iban]"}
    assert EMAIL.encode() in b"".join(by_trace[trusted_trace])  # the collector's word is taken
    # One LLM span with the prompt and two spans with the IBAN per redacted trace.
    assert redactions == {"email": 2, "credit_card": 2, "iban": 4}
