"""The stream worker's committed offsets keep up with a transactional producer, and what it
cannot read goes to the dead-letter topic.

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
from llmtap.schemas.aggregate_inputs import aggregate_input_of, encode_aggregate_inputs
from llmtap.schemas.topics import aggregate_inputs_topic
from llmtap.settings import Settings
from tests.integration.processors.test_stream_aggregates import (
    AggregateReader,
    expected_minutes,
    stream_settings,
    synthetic_spans,
)

pytestmark = pytest.mark.integration

SPANS = 900
OFFSET_HEADER = "llmtap.dead_letter.source_offset"
PER_TRANSACTION = 6


def _produce_in_small_transactions(settings: Settings, bootstrap: str, spans: list) -> None:
    topics = settings.topics
    ensure_topics(settings, [aggregate_inputs_topic(topics.aggregate_inputs, topics.partitions)])
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": uuid.uuid4().hex})
    producer.init_transactions(30)
    for start in range(0, len(spans), PER_TRANSACTION):
        producer.begin_transaction()
        batch = [aggregate_input_of(s) for s in spans[start : start + PER_TRANSACTION]]
        for value in encode_aggregate_inputs([span for span in batch if span.is_llm_call]):
            producer.produce(topics.aggregate_inputs, value)
        producer.commit_transaction(30)


def _committed_and_end(settings: Settings, bootstrap: str) -> list[tuple[int, int]]:
    """(committed offset, high watermark) of each aggregate inputs partition for the worker."""
    topic = settings.topics.aggregate_inputs
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": settings.processor.stream.app_id}
    )
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        return [
            (max(tp.offset, 0), consumer.get_watermark_offsets(tp, timeout=10)[1])
            for tp in consumer.committed(partitions, timeout=10)
        ]
    finally:
        consumer.close()


def _unconsumed(settings: Settings, bootstrap: str) -> int:
    """Records after the aggregate group's committed offsets, not counting a final marker."""
    # The high watermark sits after the last transaction's commit marker, which is never
    # delivered and so never acked: one offset per partition stays uncommitted.
    return sum(
        max(0, high - 1 - committed) for committed, high in _committed_and_end(settings, bootstrap)
    )


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
    """Records of the aggregate inputs topic after the aggregate group's committed offsets."""
    return sum(high - committed for committed, high in _committed_and_end(settings, bootstrap))


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
    ensure_topics(
        settings,
        [aggregate_inputs_topic(settings.topics.aggregate_inputs, settings.topics.partitions)],
    )
    producer = Producer({"bootstrap.servers": bootstrap})
    for start in range(0, len(spans), 10):  # messages of 10 spans in all 3 partitions
        batch = [aggregate_input_of(span) for span in spans[start : start + 10]]
        for value in encode_aggregate_inputs(batch):
            producer.produce(settings.topics.aggregate_inputs, value, partition=start // 10 % 3)
    assert producer.flush(30) == 0

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


def test_an_undecodable_inputs_message_is_dead_lettered_and_the_rest_counted(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = stream_settings(bootstrap, tmp_path)
    topics = settings.topics
    spans = synthetic_spans(300, seed=9, start_seconds=int(time.time()) - 300)
    garbage = b"\x91\xc1 not an aggregate inputs message"

    def produce() -> None:
        ensure_topics(
            settings, [aggregate_inputs_topic(topics.aggregate_inputs, topics.partitions)]
        )
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topics.aggregate_inputs, garbage, key=b"bad", partition=0)
        producer.produce(topics.aggregate_inputs, None, key=b"tombstone", partition=0)
        for value in encode_aggregate_inputs([aggregate_input_of(span) for span in spans]):
            producer.produce(topics.aggregate_inputs, value, partition=0)
        assert producer.flush(30) == 0

    async def scenario() -> None:
        app = StreamApp(settings)
        await app.start()
        try:
            await asyncio.to_thread(produce)
            reader = AggregateReader(bootstrap, topics.aggregates)
            try:
                await asyncio.to_thread(reader.wait_for, expected_minutes(spans), 90)
            finally:
                reader.close()
        finally:
            await app.stop()

    asyncio.run(scenario())
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topics.dead_letter])
    letters = []
    deadline = time.monotonic() + 30
    while len(letters) < 2 and time.monotonic() < deadline:
        letters += [m for m in consumer.consume(10, 1.0) if m.error() is None]
    consumer.close()
    letters.sort(key=lambda letter: int(dict(letter.headers() or [])[OFFSET_HEADER]))
    assert [(letter.key(), letter.value()) for letter in letters] == [
        (b"bad", garbage),
        (b"tombstone", b""),
    ]
    headers = dict(letters[0].headers() or [])
    assert headers["llmtap.dead_letter.stage"] == b"stream"
    assert headers["llmtap.dead_letter.reason"].startswith(b"undecodable: ")
    assert headers["llmtap.dead_letter.source_topic"] == topics.aggregate_inputs.encode()
    assert headers[OFFSET_HEADER] == b"0"
