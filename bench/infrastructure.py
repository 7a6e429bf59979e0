"""Infrastructure baselines for llmtap: what Kafka and the embedded ClickHouse do on this machine.

Why this exists: every later stage (collector, processors, sink) will be judged by how close it
gets to what the infrastructure underneath can do. Those stages' benchmarks need a floor and a
ceiling measured the same way, on the same machine, in the same run, because the machines we
share are noisy: an absolute figure from yesterday says little, a ratio to a baseline measured a
minute ago says a lot. So this script measures, with llmtap's real pieces:

- Kafka produce and consume throughput (~1 KB span-like messages) on a private single-node broker
  started by ``llmtap.dev.kafka_broker``, once with llmtap's own client defaults
  (``llmtap.kafka.producer_config``: idempotent, acks=all, zstd) and once with a plain
  confluent-kafka client on librdkafka's defaults (acks=all too, no idempotence, no compression)
  as the baseline. Throughput is that of long-lived clients; how long a new producer takes to
  get its first message acknowledged is measured apart;
- embedded ClickHouse (chdb through ``llmtap.clickhouse.open_target``) inserts of span-like rows
  in batches of 10,000, column-oriented (how llmtap's sink is meant to insert) against
  row-oriented (the baseline), and one ``GROUP BY service`` aggregate query.

Every measurement is repeated (``--repeats``), the two variants of a pair alternate which goes
first, and the report gives medians with min/max plus the median of the per-repeat ratios to the
baseline. Results also go to ``bench/results/infrastructure-<timestamp>.json`` (git-ignored).

Run it with ``make bench``, or ``.venv/bin/python bench/infrastructure.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
JAR_CACHE_DIR = REPO_ROOT / ".llmtap" / "kafka" / "dist"
RESULTS_DIR = REPO_ROOT / "bench" / "results"

CLICKHOUSE_BATCH_ROWS = 10_000
CLICKHOUSE_COLUMNS = (
    ("span_id", "String"),
    ("trace_id", "String"),
    ("service", "LowCardinality(String)"),
    ("model", "LowCardinality(String)"),
    ("input_tokens", "UInt32"),
    ("output_tokens", "UInt32"),
    ("cost", "Float64"),
    ("latency_ms", "Float64"),
    ("prompt", "String"),
    ("completion", "String"),
)
CLICKHOUSE_QUERY = (
    "SELECT service, sum(cost), quantile(0.95)(latency_ms) FROM spans "
    "GROUP BY service ORDER BY service"
)
# The query takes milliseconds, so one run per repeat would be mostly noise.
QUERY_RUNS_PER_REPEAT = 5

KAFKA_PARTITIONS = 3  # the local broker's default, and what the test fixtures use
KAFKA_CONSUME_BATCH = 1000
# A warmed consumer reads 50,000 messages in about 0.1 s: too short to time on a shared machine,
# so each consume measurement reads the topic from the beginning this many times.
KAFKA_CONSUME_PASSES = 4
# Once a consumer has caught up, its next fetch waits at the broker for new data for up to
# fetch.wait.max.ms (librdkafka's default), and a re-read waits that fetch out. Passes are
# spaced by that long, untimed, so the figure is reading, not waiting.
KAFKA_FETCH_WAIT_SECONDS = 0.5
KAFKA_POLL_EVERY = 1000  # serve delivery reports every this many produce() calls
KAFKA_FLUSH_TIMEOUT_SECONDS = 120.0
KAFKA_CONSUME_STALL_SECONDS = 30.0

PROMPT_CHARS = 500
COMPLETION_CHARS = 300
SERVICES = (
    "checkout-assistant",
    "support-bot",
    "search-rerank",
    "doc-summarizer",
    "code-review",
    "email-drafts",
    "sql-copilot",
    "triage-agent",
)
# (model, USD per input token, USD per output token): list prices of the right magnitude.
MODELS = (
    ("gpt-4o", 2.5e-6, 10e-6),
    ("gpt-4o-mini", 0.15e-6, 0.6e-6),
    ("claude-sonnet-4", 3e-6, 15e-6),
    ("claude-haiku-3.5", 0.8e-6, 4e-6),
    ("gemini-2.0-flash", 0.1e-6, 0.4e-6),
    ("llama-3.1-70b", 0.6e-6, 0.6e-6),
)

Progress = Callable[[str], None]


# -- results ---------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One quantity measured once per repeat."""

    name: str
    unit: str
    samples: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"unit": self.unit, **_spread(self.samples), "samples": self.samples}


