"""The ClickHouse sink: normalized spans topic into ``llm_spans``, exactly once.

How replays are made harmless:

- every insert holds rows of one Kafka partition, a contiguous offset range, and one day (one
  ClickHouse partition), so ClickHouse applies it atomically; it carries a deterministic
  ``insert_deduplication_token`` (topic, partition, first and last offset), so re-inserting the
  same batch is a no-op;
- each row stores its Kafka topic, partition and offset, and inserts per partition happen in
  offset order, so when a partition is (re)assigned the sink asks ClickHouse for the highest
  offset already stored and resumes after it, even if the previous owner crashed between its
  insert and its offset commit (a new owner's batches can have other boundaries, which a token
  alone would not catch);
- Kafka offsets are committed only after ClickHouse confirmed the insert.

Inserts run on a background thread, one at a time, while the next batch is consumed and built
(``OneInFlight``): ClickHouse releases the GIL while it writes, so both cores work.

ClickHouse unavailable: the insert is retried with exponential backoff; consumption stops once
the next batch is full (memory: at most the batch being written and the one being filled).
Rows ClickHouse rejects as invalid are found by bisecting the batch and go to the dead-letter
topic with the reason.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from llmtap.clickhouse import is_embedded, open_client
from llmtap.errors import LlmtapError
from llmtap.heartbeat import Heartbeat
from llmtap.kafka import (
    consumer_config,
    ensure_topics,
    producer_config,
    report_consume_error,
)
from llmtap.schemas.llm_span import decode_span, span_key
from llmtap.schemas.topics import Header, dead_letter_topic, normalized_spans_topic
from llmtap.settings import Settings
from llmtap.sinks.clickhouse.in_flight import OneInFlight
from llmtap.sinks.clickhouse.rows import INSERT_SETTINGS, SPAN_COLUMNS, span_row
from llmtap.sinks.clickhouse.span_json import (
    SpanJsonInserter,
    span_json_line,
    split_span_json_line,
)
from llmtap.telemetry import ComponentTelemetry, Stage

logger = logging.getLogger(__name__)

SPANS_TABLE = "llm_spans"
_DAY_NANOS = 86_400 * 10**9


Row = tuple[object, ...] | bytes  # a row, or a span JSON line on the embedded engine


@dataclass
class _PartitionBuffer:
    rows: list[Row | None] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    days: list[int] = field(default_factory=list)
    size_bytes: int = 0


class RowRejectedError(Exception):
    """ClickHouse refused a single row: it is invalid, not ClickHouse unavailable."""


class ClickHouseSink:
    """Runs in its own thread: ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        progress: Callable[[str], None] | None = None,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self._settings = settings
        self._config = settings.sink
        self._topic = settings.topics.normalized_spans
        self._progress = progress or (lambda message: None)
        self._client_factory = client_factory or (lambda: open_client(settings))
        self.telemetry = ComponentTelemetry("sink")
        self.ready = threading.Event()
        self.assigned = threading.Event()
        self._buffers: dict[int, _PartitionBuffer] = {}
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._oldest_row_at: float | None = None
        self._client: Any = None
        self._writes: OneInFlight[None] = OneInFlight("llmtap-sink-insert")
        # Set when the sink stops on an error: an insert retrying in the background gives up
        # (its rows stay in Kafka, uncommitted) instead of holding the process forever.
        self._abandon = threading.Event()
        # The embedded engine parses the spans' JSON itself (span_json.py); a server gets rows.
        self._json: SpanJsonInserter | None = None
        # The offset this sink last committed per assigned partition, and when it may next
        # commit a position that moved past markers alone (see ``_commit_skipped``).
        self._committed: dict[int, int] = {}
        self._next_skip_commit = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        ensure_topics(
            settings,
            [
                normalized_spans_topic(self._topic, settings.topics.partitions),
                dead_letter_topic(settings.topics.dead_letter, settings.topics.partitions),
            ],
        )
        self._client = self._client_factory()
        if not int(self._client.command(f"EXISTS TABLE {SPANS_TABLE}")):
            self._client.close()
            raise LlmtapError(
                f"ClickHouse has no {SPANS_TABLE} table in database {self._client.database!r}: "
                "run `llmtap migrate` first (`llmtap up` does it by itself)."
            )
        if is_embedded(self._client):
            self._json = SpanJsonInserter(SPANS_TABLE, settings.data_dir / "sink" / "batches")
        consumer = Consumer(
            consumer_config(
                settings,
                self._config.consumer_group,
                **{
                    "client.id": "llmtap-sink",
                    # A flush may wait for ClickHouse for long; stay in the group meanwhile.
                    "max.poll.interval.ms": 3_600_000,
                },
            )
        )
        self._dead_letters = Producer(producer_config(settings, **{"client.id": "llmtap-sink"}))
        try:
            consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._consumer = consumer
            self._progress(f"sink: {self._topic} -> ClickHouse {SPANS_TABLE}")
            self.ready.set()
            heartbeat = Heartbeat(settings.data_dir, "sink")
            while not stop.is_set():
                heartbeat.beat()
                self._poll_once(consumer)
            self._flush(consumer, wait=True)  # what is buffered is written before a clean stop
        finally:
            self._abandon.set()  # after a clean stop nothing is in flight any more
            self._writes.close()
            close_quietly(consumer)
            self._dead_letters.flush(30)
            self._client.close()

    def _poll_once(self, consumer: Consumer) -> None:
        room = max(1, min(5_000, self._config.batch_max_rows - self._buffered_rows))
        wait = self._config.flush_interval_seconds
        if self._oldest_row_at is not None:
            wait = max(
                0.0, self._oldest_row_at + self._config.flush_interval_seconds - time.monotonic()
            )
        messages = consumer.consume(num_messages=room, timeout=min(wait, 0.5))
        if messages:
            self._add(messages)
        if self._writes.done():
            self._writes.finish()  # commits the offsets of an insert that ended meanwhile
        if self._should_flush():
            self._flush(consumer)
        elif not messages and not self._buffered_rows and self._writes.done():
            self._commit_skipped(consumer)

    def _commit_skipped(self, consumer: Consumer) -> None:
        """Commit positions that moved past offsets no message came from, while idle.

        Behind a transactional producer the consumer steps over commit markers and the records
        of aborted transactions (a normalizer killed mid-transaction) without receiving a
        message. With nothing buffered and no insert in flight, every message before the
        position is stored, so committing it is safe; without this the group shows a lag
        that no message will ever clear. At most once per flush interval.
        """
        now = time.monotonic()
        if now < self._next_skip_commit:
            return
        self._next_skip_commit = now + self._config.flush_interval_seconds
        ahead = [
            TopicPartition(self._topic, tp.partition, tp.offset)
            for tp in consumer.position(list(consumer.assignment()))
            if tp.offset >= 0 and tp.offset > self._committed.get(tp.partition, -1)
        ]
        if ahead and commit_offsets(consumer, ahead):
            self._committed.update({tp.partition: tp.offset for tp in ahead})

    # -- buffering -------------------------------------------------------------------------

    def _add(self, messages: list[Message]) -> None:
        """Buffer what one ``consume`` returned: one loop with its names bound locally (a call
        and the attribute updates per message were a fifth of the consuming thread's time)."""
        json = self._json is not None
        buffers = self._buffers
        rows_added = bytes_added = 0
        for message in messages:
            error = message.error()
            if error is not None:
                report_consume_error(error, self.telemetry, logger)
                continue
            value = message.value() or b""
            partition = message.partition() or 0
            offset = message.offset() or 0
            row: Row | None
            try:
                span = decode_span(value)
                if json:
                    row = span_json_line(value, partition, offset)
                else:
                    row = span_row(span, self._topic, partition, offset)
                day = span.start_time_unix_nano // _DAY_NANOS
            except Exception as problem:
                self._dead_letter(
                    message.key(), value, partition, offset, f"not a normalized span: {problem}"
                )
                row = None
                day = -1
            buffer = buffers.get(partition)
            if buffer is None:  # not setdefault: building a buffer per message cost ~4 µs a row
                buffer = buffers[partition] = _PartitionBuffer()
            # Offsets are tracked even for dead-lettered messages so the commit moves past them.
            buffer.offsets.append(offset)
            buffer.rows.append(row)
            buffer.days.append(day)
            buffer.size_bytes += len(value)
            rows_added += 1
            bytes_added += len(value)
        if rows_added:
            self._buffered_rows += rows_added
            self._buffered_bytes += bytes_added
            if self._oldest_row_at is None:
                self._oldest_row_at = time.monotonic()

    def _should_flush(self) -> bool:
        if not self._buffered_rows:
            return False
        return (
            self._buffered_rows >= self._config.batch_max_rows
            or self._buffered_bytes >= self._config.batch_max_bytes
            or (
                self._oldest_row_at is not None
                and time.monotonic() - self._oldest_row_at >= self._config.flush_interval_seconds
            )
        )

    # -- flushing --------------------------------------------------------------------------

    def _flush(self, consumer: Consumer, wait: bool = False) -> None:
        """Hand the buffered rows to the insert thread; their offsets are committed once
        ClickHouse confirmed them. Waits for the previous insert first, which blocks while
        ClickHouse is unavailable (retrying): consumption pauses and memory stays bounded.
        ``wait``: also wait for this insert and its commit (stop, revocation)."""
        self._writes.finish()
        if not self._buffered_rows:
            return
        # Counted per flush, not per message: the per-message metric calls cost ~3 µs a row.
        self.telemetry.received(self._buffered_rows, self._buffered_bytes)
        # The consumer's position also steps over transaction markers after the last message
        # (the normalizer writes transactionally), so a caught-up group shows no lag.
        positions = {
            tp.partition: tp.offset
            for tp in consumer.position(list(consumer.assignment()))
            if tp.offset >= 0
        }
        commits = [
            TopicPartition(
                self._topic, partition, max(buffer.offsets[-1] + 1, positions.get(partition, 0))
            )
            for partition, buffer in sorted(self._buffers.items())
        ]
        inserts = self._inserts()
        self._buffers = {}
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._oldest_row_at = None

        def write() -> None:
            for rows, token in inserts:
                if self._json is not None:
                    self._insert_json_with_retry(rows, token)  # type: ignore[arg-type]
                else:
                    self._insert_with_retry(rows, token)  # type: ignore[arg-type]

        def commit(_: None) -> None:
            self._dead_letters.flush(30)
            if commit_offsets(consumer, commits):
                self._committed.update({tp.partition: tp.offset for tp in commits})

        self._writes.start(write, commit)
        if wait:
            self._writes.finish()

    def _inserts(self) -> list[tuple[list[Row], str]]:
        """The buffered rows as inserts, each with its deduplication token (its offset ranges).

        Usually every row is of one day: one insert for all partitions (fewer, larger parts;
        about a third less time per row than one insert per partition). Otherwise one per
        partition and run of one day, in offset order, so that each insert is one atomic part
        and what ClickHouse holds of a partition is always a prefix of it: the point where a
        restarted sink resumes.
        """
        buffers = sorted(self._buffers.items())
        days = {day for _, buffer in buffers for day in buffer.days if day != -1}
        if len(days) <= 1:
            rows = [row for _, buffer in buffers for row in buffer.rows if row is not None]
            ranges = ",".join(
                f"{partition}:{buffer.offsets[0]}-{buffer.offsets[-1]}"
                for partition, buffer in buffers
            )
            return [(rows, f"{self._topic}:{ranges}")] if rows else []
        inserts = []
        for partition, buffer in buffers:
            for start, end in _runs(buffer.days):
                rows = [row for row in buffer.rows[start:end] if row is not None]
                if rows:
                    first, last = buffer.offsets[start], buffer.offsets[end - 1]
                    inserts.append((rows, f"{self._topic}:{partition}:{first}-{last}"))
        return inserts

    def _insert_with_retry(self, rows: list[tuple[object, ...]], token: str) -> None:
        def attempt() -> None:
            try:
                self._insert_checked(rows, token)
            except RowRejectedError as rejected:  # a batch of one row, and that row is invalid
                for row in rows:
                    self._dead_letter_row(row, str(rejected))
                return
            self.telemetry.sent(len(rows))

        self._until_stored(len(rows), attempt)

    def _insert_json_with_retry(self, lines: list[bytes], token: str) -> None:
        """The fast path; a batch ClickHouse refuses as data goes through the row path."""
        assert self._json is not None
        json = self._json

        def attempt() -> None:
            try:
                json.insert(self._client, lines, self._topic, token)
            except Exception as problem:
                if not (looks_like_bad_data(problem) or _marks_bad_json(problem)):
                    raise
                logger.info(
                    "ClickHouse refused a batch of %d spans as JSON (%s); inserting it "
                    "row by row to find the spans it cannot store",
                    len(lines),
                    _first_line(problem),
                )
                rows = self._rows_of_lines(lines)
                if rows:
                    self._insert_with_retry(rows, token)
                return
            self.telemetry.sent(len(lines))

        self._until_stored(len(lines), attempt)

    def _until_stored(self, count: int, attempt: Callable[[], None]) -> None:
        """Run ``attempt`` until it returns: what it raises means ClickHouse is unavailable,
        so the rows stay in Kafka and it is retried with exponential backoff (given up only
        when the sink stops on an error)."""
        delay = self._config.retry_initial_seconds
        while True:
            try:
                attempt()
                return
            except Exception as problem:
                self.telemetry.error(Stage.SENDING, type(problem).__name__)
                if self._abandon.is_set():
                    raise
                logger.warning(
                    "ClickHouse insert of %d rows failed (%s); the rows stay in Kafka, "
                    "retrying in %.1f s",
                    count,
                    describe_insert_failure(problem, self._settings),
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, self._config.retry_max_seconds)

    def _rows_of_lines(self, lines: list[bytes]) -> list[tuple[object, ...]]:
        """The rows of span JSON lines; a span the table cannot hold goes to the dead letters."""
        rows = []
        for line in lines:
            value, partition, offset = split_span_json_line(line)
            span = decode_span(value)  # it decoded when it was consumed
            try:
                rows.append(span_row(span, self._topic, partition, offset))
            except Exception as problem:
                self._dead_letter(
                    span_key(span), value, partition, offset, f"not a normalized span: {problem}"
                )
        return rows

    def _insert_checked(self, rows: list[tuple[object, ...]], token: str) -> None:
        """Insert; if ClickHouse rejects the data, bisect to dead-letter the bad rows only.

        When both halves of a batch fail, the problem is not in the rows (ClickHouse is
        unavailable or the table is wrong): the error propagates and the batch is retried.
        """
        try:
            self._insert(rows, token)
            return
        except Exception as problem:
            if len(rows) == 1 or not looks_like_bad_data(problem):
                if len(rows) == 1 and looks_like_bad_data(problem):
                    raise RowRejectedError(_first_line(problem)) from problem
                raise
        middle = len(rows) // 2
        failures: list[tuple[list[tuple[object, ...]], Exception]] = []
        for index, half in enumerate((rows[:middle], rows[middle:])):
            try:
                self._insert_checked(half, f"{token}/{index}")
            except RowRejectedError as rejected:
                failures.append((half, rejected))
            except Exception as problem:
                failures.append((half, problem))
        if len(failures) == 2 and not all(isinstance(f[1], RowRejectedError) for f in failures):
            raise failures[0][1]
        for half, failure in failures:
            if isinstance(failure, RowRejectedError) and len(half) == 1:
                self._dead_letter_row(half[0], str(failure))
            elif not isinstance(failure, RowRejectedError):
                raise failure

    def _insert(self, rows: list[tuple[object, ...]], token: str) -> None:
        columns = list(zip(*rows, strict=True))
        self._client.insert(
            SPANS_TABLE,
            columns,
            column_names=SPAN_COLUMNS,
            column_oriented=True,
            # The deduplication token applies to exactly this block.
            settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
        )

    # -- assignment: resume after what ClickHouse already has ---------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._writes.finish()  # stored offsets below must include the insert in flight
        committed = consumer.committed(partitions, timeout=30)
        stored = self._stored_offsets([partition.partition for partition in partitions])
        resumed, catch_up = [], []
        for partition in committed:
            next_offset = stored.get(partition.partition)
            if next_offset is not None and (partition.offset < 0 or next_offset > partition.offset):
                logger.info(
                    "partition %d: ClickHouse already holds offsets up to %d; resuming there",
                    partition.partition,
                    next_offset - 1,
                )
                partition.offset = next_offset
                catch_up.append(TopicPartition(self._topic, partition.partition, next_offset))
            resumed.append(partition)
            self._committed[partition.partition] = partition.offset
        consumer.assign(resumed)
        if catch_up:
            # The previous owner stopped between its insert and its commit: commit for it, or
            # the group would show a lag that no message will ever clear.
            commit_offsets(consumer, catch_up)
        self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Flush what belongs to the revoked partitions so the next owner starts after it.
        self._flush(consumer, wait=True)
        for partition in partitions:
            self._committed.pop(partition.partition, None)

    def _stored_offsets(self, partitions: list[int]) -> dict[int, int]:
        """Highest stored offset + 1 per partition; waits (retrying) while ClickHouse is away."""
        delay = self._config.retry_initial_seconds
        while True:
            try:
                return self._query_stored_offsets(partitions)
            except Exception as problem:
                self.telemetry.error(Stage.RECEIVING, type(problem).__name__)
                logger.warning(
                    "cannot read stored offsets from ClickHouse (%s); retrying in %.1f s",
                    _first_line(problem),
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, self._config.retry_max_seconds)

    def _query_stored_offsets(self, partitions: list[int]) -> dict[int, int]:
        if not partitions or self._client is None:
            return {}
        result = self._client.query(
            f"SELECT kafka_partition, max(kafka_offset) FROM {SPANS_TABLE} "  # noqa: S608 (constant)
            "WHERE kafka_topic = {topic:String} AND kafka_partition IN {partitions:Array(UInt16)} "
            "GROUP BY kafka_partition",
            parameters={"topic": self._topic, "partitions": partitions},
        )
        return {int(partition): int(offset) + 1 for partition, offset in result.result_rows}

    # -- dead letters ------------------------------------------------------------------------

    def _dead_letter_row(self, row: tuple[object, ...], reason: str) -> None:
        values = dict(zip(SPAN_COLUMNS, row, strict=True))
        self._dead_letter(
            str(values["trace_id"]).encode(),
            repr(values).encode()[:1_000_000],
            int(values["kafka_partition"]),  # type: ignore[call-overload]
            int(values["kafka_offset"]),  # type: ignore[call-overload]
            f"ClickHouse rejected the row: {reason}",
        )

    def _dead_letter(
        self, key: bytes | None, value: bytes, partition: int, offset: int, reason: str
    ) -> None:
        self.telemetry.discarded(1, "dead_letter")
        self.telemetry.error(Stage.PROCESSING, "invalid_row")
        logger.warning("dead letter from %s[%d]@%d: %s", self._topic, partition, offset, reason)
        self._dead_letters.produce(
            self._settings.topics.dead_letter,
            value=value,
            key=key,
            headers=[
                (Header.DEAD_LETTER_REASON.value, reason[:2000].encode()),
                (Header.DEAD_LETTER_STAGE.value, b"sink"),
                (Header.DEAD_LETTER_SOURCE_TOPIC.value, self._topic.encode()),
                ("llmtap.dead_letter.source_partition", str(partition).encode()),
                ("llmtap.dead_letter.source_offset", str(offset).encode()),
            ],
        )
        self._dead_letters.poll(0)


