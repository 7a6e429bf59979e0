"""The normalizer as a Kafka stage: raw spans topic in, normalized spans topic out, exactly once.

Each batch is one Kafka transaction: the normalized spans, the dead letters and the consumer
offsets commit together or not at all, so a crash or a restart never loses a span nor writes it
twice (consumers read with ``isolation.level=read_committed``). Work is batched
(``consume(num_messages=...)``), and a message or span that cannot be normalized goes to the
dead-letter topic with the reason instead of blocking its partition.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmtap.heartbeat import Heartbeat
from llmtap.kafka import consumer_config, ensure_topics, producer_config
from llmtap.processors.normalize.normalizer import Normalizer
from llmtap.processors.pricing import PriceTable
from llmtap.schemas.llm_span import encode_span, span_key
from llmtap.schemas.otlp import OtlpDecodeError, decode_traces, sniff_encoding
from llmtap.schemas.topics import Header, dead_letter_topic, normalized_spans_topic, raw_spans_topic
from llmtap.settings import Settings
from llmtap.telemetry import ComponentTelemetry, Stage

logger = logging.getLogger(__name__)


class NormalizerStage:
    """Runs in its own thread: ``run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
        self._settings = settings
        self._config = settings.processor
        self._progress = progress or (lambda message: None)
        self.telemetry = ComponentTelemetry("normalizer")
        self.prices = PriceTable.load(self._config.price_overrides_file)
        self._normalizer = Normalizer(self.prices.price, self._config.recent_retrieval_traces)
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        topics = settings.topics
        ensure_topics(
            settings,
            [
                raw_spans_topic(topics.raw_spans, topics.partitions),
                normalized_spans_topic(topics.normalized_spans, topics.partitions),
                dead_letter_topic(topics.dead_letter, topics.partitions),
            ],
        )
        consumer = Consumer(
            consumer_config(
                settings, self._config.consumer_group, **{"client.id": "llmtap-normalizer"}
            )
        )
        producer = Producer(
            producer_config(
                settings,
                **{
                    "client.id": "llmtap-normalizer",
                    "transactional.id": f"{self._config.consumer_group}-{uuid.uuid4().hex[:12]}",
                    "message.max.bytes": topics.max_message_bytes + 64 * 1024,
                    "transaction.timeout.ms": 60_000,
                    "message.timeout.ms": 60_000,
                },
            )
        )
        try:
            producer.init_transactions(60)
            consumer.subscribe([topics.raw_spans])
            self._progress(
                f"normalizer: {topics.raw_spans} -> {topics.normalized_spans} "
                f"(prices {self.prices.version})"
            )
            self.ready.set()
            heartbeat = Heartbeat(settings.data_dir, "normalizer")
            while not stop.is_set():
                heartbeat.beat()
                messages = consumer.consume(
                    num_messages=self._config.batch_max_messages,
                    timeout=self._config.poll_timeout_seconds,
                )
                if messages:
                    self._process_batch(consumer, producer, messages)
        finally:
            consumer.close()
            producer.flush(30)

    def _process_batch(
        self, consumer: Consumer, producer: Producer, messages: list[Message]
    ) -> None:
        producer.begin_transaction()
        try:
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        self.telemetry.error(Stage.RECEIVING, "kafka_consume")
                        logger.warning("consume error: %s", error)
                    continue
                self._process_message(producer, message)
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 60)
            producer.commit_transaction(60)
        except KafkaException as exception:
            error = exception.args[0]
            if not error.txn_requires_abort() and not error.retriable():
                raise
            logger.warning(
                "normalizer transaction aborted, the batch will be read again: %s", error
            )
            self.telemetry.error(Stage.SENDING, "transaction_aborted")
            producer.abort_transaction(60)
            _rewind_to_committed(consumer)

    def _process_message(self, producer: Producer, message: Message) -> None:
        headers = dict(message.headers() or [])
        value = message.value() or b""
        tenant = _header_text(headers, Header.TENANT)
        received = _header_text(headers, Header.RECEIVED_AT_NANOS)
        try:
            request = decode_traces(value, sniff_encoding(value))
        except OtlpDecodeError as error:
            self._dead_letter(producer, message, value, f"undecodable raw message: {error}")
            return
        failed: list[tuple[Span, Exception]] = []
        spans = self._normalizer.normalize_request(
            request,
            tenant=tenant,
            received_at_unix_nano=int(received) if received and received.isdigit() else None,
            on_error=lambda span, error: failed.append((span, error)),
        )
        self.telemetry.received(len(spans) + len(failed), len(value))
        topic = self._settings.topics.normalized_spans
        sent = 0
        for span in spans:
            identity = bytes.fromhex(span.trace_id + span.span_id)
            if self._is_duplicate(identity):
                self.telemetry.discarded(1, "duplicate")
                continue
            _produce(producer, topic, encode_span(span), span_key(span))
            sent += 1
        self.telemetry.sent(sent)
        for bad_span, failure in failed:
            logger.warning("span %s cannot be normalized: %r", bad_span.span_id.hex(), failure)
            bad = ExportTraceServiceRequest()
            bad.resource_spans.add().scope_spans.add().spans.append(bad_span)
            self._dead_letter(
                producer,
                message,
                bad.SerializeToString(),
                f"normalization failed: {type(failure).__name__}: {failure}",
            )

    def _is_duplicate(self, identity: bytes) -> bool:
        window = self._config.dedupe_window_spans
        if window == 0:
            return False
        if identity in self._seen:
            self._seen.move_to_end(identity)
            return True
        self._seen[identity] = None
        if len(self._seen) > window:
            self._seen.popitem(last=False)
        return False

    def _dead_letter(self, producer: Producer, message: Message, value: bytes, reason: str) -> None:
        self.telemetry.discarded(1, "dead_letter")
        self.telemetry.error(Stage.PROCESSING, "normalize")
        headers = [
            *(message.headers() or []),
            (Header.DEAD_LETTER_REASON.value, reason[:2000].encode()),
            (Header.DEAD_LETTER_STAGE.value, b"normalizer"),
            (Header.DEAD_LETTER_SOURCE_TOPIC.value, str(message.topic()).encode()),
            ("llmtap.dead_letter.source_partition", str(message.partition()).encode()),
            ("llmtap.dead_letter.source_offset", str(message.offset()).encode()),
        ]
        _produce(producer, self._settings.topics.dead_letter, value, message.key(), headers)


def _produce(
    producer: Producer,
    topic: str,
    value: bytes,
    key: bytes | None,
    headers: list[tuple[str, Any]] | None = None,
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers)
            return
        except BufferError:
            producer.poll(0.1)  # the local queue is full: let deliveries drain


def _header_text(headers: dict[str, Any], name: Header) -> str | None:
    value = headers.get(name.value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None


def _rewind_to_committed(consumer: Consumer) -> None:
    assignment = consumer.assignment()
    if not assignment:
        return
    for partition in consumer.committed(assignment, timeout=30):
        offset = partition.offset if partition.offset >= 0 else 0  # never committed: start over
        consumer.seek(TopicPartition(partition.topic, partition.partition, offset))
    time.sleep(0.1)
