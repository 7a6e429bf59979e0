"""Drift on the real model and the real broker: a topic shift in prompts is detected and stored.

Prompts come from one topic mix (cooking and travel questions), then from another (programming
errors), embedded by the shipped all-MiniLM-L6-v2 (the session's ``real_encoder``, offline).
Documented in docs/drift.md: with windows of 30 prompts against a 60-prompt reference, the shift
is ``drifted`` at the second shifted window (``consecutive_windows`` = 2), never before it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from confluent_kafka import Producer

from llmtap.dev.kafka_broker import BrokerState
from llmtap.processors.drift.config import DriftConfig
from llmtap.processors.drift.detector import DriftDetector, SpanKeyFields
from llmtap.processors.drift.stage import DriftStage
from llmtap.processors.embeddings.encoder import Encoder
from llmtap.schemas.drift import DriftResult, decode_drift_result, encode_drift_result
from llmtap.schemas.llm_span import LlmSpan, TokenUsage, encode_span, span_key
from llmtap.schemas.scores import SpanEmbedding, encode_embedding, score_key
from llmtap.settings import Settings
from llmtap.sinks.clickhouse.drift_rows import DRIFT_COLUMNS, drift_rows
from llmtap.sinks.clickhouse.migrations import Migrator
from tests.otlp_support import read_topic

pytestmark = pytest.mark.integration

DRIFT = {
    "reference_events": 60,
    "reservoir_size": 60,
    "window_events": 30,
    "min_window_events": 10,
    "permutations": 199,
    "consecutive_windows": 2,
    "reference_policy": "reset_on_change",
}
REFERENCE_WINDOWS = 2  # quiet windows after the reference, before the shift
SHIFTED_WINDOWS = 3
# Recent: drift_results rows older than the retention (30 days) are dropped at insert.
BASE_SECONDS = (int(time.time()) // 3600 - 2) * 3600

COOKING = [
    "How long should I {verb} {food} at {number} degrees?",
    "What can I use instead of {food} when I {verb} for {number} people?",
    "Is it safe to {verb} frozen {food}, and for how many minutes?",
]
TRAVEL = [
    "Which documents do I need to fly to {place} with {number} children?",
    "What is the cheapest way to get from the airport to central {place}?",
    "Can I change my hotel booking in {place} for {number} nights without a fee?",
]
PROGRAMMING = [
    "Why does my {language} {thing} raise {error} when the input list is empty?",
    "How do I fix {error} in a {language} {thing} that reads a CSV file?",
    "My {language} {thing} throws {error} after upgrading the library to version {number}.",
]
WORDS = {
    "verb": ["bake", "roast", "grill", "simmer", "steam"],
    "food": ["chicken thighs", "salmon", "sweet potatoes", "lentils", "bread dough", "tofu"],
    "place": ["Lisbon", "Tokyo", "Montreal", "Nairobi", "Oslo", "Lima"],
    "language": ["Python", "Rust", "Java", "TypeScript", "Go"],
    "thing": ["function", "unit test", "async handler", "class method", "script"],
    "error": ["KeyError", "a null pointer exception", "an index out of range panic", "TypeError"],
}


def prompts(templates: list[str], count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = []
    for index in range(count):
        template = templates[index % len(templates)]
        values = {name: str(rng.choice(options)) for name, options in WORDS.items()}
        texts.append(template.format(number=int(rng.integers(2, 400)), **values))
    return texts


@pytest.fixture(scope="module")
def topic_vectors(real_encoder: Encoder) -> dict[str, Any]:
    """Prompts before (cooking + travel) and after (programming) the shift, embedded once."""
    before_count = DRIFT["reference_events"] + REFERENCE_WINDOWS * DRIFT["window_events"]
    after_count = SHIFTED_WINDOWS * DRIFT["window_events"]
    mix = prompts(COOKING, before_count // 2, 1) + prompts(
        TRAVEL, before_count - before_count // 2, 2
    )
    np.random.default_rng(3).shuffle(mix)  # type: ignore[arg-type]
    shifted = prompts(PROGRAMMING, after_count, 4)
    return {
        "before": (mix, real_encoder.encode(mix)),
        "after": (shifted, real_encoder.encode(shifted)),
        "model": real_encoder.model_name,
    }


def llm_span(index: int, response_model: str = "gpt-4o-2024-08-06") -> LlmSpan:
    start = (BASE_SECONDS + index) * 1_000_000_000
    return LlmSpan(
        trace_id=f"{index + 1:032x}",
        span_id=f"{index + 1:016x}",
        span_type="llm",
        tenant="acme",
        service_name="assistant",
        operation="chat",
        provider="openai",
        request_model="gpt-4o",
        response_model=response_model,
        prompt_template_version="v2",
        start_time_unix_nano=start,
        end_time_unix_nano=start + 800_000_000,
        status="ok",
        finish_reasons=["stop"],
        usage=TokenUsage(input=120, output=80),
    )


def prompt_embedding(index: int, vector: np.ndarray, model: str) -> SpanEmbedding:
    return SpanEmbedding(
        timestamp=(BASE_SECONDS + index) * 1_000_000_000,
        tenant="acme",
        trace_id=f"{index + 1:032x}",
        span_id=f"{index + 1:016x}",
        kind="prompt",
        model=model,
        content_hash=f"{index:016x}",
        vector=[float(value) for value in vector],
    )


def feed(
    detector: DriftDetector, vectors: np.ndarray, start: int, model: str, response_model: str
) -> list[DriftResult]:
    results: list[DriftResult] = []
    for offset, vector in enumerate(vectors):
        span = llm_span(start + offset, response_model)
        results += detector.observe_span(span)
        results += detector.observe_embedding(
            prompt_embedding(start + offset, vector, model), SpanKeyFields.of(span)
        )
    return [result for result in results if result.feature == "prompt_embedding"]


def test_a_topic_shift_is_detected_at_the_second_shifted_window(
    topic_vectors: dict[str, Any],
) -> None:
    detector = DriftDetector(DriftConfig(**DRIFT))  # type: ignore[arg-type]
    texts_before, before = topic_vectors["before"]
    texts_after, after = topic_vectors["after"]
    model = topic_vectors["model"]
    quiet = feed(detector, before, 0, model, "gpt-4o-2024-08-06")
    assert len(quiet) == REFERENCE_WINDOWS
    assert not any(result.drifted for result in quiet)
    shifted = feed(detector, after, len(before), model, "gpt-4o-2024-08-06")
    assert [result.drifted for result in shifted] == [False, True, True]
    evidence = json.loads(shifted[0].evidence)
    assert evidence["window_passed"] is True
    assert shifted[0].statistic > 10  # the centroid moved >10x its no-drift expectation
    assert shifted[0].statistic > shifted[0].threshold
    assert evidence["shift"]["fraction_beyond_reference_p95"] > 0.9
    # The most shifted examples are the new topic's prompts.
    by_hash = {f"{len(before) + i:016x}": text for i, text in enumerate(texts_after)}
    examples = evidence["examples"]
    assert all(example["content_hash"] in by_hash for example in examples)
    assert len(texts_before) == len(before)


def test_a_new_model_version_resets_the_reference_instead(topic_vectors: dict[str, Any]) -> None:
    detector = DriftDetector(DriftConfig(**DRIFT))  # type: ignore[arg-type]
    _, before = topic_vectors["before"]
    _, after = topic_vectors["after"]
    model = topic_vectors["model"]
    feed(detector, before, 0, model, "gpt-4o-2024-08-06")
    # The shifted traffic arrives with a new response model: under reset_on_change its first 60
    # prompts become the new reference instead of drifting against the old one, and the window
    # after them is tested against that reference: no drift.
    results = feed(detector, after, len(before), model, "gpt-4o-2024-11-20")
    assert detector.counters.references_reset == 1
    assert len(results) == 1
    assert not results[0].drifted
    evidence = json.loads(results[0].evidence)
    assert evidence["versions"]["response_model"] == "gpt-4o-2024-11-20"
    assert results[0].window_start == BASE_SECONDS + len(before) + DRIFT["reference_events"]


def stage_settings(bootstrap: str, tmp_path: Path) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        topics={  # type: ignore[arg-type]
            "normalized_spans": f"test.normalized.{suffix}",
            "embeddings": f"test.embeddings.{suffix}",
            "drift": f"test.drift.{suffix}",
            "dead_letter": f"test.dead.{suffix}",
            "partitions": 2,
        },
        processor={  # type: ignore[arg-type]
            "poll_timeout_seconds": 0.1,
            "drift": {**DRIFT, "consumer_group": f"test-drift-{suffix}"},
        },
    )


def produce(
    bootstrap: str, settings: Settings, vectors: np.ndarray, start: int, model: str
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    topics = settings.topics
    for offset, vector in enumerate(vectors):
        index = start + offset
        span = llm_span(index)
        embedding = prompt_embedding(index, vector, model)
        messages = [
            (topics.normalized_spans, encode_span(span), span_key(span)),
            (topics.embeddings, encode_embedding(embedding), score_key(embedding)),
        ]
        if index % 7 == 0:
            messages.reverse()  # the embedding before its span: held until the span arrives
        for topic, value, key in messages:
            producer.produce(topic, value=value, key=key)
    if start == 0:
        producer.produce(topics.normalized_spans, value=b"not a span", key=b"0" * 32)
    assert producer.flush(30) == 0


def prompt_results(bootstrap: str, topic: str, count: int) -> list[DriftResult]:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        messages = read_topic(bootstrap, topic, idle_seconds=1.0, timeout_seconds=10)
        results = [decode_drift_result(message.value) for message in messages]
        prompt = [result for result in results if result.feature == "prompt_embedding"]
        if len(prompt) >= count:
            return sorted(prompt, key=lambda result: result.window_end)
    raise AssertionError(f"fewer than {count} prompt drift results on {topic}")


def test_the_stage_joins_embeddings_detects_the_shift_and_rows_store_it(
    kafka_broker: BrokerState,
    tmp_path: Path,
    topic_vectors: dict[str, Any],
    clickhouse_client: Any,
    clickhouse_target: Any,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = stage_settings(bootstrap, tmp_path)
    stage = DriftStage(settings)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            stage.run(stop)
        except BaseException as error:
            errors.append(error)
            stage.ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert stage.ready.wait(60)
        assert not errors, errors
        _, before = topic_vectors["before"]
        _, after = topic_vectors["after"]
        model = topic_vectors["model"]
        produce(bootstrap, settings, before, 0, model)
        quiet = prompt_results(bootstrap, settings.topics.drift, REFERENCE_WINDOWS)
        assert not any(result.drifted for result in quiet)
        # Only once the quiet windows are out: partitions interleave, the phases must not.
        produce(bootstrap, settings, after, len(before), model)
        results = prompt_results(
            bootstrap, settings.topics.drift, REFERENCE_WINDOWS + SHIFTED_WINDOWS
        )
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    shifted = results[REFERENCE_WINDOWS:]
    assert [result.drifted for result in shifted] == [False, True, True]
    assert (shifted[1].service_name, shifted[1].operation, shifted[1].request_model) == (
        "assistant",
        "chat",
        "gpt-4o",
    )
    assert (
        stage.telemetry.value("llmtap_component_discarded_events_total", reason="dead_letter") == 1
    )
    # The scalar features were tested on the same spans.
    every = [decode_drift_result(m.value) for m in read_topic(bootstrap, settings.topics.drift)]
    assert {"latency_ms", "outcome"} <= {result.feature for result in every}

    # ClickHouse: the rows land in drift_results (with 0005's operation column), and a window
    # emitted again with a higher version replaces its row.
    Migrator(clickhouse_client, clickhouse_target.database).apply()
    rows = [row for result in results for _, row in drift_rows(_encode(result))]
    again = _encode(_with(results[-1], version=results[-1].version + 1, evidence='{"again":1}'))
    rows += [row for _, row in drift_rows(again)]
    clickhouse_client.insert("drift_results", rows, column_names=list(DRIFT_COLUMNS))
    stored = clickhouse_client.query(
        "SELECT count(), countIf(drifted = 1), countIf(evidence = '{\"again\":1}'), "
        "any(operation) FROM drift_results FINAL"
    ).result_rows[0]
    assert stored == (len(results), 2, 1, "chat")


def _encode(result: DriftResult) -> bytes:
    return encode_drift_result(result)


def _with(result: DriftResult, **changes: Any) -> DriftResult:
    return msgspec.structs.replace(result, **changes)
