"""Baselines of the end-to-end benchmark, on the same workload, in the same run (see ``e2e.py``).

Each runs in a process of its own (``run_isolated``), so its CPU time and memory are its own,
and the embedded engine path and the model never share a process with the harness:

- Kafka: a plain confluent-kafka producer and consumer (librdkafka defaults) moving the same
  messages the pipeline moves: the collector's per-trace raw messages and the normalized spans.
- ClickHouse: clickhouse-connect column-oriented inserts of the same rows into the embedded
  engine (``bench/sink.py``'s ``raw_insert``), in batches of the sink's default size.
- Embeddings: plain ``SentenceTransformer.encode`` (fp32, batch 32, no cache) of the texts the
  risk stage embeds for the same responses.
- OpenTelemetry Collector (otlpreceiver -> kafkaexporter), when a binary is at hand: the same
  requests, sent back to back, into a topic of the same broker.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SINK_BATCH_ROWS = 50_000  # SinkConfig.batch_max_rows default


def run_isolated(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``function(*args)`` in a fresh (spawned) process; its result dict, or the error."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        try:
            return dict(pool.apply(function, args))
        except Exception as error:  # a baseline that fails is reported, not fatal
            return {"error": f"{type(error).__name__}: {error}"}


def stamped_bodies(bodies: list[bytes]) -> list[bytes]:
    from e2e_load import Template

    return [Template(body).stamp(time.time_ns()) for body in bodies]


def normalized(bodies: list[bytes]) -> list[Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from llmtap.processors.normalize.normalizer import Normalizer
    from llmtap.processors.pricing import PriceTable

    normalizer = Normalizer(PriceTable.load().price)
    return [
        span
        for body in bodies
        for span in normalizer.normalize_request(
            ExportTraceServiceRequest.FromString(body), tenant="default"
        )
    ]


def kafka_baseline(bootstrap: str, bodies: list[bytes], repeats: int) -> dict[str, Any]:
    """Spans/s through both Kafka hops (raw and normalized) with plain clients."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    from llmtap.collectors.config import CollectorConfig
    from llmtap.collectors.trace_ingest import IngestTopics, TraceIngest
    from llmtap.schemas.llm_span import encode_span, span_key
    from llmtap.schemas.topics import Encoding

    bodies = stamped_bodies(bodies)
    suffix = uuid.uuid4().hex[:8]
    raw_topic, normalized_topic = f"baseline.raw.{suffix}", f"baseline.normalized.{suffix}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(raw_topic, 6), NewTopic(normalized_topic, 6)]
    ).values():
        future.result(30)
    ingest = TraceIngest(
        CollectorConfig(), IngestTopics(raw_spans=raw_topic, dead_letter=raw_topic)
    )
    raw = [
        (m.key, m.value)
        for body in bodies
        for m in ingest.ingest(body, Encoding.OTLP_PROTO, tenant="t", source="s").messages
    ]
    spans = normalized(bodies)
    norm = [(span_key(span), encode_span(span)) for span in spans]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})

    def produce(topic: str, messages: list[tuple[Any, bytes]]) -> float:
        started = time.perf_counter()
        for _ in range(repeats):
            for key, value in messages:
                while True:
                    try:
                        producer.produce(topic, value, key)
                        break
                    except BufferError:
                        producer.poll(0.05)
                producer.poll(0)
        producer.flush(120)
        return time.perf_counter() - started

    def consume(topic: str, count: int) -> float:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"baseline-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        # from the first message: the group join and offset look-up are not part of the figure
        seen = 0
        while not seen:
            seen = sum(1 for m in consumer.consume(1000, 1.0) if m.error() is None)
        started = time.perf_counter()
        while seen < count:  # never more than remain: consume() waits for all it asked for
            batch = consumer.consume(min(1000, count - seen), 1.0)
            seen += sum(1 for m in batch if m.error() is None)
        elapsed = time.perf_counter() - started
        consumer.close()
        return elapsed

    cpu = time.process_time()
    seconds = {
        "produce_raw": produce(raw_topic, raw),
        "consume_raw": consume(raw_topic, len(raw) * repeats),
        "produce_normalized": produce(normalized_topic, norm),
        "consume_normalized": consume(normalized_topic, len(norm) * repeats),
    }
    cpu = time.process_time() - cpu
    total_spans = len(spans) * repeats
    return {
        "spans": total_spans,
        "seconds": seconds,
        "spans_per_second": total_spans / sum(seconds.values()),
        "cpu_seconds_per_1000_spans": cpu / total_spans * 1000,
        "raw_messages_per_span": len(raw) / len(spans),
    }