@dataclass
class Ratio:
    """A candidate over its baseline, computed per repeat so both halves share the same noise."""

    name: str
    candidate: str
    baseline: str
    meaning: str
    samples: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "baseline": self.baseline,
            "meaning": self.meaning,
            **_spread(self.samples),
            "samples": self.samples,
        }


@dataclass
class Results:
    measurements: dict[str, Measurement] = field(default_factory=dict)
    ratios: dict[str, Ratio] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def declare(self, names_and_units: list[tuple[str, str]]) -> None:
        """Fix the order the report lists measurements in, whatever order they are taken in."""
        for name, unit in names_and_units:
            self.measurements.setdefault(name, Measurement(name, unit))

    def record(self, name: str, unit: str, value: float) -> None:
        self.measurements.setdefault(name, Measurement(name, unit)).samples.append(value)

    def record_ratio(
        self, name: str, candidate: str, baseline: str, meaning: str, repeat: int
    ) -> None:
        ratio = self.ratios.setdefault(name, Ratio(name, candidate, baseline, meaning))
        numerator = self.measurements[candidate].samples[repeat]
        denominator = self.measurements[baseline].samples[repeat]
        ratio.samples.append(numerator / denominator if denominator else float("nan"))


def _spread(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


# -- test data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpanData:
    """Span-like rows, kept in both layouts so neither insert pays for a conversion."""

    rows: list[tuple[Any, ...]]
    columns: list[list[Any]]
    row_bytes: int  # uncompressed column data of all rows: string lengths plus 24 numeric bytes
    kafka_messages: list[tuple[bytes, bytes]]  # (key = trace id, value = JSON span)


def generate_span_data(row_count: int, message_count: int, seed: int = 20240601) -> SpanData:
    """Distinct, prose-like spans: zstd should compress them like real text, not like zeros.

    Texts are drawn from a pool of sentences made of pseudo-words with Zipf-like frequencies;
    the pool is large enough that a 1 MB producer batch rarely repeats a sentence.
    """
    generator = np.random.default_rng(seed)
    vocabulary = _pseudo_words(generator, 4000)
    ranks = np.arange(1, len(vocabulary) + 1, dtype=np.float64)
    word_weights = (1.0 / ranks) / (1.0 / ranks).sum()
    sentence_count = 60_000
    sentence_lengths = generator.integers(6, 18, size=sentence_count)
    word_ids = generator.choice(len(vocabulary), size=int(sentence_lengths.sum()), p=word_weights)
    sentences: list[str] = []
    position = 0
    for length in sentence_lengths.tolist():
        words = [vocabulary[index] for index in word_ids[position : position + length].tolist()]
        position += length
        sentences.append(" ".join(words).capitalize() + ".")

    total = max(row_count, message_count)
    picks = generator.integers(0, sentence_count, size=(total, 14)).tolist()
    services = generator.integers(0, len(SERVICES), size=total).tolist()
    models = generator.integers(0, len(MODELS), size=total).tolist()
    input_tokens = generator.integers(40, 4000, size=total).tolist()
    output_tokens = generator.integers(5, 1200, size=total).tolist()
    latencies = np.round(generator.lognormal(6.5, 0.6, size=total), 3).tolist()
    span_ids = generator.integers(0, 2**63, size=total, dtype=np.int64).tolist()
    trace_ids = generator.integers(0, 2**63, size=(total, 2), dtype=np.int64).tolist()

    rows: list[tuple[Any, ...]] = []
    for index in range(total):
        chosen = [sentences[pick] for pick in picks[index]]
        prompt = " ".join(chosen[:9])[:PROMPT_CHARS]
        completion = " ".join(chosen[9:])[:COMPLETION_CHARS]
        model, input_price, output_price = MODELS[models[index]]
        cost = input_tokens[index] * input_price + output_tokens[index] * output_price
        rows.append(
            (
                f"{span_ids[index]:016x}",
                f"{trace_ids[index][0]:016x}{trace_ids[index][1]:016x}",
                SERVICES[services[index]],
                model,
                input_tokens[index],
                output_tokens[index],
                round(cost, 8),
                latencies[index],
                prompt,
                completion,
            )
        )

    names = [name for name, _ in CLICKHOUSE_COLUMNS]
    kafka_messages = [
        (row[1].encode(), json.dumps(dict(zip(names, row, strict=True))).encode())
        for row in rows[:message_count]
    ]
    clickhouse_rows = rows[:row_count]
    columns = [list(column) for column in zip(*clickhouse_rows, strict=True)]
    # Every text is ASCII, so characters are bytes; the four numeric columns take 24 bytes.
    row_bytes = sum(len(value) for value in columns_text(columns)) + 24 * len(clickhouse_rows)
    return SpanData(
        rows=clickhouse_rows, columns=columns, row_bytes=row_bytes, kafka_messages=kafka_messages
    )


def columns_text(columns: list[list[Any]]) -> Iterator[str]:
    for (_, kind), column in zip(CLICKHOUSE_COLUMNS, columns, strict=True):
        if "String" in kind:
            yield from column


def _pseudo_words(generator: np.random.Generator, count: int) -> list[str]:
    syllables = [
        onset + vowel
        for onset in ("", "b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "st")
        for vowel in ("a", "e", "i", "o", "u", "ou", "ea")
    ]
    words: set[str] = set()
    while len(words) < count:
        size = int(generator.integers(1, 5))
        words.add("".join(syllables[i] for i in generator.integers(0, len(syllables), size)))
    return sorted(words, key=len)  # short words get the high Zipf weights, as in prose


# -- Kafka -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaVariant:
    label: str
    producer: dict[str, Any]
    consumer: dict[str, Any]


def kafka_variants(bootstrap_servers: str, data_dir: Path) -> tuple[KafkaVariant, KafkaVariant]:
    """(baseline, candidate): librdkafka defaults, then llmtap's own client configuration."""
    from llmtap.kafka import consumer_config, producer_config
    from llmtap.settings import Settings

    settings = Settings(
        data_dir=data_dir,
        kafka={"bootstrap_servers": bootstrap_servers},
    )
    # librdkafka's defaults: acks=all, linger.ms=5, no idempotence, no compression, auto-commit.
    plain = KafkaVariant(
        label="plain",
        producer={"bootstrap.servers": bootstrap_servers, "client.id": "bench-plain"},
        consumer={"bootstrap.servers": bootstrap_servers, "group.id": "bench-plain"},
    )
    llmtap = KafkaVariant(
        label="llmtap",
        producer=producer_config(settings),
        consumer=consumer_config(settings, group_id="bench-llmtap"),
    )
    return plain, llmtap


def create_topic(admin: Any, name: str) -> None:
    from confluent_kafka.admin import NewTopic

    futures = admin.create_topics(
        [NewTopic(name, num_partitions=KAFKA_PARTITIONS, replication_factor=1)]
    )
    futures[name].result(timeout=30)


def produce_all(producer: Any, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    """Seconds from the first produce() until flush() confirms every message; raises on loss."""
    failures: list[str] = []

    def on_delivery(error: Any, message: Any) -> None:
        if error is not None and len(failures) < 5:
            failures.append(f"partition {message.partition()}: {error}")

    try:
        started = time.perf_counter()
        for index, (key, value) in enumerate(messages):
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let librdkafka drain it, then retry
                    producer.poll(0.05)
            if index % KAFKA_POLL_EVERY == 0:
                producer.poll(0)
        deadline = time.monotonic() + KAFKA_FLUSH_TIMEOUT_SECONDS
        # Short flushes in a loop keep Ctrl-C responsive (a long flush() blocks signals).
        while (remaining := producer.flush(0.5)) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Producing to {topic}: {remaining} messages still undelivered after "
                    f"{KAFKA_FLUSH_TIMEOUT_SECONDS:.0f} s."
                )
        elapsed = time.perf_counter() - started
    except BaseException:
        producer.purge()  # interrupted: drop the queue, so destroying the client is quiet
        raise
    if failures:
        raise RuntimeError(f"Producing to {topic}: delivery failed ({'; '.join(failures)}).")
    return elapsed


def consume_all(consumer: Any, topic: str, expected: int, expected_bytes: int) -> float:
    """Seconds to read the whole topic from the beginning in consume() batches.

    Partitions are assigned, not subscribed, so a group rebalance is not part of the figure.
    Raises unless exactly the expected messages and bytes came back.
    """
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    partitions = [
        TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(KAFKA_PARTITIONS)
    ]
    received = 0
    received_bytes = 0
    started = time.perf_counter()
    consumer.assign(partitions)
    try:
        last_progress = time.monotonic()
        while received < expected:
            # Never ask for more than is left: consume() waits out its timeout for a full batch.
            wanted = min(KAFKA_CONSUME_BATCH, expected - received)
            batch = consumer.consume(num_messages=wanted, timeout=1.0)
            for message in batch:
                error = message.error()
                if error is not None:
                    raise RuntimeError(
                        f"Consuming {topic} partition {message.partition()} "
                        f"offset {message.offset()}: {error.str()}"
                    )
                received_bytes += len(message.value()) + len(message.key() or b"")
            if batch:
                received += len(batch)
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > KAFKA_CONSUME_STALL_SECONDS:
                raise RuntimeError(
                    f"Consuming {topic}: stuck at {received} of {expected} messages for "
                    f"{KAFKA_CONSUME_STALL_SECONDS:.0f} s."
                )
        elapsed = time.perf_counter() - started
    finally:
        consumer.unassign()
    if received != expected or received_bytes != expected_bytes:
        raise RuntimeError(
            f"Consumed {received} messages ({received_bytes} bytes) from {topic}; "
            f"expected {expected} ({expected_bytes} bytes)."
        )
    return elapsed


def producer_startup(config: dict[str, Any], topic: str, message: tuple[bytes, bytes]) -> float:
    """Seconds from creating a producer until its first message is acknowledged."""
    from confluent_kafka import Producer

    started = time.perf_counter()
    producer = Producer(config)
    try:
        producer.produce(topic, message[1], message[0])
        while producer.flush(0.5) > 0:
            if time.perf_counter() - started > KAFKA_FLUSH_TIMEOUT_SECONDS:
                raise RuntimeError(f"A new producer could not deliver one message to {topic}.")
        return time.perf_counter() - started
    except BaseException:
        producer.purge()
        raise


def stored_bytes(broker_data_dir: Path, topic: str) -> int:
    """Bytes the broker wrote to its log segments for a topic: shows what compression saved."""
    return sum(segment.stat().st_size for segment in broker_data_dir.glob(f"{topic}-*/*.log"))


def run_kafka(
    messages: list[tuple[bytes, bytes]],
    repeats: int,
    workdir: Path,
    results: Results,
    progress: Progress,
) -> None:
    """Start a private broker, measure, and stop it whatever happens (Ctrl-C included)."""
    from llmtap.dev.kafka_broker import LocalKafkaBroker
    from llmtap.settings import LocalKafkaSettings

    broker_root = workdir / "kafka"
    broker = LocalKafkaBroker(
        LocalKafkaSettings(jar_cache_dir=JAR_CACHE_DIR), root=broker_root, progress=progress
    )
    try:
        state = broker.start()
        progress(f"broker ready at {state.bootstrap_servers} (Kafka {state.version})")
        results.details["kafka_version"] = state.version
        measure_kafka(
            state.bootstrap_servers,
            broker_root / "broker" / "data",
            messages,
            repeats,
            workdir,
            results,
            progress,
        )
    except BaseException as error:
        # The traceback keeps every frame's locals alive, Kafka clients included; free them
        # before the broker goes, so none is left reconnecting and logging about it.
        traceback.clear_frames(error.__traceback__)
        raise
    finally:
        # A second Ctrl-C must not cut the controlled shutdown short and orphan the broker.
        with _signals_ignored():
            broker.stop()


def measure_kafka(
    bootstrap_servers: str,
    broker_data_dir: Path,
    messages: list[tuple[bytes, bytes]],
    repeats: int,
    workdir: Path,
    results: Results,
    progress: Progress,
) -> None:
    """Throughput of long-lived, warmed-up clients (as llmtap's components run them).

    A new client's first request costs hundreds of milliseconds (an idempotent producer
    must get a producer id; a consumer must learn a new topic's leaders before it can look
    up offsets), which would swamp a one-second measurement. So throughput is measured on
    clients that already run, and a new producer's start-up is measured on its own.
    """
    # Every client here is a local: gone when this returns (or, on an exception, when
    # run_kafka clears the frames), before the broker shuts down.
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    variants = kafka_variants(bootstrap_servers, workdir / "settings")
    results.details["kafka_client_configs"] = {
        variant.label: {
            "producer": _printable_config(variant.producer),
            "consumer": _printable_config(variant.consumer),
        }
        for variant in variants
    }
    results.declare(
        [
            (f"kafka {what} {variant.label} {unit}", unit)
            for what in ("produce", "consume")
            for unit in ("msg/s", "MB/s")
            for variant in variants
        ]
        + [(f"kafka stored {variant.label} % of payload", "%") for variant in variants]
        + [(f"kafka producer startup {variant.label} ms", "ms") for variant in variants]
    )
    message_bytes = sum(len(key) + len(value) for key, value in messages)
    results.details["kafka_message_bytes_average"] = message_bytes / len(messages)

    producers = {variant.label: Producer(variant.producer) for variant in variants}
    consumers = {variant.label: Consumer(variant.consumer) for variant in variants}
    try:
        startup_topic = "bench.startup"
        create_topic(admin, startup_topic)
        warmup = messages[: max(1000, len(messages) // 10)]
        progress(f"kafka warm-up: {len(warmup):,} messages per variant (not counted)")
        for variant in variants:
            topic = f"bench.warmup.{variant.label}"
            create_topic(admin, topic)
            produce_all(producers[variant.label], topic, warmup)
            consumers[variant.label].list_topics(topic, timeout=30)
            warmup_bytes = sum(len(key) + len(value) for key, value in warmup)
            consume_all(consumers[variant.label], topic, len(warmup), warmup_bytes)

        for repeat in range(repeats):
            order = variants if repeat % 2 == 0 else variants[::-1]
            for variant in order:
                label = variant.label
                topic = f"bench.{label}.{repeat}"
                create_topic(admin, topic)
                # Both clients learn the new topic's leaders first, as running clients would have.
                producers[label].list_topics(topic, timeout=30)
                consumers[label].list_topics(topic, timeout=30)

                seconds = produce_all(producers[label], topic, messages)
                _record_rate(
                    results, f"kafka produce {label}", len(messages), message_bytes, seconds
                )
                stored = stored_bytes(broker_data_dir, topic)
                results.record(
                    f"kafka stored {label} % of payload", "%", 100 * stored / message_bytes
                )
                consume_seconds = 0.0
                for consume_pass in range(KAFKA_CONSUME_PASSES):
                    if consume_pass:
                        time.sleep(KAFKA_FETCH_WAIT_SECONDS + 0.05)
                    consume_seconds += consume_all(
                        consumers[label], topic, len(messages), message_bytes
                    )
                _record_rate(
                    results,
                    f"kafka consume {label}",
                    KAFKA_CONSUME_PASSES * len(messages),
                    KAFKA_CONSUME_PASSES * message_bytes,
                    consume_seconds,
                )
                startup = producer_startup(
                    variant.producer, startup_topic, messages[repeat % len(messages)]
                )
                results.record(f"kafka producer startup {label} ms", "ms", startup * 1e3)
                admin.delete_topics([topic])[topic].result(timeout=30)
                progress(
                    f"kafka repeat {repeat + 1}/{repeats} {label:>6}: produce "
                    f"{len(messages) / seconds:9,.0f} msg/s, consume "
                    f"{KAFKA_CONSUME_PASSES * len(messages) / consume_seconds:9,.0f} msg/s, "
                    f"on disk {stored / message_bytes:.0%} of payload, "
                    f"new producer ready in {startup * 1e3:,.0f} ms"
                )
            for direction in ("produce", "consume"):
                results.record_ratio(
                    f"kafka {direction} llmtap / plain",
                    candidate=f"kafka {direction} llmtap msg/s",
                    baseline=f"kafka {direction} plain msg/s",
                    meaning="throughput ratio; above 1 means llmtap's defaults are faster",
                    repeat=repeat,
                )
            results.record_ratio(
                "kafka producer startup llmtap / plain",
                candidate="kafka producer startup llmtap ms",
                baseline="kafka producer startup plain ms",
                meaning="time ratio; above 1 means llmtap's producer takes longer to start",
                repeat=repeat,
            )
    finally:
        for consumer in consumers.values():
            consumer.close()


def _record_rate(results: Results, name: str, count: int, total_bytes: int, seconds: float) -> None:
    results.record(f"{name} msg/s", "msg/s", count / seconds)
    results.record(f"{name} MB/s", "MB/s", total_bytes / seconds / 1e6)


def _printable_config(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "logger"}


# -- ClickHouse ------------------------------------------------------------------------------


def run_clickhouse(
    data: SpanData, repeats: int, workdir: Path, results: Results, progress: Progress
) -> None:
    from llmtap.clickhouse import open_target
    from llmtap.clickhouse_dsn import ClickHouseTarget

    # The engine allows one data path per process: everything below uses this one.
    target = ClickHouseTarget(kind="chdb", path=str(workdir / "clickhouse"), database="bench")
    progress(f"opening the embedded ClickHouse at {target.path}")
    client = open_target(target)
    try:
        version = client.query("SELECT version()").result_rows[0][0]
        results.details["clickhouse_version"] = version
        progress(f"embedded ClickHouse {version} ready")
        columns_ddl = ", ".join(f"{name} {kind}" for name, kind in CLICKHOUSE_COLUMNS)
        client.command(
            f"CREATE TABLE spans ({columns_ddl}) ENGINE = MergeTree ORDER BY (service, model)"
        )
        names = [name for name, _ in CLICKHOUSE_COLUMNS]
        row_count = len(data.rows)
        starts = range(0, row_count, CLICKHOUSE_BATCH_ROWS)
        column_batches = [
            [column[start : start + CLICKHOUSE_BATCH_ROWS] for column in data.columns]
            for start in starts
        ]
        row_batches = [data.rows[start : start + CLICKHOUSE_BATCH_ROWS] for start in starts]
        results.details["clickhouse_bytes_per_row"] = data.row_bytes / row_count

        def insert_columns() -> None:
            for batch in column_batches:
                client.insert("spans", batch, column_names=names, column_oriented=True)

        def insert_rows() -> None:
            for batch in row_batches:
                client.insert("spans", batch, column_names=names)

        variants = (("row-oriented", insert_rows), ("column-oriented", insert_columns))
        results.declare(
            [
                (f"clickhouse insert {label} {unit}", unit)
                for unit in ("rows/s", "MB/s")
                for label, _ in variants
            ]
            + [("clickhouse group-by query ms", "ms")]
        )
        progress("clickhouse warm-up: one batch each way (not counted)")
        client.insert("spans", row_batches[0], column_names=names)
        client.insert("spans", column_batches[0], column_names=names, column_oriented=True)
        client.command("TRUNCATE TABLE spans")

        for repeat in range(repeats):
            order = variants if repeat % 2 == 0 else variants[::-1]
            line = []
            for label, insert in order:
                started = time.perf_counter()
                insert()
                seconds = time.perf_counter() - started
                stored = client.query("SELECT count() FROM spans").result_rows[0][0]
                if stored != row_count:
                    raise RuntimeError(f"{label} insert stored {stored} of {row_count} rows.")
                results.record(f"clickhouse insert {label} rows/s", "rows/s", row_count / seconds)
                results.record(
                    f"clickhouse insert {label} MB/s", "MB/s", data.row_bytes / seconds / 1e6
                )
                line.append(f"{label} {row_count / seconds:9,.0f} rows/s")
                if label == "column-oriented":
                    for _ in range(QUERY_RUNS_PER_REPEAT):
                        started = time.perf_counter()
                        groups = client.query(CLICKHOUSE_QUERY).result_rows
                        results.record(
                            "clickhouse group-by query ms",
                            "ms",
                            (time.perf_counter() - started) * 1e3,
                        )
                    results.details["clickhouse_query_groups"] = len(groups)
                client.command("TRUNCATE TABLE spans")
            results.record_ratio(
                "clickhouse insert column / row",
                candidate="clickhouse insert column-oriented rows/s",
                baseline="clickhouse insert row-oriented rows/s",
                meaning="throughput ratio; above 1 means column-oriented inserts are faster",
                repeat=repeat,
            )
            progress(f"clickhouse repeat {repeat + 1}/{repeats}: {', '.join(line)}")
    finally:
        client.close()


# -- report ----------------------------------------------------------------------------------


def render_table(results: Results) -> str:
    lines = [
        f"{'measurement':<44} {'median':>12} {'min':>12} {'max':>12}  unit",
        "-" * 90,
    ]
    for measurement in results.measurements.values():
        spread = _spread(measurement.samples)
        lines.append(
            f"{measurement.name:<44} {_number(spread['median']):>12} "
            f"{_number(spread['min']):>12} {_number(spread['max']):>12}  {measurement.unit}"
        )
    lines += ["", f"{'ratio (per-repeat, then median)':<44} {'median':>12} {'min':>12} {'max':>12}"]
    lines.append("-" * 90)
    for ratio in results.ratios.values():
        spread = _spread(ratio.samples)
        lines.append(
            f"{ratio.name:<44} {spread['median']:>12.3f} {spread['min']:>12.3f} "
            f"{spread['max']:>12.3f}"
        )
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:,.2f}"


def environment() -> dict[str, Any]:
    import chdb
    import clickhouse_connect
    import confluent_kafka

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "clickhouse_connect": clickhouse_connect.__version__,
        "chdb": chdb.__version__,
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return None


# -- entry point -----------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure llmtap's infrastructure baselines (Kafka, embedded ClickHouse).",
    )
    parser.add_argument(
        "--messages",
        type=_positive_int,
        default=50_000,
        help="Kafka messages (~1 KB each) per produce/consume run (default: 50000)",
    )
    parser.add_argument(
        "--rows",
        type=_positive_int,
        default=200_000,
        help=(
            f"ClickHouse rows per insert run, in batches of {CLICKHOUSE_BATCH_ROWS:,} "
            "(default: 200000)"
        ),
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=5,
        help="times each measurement is repeated; the report gives medians (default: 5)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON results file (default: bench/results/infrastructure-<UTC timestamp>.json)",
    )
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    # `make` and CI stop jobs with SIGTERM or SIGHUP; treat them like Ctrl-C so `finally` runs
    # and the broker (which lives in its own session and never sees our signals) is stopped.
    for signal_number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signal_number, _interrupt)
    # llmtap's clients log librdkafka's messages through `llmtap.librdkafka`; say whose they are.
    logging.basicConfig(level=logging.WARNING, format="         %(name)s: %(message)s")

    begun = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - begun:6.1f}s] {message}", flush=True)

    started_at = datetime.datetime.now(datetime.UTC)
    output = arguments.output or RESULTS_DIR / (
        f"infrastructure-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    )
    # The figures are for llmtap's defaults, not for whatever this shell overrides.
    from llmtap.settings import ENV_PREFIX, NON_SETTING_ENV_VARS

    overridden = sorted(
        name
        for name in os.environ
        if name.startswith(ENV_PREFIX) and name not in NON_SETTING_ENV_VARS
    )
    for name in overridden:
        del os.environ[name]
    if overridden:
        progress(f"ignoring {', '.join(overridden)}: the benchmark measures llmtap's defaults")
    results = Results()
    try:
        env = environment()
        progress(
            f"generating {max(arguments.rows, arguments.messages):,} span-like records "
            f"({arguments.messages:,} Kafka messages, {arguments.rows:,} ClickHouse rows)"
        )
        data = generate_span_data(arguments.rows, arguments.messages)
        # Hundreds of thousands of long-lived rows would otherwise be rescanned by every full
        # garbage collection, at moments that land in one measurement and not another.
        gc.collect()
        gc.freeze()
        with tempfile.TemporaryDirectory(
            prefix="llmtap-bench-", ignore_cleanup_errors=True
        ) as directory:
            workdir = Path(directory)
            # Kafka first, then ClickHouse with the broker stopped: each gets the CPUs alone.
            run_kafka(data.kafka_messages, arguments.repeats, workdir, results, progress)
            run_clickhouse(data, arguments.repeats, workdir, results, progress)
    except (KeyboardInterrupt, SystemError) as error:
        # confluent-kafka (2.16) loses a KeyboardInterrupt raised while one of its Python
        # callbacks runs (delivery report, logger) and raises this SystemError instead.
        if isinstance(error, SystemError) and not _signals_received:
            raise
        print("\ninterrupted; the benchmark's broker is stopped", file=sys.stderr)
        return 130

    env["load_average_at_end"] = os.getloadavg()
    elapsed = time.monotonic() - begun
    report = {
        "benchmark": "infrastructure",
        "started_at": started_at.isoformat(),
        "elapsed_seconds": round(elapsed, 1),
        "parameters": {
            "messages": arguments.messages,
            "rows": arguments.rows,
            "repeats": arguments.repeats,
            "clickhouse_batch_rows": CLICKHOUSE_BATCH_ROWS,
            "kafka_partitions": KAFKA_PARTITIONS,
            "kafka_consume_batch": KAFKA_CONSUME_BATCH,
            "kafka_consume_passes": KAFKA_CONSUME_PASSES,
            "query": CLICKHOUSE_QUERY,
            "query_runs_per_repeat": QUERY_RUNS_PER_REPEAT,
        },
        "environment": env,
        "measurements": {name: item.summary() for name, item in results.measurements.items()},
        "ratios": {name: item.summary() for name, item in results.ratios.items()},
        "details": results.details,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print()
    print(
        f"llmtap infrastructure baselines: {arguments.repeats} repeats, "
        f"{arguments.messages:,} Kafka messages, {arguments.rows:,} ClickHouse rows, "
        f"{os.cpu_count()} CPUs, load {env['load_average_at_start'][0]:.2f} -> "
        f"{env['load_average_at_end'][0]:.2f}"
    )
    print(render_table(results))
    print(f"\nwritten to {_display_path(output)} in {elapsed:.0f} s")
    return 0


_signals_received: list[str] = []


def _interrupt(signal_number: int, frame: FrameType | None) -> None:
    name = signal.Signals(signal_number).name
    _signals_received.append(name)
    raise KeyboardInterrupt(name)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in handled}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _display_path(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
