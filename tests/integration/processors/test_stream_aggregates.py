"""The faust stream worker on the real broker: aggregates equal the stored spans, exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.dev.kafka_broker import BrokerState
from llmtap.processors.stream.app import StreamApp
from llmtap.schemas.aggregates import Aggregate, decode_aggregates
from llmtap.schemas.llm_span import Cost, LlmSpan, TokenUsage
from llmtap.settings import Settings
from llmtap.sinks.clickhouse.derived import DerivedSink
from llmtap.sinks.clickhouse.migrations import Migrator
from llmtap.sinks.clickhouse.sink import ClickHouseSink
from tests.conftest import JAR_CACHE_DIR

pytestmark = pytest.mark.integration

SERVICES = ("chat", "search", "agent")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4")


def synthetic_spans(count: int, seed: int, start_seconds: int) -> list[LlmSpan]:
    """LLM spans over a few minutes, with errors, unpriced models, users and streaming."""
    rng = random.Random(seed)
    spans = []
    for _index in range(count):
        start = (start_seconds + rng.randint(0, 240)) * 10**9 + rng.randint(0, 10**9 - 1)
        model = rng.choice(MODELS)
        priced = model != "claude-sonnet-4" or rng.random() < 0.5
        input_tokens, output_tokens = rng.randint(10, 4000), rng.randint(1, 800)
        cost_in = Decimal(input_tokens) * Decimal("0.0000025")
        cost_out = Decimal(output_tokens) * Decimal("0.00001")
        spans.append(
            LlmSpan(
                trace_id=rng.randbytes(16).hex(),
                span_id=rng.randbytes(8).hex(),
                name=f"chat {model}",
                start_time_unix_nano=start,
                end_time_unix_nano=start + rng.randint(80, 30_000) * 1_000_000,
                status="error" if rng.random() < 0.07 else "ok",
                service_name=rng.choice(SERVICES),
                tenant=rng.choice(("acme", "globex")),
                span_type="llm",
                provider="openai" if model.startswith("gpt") else "anthropic",
                operation="chat",
                request_model=model,
                prompt_template_version=rng.choice(("v1", "v2", None)),
                user_id=rng.choice(("u1", "u2", "u3", None)),
                usage=TokenUsage(input=input_tokens, output=output_tokens),
                cost=Cost(
                    priced=True,
                    price_version="test",
                    total=str(cost_in + cost_out),
                    input=str(cost_in),
                    output=str(cost_out),
                )
                if priced
                else Cost(priced=False, price_version="test", unpriced_reason="no price"),
                time_to_first_token_ms=rng.uniform(50, 900) if rng.random() < 0.5 else None,
                finish_reasons=[rng.choice(("stop", "length", "tool_calls"))],
            )
        )
    # Spans reach Kafka roughly in time order (each when its call ends), a few seconds apart at
    # most: well inside the grace period, so none is late here.
    spans.sort(key=lambda span: span.start_time_unix_nano + rng.randint(0, 5 * 10**9))
    return spans


def produce_like_the_normalizer(
    settings: Settings, spans: list[LlmSpan], spans_per_batch: int = 100
) -> None:
    """With llmtap's producer settings (zstd batches, idempotent), as the normalizer writes:
    every span to the normalized topic, and each batch's LLM calls in one message to the
    aggregate inputs topic."""
    from confluent_kafka import Producer

    from llmtap.kafka import ensure_topics, producer_config
    from llmtap.schemas.aggregate_inputs import (
        aggregate_input_of,
        encode_aggregate_inputs,
        is_aggregated,
    )
    from llmtap.schemas.llm_span import encode_span, span_key
    from llmtap.schemas.topics import aggregate_inputs_topic, normalized_spans_topic

    topics = settings.topics
    ensure_topics(
        settings,
        [
            normalized_spans_topic(topics.normalized_spans, topics.partitions),
            aggregate_inputs_topic(topics.aggregate_inputs, topics.partitions),
        ],
    )
    failures: list[object] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(error)

    producer = Producer(producer_config(settings))
    for start in range(0, len(spans), spans_per_batch):
        batch = spans[start : start + spans_per_batch]
        for span in batch:
            producer.produce(
                topics.normalized_spans,
                value=encode_span(span),
                key=span_key(span),
                on_delivery=delivered,
            )
        inputs = [aggregate_input_of(span) for span in batch if is_aggregated(span)]
        for value in encode_aggregate_inputs(inputs):
            producer.produce(topics.aggregate_inputs, value=value, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == []


def stream_settings(bootstrap: str, tmp_path: Path, **clickhouse: Any) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        topics={
            "raw_spans": f"test.raw.{suffix}",
            "raw_logs": f"test.rawlogs.{suffix}",
            "normalized_spans": f"test.normalized.{suffix}",
            "aggregate_inputs": f"test.inputs.{suffix}",
            "aggregate_partials": f"test.partials.{suffix}",
            "aggregates": f"test.aggregates.{suffix}",
            "alerts": f"test.alerts.{suffix}",
            "dead_letter": f"test.dead.{suffix}",
            "partitions": 3,
        },  # type: ignore[arg-type]
        processor={
            "consumer_group": f"test-normalizer-{suffix}",
            "stream": {"app_id": f"test-stream-{suffix}", "batch_max_wait_seconds": 0.2},
        },  # type: ignore[arg-type]
        sink={
            "consumer_group": f"test-sink-{suffix}",
            "derived_consumer_group": f"test-derived-{suffix}",
            "flush_interval_seconds": 0.3,
        },  # type: ignore[arg-type]
        clickhouse=clickhouse,  # type: ignore[arg-type]
    )


def expected_minutes(spans: list[LlmSpan]) -> dict[tuple[Any, ...], tuple[int, int, int, Decimal]]:
    """(minute, service, model, tenant, prompt version) -> requests, errors, input tokens, cost."""
    totals: dict[tuple[Any, ...], tuple[int, int, int, Decimal]] = {}
    for span in spans:
        seconds = span.start_time_unix_nano // 10**9
        key = (
            seconds - seconds % 60,
            span.service_name,
            span.request_model,
            span.tenant,
            span.prompt_template_version or "",
        )
        requests, errors, tokens, cost = totals.get(key, (0, 0, 0, Decimal(0)))
        priced = span.cost is not None and span.cost.priced
        totals[key] = (
            requests + 1,
            errors + (span.status == "error"),
            tokens + (span.usage.input or 0),
            cost + (Decimal(span.cost.total or "0") if priced and span.cost else Decimal(0)),
        )
    return totals


def minutes_of(
    aggregates: dict[str, Aggregate],
) -> dict[tuple[Any, ...], tuple[int, int, int, Decimal]]:
    return {
        (a.window_start, a.service_name, a.request_model, a.tenant, a.prompt_template_version): (
            a.requests,
            a.errors,
            a.input_tokens,
            Decimal(a.cost_total),
        )
        for a in aggregates.values()
        if a.dimension_set == "model" and a.window_seconds == 60
    }


class AggregateReader:
    """Follows the aggregates topic, keeping the newest version of every window."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])
        self.latest: dict[str, Aggregate] = {}

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self._consumer.consume(1000, 0.2):
                if message.error() is None:
                    for aggregate in decode_aggregates(message.value() or b""):
                        current = self.latest.get(aggregate.window_key)
                        if current is None or current.version < aggregate.version:
                            self.latest[aggregate.window_key] = aggregate

    def wait_for(self, expected: dict[tuple[Any, ...], Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while minutes_of(self.latest) != expected:
            assert time.monotonic() < deadline, _difference(minutes_of(self.latest), expected)
            self.poll(0.5)

    def close(self) -> None:
        self._consumer.close()


def _difference(actual: dict[Any, Any], expected: dict[Any, Any]) -> str:
    wrong = {
        key: (actual.get(key), value) for key, value in expected.items() if actual.get(key) != value
    }
    extra = set(actual) - set(expected)
    sample = list(wrong.items())[:3]
    return f"{len(wrong)} windows differ (actual, expected): {sample}; extra {list(extra)[:3]}"


class _Thread:
    def __init__(self, component: Any) -> None:
        self.component = component
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.component.run(self.stop)
        except BaseException as error:
            self.errors.append(error)
            self.component.ready.set()

    def __enter__(self) -> _Thread:
        self.thread.start()
        assert self.component.ready.wait(60)
        assert not self.errors, self.errors
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.errors, self.errors


@pytest.fixture
def migrated_target(clickhouse_target: ClickHouseTarget) -> Iterator[ClickHouseTarget]:
    from llmtap.clickhouse import open_target

    client = open_target(clickhouse_target)
    Migrator(client, clickhouse_target.database, None).apply(lambda line: None)
    try:
        yield clickhouse_target
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{clickhouse_target.database}`")
        client.close()


def test_stored_aggregates_equal_totals_recomputed_from_the_stored_spans(
    kafka_broker: BrokerState, tmp_path: Path, migrated_target: ClickHouseTarget
) -> None:
    from llmtap.clickhouse import open_target

    settings = stream_settings(
        kafka_broker.bootstrap_servers,
        tmp_path,
        dsn=f"chdb://{migrated_target.path}",
        database=migrated_target.database,
    )
    now = int(time.time())
    spans = synthetic_spans(3_000, seed=11, start_seconds=now - 300)

    async def run_stream() -> None:
        app = StreamApp(settings)
        await app.start()
        try:
            produce_like_the_normalizer(settings, spans)
            reader = AggregateReader(kafka_broker.bootstrap_servers, settings.topics.aggregates)
            try:
                await asyncio.to_thread(reader.wait_for, expected_minutes(spans), 90)
            finally:
                reader.close()
        finally:
            await app.stop()

    with _Thread(ClickHouseSink(settings)), _Thread(DerivedSink(settings)):
        asyncio.run(run_stream())
        client = open_target(migrated_target)
        try:
            deadline = time.monotonic() + 60
            while True:
                stored = client.query(
                    "SELECT sum(requests), count() FROM llm_aggregates FINAL "
                    "WHERE window_seconds = 60"
                ).result_rows[0]
                spans_stored = client.query("SELECT count() FROM llm_spans").result_rows[0][0]
                if stored[0] == len(spans) and spans_stored == len(spans):
                    break
                assert time.monotonic() < deadline, (stored, spans_stored)
                time.sleep(0.5)
            # The same totals, recomputed by ClickHouse from the stored spans.
            mismatches = client.query(
                """
                WITH from_spans AS (
                    SELECT toStartOfMinute(timestamp) AS minute, tenant, service_name,
                        request_model, prompt_template_version, count() AS requests,
                        countIf(status = 'error') AS errors, sum(input_tokens) AS input_tokens,
                        sum(output_tokens) AS output_tokens, sum(cost_total) AS cost,
                        countIf(NOT priced) AS unpriced,
                        -- the sketch's rank rule: the element at floor(0.95 * (n - 1))
                        arraySort(groupArray(duration_ms))[
                            toUInt64(floor(0.95 * (count() - 1))) + 1] AS p95
                    FROM llm_spans
                    GROUP BY ALL
                ), from_stream AS (
                    SELECT window_start AS minute, tenant, service_name, request_model,
                        prompt_template_version, sum(requests) AS requests, sum(errors) AS errors,
                        sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                        sum(cost_total) AS cost, sum(unpriced_requests) AS unpriced,
                        max(latency_p95_ms) AS p95
                    FROM llm_aggregates FINAL
                    WHERE window_seconds = 60
                    GROUP BY ALL
                )
                SELECT minute, service_name, request_model, from_spans.requests,
                    from_stream.requests, from_spans.cost, from_stream.cost, from_spans.p95,
                    from_stream.p95, from_spans.unpriced, from_stream.unpriced
                FROM from_spans FULL OUTER JOIN from_stream
                    USING (minute, tenant, service_name, request_model, prompt_template_version)
                WHERE from_spans.requests != from_stream.requests
                    OR from_spans.errors != from_stream.errors
                    OR from_spans.input_tokens != from_stream.input_tokens
                    OR from_spans.output_tokens != from_stream.output_tokens
                    OR toDecimal128(from_spans.cost, 12) != toDecimal128(from_stream.cost, 12)
                    OR from_spans.unpriced != from_stream.unpriced
                    OR abs(from_spans.p95 - from_stream.p95) > 0.021 * from_spans.p95
                """
            ).result_rows
            assert mismatches == []
            hourly = client.query(
                "SELECT sum(requests), sum(cost_total) FROM llm_aggregates FINAL "
                "WHERE window_seconds = 3600"
            ).result_rows[0]
            assert hourly[0] == len(spans)
            users = client.query(
                "SELECT sum(requests) FROM llm_user_aggregates FINAL WHERE window_seconds = 60"
            ).result_rows[0][0]
            assert users == sum(1 for span in spans if span.user_id)
        finally:
            client.close()


def test_killing_the_worker_mid_stream_does_not_double_count(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    settings = stream_settings(kafka_broker.bootstrap_servers, tmp_path)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LLMTAP_")}
    environment.update(
        {
            "LLMTAP_DATA_DIR": str(tmp_path),
            "LLMTAP_LOCAL_KAFKA__JAR_CACHE_DIR": str(JAR_CACHE_DIR),
            "LLMTAP_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
            "LLMTAP_PROCESSOR__CONSUMER_GROUP": settings.processor.consumer_group,
            "LLMTAP_PROCESSOR__STREAM__APP_ID": settings.processor.stream.app_id,
            "LLMTAP_PROCESSOR__STREAM__BATCH_MAX_MESSAGES": "200",
            "LLMTAP_PROCESSOR__STREAM__BATCH_MAX_WAIT_SECONDS": "0.1",
            "LLMTAP_PROCESSOR__STREAM__COMMIT_INTERVAL_SECONDS": "0.5",
            # the stages under test only (the risk stage has tests of its own)
            "LLMTAP_PROCESSOR__RISK__ENABLED": "false",
            "LLMTAP_PROCESSOR__DRIFT__ENABLED": "false",
        }
    )
    for name, value in settings.topics.model_dump().items():
        environment[f"LLMTAP_TOPICS__{name.upper()}"] = str(value)
    now = int(time.time())
    spans = synthetic_spans(6_000, seed=12, start_seconds=now - 300)
    chunks = [spans[index : index + 1_500] for index in range(0, len(spans), 1_500)]
    reader = AggregateReader(kafka_broker.bootstrap_servers, settings.topics.aggregates)
    rng = random.Random(7)
    try:
        for number, chunk in enumerate(chunks):
            log_path = tmp_path / f"processor-{number}.log"
            with log_path.open("w") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "llmtap", "processor"],
                    env=environment,
                    stdout=log,
                    stderr=log,
                )
            try:
                deadline = time.monotonic() + 90
                while "running" not in log_path.read_text():
                    assert process.poll() is None, log_path.read_text()[-3000:]
                    assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                    time.sleep(0.2)
                produce_like_the_normalizer(settings, chunk)
                time.sleep(rng.uniform(0.5, 2.5))  # somewhere among the batches and commits
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
        # A last run catches up; the aggregates must equal the totals of every span, once.
        log_path = tmp_path / "processor-final.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "llmtap", "processor"],
                env=environment,
                stdout=log,
                stderr=log,
            )
        try:
            reader.wait_for(expected_minutes(spans), 120)
            reader.poll(3)  # nothing more (no double count) arrives after a while
            assert minutes_of(reader.latest) == expected_minutes(spans)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        assert process.returncode == 0, log_path.read_text()[-3000:]
    finally:
        reader.close()
