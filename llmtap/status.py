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
    # Offsets after the committed ones that hold nothing a consumer receives: the commit and
    # abort markers of transactions and the records of aborted ones (a normalizer killed
    # mid-transaction). A caught-up consumer may never commit past them.
    unreadable: int = 0

    @property
    def lag(self) -> int:
        return max(0, self.end_offsets - self.committed - self.unreadable)


def kafka_lag(settings: Settings) -> list[StageLag]:
    from confluent_kafka import Consumer, TopicPartition

    stages = [
        ("normalizer", settings.topics.raw_spans, settings.processor.consumer_group),
        ("sink", settings.topics.normalized_spans, settings.sink.consumer_group),
        ("aggregate", settings.topics.aggregate_inputs, settings.processor.stream.app_id),
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
            ends = {tp.partition: high_watermark(consumer, tp, timeout) for tp in partitions}
            committed = {
                tp.partition: max(0, tp.offset)
                for tp in consumer.committed(partitions, timeout=timeout)
            }
        finally:
            consumer.close()
        behind = {p: (committed[p], end) for p, end in ends.items() if committed[p] < end}
        unreadable = sum(end - start for start, end in nothing_to_read(settings, topic, behind))
        results.append(
            StageLag(stage, topic, group, sum(ends.values()), sum(committed.values()), unreadable)
        )
    return results


def nothing_to_read(
    settings: Settings, topic: str, ranges: dict[int, tuple[int, int]], wait: float = 3.0
) -> list[tuple[int, int]]:
    """The ``(start, end)`` offset ranges, by partition, in which a ``read_committed``
    consumer receives no record (only markers and aborted records lie there).

    Reads from each range's start until a record arrives or the consumer's position (which
    steps over markers and aborted records) reaches the end. A range not settled within
    ``wait`` seconds counts as readable: lag is never hidden.
    """
    from confluent_kafka import Consumer, TopicPartition

    if not ranges:
        return []
    probe = Consumer(
        client_config(
            settings,
            **{
                "group.id": "llmtap-status-probe",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "client.id": "llmtap-status-probe",
            },
        )
    )
    open_ranges = dict(ranges)
    empty = []
    try:
        probe.assign([TopicPartition(topic, p, start) for p, (start, _) in ranges.items()])
        deadline = time.monotonic() + wait
        while open_ranges and time.monotonic() < deadline:
            message = probe.poll(0.1)
            if message is not None and message.error() is None:
                open_ranges.pop(message.partition() or 0, None)
            positions = probe.position([TopicPartition(topic, p) for p in open_ranges])
            for position in positions:
                start, end = open_ranges[position.partition]
                if position.offset >= end:
                    empty.append((start, end))
                    del open_ranges[position.partition]
    finally:
        probe.close()
    return empty


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
