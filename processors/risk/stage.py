"""The risk scorer as a Kafka stage: normalized spans in, scores and embeddings out, exactly once.

Reads the normalized spans topic in its own consumer group (``processor.risk.consumer_group``),
scores the LLM spans that have a completion (hallucination risk, prompt injection), and writes
one ``SpanScore`` per scored span to the scores topic and the span's prompt, completion and
context vectors (``SpanEmbedding``) to the embeddings topic. Each batch is one Kafka
transaction with the consumer offsets, as in the normalizer: a crash or restart neither loses
nor duplicates a score (consumers read with ``isolation.level=read_committed``). A message that
is not a normalized span goes to the dead-letter topic with the reason.

Loading the model takes seconds, so ``ready`` is set only once the scorer is loaded and the
consumer subscribed. Under load the scorer samples by priority and records each score's
``sampling_weight`` (see ``sampling.py``); spans sampled out are counted as discarded.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import msgspec
from confluent_kafka import Consumer, KafkaException, Message, Producer

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
from llmtap.processors.risk.scorer import RiskScorer
from llmtap.schemas.llm_span import LlmSpan, decode_span
from llmtap.schemas.scores import encode_embedding, encode_score, score_key
from llmtap.schemas.topics import (
    dead_letter_topic,
    embeddings_topic,
    normalized_spans_topic,
    scores_topic,
)
from llmtap.settings import Settings
from llmtap.telemetry import ComponentTelemetry, Stage

logger = logging.getLogger(__name__)

STAGE_NAME = "risk"


class RiskStage:
    """Runs in its own thread: ``run(stop)`` until ``stop`` is set.

    ``scorer`` may be passed in (tests share one loaded model); by default it is built from
    ``settings.processor.risk`` when the stage starts.
    """

    def __init__(
        self,
        settings: Settings,
        progress: Callable[[str], None] | None = None,
        scorer: RiskScorer | None = None,
    ) -> None:
        self._settings = settings
        self._config = settings.processor.risk
        self._progress = progress or (lambda message: None)
        self.telemetry = ComponentTelemetry(STAGE_NAME)
        self.scorer = scorer
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        topics = settings.topics
        if self.scorer is None:
            self.scorer = RiskScorer.from_config(self._config)
        ensure_topics(
            settings,
            [
                normalized_spans_topic(topics.normalized_spans, topics.partitions),
                scores_topic(topics.scores, topics.partitions),
                embeddings_topic(topics.embeddings, topics.partitions),
                dead_letter_topic(topics.dead_letter, topics.partitions),
            ],
        )
        consumer = Consumer(
            consumer_config(settings, self._config.consumer_group, **{"client.id": "llmtap-risk"})
        )
        producer = Producer(
            producer_config(
                settings,
                **{
                    "client.id": "llmtap-risk",
                    "transactional.id": f"{self._config.consumer_group}-{uuid.uuid4().hex[:12]}",
                    "message.max.bytes": topics.max_message_bytes + 64 * 1024,
                    "transaction.timeout.ms": 120_000,
                    "message.timeout.ms": 120_000,
                },
            )
        )
        try:
            init_transactions_patiently(producer, "risk", stop)
            consumer.subscribe([topics.normalized_spans])
            self._progress(
                f"risk: {topics.normalized_spans} -> {topics.scores}, {topics.embeddings} "
                f"({self.scorer.model_version}; {self.scorer.encoder.backend.reason})"
            )
            self.ready.set()
            heartbeat = Heartbeat(settings.data_dir, STAGE_NAME)
            while not stop.is_set():
                heartbeat.beat()
                messages = consumer.consume(
                    num_messages=self._config.batch_max_messages,
                    timeout=settings.processor.poll_timeout_seconds,
                )
                if messages:
                    self._process_batch(consumer, producer, messages)
        finally:
            consumer.close()
            producer.flush(30)

    def _process_batch(
        self, consumer: Consumer, producer: Producer, messages: list[Message]
    ) -> None:
        assert self.scorer is not None
        producer.begin_transaction()
        try:
            spans: list[LlmSpan] = []
            for message in messages:
                error = message.error()
                if error is not None:
                    report_consume_error(error, self.telemetry, logger)
                    continue
                value = message.value() or b""
                self.telemetry.received(1, len(value))
                try:
                    spans.append(decode_span(value))
                except (msgspec.ValidationError, msgspec.DecodeError) as failure:
                    self._dead_letter(producer, message, value, f"not a normalized span: {failure}")
            sampled_out_before = self.scorer.sampled_out
            scores, embeddings = self.scorer.score_and_embed(
                spans, embeddings=self._config.emit_embeddings
            )
            topics = self._settings.topics
            for score in scores:
                produce_with_backpressure(
                    producer, topics.scores, encode_score(score), score_key(score)
                )
            for embedding in embeddings:
                produce_with_backpressure(
                    producer, topics.embeddings, encode_embedding(embedding), score_key(embedding)
                )
            self.telemetry.sent(len(scores))
            sampled_out = self.scorer.sampled_out - sampled_out_before
            if sampled_out:
                self.telemetry.discarded(sampled_out, "sampled_out")
            not_scorable = len(spans) - len(scores) - sampled_out
            if not_scorable:
                self.telemetry.discarded(not_scorable, "not_scorable")
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 60)
            producer.commit_transaction(60)
        except KafkaException as exception:
            error = exception.args[0]
            if not error.txn_requires_abort() and not error.retriable():
                raise
            logger.warning("risk transaction aborted, the batch will be read again: %s", error)
            self.telemetry.error(Stage.SENDING, "transaction_aborted")
            producer.abort_transaction(60)
            rewind_to_committed(consumer)

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
