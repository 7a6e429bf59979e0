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


def _unconsumed(settings: Settings, bootstrap: str) -> int:
    """Records after the aggregate group's committed offsets, not counting a final marker."""
    topic = settings.topics.aggregate_inputs
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
