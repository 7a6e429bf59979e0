"""The stream worker's committed offsets keep up with a transactional producer.

The normalizer writes spans in small Kafka transactions; each leaves a commit marker (an offset
no consumer receives) in the topic. faust 0.15 mis-recorded the offsets skipped before a message
and then committed one transaction per commit interval: processing kept up, the committed offset
did not, so a restart re-read everything and ``llmtap status`` showed a growing lag.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from llmtap.dev.kafka_broker import BrokerState
from llmtap.kafka import ensure_topics
from llmtap.processors.stream.app import StreamApp
from llmtap.schemas.llm_span import encode_span, span_key
from llmtap.schemas.topics import normalized_spans_topic
from llmtap.settings import Settings
from tests.integration.processors.test_stream_aggregates import (
    AggregateReader,
    expected_minutes,
    produce_like_the_normalizer,
    stream_settings,
    synthetic_spans,
)

pytestmark = pytest.mark.integration

SPANS = 900
PER_TRANSACTION = 6


def _produce_in_small_transactions(settings: Settings, bootstrap: str, spans: list) -> None:
    topics = settings.topics
    ensure_topics(settings, [normalized_spans_topic(topics.normalized_spans, topics.partitions)])
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": uuid.uuid4().hex})
    producer.init_transactions(30)
    for start in range(0, len(spans), PER_TRANSACTION):
        producer.begin_transaction()
        for span in spans[start : start + PER_TRANSACTION]:
            producer.produce(topics.normalized_spans, encode_span(span), key=span_key(span))
        producer.commit_transaction(30)


def _unconsumed(settings: Settings, bootstrap: str) -> int:
    """Records after the aggregate group's committed offsets, not counting a final marker."""
    topic = settings.topics.normalized_spans
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": settings.processor.stream.app_id}
    )
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        committed = consumer.committed(partitions, timeout=10)
        behind = 0
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            # The high watermark sits after the last transaction's commit marker, which is
            # never delivered and so never acked: one offset per partition stays uncommitted.
            behind += max(0, high - 1 - max(tp.offset, 0))
        return behind
    finally:
        consumer.close()


def test_committed_offsets_step_over_transaction_markers(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = stream_settings(bootstrap, tmp_path)
    spans = synthetic_spans(SPANS, seed=5, start_seconds=int(time.time()) - 300)

    async def scenario() -> int:
        app = StreamApp(settings)
        await app.start()
        try:
            await asyncio.to_thread(_produce_in_small_transactions, settings, bootstrap, spans)
            reader = AggregateReader(bootstrap, settings.topics.aggregates)
            try:
                await asyncio.to_thread(reader.wait_for, expected_minutes(spans), 90)
            finally:
                reader.close()
            # Processing is complete; within a few commit intervals the commits must be too.
            # (Before the fix, 150 transactions took one commit interval each.)
            deadline = time.monotonic() + 15
            behind = await asyncio.to_thread(_unconsumed, settings, bootstrap)
            while behind and time.monotonic() < deadline:
                await asyncio.sleep(1)
                behind = await asyncio.to_thread(_unconsumed, settings, bootstrap)
            return behind
        finally:
            await app.stop()

    assert asyncio.run(scenario()) == 0


def _committed_behind(settings: Settings, bootstrap: str) -> int:
    """Records of the normalized topic after the aggregate group's committed offsets."""
    topic = settings.topics.normalized_spans
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": settings.processor.stream.app_id}
    )
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        behind = 0
        for tp in consumer.committed(partitions, timeout=10):
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            behind += high - max(tp.offset, 0)
        return behind
    finally:
        consumer.close()


def _records_in(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()


def test_offsets_are_committed_only_after_the_table_changes_are_acknowledged(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    """A slow changelog (each record 0.15 s to leave the buffer) must hold the commit back.

    faust's own flush before a commit gives up after 0.1 s without a record sent; it then
    committed offsets whose table changes were still buffered, which a SIGKILL would lose.
    """
    bootstrap = kafka_broker.bootstrap_servers
    settings = stream_settings(bootstrap, tmp_path)
    spans = synthetic_spans(200, seed=8, start_seconds=int(time.time()) - 300)
    produce_like_the_normalizer(settings, spans)

    async def scenario() -> tuple[int, int]:
        app = StreamApp(settings)
        table = app.app.tables["aggregate-windows"]
        changelog = table.changelog_topic
        publish = changelog.publish_message
        sent = 0

        async def slow_publish(fut: Any, wait: bool = False) -> Any:
            nonlocal sent
            await asyncio.sleep(0.15)
            sent += 1
            return await publish(fut, wait=wait)

        changelog.publish_message = slow_publish
        queued = 0
        send_changelog = table.send_changelog

        def counted_send_changelog(*args: Any, **kwargs: Any) -> Any:
            nonlocal queued
            queued += 1
            return send_changelog(*args, **kwargs)

        table.send_changelog = counted_send_changelog
        await app.start()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if await asyncio.to_thread(_committed_behind, settings, bootstrap) == 0:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the worker never committed the whole topic")
            stored = await asyncio.to_thread(
                _records_in, bootstrap, changelog.get_topic_name(), settings.topics.partitions
            )
            return stored, queued
        finally:
            await app.stop()

    stored, queued = asyncio.run(scenario())
    assert queued > 0
    # Every change made for the committed offsets is in Kafka by the time they are committed.
    assert stored == queued, f"{queued - stored} of {queued} table changes not yet written"
