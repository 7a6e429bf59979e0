"""The normalizer as a Kafka stage: raw spans topic in, normalized spans topic out, exactly once.

Each batch is one Kafka transaction: the normalized spans, the dead letters and the consumer
offsets commit together or not at all, so a crash or a restart never loses a span nor writes it
twice (consumers read with ``isolation.level=read_committed``). The batch's LLM and embedding
calls also go, many per message, to the aggregate inputs topic that the stream worker reads
(:mod:`llmtap.schemas.aggregate_inputs`), in the same transaction. Work is batched
(``consume(num_messages=...)``), and a message or span that cannot be normalized goes to the
dead-letter topic with the reason instead of blocking its partition.

The stage also reads the raw logs topic and joins GenAI event records to their spans
(``genai_events.EventJoiner``): an LLM span without content waits up to
``genai_event_wait_seconds`` for its records, records wait as long for their span. What is held
in memory is not committed: per partition, the committed offset stays at the earliest held
message, and the offset's metadata names the position reached and the span ids still held. After
a crash or a rebalance the partition is read again from there; messages below that position are
replayed only for the held span ids (the rest was emitted by committed transactions).

With ``collector.redaction.enabled``, raw records that the collector did not redact with the
same settings (no ``llmtap.redacted`` header, or another digest: an OpenTelemetry Collector's
Kafka exporter writes straight into the raw topics) are redacted here, right after decoding, so
nothing the normalizer writes (normalized spans, dead letters of spans) holds what was redacted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmtap.collectors.redaction import Redactor
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
from llmtap.processors.normalize.genai_events import (
    EventJoiner,
    SourcePosition,
    Unmatched,
    decode_genai_records,
    records_request,
)
from llmtap.processors.normalize.normalizer import Normalizer
from llmtap.processors.pricing import PriceTable
from llmtap.schemas.aggregate_inputs import (
    AggregateSpan,
    aggregate_input_of,
    encode_aggregate_inputs,
    is_aggregated,
)
from llmtap.schemas.llm_span import LlmSpan, encode_span, span_key
from llmtap.schemas.otlp import OtlpDecodeError, decode_logs, decode_traces, sniff_encoding
from llmtap.schemas.topics import (
    Header,
    aggregate_inputs_topic,
    dead_letter_topic,
    normalized_spans_topic,
    raw_logs_topic,
    raw_spans_topic,
)
from llmtap.settings import Settings
from llmtap.telemetry import ComponentTelemetry, Stage

logger = logging.getLogger(__name__)

# Span ids listed in a committed offset's metadata (17 bytes each in JSON): well below Kafka's
# default offset.metadata.max.bytes of 4096. Beyond it the replay is unfiltered (at least once).
_MAX_HELD_IDS_IN_METADATA = 200

PartitionKey = tuple[str, int]


@dataclass
class _Replay:
    """A partition read again below the position a previous commit reached: only messages of
    the span ids held at that commit are processed (None: all of them, the list was too long)."""

    position: int
    held: set[str] | None


class NormalizerStage:
    """Runs in its own thread: ``run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
        self._settings = settings
        self._config = settings.processor
        self._progress = progress or (lambda message: None)
        self.telemetry = ComponentTelemetry("normalizer")
        self.prices = PriceTable.load(self._config.price_overrides_file)
        self._normalizer = Normalizer(self.prices.price, self._config.recent_retrieval_traces)
        redaction = settings.collector.redaction
        self._redactor = Redactor(redaction) if redaction.enabled else None
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._seen_in_transaction: list[bytes] = []
        self._joiner = EventJoiner(self._config.genai_event_wait_seconds)
        self._replays: dict[PartitionKey, _Replay] = {}
        self._metadata_read: set[PartitionKey] = set()
        self._aggregate_inputs: list[AggregateSpan] = []  # this batch's, sent at its end
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        topics = settings.topics
        ensure_topics(
            settings,
            [
                raw_spans_topic(topics.raw_spans, topics.partitions),
                raw_logs_topic(topics.raw_logs, topics.partitions),
                normalized_spans_topic(topics.normalized_spans, topics.partitions),
                aggregate_inputs_topic(topics.aggregate_inputs, topics.partitions),
                dead_letter_topic(topics.dead_letter, topics.partitions),
            ],
        )
        consumer = Consumer(
            consumer_config(
                settings,
                self._config.consumer_group,
                **{
                    "client.id": "llmtap-normalizer",
                    # Range assignment gives one worker the same partition numbers of both raw
                    # topics: a span and its event records (same key) meet in one worker.
                    "partition.assignment.strategy": "range",
                },
            )
        )
        producer = self._new_producer()
        try:
            init_transactions_patiently(producer, "normalizer", stop)
            consumer.subscribe([topics.raw_spans, topics.raw_logs], on_revoke=self._on_revoke)
            self._progress(
                f"normalizer: {topics.raw_spans} + {topics.raw_logs} -> "
                f"{topics.normalized_spans} + {topics.aggregate_inputs} "
                f"(prices {self.prices.version})"
            )
            self.ready.set()
            heartbeat = Heartbeat(
                settings.data_dir, "normalizer", stall_seconds=self._config.stall_timeout_seconds
            )
            while not stop.is_set():
                heartbeat.beat()
                messages = consumer.consume(
                    num_messages=self._config.batch_max_messages,
                    timeout=self._config.poll_timeout_seconds,
                )
                deadline = self._joiner.next_deadline()
                if messages or (deadline is not None and deadline <= time.monotonic()):
                    producer = self._process_batch(consumer, producer, messages)
            heartbeat.close()
        finally:
            consumer.close()
            producer.flush(30)

    def _new_producer(self) -> Producer:
        """A transactional producer with a fresh transactional id (not yet initialised)."""
        return Producer(
            producer_config(
                self._settings,
                **{
                    "client.id": "llmtap-normalizer",
                    "transactional.id": f"{self._config.consumer_group}-{uuid.uuid4().hex[:12]}",
                    "message.max.bytes": self._settings.topics.max_message_bytes + 64 * 1024,
                    "transaction.timeout.ms": 60_000,
                    "message.timeout.ms": 60_000,
                },
            )
        )

    def _process_batch(
        self, consumer: Consumer, producer: Producer, messages: list[Message]
    ) -> Producer:
        """Process one batch in one transaction; returns the producer to use next (a new one
        after a fatal producer error, such as the broker losing the transaction)."""
        producer.begin_transaction()
        try:
            self._read_replay_metadata(consumer, messages)
            logs_topic = self._settings.topics.raw_logs
            for message in messages:
                error = message.error()
                if error is not None:
                    report_consume_error(error, self.telemetry, logger)
                    continue
                if message.topic() == logs_topic:
                    self._process_logs_message(producer, message)
                else:
                    self._process_message(producer, message)
            spans, unmatched = self._joiner.expire(time.monotonic())
            for span in spans:
                self._emit(producer, span)
            self._dead_letter_unmatched(producer, unmatched)
            self._send_aggregate_inputs(producer)
            if self._joiner.redundant_records:
                self.telemetry.discarded(self._joiner.redundant_records, "genai_record_redundant")
                self._joiner.redundant_records = 0
            producer.send_offsets_to_transaction(
                self._offsets_to_commit(consumer), consumer.consumer_group_metadata(), 60
            )
            producer.commit_transaction(60)
            self._seen_in_transaction.clear()
        except KafkaException as exception:
            error = exception.args[0]
            if not error.fatal() and not error.txn_requires_abort() and not error.retriable():
                raise
            logger.warning(
                "normalizer transaction aborted, the batch will be read again: %s", error
            )
            self.telemetry.error(Stage.SENDING, "transaction_aborted")
            producer = self._abort_or_replace(producer, error)
            # Everything since the committed offsets is read again: forget what this process
            # holds or saw since then, or the re-read spans would be taken for duplicates.
            for identity in self._seen_in_transaction:
                self._seen.pop(identity, None)
            self._seen_in_transaction.clear()
            self._aggregate_inputs.clear()
            self._joiner.clear()
            self._replays.clear()
            self._metadata_read.clear()
            rewind_to_committed(consumer)
        return producer

    def _abort_or_replace(self, producer: Producer, error: KafkaError) -> Producer:
        """Abort the open transaction; when that is impossible (a fatal error, or the abort
        itself fails while the broker is away), drop the producer for a new one. Either way
        nothing of the batch is committed, so it is read again."""
        if not error.fatal():
            try:
                producer.abort_transaction(60)
                return producer
            except KafkaException as problem:
                logger.warning("normalizer: abort failed too (%s); replacing the producer", problem)
        producer.purge()
        replacement = self._new_producer()
        init_transactions_patiently(replacement, "normalizer")
        return replacement

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
        redactor = self._redactor_for(headers)
        if redactor is not None:
            self.telemetry.redacted(redactor.redact_request(request))
        failed: list[tuple[Span, Exception]] = []
        spans = self._normalizer.normalize_request(
            request,
            tenant=tenant,
            received_at_unix_nano=_nanos(received),
            on_error=lambda span, error: failed.append((span, error)),
        )
        self.telemetry.received(len(spans) + len(failed), len(value))
        replay = self._replay_filter(message)
        now = time.monotonic()
        position = _position(message)
        for span in spans:
            if replay is not None and span.span_id not in replay:
                continue  # emitted before the restart, by a committed transaction
            if replay is not None:
                replay.discard(span.span_id)
            joined = self._joiner.add_span(span, now, position)
            if joined is not None:
                self._emit(producer, joined)
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

    def _process_logs_message(self, producer: Producer, message: Message) -> None:
        value = message.value() or b""
        try:
            request = decode_logs(value, sniff_encoding(value))
        except OtlpDecodeError as error:
            self._dead_letter(producer, message, value, f"undecodable raw logs message: {error}")
            return
        headers = dict(message.headers() or [])
        redactor = self._redactor_for(headers)
        if redactor is not None:
            self.telemetry.redacted(redactor.redact_logs_request(request))
        position = _position(message)
        # The tenant is part of the join key, read as for spans: records never reach a span of
        # another tenant, whatever trace and span ids they carry.
        decoded = decode_genai_records(request, position, _header_text(headers, Header.TENANT))
        if decoded.ignored:
            self.telemetry.discarded(decoded.ignored, "not_genai_event")
        records = decoded.records
        replay = self._replay_filter(message)
        if replay is not None:
            records = [record for record in records if record.span_id in replay]
        self.telemetry.received(len(records), len(value))
        spans, unmatched = self._joiner.add_records(records, time.monotonic())
        for span in spans:
            self._emit(producer, span)
        self._dead_letter_unmatched(producer, unmatched)

    def _redactor_for(self, headers: dict[str, Any]) -> Redactor | None:
        """The redactor, when redaction is on and the collector did not already apply these
        very settings to the record."""
        redactor = self._redactor
        if redactor is None or _header_text(headers, Header.REDACTED) == redactor.fingerprint:
            return None
        return redactor

    def _emit(self, producer: Producer, span: LlmSpan) -> None:
        # Per tenant: another tenant reusing a span's ids must not get the real span dropped.
        identity = span.tenant.encode() + b"\0" + bytes.fromhex(span.trace_id + span.span_id)
        if self._is_duplicate(identity):
            self.telemetry.discarded(1, "duplicate")
            return
        for replay in self._replays.values():
            if replay.held is not None:
                replay.held.discard(span.span_id)
        produce_with_backpressure(
            producer, self._settings.topics.normalized_spans, encode_span(span), span_key(span)
        )
        if is_aggregated(span):
            self._aggregate_inputs.append(aggregate_input_of(span))
        self.telemetry.sent(1)

    def _send_aggregate_inputs(self, producer: Producer) -> None:
        """The batch's aggregated spans, before its offsets join the transaction. No key: the
        messages spread over the partitions, and so over the stream workers."""
        topic = self._settings.topics.aggregate_inputs
        for value in encode_aggregate_inputs(self._aggregate_inputs):
            produce_with_backpressure(producer, topic, value, None)
        self._aggregate_inputs.clear()

    def _dead_letter_unmatched(self, producer: Producer, unmatched: list[Unmatched]) -> None:
        for item in unmatched:
            record = item.record
            self.telemetry.discarded(1, "genai_record_unmatched")
            position = record.position
            headers: list[tuple[str, Any]] = [
                (Header.DEAD_LETTER_REASON.value, item.reason.encode()),
                (Header.DEAD_LETTER_STAGE.value, b"normalizer"),
                (Header.DEAD_LETTER_CONTENT_TYPE.value, b"application/x-protobuf"),
            ]
            if position is not None:
                headers += [
                    (Header.DEAD_LETTER_SOURCE_TOPIC.value, position.topic.encode()),
                    ("llmtap.dead_letter.source_partition", str(position.partition).encode()),
                    ("llmtap.dead_letter.source_offset", str(position.offset).encode()),
                ]
            produce_with_backpressure(
                producer,
                self._settings.topics.dead_letter,
                records_request([record]).SerializeToString(),
                record.trace_id.encode() or None,
                headers,
            )

    def _offsets_to_commit(self, consumer: Consumer) -> list[TopicPartition]:
        """Each partition's position, except that it stays at the earliest message something
        is still held from; the metadata then says how far reading went and what is held."""
        held: dict[PartitionKey, tuple[int, set[str]]] = {}
        for position, span_id in self._joiner.held_positions():
            partition = (position.topic, position.partition)
            earliest, ids = held.get(partition, (position.offset, set()))
            ids.add(span_id)
            held[partition] = (min(earliest, position.offset), ids)
        offsets = []
        for tp in consumer.position(consumer.assignment()):
            if tp.offset < 0:
                continue
            partition = (tp.topic, tp.partition)
            earliest, ids = held.get(partition, (tp.offset, set()))
            reached = tp.offset
            replay = self._replays.get(partition)
            replay_held: set[str] | None = set()
            if replay is not None and replay.position > tp.offset:
                reached = replay.position  # not replayed to the end yet: keep its promise
                replay_held = replay.held
                earliest = min(earliest, tp.offset)
            elif replay is not None:
                del self._replays[partition]
            if earliest >= reached:
                offsets.append(TopicPartition(tp.topic, tp.partition, tp.offset))
                continue
            listed = None if replay_held is None else sorted(ids | replay_held)
            if listed is not None and len(listed) > _MAX_HELD_IDS_IN_METADATA:
                listed = None
            metadata = json.dumps({"position": reached, "held": listed}, separators=(",", ":"))
            offsets.append(TopicPartition(tp.topic, tp.partition, earliest, metadata))
        return offsets

    def _read_replay_metadata(self, consumer: Consumer, messages: list[Message]) -> None:
        """For partitions new to this worker: what the last commit held, to replay only that."""
        new = {
            _position(message)[:2] for message in messages if message.error() is None
        } - self._metadata_read
        if not new:
            return
        committed = consumer.committed(
            [TopicPartition(topic, partition) for topic, partition in sorted(new)], timeout=30
        )
        for tp in committed:
            self._metadata_read.add((tp.topic, tp.partition))
            if not tp.metadata:
                continue
            try:
                document = json.loads(tp.metadata)
                position = int(document["position"])
                held = document["held"]
            except (ValueError, KeyError, TypeError):
                logger.warning(
                    "ignoring unreadable offset metadata of %s/%d", tp.topic, tp.partition
                )
                continue
            if position > tp.offset:
                self._replays[(tp.topic, tp.partition)] = _Replay(
                    position, None if held is None else {str(span_id) for span_id in held}
                )
                if held is None:
                    self.telemetry.error(Stage.PROCESSING, "replay_unfiltered")

    def _replay_filter(self, message: Message) -> set[str] | None:
        """The span ids to process from this message; None for all of them."""
        topic, partition, offset = _position(message)
        replay = self._replays.get((topic, partition))
        if replay is None or offset >= replay.position:
            return None
        return replay.held

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        dropped = self._joiner.drop(revoked)
        if dropped:
            logger.info(
                "rebalance: %d held spans/records go back to Kafka for the new owner", dropped
            )
        for partition in revoked:
            self._replays.pop(partition, None)
            self._metadata_read.discard(partition)

    def _is_duplicate(self, identity: bytes) -> bool:
        window = self._config.dedupe_window_spans
        if window == 0:
            return False
        if identity in self._seen:
            self._seen.move_to_end(identity)
            return True
        self._seen[identity] = None
        self._seen_in_transaction.append(identity)
        if len(self._seen) > window:
            self._seen.popitem(last=False)
        return False

    def _dead_letter(self, producer: Producer, message: Message, value: bytes, reason: str) -> None:
        self.telemetry.discarded(1, "dead_letter")
        self.telemetry.error(Stage.PROCESSING, "normalize")
        headers = dead_letter_headers(message, reason, "normalizer")
        produce_with_backpressure(
            producer, self._settings.topics.dead_letter, value, message.key(), headers
        )


def _position(message: Message) -> SourcePosition:
    return SourcePosition(str(message.topic()), message.partition() or 0, message.offset() or 0)


def _nanos(text: str | None) -> int | None:
    """A header's unix nanoseconds; None unless it is ASCII digits within uint64 (isdigit()
    alone also takes "²", which int() refuses, and int() refuses over 4300 digits)."""
    if text and text.isascii() and text.isdigit() and len(text) <= 20:
        number = int(text)
        return number if number < 2**64 else None
    return None


def _header_text(headers: dict[str, Any], name: Header) -> str | None:
    value = headers.get(name.value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None
