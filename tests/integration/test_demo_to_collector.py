"""Demo traffic through the real OTLP exporter, a running collector and the real Kafka broker."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmtap.cli import cli
from llmtap.demo.traffic import TrafficConfig, TrafficGenerator
from llmtap.dev.kafka_broker import BrokerState
from llmtap.processors.normalize.normalizer import Normalizer
from llmtap.schemas.llm_span import LlmSpan
from llmtap.schemas.topics import Header
from tests.otlp_support import (
    ConsumedMessage,
    RunningCollector,
    collector_settings,
    count_spans,
    read_topic,
)

pytestmark = pytest.mark.integration


def normalize(messages: list[ConsumedMessage]) -> list[LlmSpan]:
    """What the processor's first stage does with each raw message: tenant from the header."""
    normalizer = Normalizer()
    spans: list[LlmSpan] = []
    for message in messages:
        spans += normalizer.normalize_request(
            ExportTraceServiceRequest.FromString(message.value),
            tenant=message.headers[Header.TENANT.value].decode(),
        )
    return spans


def test_generated_spans_arrive_on_the_raw_topic_and_normalize(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    settings = collector_settings(kafka_broker.bootstrap_servers, tmp_path)
    with RunningCollector(settings) as running:
        generator = TrafficGenerator(
            TrafficConfig(
                endpoint=running.base_url,
                seed=21,
                ungrounded_after_spans=30,
                ungrounded_batch_size=5,
                injection_every_interactions=10,
            )
        )
        report = generator.emit_interactions(80)
        generator.shutdown()  # flushes the batch span processors through the OTLP exporter
        messages = read_topic(
            kafka_broker.bootstrap_servers, settings.topics.raw_spans, expect_spans=report.spans
        )

    assert count_spans(messages) == report.spans
    spans = normalize(messages)
    assert len({(span.trace_id, span.span_id) for span in spans}) == report.spans
    assert {span.tenant for span in spans} == {"default"}  # the collector's tenant wins
    assert {span.service_name for span in spans} == {
        "support-bot",
        "docs-assistant",
        "analytics-copilot",
        "travel-agent",
    }
    llm = [span for span in spans if span.span_type == "llm" and span.status != "error"]
    rag = [span for span in llm if span.service_name in ("support-bot", "docs-assistant")]
    assert rag
    for span in rag:
        assert span.prompt_text
        assert span.completion_text
        assert [document.content for document in span.retrieved_documents if document.content]
    assert all(span.usage.input and span.usage.output for span in llm)
    assert all(span.prompt_template_version and span.user_id for span in llm)
    types = Counter(span.span_type for span in spans)
    assert types["retrieval"] == report.kinds["rag"] + report.kinds["injection"]
    assert types["tool"] > 0
    assert any(span.status == "error" and span.error_type for span in spans)


def test_the_cli_sends_until_its_duration_ends(kafka_broker: BrokerState, tmp_path: Path) -> None:
    settings = collector_settings(kafka_broker.bootstrap_servers, tmp_path)
    with RunningCollector(settings) as running:
        result = CliRunner().invoke(
            cli,
            [
                "demo",
                "traffic",
                "--endpoint",
                running.base_url,
                "--rate",
                "40",
                "--duration-seconds",
                "1.5",
                "--seed",
                "4",
            ],
        )
        assert result.exit_code == 0, (result.output, result.exception)
        sent = int(result.stdout.split()[1])  # "sent N spans in M interactions ..."
        messages = read_topic(
            kafka_broker.bootstrap_servers, settings.topics.raw_spans, expect_spans=sent
        )
    assert sent > 0
    assert count_spans(messages) == sent
    assert f"to {running.traces_url}" in result.stderr