def clickhouse_baseline(bodies: list[bytes], repeats: int) -> dict[str, Any]:
    """Rows/s of column-oriented inserts of the same rows into a fresh embedded engine."""
    from sink import raw_insert

    from llmtap.clickhouse import open_target
    from llmtap.clickhouse_dsn import ClickHouseTarget
    from llmtap.sinks.clickhouse.migrations import Migrator
    from llmtap.sinks.clickhouse.rows import span_row

    spans = normalized(stamped_bodies(bodies))
    rows = [span_row(span, "bench", 0, index) for index, span in enumerate(spans)] * repeats
    with tempfile.TemporaryDirectory(prefix="llmtap-e2e-baseline-") as temporary:
        target = ClickHouseTarget(kind="chdb", path=str(Path(temporary) / "ch"), database="bench")
        client = open_target(target)
        try:
            Migrator(client, "bench").apply()
            cpu = time.process_time()
            seconds = raw_insert(client, rows, SINK_BATCH_ROWS)
            cpu = time.process_time() - cpu
        finally:
            client.close()
    return {
        "rows": len(rows),
        "seconds": seconds,
        "rows_per_second": len(rows) / seconds,
        "cpu_seconds_per_1000_rows": cpu / len(rows) * 1000,
    }


def response_texts(bodies: list[bytes], limit: int) -> list[list[str]]:
    """Per scorable response, the texts the risk stage embeds (features and injection check)."""
    import numpy as np

    from llmtap.processors.risk.features import compute_features
    from llmtap.processors.risk.scorer import is_scorable, span_input

    class Recorder:
        def __init__(self) -> None:
            self.texts: list[str] = []

        def encode(self, texts: list[str], keys: Any = None) -> Any:
            self.texts.extend(texts)
            vectors = np.zeros((len(texts), 384), dtype=np.float32)
            vectors[:, 0] = 1.0
            return vectors

    result = []
    for span in normalized(stamped_bodies(bodies)):
        if not is_scorable(span):
            continue
        item = span_input(span)
        recorder = Recorder()
        compute_features(recorder, [item])
        result.append([*recorder.texts, *(t for t in (item.question, *item.contexts) if t)])
        if len(result) >= limit:
            break
    return result


def embedding_baseline(bodies: list[bytes], responses: int) -> dict[str, Any]:
    """Responses/s (and texts/s) of plain fp32 SentenceTransformer.encode of the same texts."""
    from llmtap.processors.embeddings.model import load_model

    per_response = response_texts(bodies, responses)
    texts = [text for group in per_response for text in group]
    model = load_model(None)
    model.encode(texts[:64], batch_size=32, show_progress_bar=False)  # warm-up
    started = time.perf_counter()
    model.encode(texts, batch_size=32, show_progress_bar=False, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    return {
        "responses": len(per_response),
        "texts": len(texts),
        "distinct_texts": len(set(texts)),
        "seconds": seconds,
        "responses_per_second": len(per_response) / seconds,
        "texts_per_second": len(texts) / seconds,
    }


OTELCOL_CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  kafka:
    brokers: ["{bootstrap}"]
    traces:
      topic: {topic}
      encoding: otlp_proto
service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [kafka]
"""


def otelcol_baseline(
    binary: Path, bootstrap: str, bodies: list[bytes], seconds: float, senders: int, root: Path
) -> dict[str, Any]:
    """The OTel Collector (otlpreceiver -> kafkaexporter) under the same back-to-back load."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic
    from e2e_load import generate
    from e2e_proc import peak_rss_megabytes, process_cpu_seconds

    topic = f"baseline.otelcol.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6)])[topic].result(30)
    port = free_port()
    config = root / "otelcol.yaml"
    config.write_text(OTELCOL_CONFIG.format(port=port, bootstrap=bootstrap, topic=topic))
    log = (root / "otelcol.log").open("w")
    process = subprocess.Popen(
        [str(binary), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, process)
        results = multiprocessing.get_context("spawn").Queue()
        warm = multiprocessing.get_context("spawn").Process(
            target=generate, args=(port, bodies, 0.0, 2.0, senders, results)
        )
        warm.start()
        results.get(timeout=120)
        warm.join()
        cpu = process_cpu_seconds(process.pid)
        load = multiprocessing.get_context("spawn").Process(
            target=generate, args=(port, bodies, 0.0, seconds, senders, results)
        )
        load.start()
        report = results.get(timeout=seconds + 120)
        load.join()
        cpu = process_cpu_seconds(process.pid) - cpu
        rss = peak_rss_megabytes(process.pid)
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    spans = report["spans_ok"]
    return {
        "binary": str(binary),
        "spans_per_second": spans / report["seconds"],
        "requests_per_second": report["requests_ok"] / report["seconds"],
        "cpu_seconds_per_1000_spans": cpu / spans * 1000 if spans else None,
        "peak_rss_megabytes": rss,
        "load": report,
    }


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")
