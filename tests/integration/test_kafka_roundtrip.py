"""Messages go through the real local broker with llmtap's producer and consumer defaults."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from llmtap.kafka import check_reachable, consumer_config, producer_config
from llmtap.settings import Settings

pytestmark = pytest.mark.integration


def test_produced_messages_are_consumed_with_keys_and_headers(
    kafka_settings: Settings, kafka_topic: str
) -> None:
    producer = Producer(producer_config(kafka_settings))
    delivered: list[tuple[int, int]] = []
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: object) -> None:
        if error is not None:
            failures.append(error)
        else:
            delivered.append((message.partition(), message.offset()))  # type: ignore[attr-defined]

    sent = {f"trace-{index}".encode(): f"span payload {index}".encode() for index in range(20)}
    for key, value in sent.items():
        producer.produce(
            kafka_topic, key=key, value=value, headers=[("h", b"v")], on_delivery=on_delivery
        )
    assert producer.flush(30) == 0
    assert failures == []
    assert len(delivered) == len(sent)

    consumer = Consumer(consumer_config(kafka_settings, group_id=f"{kafka_topic}.group"))
    consumer.subscribe([kafka_topic])
    received: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 60
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=100, timeout=1.0):
                assert message.error() is None, message.error()
                assert message.headers() == [("h", b"v")]
                received[message.key()] = message.value()
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert received == sent


def test_same_key_lands_on_the_same_partition(kafka_settings: Settings, kafka_topic: str) -> None:
    producer = Producer(producer_config(kafka_settings))
    partitions: set[int] = set()
    for index in range(10):
        producer.produce(
            kafka_topic,
            key=b"one-trace",
            value=str(index).encode(),
            on_delivery=lambda error, message: partitions.add(message.partition()),
        )
    assert producer.flush(30) == 0
    assert len(partitions) == 1


def test_check_reachable_reports_the_running_broker(kafka_settings: Settings) -> None:
    assert check_reachable(kafka_settings) == kafka_settings.kafka.bootstrap_servers
