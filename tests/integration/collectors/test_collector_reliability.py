"""Kafka outages and overload: the collector answers 503/429 with Retry-After and loses nothing.

These tests run their own broker (they stop it), not the shared session broker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmtap.dev.kafka_broker import LocalKafkaBroker
from tests.conftest import local_kafka_settings
from tests.integration.collectors.test_otlp_http_receiver import (
    emit_llm_spans,
    expected_request,
    post,
)
from tests.otlp_support import RunningCollector, collector_settings, read_topic, spans_of

pytestmark = pytest.mark.integration


@pytest.fixture
def private_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    broker = LocalKafkaBroker(local_kafka_settings(), tmp_path / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def span_ids(request: ExportTraceServiceRequest) -> list[bytes]:
    return [
        span.span_id for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans
    ]


def test_broker_outage_gets_503_and_every_200_is_stored_exactly_once(
    private_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    state = private_broker.status().state
    assert state is not None
    settings = collector_settings(state.bootstrap_servers, tmp_path, delivery_timeout_seconds=2.0)
    acknowledged: list[bytes] = []
    with RunningCollector(settings) as running:
        before = expected_request(emit_llm_spans(None, traces=3))
        assert (
            post(running.traces_url, before.SerializeToString(), "application/x-protobuf")[0] == 200
        )
        acknowledged += span_ids(before)

        private_broker.stop()
        during = expected_request(emit_llm_spans(None, traces=2))
        status, headers, _ = post(
            running.traces_url, during.SerializeToString(), "application/x-protobuf"
        )
        assert status == 503
        assert headers["Retry-After"] == str(settings.collector.retry_after_seconds)

        private_broker.start()
        # The client retries the refused request, as OTLP exporters do after a 503.
        deadline = time.monotonic() + 60
        while True:
            status, _, _ = post(
                running.traces_url, during.SerializeToString(), "application/x-protobuf"
            )
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert status == 200
        acknowledged += span_ids(during)

        after = expected_request(emit_llm_spans(None, traces=2))
        assert (
            post(running.traces_url, after.SerializeToString(), "application/x-protobuf")[0] == 200
        )
        acknowledged += span_ids(after)

    messages = read_topic(
        state.bootstrap_servers, settings.topics.raw_spans, expect_spans=len(acknowledged)
    )
    stored = Counter(span.span_id for _, span in spans_of(messages))
    assert set(stored) == set(acknowledged), "every acknowledged span is on the topic"
    assert all(count == 1 for count in stored.values()), "and none twice"


def test_overload_answers_429_with_retry_after(
    private_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    state = private_broker.status().state
    assert state is not None
    settings = collector_settings(
        state.bootstrap_servers, tmp_path, delivery_timeout_seconds=4.0, max_in_flight_requests=1
    )
    body = expected_request(emit_llm_spans(None, traces=1)).SerializeToString()
    with RunningCollector(settings) as running:
        private_broker.stop()  # the first request now waits for Kafka, holding the only slot
        first: list[int] = []
        waiting = threading.Thread(
            target=lambda: first.append(post(running.traces_url, body, "application/x-protobuf")[0])
        )
        waiting.start()
        time.sleep(1.0)
        status, headers, _ = post(running.traces_url, body, "application/x-protobuf")
        waiting.join()
    assert status == 429
    assert "Retry-After" in headers
    assert first == [503]