def _runs(days: list[int]) -> list[tuple[int, int]]:
    """[start, end) ranges of one day each (-1, a dead-lettered message, fits any run): one
    insert per day keeps each insert a single atomic ClickHouse part."""
    runs = []
    start = 0
    current: int | None = None
    for index, day in enumerate(days):
        if day == -1:
            continue
        if current is not None and day != current:
            runs.append((start, index))
            start = index
        current = day
    if days:
        runs.append((start, len(days)))
    return runs


def commit_offsets(consumer: Consumer, offsets: list[TopicPartition]) -> bool:
    """Commit, tolerating failure (returns whether it succeeded): the rows are in ClickHouse
    with their offsets, and a sink that gets the partition resumes after what ClickHouse holds,
    so a lost commit (the broker away, a rebalance) only means the next commit or owner covers
    it. Raising here would stop the sink for a broker restart."""
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as problem:
        logger.warning("offset commit failed (%s); the next commit covers it", problem)
        return False
    return True


def close_quietly(consumer: Consumer) -> None:
    """Close, even when the final commit or leave-group fails (the broker away at shutdown)."""
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as problem:
        logger.warning("closing the Kafka consumer: %s", problem)


def _marks_bad_json(problem: BaseException) -> bool:
    """The JSON path's own refusals: a duplicate field, a throwIf check of span_json.py."""
    text = str(problem)
    return any(
        marker in text
        for marker in ("INCORRECT_DATA", "Duplicate field", "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO")
    )


