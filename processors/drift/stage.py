"""The drift detector as a Kafka stage: spans and embeddings in, drift results out, in transactions.

Reads the normalized spans topic and the embeddings topic in its own consumer group
(``processor.drift.consumer_group``, default ``llmtap-drift``) with the range assignor: both
topics are keyed by trace id with the same partition count, so a span and its embeddings reach
the same worker, where ``join.SpanJoin`` gives each embedding its span's key. Results go to the
drift topic (``topics.drift``), keyed by drift key and feature; each batch is one Kafka
transaction with the consumer offsets, as in the normalizer.

State (references, windows, the join) lives in memory only. After a restart, a rebalance or an
aborted transaction the stage starts from the committed offsets with empty state: each key's
reference is rebuilt from the traffic that follows (``reference_events`` events of warm-up under
the fixed policies, ``reservoir_size`` under trailing), and no results are emitted for a key
until then. Results are versioned by emission time, so a window emitted again replaces its
earlier row in ``drift_results`` (``ReplacingMergeTree(version)``).

With several workers, each tests the traces of its own partitions: a uniform sample of every
key's traffic (partitions are by trace id), with its own windows and rows.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import msgspec
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from llmtap.heartbeat import Heartbeat
from llmtap.kafka import (
    consumer_config,
    dead_letter_headers,
    ensure_topics,
    init_transactions_patiently,
    produce_with_backpressure,
    producer_config,
    report_consume_error,
    rewind_to_committed,
)
from llmtap.processors.drift.detector import DriftDetector
from llmtap.processors.drift.join import SpanJoin
from llmtap.schemas.drift import DriftResult, drift_result_key, encode_drift_result
from llmtap.schemas.llm_span import decode_span
from llmtap.schemas.scores import decode_embedding
from llmtap.schemas.topics import (
    dead_letter_topic,
    drift_topic,
    embeddings_topic,
    normalized_spans_topic,
)
from llmtap.settings import Settings
from llmtap.telemetry import ComponentTelemetry, Stage

logger = logging.getLogger(__name__)

STAGE_NAME = "drift"


class DriftStage:
    """Runs in its own thread: ``run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
        self._settings = settings
        self._config = settings.processor.drift
        self._progress = progress or (lambda message: None)
        self.telemetry = ComponentTelemetry(STAGE_NAME)
        self.detector = DriftDetector(self._config)
        self.join = SpanJoin(self._config.span_index_entries, self._config.pending_embeddings)
        self._dropped_reported = (0, 0, 0)
        self._next_tick = 0.0
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        topics = settings.topics
        ensure_topics(
            settings,
            [
                normalized_spans_topic(topics.normalized_spans, topics.partitions),
                embeddings_topic(topics.embeddings, topics.partitions),
                drift_topic(topics.drift, topics.partitions),
                dead_letter_topic(topics.dead_letter, topics.partitions),
            ],
        )
        consumer = Consumer(
            consumer_config(
                settings,
                self._config.consumer_group,
                **{
                    "client.id": "llmtap-drift",
                    # Range assignment gives one worker the same partition numbers of both
                    # topics: a span and its embeddings (same trace id key) meet in one worker.
                    "partition.assignment.strategy": "range",
                },
            )
        )
        producer = Producer(
            producer_config(
                settings,
                **{
                    "client.id": "llmtap-drift",
                    "transactional.id": f"{self._config.consumer_group}-{uuid.uuid4().hex[:12]}",
                    "message.max.bytes": topics.max_message_bytes + 64 * 1024,
                    "transaction.timeout.ms": 60_000,
                    "message.timeout.ms": 60_000,
                },
            )
        )
        try:
            init_transactions_patiently(producer, "drift", stop)
            consumer.subscribe(
                [topics.normalized_spans, topics.embeddings], on_assign=self._on_rebalance
            )
            self._progress(
                f"drift: {topics.normalized_spans} + {topics.embeddings} -> {topics.drift} "
                f"(reference {self._config.reference_policy}, windows of "
                f"{self._config.window_events} events / {self._config.window_seconds:g} s)"
            )
            self.ready.set()
            heartbeat = Heartbeat(settings.data_dir, STAGE_NAME)
            while not stop.is_set():
                heartbeat.beat()
                messages = consumer.consume(
                    num_messages=self._config.batch_max_messages,
                    timeout=settings.processor.poll_timeout_seconds,
                )
                self._process_batch(consumer, producer, messages)
        finally:
            consumer.close()
            producer.flush(30)

    def _process_batch(
        self, consumer: Consumer, producer: Producer, messages: list[Message]
    ) -> None:
        results: list[DriftResult] = []
        if time.monotonic() >= self._next_tick:
            # windows of quiet keys close on the stream's event time, once a second at most
            results = self.detector.tick()
            self._next_tick = time.monotonic() + 1.0
        if not messages and not results:
            return
        producer.begin_transaction()
        try:
            embeddings_topic_name = self._settings.topics.embeddings
            for message in messages:
                error = message.error()
                if error is not None:
                    report_consume_error(error, self.telemetry, logger)
                    continue
                value = message.value() or b""
                self.telemetry.received(1, len(value))
                if message.topic() == embeddings_topic_name:
                    results += self._process_embedding(producer, message, value)
                else:
                    results += self._process_span(producer, message, value)
            for result in results:
                produce_with_backpressure(
                    producer,
                    self._settings.topics.drift,
                    encode_drift_result(result),
                    drift_result_key(result),
                )
            self.telemetry.sent(len(results))
            self._report_drops()
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            if positions:
                producer.send_offsets_to_transaction(
                    positions, consumer.consumer_group_metadata(), 60
                )
            producer.commit_transaction(60)
        except KafkaException as exception:
            error = exception.args[0]
            if not error.txn_requires_abort() and not error.retriable():
                raise
            logger.warning("drift transaction aborted, the batch will be read again: %s", error)
            self.telemetry.error(Stage.SENDING, "transaction_aborted")
            producer.abort_transaction(60)
            # The state took events that will be read again: start over from the offsets.
            self._reset_state()
            rewind_to_committed(consumer)

    def _process_span(
        self, producer: Producer, message: Message, value: bytes
    ) -> list[DriftResult]:
        try:
            span = decode_span(value)
        except (msgspec.ValidationError, msgspec.DecodeError) as failure:
            self._dead_letter(producer, message, value, f"not a normalized span: {failure}")
            return []
        if span.span_type != "llm":
            return []
        key_fields, waiting = self.join.add_span(span)
        results = self.detector.observe_span(span)
        for embedding in waiting:
            results += self.detector.observe_embedding(embedding, key_fields)
        return results

    def _process_embedding(
        self, producer: Producer, message: Message, value: bytes
    ) -> list[DriftResult]:
        try:
            embedding = decode_embedding(value)
        except (msgspec.ValidationError, msgspec.DecodeError) as failure:
            self._dead_letter(producer, message, value, f"not a span embedding: {failure}")
            return []
        if embedding.kind not in self._config.embedding_kinds:
            return []
        key_fields = self.join.add_embedding(embedding)
        if key_fields is None:
            return []  # held until its span arrives
        return self.detector.observe_embedding(embedding, key_fields)

    def _report_drops(self) -> None:
        counters = self.detector.counters
        now = (self.join.dropped_embeddings, counters.stale_events, counters.keys_evicted)
        before = self._dropped_reported
        for reason, count in zip(
            ("drift_join_overflow", "drift_stale_version", "drift_key_evicted"),
            (now[0] - before[0], now[1] - before[1], now[2] - before[2]),
            strict=True,
        ):
            if count:
                self.telemetry.discarded(count, reason)
        self._dropped_reported = now

    def _reset_state(self) -> None:
        self.detector = DriftDetector(self._config)
        self.join = SpanJoin(self._config.span_index_entries, self._config.pending_embeddings)
        self._dropped_reported = (0, 0, 0)

    def _on_rebalance(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Keys span every partition, so state cannot be split by partition: a new assignment
        # starts from the committed offsets with empty state (see the module docstring).
        if self.detector.counters.windows_evaluated or self.join.pending:
            logger.info("drift: partitions reassigned, references are rebuilt from live traffic")
        self._reset_state()

    def _dead_letter(self, producer: Producer, message: Message, value: bytes, reason: str) -> None:
        self.telemetry.discarded(1, "dead_letter")
        self.telemetry.error(Stage.PROCESSING, "decode")
        logger.warning(
            "%s[%s]@%s: %s", message.topic(), message.partition(), message.offset(), reason[:500]
        )
        headers = dead_letter_headers(message, reason, STAGE_NAME)
        produce_with_backpressure(
            producer, self._settings.topics.dead_letter, value, message.key(), headers
        )
