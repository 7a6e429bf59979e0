"""`llmtap status`: where every span is, stage by stage, and how far each stage is behind.

Kafka says how many messages each topic holds and how far each consumer group (normalizer, sink)
has committed; ClickHouse says how many spans are stored. Lag 0 at every stage and equal counts
mean nothing is in flight and nothing was lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from llmtap.kafka import client_config
from llmtap.processors.alerts.config import delivery_group
from llmtap.settings import Settings


@dataclass(frozen=True)
class StageLag:
    stage: str
    topic: str
    group: str
    end_offsets: int
    committed: int

    @property
    def lag(self) -> int:
        return max(0, self.end_offsets - self.committed)


def kafka_lag(settings: Settings) -> list[StageLag]:
    from confluent_kafka import Consumer, TopicPartition

    stages = [
        ("normalizer", settings.topics.raw_spans, settings.processor.consumer_group),
        ("sink", settings.topics.normalized_spans, settings.sink.consumer_group),
        ("aggregate", settings.topics.normalized_spans, settings.processor.stream.app_id),
        ("merge", settings.topics.aggregate_partials, settings.processor.stream.app_id),
        ("sink-derived", settings.topics.aggregates, settings.sink.derived_consumer_group),
        ("alert-delivery", settings.topics.alerts, delivery_group(settings)),
        ("risk", settings.topics.normalized_spans, settings.processor.risk.consumer_group),
        ("drift", settings.topics.normalized_spans, settings.processor.drift.consumer_group),
    ]
    timeout = settings.kafka.request_timeout_seconds
    results = []
    for stage, topic, group in stages:
        consumer = Consumer(
            client_config(settings, **{"group.id": group, "enable.auto.commit": False})
        )
        try:
            metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if metadata is None or metadata.error is not None:
                results.append(StageLag(stage, topic, group, 0, 0))
                continue
            partitions = [TopicPartition(topic, p) for p in metadata.partitions]
            end = sum(high_watermark(consumer, tp, timeout) for tp in partitions)
            committed = sum(
                max(0, tp.offset) for tp in consumer.committed(partitions, timeout=timeout)
            )
            results.append(StageLag(stage, topic, group, end, committed))
        finally:
            consumer.close()
    return results


def high_watermark(consumer: Any, partition: Any, timeout: float) -> int:
    """The partition's end offset, asking again while its leader is moving or being elected
    (a topic created a moment ago answers NOT_LEADER_FOR_PARTITION for a while)."""
    from confluent_kafka import KafkaError, KafkaException

    transient = {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(consumer.get_watermark_offsets(partition, timeout=timeout)[1])
        except KafkaException as problem:
            error = problem.args[0] if problem.args else None
            retry = isinstance(error, KafkaError) and (
                error.code() in transient or error.retriable()
            )
            if not retry or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def stored_spans(client: Any) -> dict[str, int]:
    """Stored spans by type, and the distinct span count (equal when no replay duplicated one)."""
    rows = client.query(
        "SELECT span_type, count(), uniqExact(trace_id, span_id) FROM llm_spans GROUP BY span_type"
    ).result_rows
    counts = {str(span_type): int(count) for span_type, count, _ in rows}
    counts["total"] = sum(int(count) for _, count, _ in rows)
    counts["distinct"] = sum(int(distinct) for _, _, distinct in rows)
    return counts


def clickhouse_health(client: Any) -> str:
    """The store's version and uptime: proof that it answers queries, not just connections."""
    version, uptime_seconds = client.query("SELECT version(), uptime()").result_rows[0]
    return f"v{version}, up {int(uptime_seconds)} s"


def stored_recently(client: Any, seconds: int = 3600) -> int:
    """Spans stored whose start time lies in the last ``seconds`` (all copies of a replay)."""
    return int(
        client.query(
            "SELECT count() FROM llm_spans "
            "WHERE timestamp >= now64(9) - toIntervalSecond({seconds:UInt32})",
            parameters={"seconds": seconds},
        ).result_rows[0][0]
    )