def looks_like_bad_data(problem: BaseException) -> bool:
    """Errors caused by the values sent, as opposed to ClickHouse being unreachable."""
    text = str(problem)
    markers = (
        "Cannot parse",
        "TYPE_MISMATCH",
        "CANNOT_PARSE",
        "Illegal",
        "out of range",
        "ILLEGAL_",
        "CANNOT_CONVERT",
        "DECIMAL_OVERFLOW",
        "TOO_LARGE_STRING_SIZE",
        "Unable to create Python",
        "Invalid",
        "overflow",
        "ValueError",
        "TypeError",
        "struct.error",
        "argument out of range",
        "Unable to create native array",  # a value the client cannot encode for its column
    )
    # ArithmeticError: decimal.InvalidOperation for cost text that is not a number
    return isinstance(problem, ValueError | TypeError | ArithmeticError) or any(
        marker in text for marker in markers
    )


# Errors that mean the storage under ClickHouse refuses writes (disk full, quota, read-only or
# not permitted), as opposed to ClickHouse being unreachable.
_STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
)
_STORAGE_MARKERS = (
    "NOT_ENOUGH_SPACE",
    "No space left",
    "File too large",
    "Read-only file system",
    "Permission denied",
    "Disk quota exceeded",
    "CANNOT_WRITE_TO_FILE",
    "No usable temporary directory",  # the embedded engine's inserts go through a temp file
)


def describe_insert_failure(problem: BaseException, settings: Settings) -> str:
    """The failure as an operator should read it: a full or read-only disk says so and names
    the folder, instead of looking like ClickHouse being away."""
    text = _first_line(problem)
    storage = (isinstance(problem, OSError) and problem.errno in _STORAGE_ERRNOS) or any(
        marker in str(problem) for marker in _STORAGE_MARKERS
    )
    if not storage:
        return text
    target = settings.clickhouse_target()
    where = (
        f"ClickHouse's data folder {target.path}"
        if target.kind == "chdb"
        else f"the ClickHouse server's disk ({target.kind}://{target.host})"
    )
    return f"cannot write to {where}: {text}; is the disk full or read-only?"


def _first_line(problem: BaseException) -> str:
    return (str(problem).strip().splitlines() or [type(problem).__name__])[0][:300]
