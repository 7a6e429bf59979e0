"""The normalizer stage on the real broker: raw topic in, normalized topic out, bad input aside."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from llmtap.dev.kafka_broker import BrokerState
from llmtap.processors.normalize.stage import NormalizerStage
from llmtap.schemas.llm_span import LlmSpan, decode_span
from llmtap.schemas.topics import Header
from llmtap.settings import Settings
from tests.integration.collectors.test_otlp_http_receiver import emit_llm_spans, expected_request
from tests.otlp_support import read_topic, to_otlp_json

pytestmark = pytest.mark.integration


def stage_settings(bootstrap: str, tmp_path: Path) -> Settings:
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
        processor={"consumer_group": f"test-normalizer-{suffix}", "poll_timeout_seconds": 0.1},  # type: ignore[arg-type]
    )


class RunningStage:
    def __init__(self, settings: Settings) -> None:
        self.stage = NormalizerStage(settings)
        self._stop = threading.Event()
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.stage.run(self._stop)
        except BaseException as error:
            self._error.append(error)
            self.stage.ready.set()

    def __enter__(self) -> RunningStage:
        self._thread.start()
        assert self.stage.ready.wait(60)
        assert not self._error, self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._error, self._error


def produce(
    bootstrap: str,
    topic: str,
    values: list[tuple[bytes | None, bytes]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in values:
        producer.produce(topic, value=value, key=key, headers=headers or [])
    assert producer.flush(30) == 0


def normalized(bootstrap: str, topic: str, expect: int) -> list[LlmSpan]:
    messages = read_topic(
        bootstrap, topic, expect_messages=expect, idle_seconds=2.0, timeout_seconds=60
    )
    spans = [decode_span(message.value) for message in messages]
    assert len(spans) >= expect
    return spans


@pytest.fixture
def settings(kafka_broker: BrokerState, tmp_path: Path) -> Settings:
    return stage_settings(kafka_broker.bootstrap_servers, tmp_path)


def test_raw_messages_in_both_encodings_become_priced_llm_spans(
    settings: Settings, kafka_broker: BrokerState
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    proto_request = expected_request(emit_llm_spans(None, traces=2, spans_per_trace=2))
    json_request = expected_request(emit_llm_spans(None, traces=1, spans_per_trace=2))
    with RunningStage(settings):
        produce(
            bootstrap,
            settings.topics.raw_spans,
            [(None, proto_request.SerializeToString())],
            [(Header.TENANT.value, b"acme")],
        )
        produce(bootstrap, settings.topics.raw_spans, [(None, to_otlp_json(json_request))])
        spans = normalized(bootstrap, settings.topics.normalized_spans, expect=6)
    assert len(spans) == 6
    assert Counter(span.tenant for span in spans) == {"acme": 4, "default": 2}
    llm = [span for span in spans if span.span_type == "llm"]
    assert len(llm) == 3
    assert all(span.cost is not None and span.cost.priced for span in llm)
    assert all(span.request_model == "gpt-4o-mini" and span.usage.input is not None for span in llm)
    assert {span.span_type for span in spans} == {"llm", "agent"}
    assert (settings.data_dir / "heartbeats" / "normalizer").is_file(), "healthcheck heartbeat"


def test_a_bad_message_goes_to_the_dead_letter_topic_and_does_not_block(
    settings: Settings, kafka_broker: BrokerState
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    good = expected_request(emit_llm_spans(None, traces=1, spans_per_trace=2)).SerializeToString()
    key = b"same-key-same-partition"
    with RunningStage(settings):
        produce(
            bootstrap,
            settings.topics.raw_spans,
            [(key, b"\x0a\xff\xff\xff\xff\x0fnot protobuf"), (key, good)],
        )
        spans = normalized(bootstrap, settings.topics.normalized_spans, expect=2)
        dead = read_topic(
            bootstrap, settings.topics.dead_letter, expect_messages=1, idle_seconds=1.0
        )
    assert len(spans) == 2
    assert len(dead) == 1
    assert dead[0].headers[Header.DEAD_LETTER_STAGE.value] == b"normalizer"
    assert b"undecodable raw message" in dead[0].headers[Header.DEAD_LETTER_REASON.value]


def test_a_restart_resumes_after_the_last_committed_batch(
    settings: Settings, kafka_broker: BrokerState
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    first = expected_request(emit_llm_spans(None, traces=2, spans_per_trace=2)).SerializeToString()
    second = expected_request(emit_llm_spans(None, traces=3, spans_per_trace=2)).SerializeToString()
    with RunningStage(settings):
        produce(bootstrap, settings.topics.raw_spans, [(None, first)])
        normalized(bootstrap, settings.topics.normalized_spans, expect=4)
    produce(bootstrap, settings.topics.raw_spans, [(None, second)])  # while no stage runs
    with RunningStage(settings):
        spans = normalized(bootstrap, settings.topics.normalized_spans, expect=10)
    identities = Counter((span.trace_id, span.span_id) for span in spans)
    assert len(identities) == 10
    assert set(identities.values()) == {1}, "nothing normalized twice across the restart"
