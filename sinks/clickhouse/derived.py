"""The sink for what the stream computes: aggregates, alerts, scores and embeddings.

These records are *versioned* (an aggregate window re-emitted with a higher version, an alert
re-emitted with its delivery outcome) or keyed by span, and their tables are
``ReplacingMergeTree``: a row written twice is the same row. So this sink can be simpler than
the span sink: it inserts each batch, then commits the offsets (at-least-once), and the table
engine makes the stored result exact. Queries read the current rows with ``FINAL``.

A record that cannot be decoded, or that ClickHouse rejects, goes to the dead-letter topic with
the reason; an unavailable ClickHouse is retried with backoff while consumption pauses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer

from llmtap.clickhouse import open_client
from llmtap.heartbeat import Heartbeat
from llmtap.kafka import consumer_config, dead_letter_headers, ensure_topics, producer_config
from llmtap.schemas.aggregates import Aggregate, AlertEvent, decode_aggregates, decode_alert
from llmtap.schemas.scores import decode_embedding, decode_score
from llmtap.schemas.topics import (
    TopicSpec,
    aggregates_topic,
    alerts_topic,
    drift_topic,
    embeddings_topic,
    scores_topic,
)
from llmtap.settings import Settings
from llmtap.sinks.clickhouse.drift_rows import DRIFT_COLUMNS, drift_rows
from llmtap.sinks.clickhouse.rows import (
    DATETIME64_9_NANOS,
    check_time,
    datetime64_from_millis,
    datetime_from_seconds,
)
from llmtap.sinks.clickhouse.sink import (
    close_quietly,
    commit_offsets,
    describe_insert_failure,
    looks_like_bad_data,
)
from llmtap.telemetry import ComponentTelemetry, Stage

logger = logging.getLogger(__name__)

AGGREGATE_COLUMNS = (
    "window_start",
    "window_seconds",
    "tenant",
    "service_name",
    "environment",
    "provider",
    "request_model",
    "operation",
    "prompt_template_version",
    "requests",
    "errors",
    "unpriced_requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "currency",
    "cost_total",
    "cost_input",
    "cost_output",
    "cost_cache_read",
    "cost_cache_write",
    "cost_reasoning",
    "latency_sketch",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "ttft_count",
    "ttft_sketch",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "finish_reasons",
    "late_spans",
    "version",
)
USER_AGGREGATE_COLUMNS = (
    "window_start",
    "window_seconds",
    "tenant",
    "user_id",
    "requests",
    "errors",
    "unpriced_requests",
    "input_tokens",
    "output_tokens",
    "currency",
    "cost_total",
    "late_spans",
    "version",
)
ALERT_COLUMNS = (
    "fired_at",
    "resolved_at",
    "tenant",
    "rule_id",
    "severity",
    "state",
    "group_key",
    "labels",
    "value",
    "threshold",
    "message",
    "delivery_status",
    "delivery_attempts",
    "delivered_at",
    "delivery_error",
    "dedup_key",
    "version",
)

Row = tuple[object, ...]


@dataclass(frozen=True)
class Route:
    """How the records of one topic become rows: ``rows(value)`` gives (table, row) pairs."""

    topic: TopicSpec
    rows: Callable[[bytes], list[tuple[str, Row]]]


@dataclass(frozen=True)
class Table:
    name: str
    columns: Sequence[str]


def aggregate_rows(value: bytes) -> list[tuple[str, Row]]:
    rows: list[tuple[str, Row]] = []
    for aggregate in decode_aggregates(value):
        if aggregate.dimension_set == "user":
            rows.append(("llm_user_aggregates", _user_aggregate_row(aggregate)))
        else:
            rows.append(("llm_aggregates", _aggregate_row(aggregate)))
    return rows


def _window_start(aggregate: Aggregate) -> datetime:
    return datetime_from_seconds("window_start", aggregate.window_start)


def _aggregate_row(a: Aggregate) -> Row:
    return (
        _window_start(a),
        a.window_seconds,
        a.tenant,
        a.service_name,
        a.environment,
        a.provider,
        a.request_model,
        a.operation,
        a.prompt_template_version,
        a.requests,
        a.errors,
        a.unpriced_requests,
        a.input_tokens,
        a.output_tokens,
        a.cache_read_tokens,
        a.cache_write_tokens,
        a.reasoning_tokens,
        a.currency,
        Decimal(a.cost_total),
        Decimal(a.cost_input),
        Decimal(a.cost_output),
        Decimal(a.cost_cache_read),
        Decimal(a.cost_cache_write),
        Decimal(a.cost_reasoning),
        a.latency_sketch,
        a.latency_p50_ms,
        a.latency_p95_ms,
        a.latency_p99_ms,
        a.ttft_count,
        a.ttft_sketch,
        a.ttft_p50_ms,
        a.ttft_p95_ms,
        a.finish_reasons,
        a.late_spans,
        a.version,
    )


def _user_aggregate_row(a: Aggregate) -> Row:
    return (
        _window_start(a),
        a.window_seconds,
        a.tenant,
        a.user_id,
        a.requests,
        a.errors,
        a.unpriced_requests,
        a.input_tokens,
        a.output_tokens,
        a.currency,
        Decimal(a.cost_total),
        a.late_spans,
        a.version,
    )


def alert_rows(value: bytes) -> list[tuple[str, Row]]:
    alert = decode_alert(value)
    return [("alerts", _alert_row(alert))]


def _alert_row(alert: AlertEvent) -> Row:
    return (
        datetime64_from_millis("fired_at_ms", alert.fired_at_ms),
        datetime64_from_millis("resolved_at_ms", alert.resolved_at_ms),
        alert.tenant,
        alert.rule_id,
        alert.severity,
        alert.state,
        alert.group_key,
        alert.labels,
        alert.value,
        alert.threshold,
        alert.message,
        alert.delivery_status,
        alert.delivery_attempts,
        datetime64_from_millis("delivered_at_ms", alert.delivered_at_ms),
        alert.delivery_error,
        # one row per notification: firing and resolved events of one firing are two rows
        f"{alert.event_id}:{alert.state}",
        alert.version,
    )


SCORE_COLUMNS = (
    "timestamp",
    "tenant",
    "trace_id",
    "span_id",
    "service_name",
    "request_model",
    "prompt_template_version",
    "risk_score",
    "support_min",
    "support_mean",
    "answer_context_similarity",
    "answer_question_similarity",
    "has_context",
    "injection_score",
    "injection_flag",
    "sampling_weight",
    "model_version",
    "details",
)
EMBEDDING_COLUMNS = (
    "timestamp",
    "tenant",
    "trace_id",
    "span_id",
    "kind",
    "model",
    "content_hash",
    "vector",
)


def score_rows(value: bytes) -> list[tuple[str, Row]]:
    s = decode_score(value)
    row: Row = (
        check_time("timestamp", s.timestamp, DATETIME64_9_NANOS),  # DateTime64(9) ticks
        s.tenant,
        s.trace_id,
        s.span_id,
        s.service_name,
        s.request_model,
        s.prompt_template_version,
        s.risk_score,
        s.support_min,
        s.support_mean,
        s.answer_context_similarity,
        s.answer_question_similarity,
        int(s.has_context),
        s.injection_score,
        int(s.injection_flag),
        s.sampling_weight,
        s.model_version,
        s.details,
    )
    return [("span_scores", row)]


def embedding_rows(value: bytes) -> list[tuple[str, Row]]:
    e = decode_embedding(value)
    row: Row = (
        check_time("timestamp", e.timestamp, DATETIME64_9_NANOS),
        e.tenant,
        e.trace_id,
        e.span_id,
        e.kind,
        e.model,
        e.content_hash,
        e.vector,
    )
    return [("span_embeddings", row)]


TABLES = {
    "llm_aggregates": Table("llm_aggregates", AGGREGATE_COLUMNS),
    "llm_user_aggregates": Table("llm_user_aggregates", USER_AGGREGATE_COLUMNS),
    "alerts": Table("alerts", ALERT_COLUMNS),
    "span_scores": Table("span_scores", SCORE_COLUMNS),
    "span_embeddings": Table("span_embeddings", EMBEDDING_COLUMNS),
    "drift_results": Table("drift_results", DRIFT_COLUMNS),
}


def default_routes(settings: Settings) -> list[Route]:
    topics = settings.topics
    return [
        Route(aggregates_topic(topics.aggregates), aggregate_rows),
        Route(alerts_topic(topics.alerts), alert_rows),
        Route(scores_topic(topics.scores, topics.partitions), score_rows),
        Route(embeddings_topic(topics.embeddings, topics.partitions), embedding_rows),
        Route(drift_topic(topics.drift, topics.partitions), drift_rows),
    ]


class DerivedSink:
    """Runs in its own thread: ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        progress: Callable[[str], None] | None = None,
        routes: list[Route] | None = None,
    ) -> None:
        self._settings = settings
        self._config = settings.sink
        self._routes = {route.topic.name: route for route in routes or default_routes(settings)}
        self._progress = progress or (lambda message: None)
        self.telemetry = ComponentTelemetry("sink_derived")
        self.ready = threading.Event()
        self._client: Any = None

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        ensure_topics(settings, [route.topic for route in self._routes.values()])
        self._client = open_client(settings)
        consumer = Consumer(
            consumer_config(
                settings,
                self._config.derived_consumer_group,
                **{"client.id": "llmtap-sink-derived", "max.poll.interval.ms": 3_600_000},
            )
        )
        self._dead_letters = Producer(
            producer_config(settings, **{"client.id": "llmtap-sink-derived"})
        )
        try:
            consumer.subscribe(list(self._routes))
            tables = sorted(TABLES)
            self._progress(f"sink: {', '.join(self._routes)} -> ClickHouse {', '.join(tables)}")
            self.ready.set()
            heartbeat = Heartbeat(settings.data_dir, "sink_derived")
            while not stop.is_set():
                heartbeat.beat()
                messages = consumer.consume(
                    num_messages=5_000, timeout=self._config.flush_interval_seconds
                )
                if messages:
                    self._write(consumer, messages)
        finally:
            close_quietly(consumer)
            self._dead_letters.flush(30)
            self._client.close()

    def _write(self, consumer: Consumer, messages: list[Message]) -> None:
        rows: dict[str, list[tuple[Row, Message]]] = defaultdict(list)
        received_bytes = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self.telemetry.error(Stage.RECEIVING, "kafka_consume")
                continue
            value = message.value() or b""
            received_bytes += len(value)
            try:
                for table, row in self._routes[str(message.topic())].rows(value):
                    rows[table].append((row, message))
            except Exception as problem:  # undecodable: evidence goes to the dead letters
                self._dead_letter(message, f"undecodable record: {problem}")
        self.telemetry.received(len(messages), received_bytes)
        for table, table_rows in rows.items():
            self._insert_with_retry(TABLES[table], table_rows)
        self._dead_letters.flush(30)
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if positions:
            commit_offsets(consumer, positions)

    def _insert_with_retry(self, table: Table, rows: list[tuple[Row, Message]]) -> None:
        delay = self._config.retry_initial_seconds
        while True:
            try:
                self._insert(table, [row for row, _ in rows])
                self.telemetry.sent(len(rows))
                return
            except Exception as problem:
                if _is_bad_data(problem):
                    self._insert_one_by_one(table, rows)
                    return
                self.telemetry.error(Stage.SENDING, type(problem).__name__)
                logger.warning(
                    "ClickHouse insert into %s failed (%s); the rows stay in Kafka, "
                    "retrying in %.1f s",
                    table.name,
                    describe_insert_failure(problem, self._settings),
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, self._config.retry_max_seconds)

    def _insert_one_by_one(self, table: Table, rows: list[tuple[Row, Message]]) -> None:
        for row, message in rows:
            try:
                self._insert(table, [row])
                self.telemetry.sent(1)
            except Exception as problem:
                if not _is_bad_data(problem):
                    raise
                self._dead_letter(message, f"ClickHouse rejected the row: {problem}")

    def _insert(self, table: Table, rows: list[Row]) -> None:
        self._client.insert(
            table.name, rows, column_names=list(table.columns), settings={"async_insert": 0}
        )

    def _dead_letter(self, message: Message, reason: str) -> None:
        self.telemetry.discarded(1, "dead_letter")
        self.telemetry.error(Stage.PROCESSING, "invalid_record")
        logger.warning(
            "dead letter from %s[%s]@%s: %s",
            message.topic(),
            message.partition(),
            message.offset(),
            reason[:300],
        )
        self._dead_letters.produce(
            self._settings.topics.dead_letter,
            value=message.value(),
            key=message.key(),
            headers=dead_letter_headers(message, reason, "sink", keep_source_headers=False),
        )


def _is_bad_data(problem: BaseException) -> bool:
    return looks_like_bad_data(problem)
