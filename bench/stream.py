"""Processor benchmark: normalize + aggregate per worker, and breach-to-webhook alert latency.

Why: the processor role (the normalizer and the faust stream worker in one process) must keep
up with 15,000 spans/s per worker, and an alert must reach its webhook within 5 s (p95). Both
run here on a private Kafka broker on the same machine, with the real role code:

- throughput: raw OTLP requests (100 spans each, as the collector writes them) are produced
  first, then one processor role starts and drains them; spans/s is the span count over the
  time from when both its consumer groups are stable with partitions assigned (joining takes
  seconds) until both committed everything, and CPU-µs/span is the process's CPU time over
  that span of time. The stream worker commits every 2 s (its default), so short runs read
  low: keep ``--requests`` at 1,000 or more. Baseline in the same run: a plain confluent-kafka consumer (partitions
  assigned, no group join) reading and protobuf-decoding the same messages.
  ``--split`` runs the normalizer and the stream worker as two processes instead, as
  docker-compose.yml does (CPU is then both processes' /proc times).
- pure aggregation cost: the two aggregation stages alone, in-process, on the same spans.
- alert latency: a cost-budget rule per tenant; each breach is one expensive span for a new
  tenant, produced to the aggregate inputs topic; latency is produce → webhook request
  received.

    .venv/bin/python bench/stream.py [--requests 1000] [--repeats 3] [--breaches 20] [--split]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector import build_request

from llmtap.dev.kafka_broker import LocalKafkaBroker
from llmtap.processors.aggregates.merge import PartialMerger
from llmtap.processors.aggregates.windows import WindowConfig, WindowedAggregator
from llmtap.processors.normalize.normalizer import Normalizer
from llmtap.processors.pricing import PriceTable
from llmtap.roles import start_role
from llmtap.schemas.aggregate_inputs import (
    aggregate_input_of,
    decode_aggregate_inputs,
    encode_aggregate_inputs,
    is_aggregated,
)
from llmtap.schemas.llm_span import Cost, LlmSpan, TokenUsage
from llmtap.settings import LocalKafkaSettings, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_settings(bootstrap: str, root: Path, **processor: Any) -> Settings:
    return Settings.model_validate(bench_config(bootstrap, root, **processor))


def bench_config(bootstrap: str, root: Path, **processor: Any) -> dict[str, Any]:
    """The settings as a config file holds them (``--split`` passes them to its processes)."""
    suffix = uuid.uuid4().hex[:8]
    return dict(
        data_dir=str(root),
        kafka={"bootstrap_servers": bootstrap},
        topics={
            "raw_spans": f"bench.raw.{suffix}",
            "raw_logs": f"bench.rawlogs.{suffix}",
            "normalized_spans": f"bench.normalized.{suffix}",
            "aggregate_inputs": f"bench.inputs.{suffix}",
            "aggregate_partials": f"bench.partials.{suffix}",
            "aggregates": f"bench.aggregates.{suffix}",
            "alerts": f"bench.alerts.{suffix}",
            "dead_letter": f"bench.dead.{suffix}",
            "partitions": 6,
        },
        processor={
            "consumer_group": f"bench-normalizer-{suffix}",
            "stream": {"app_id": f"bench-stream-{suffix}"},
            # normalize + aggregate only: risk and drift have benchmarks of their own
            "risk": {"enabled": False},
            "drift": {"enabled": False},
            **processor,
        },
    )


def produce(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    from llmtap.kafka import ensure_topics
    from llmtap.schemas.topics import raw_spans_topic

    settings = Settings(kafka={"bootstrap_servers": bootstrap})  # type: ignore[arg-type]
    ensure_topics(settings, [raw_spans_topic(topic, 6)])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for key, value in values:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def baseline_consume(
    bootstrap: str, topic: str, messages: int, partitions: int = 6
) -> tuple[float, float]:
    """Wall and CPU seconds for a plain consumer to read and decode every message."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-baseline-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    # Assigned, not subscribed: a group join takes seconds, which would be timed as reading.
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen = 0
    started, cpu = time.perf_counter(), cpu_seconds()
    while seen < messages:
        for message in consumer.consume(1000, 1.0):
            if message.error() is None:
                ExportTraceServiceRequest.FromString(message.value() or b"")
                seen += 1
    figures = time.perf_counter() - started, cpu_seconds() - cpu
    consumer.close()
    return figures


class _DrainWatch:
    """Committed vs end offsets of the normalizer and aggregate groups, with two long-lived
    consumers: the role runs in this process, so creating clients every poll (as ``llmtap
    status`` does) would be counted in its CPU time and slow it down."""

    def __init__(self, settings: Settings) -> None:
        topics = settings.topics
        self._watched = [
            (topics.raw_spans, settings.processor.consumer_group),
            (topics.aggregate_inputs, settings.processor.stream.app_id),
        ]
        self._consumers = [
            Consumer(
                {
                    "bootstrap.servers": settings.kafka.bootstrap_servers,
                    "group.id": group,
                    "enable.auto.commit": False,
                }
            )
            for _topic, group in self._watched
        ]
        self._partitions = topics.partitions

    def lags(self) -> list[tuple[int, int]]:
        """(end offsets, committed offsets) summed over partitions, per watched group."""
        figures = []
        for (topic, _group), consumer in zip(self._watched, self._consumers, strict=True):
            partitions = [TopicPartition(topic, p) for p in range(self._partitions)]
            end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions)
            committed = sum(max(0, tp.offset) for tp in consumer.committed(partitions, timeout=10))
            figures.append((end, committed))
        return figures

    def close(self) -> None:
        for consumer in self._consumers:
            consumer.close()


async def processor_drain(settings: Settings) -> tuple[float, float]:
    """Wall and CPU seconds for one processor role to normalize and aggregate what the raw
    topic holds, timed from when both its consumer groups are stable with partitions assigned
    (joining takes seconds, and is not processing)."""
    watch = _DrainWatch(settings)
    role = await start_role("processor", settings, lambda message: None)
    try:
        await asyncio.to_thread(
            _wait_assigned,
            settings.kafka.bootstrap_servers,
            [settings.processor.consumer_group, settings.processor.stream.app_id],
        )
        started, cpu = time.perf_counter(), cpu_seconds()
        await _drained(watch, settings.topics.partitions)
        return time.perf_counter() - started, cpu_seconds() - cpu
    finally:
        await role.stop()
        watch.close()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (the fields after its name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processor_drain_split(config: dict[str, Any], root: Path) -> tuple[float, float]:
    """As :func:`processor_drain`, with the normalizer and the stream worker in two processes
    (``llmtap processor --stages normalize`` and ``--stages stream``, as docker-compose.yml
    runs them); CPU is the sum of both."""
    settings = Settings.model_validate(config)
    config_file = root / f"llmtap-{settings.processor.stream.app_id}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {key: value for key, value in os.environ.items() if not key.startswith("LLMTAP_")}
    env["LLMTAP_CONFIG_FILE"] = str(config_file)
    watch = _DrainWatch(settings)
    processes = []
    try:
        for stages in ("normalize", "stream"):
            log = (root / f"{settings.processor.stream.app_id}-{stages}.log").open("w")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "llmtap", "processor", "--stages", stages],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        _wait_assigned(
            settings.kafka.bootstrap_servers,
            [settings.processor.consumer_group, settings.processor.stream.app_id],
        )
        started = time.perf_counter()
        before = [process_cpu_seconds(process.pid) for process in processes]
        asyncio.run(_drained(watch, settings.topics.partitions))
        wall = time.perf_counter() - started
        used = [process_cpu_seconds(p.pid) - b for p, b in zip(processes, before, strict=True)]
        print(
            f"  normalizer process {used[0] / wall:.0%} of a core, "
            f"stream process {used[1] / wall:.0%} over {wall:.1f} s"
        )
        return wall, sum(used)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
        watch.close()


def _wait_assigned(bootstrap: str, groups: list[str]) -> None:
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        descriptions = [
            future.result(10) for future in admin.describe_consumer_groups(groups).values()
        ]
        if all(
            description.state == ConsumerGroupState.STABLE
            and any(member.assignment.topic_partitions for member in description.members)
            for description in descriptions
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"consumer groups {groups} not assigned within 60 s")


async def _drained(watch: _DrainWatch, partitions: int) -> None:
    """Until both groups committed everything produced so far."""
    while True:
        (raw_end, raw_done), (inputs_end, inputs_done) = await asyncio.to_thread(watch.lags)
        normalized = raw_end > 0 and raw_done == raw_end
        # faust commits the offset after the last record it processed; the normalizer's
        # transaction marker after it stays "lag" (one per partition at most).
        aggregated = inputs_end > 0 and inputs_end - inputs_done <= partitions
        if normalized and aggregated:
            return
        await asyncio.sleep(0.1)


def aggregation_only(messages: list[bytes], spans: int) -> float:
    """CPU-µs per span of traffic for the two aggregation stages alone (decoding the aggregate
    inputs messages, windows, merge), 20 messages a batch as the worker takes them."""
    aggregator = WindowedAggregator(WindowConfig(), {})
    merger = PartialMerger({})
    started = time.process_time()
    for index in range(0, len(messages), 20):
        records = [
            (offset % 6, offset, span)
            for offset, value in enumerate(messages[index : index + 20], start=index)
            for span in decode_aggregate_inputs(value)
        ]
        merger.process(aggregator.process(records).changed)
    return (time.process_time() - started) / spans * 1e6


async def alert_latency(bootstrap: str, root: Path, breaches: int) -> list[float]:
    received: dict[str, float] = {}

    async def hook(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if body["state"] == "firing":
            received.setdefault(body["labels"]["tenant"], time.perf_counter())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rules = root / "bench-rules.yaml"
    rules.write_text(
        "rules:\n  - id: tenant-budget\n    kind: cost_budget\n    severity: critical\n"
        "    group_by: [tenant]\n    window_seconds: 3600\n    threshold: 0.5\n"
    )
    settings = bench_settings(
        bootstrap,
        root,
        alerts={"rules_file": str(rules), "webhooks": [{"url": f"http://127.0.0.1:{port}/hook"}]},
    )
    from llmtap.processors.alerts.delivery_stage import AlertDeliveryStage
    from llmtap.processors.stream.app import StreamApp
    from llmtap.roles import ThreadedStage

    stream = StreamApp(settings)
    await stream.start()
    delivery_stage = AlertDeliveryStage(settings)
    delivery = ThreadedStage("alert delivery", delivery_stage.run, delivery_stage.ready)
    await delivery.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    sent: dict[str, float] = {}
    try:
        await asyncio.sleep(5)  # partitions assigned
        rng = random.Random(3)
        for number in range(breaches):
            tenant = f"tenant-{number}"
            now = time.time_ns()
            span = LlmSpan(
                trace_id=rng.randbytes(16).hex(),
                span_id=rng.randbytes(8).hex(),
                start_time_unix_nano=now - 10**9,
                end_time_unix_nano=now,
                tenant=tenant,
                span_type="llm",
                request_model="gpt-4o",
                usage=TokenUsage(input=100_000, output=10_000),
                cost=Cost(priced=True, price_version="bench", total="1.0"),
            )
            sent[tenant] = time.perf_counter()
            (value,) = encode_aggregate_inputs([aggregate_input_of(span)])
            producer.produce(settings.topics.aggregate_inputs, value)
            producer.flush(10)
            deadline = time.perf_counter() + 30
            while tenant not in received and time.perf_counter() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0, 1))  # breaches land anywhere in the cycle
    finally:
        await delivery.stop()
        await stream.stop()
        await runner.cleanup()
    return [received[tenant] - sent[tenant] for tenant in sent if tenant in received]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="100-span requests per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breaches", type=int, default=20)
    parser.add_argument(
        "--normalizer-batch",
        type=int,
        default=None,
        help="raw messages per normalizer transaction (default: the setting's default)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="normalizer and stream worker as two processes (as docker-compose.yml runs them)",
    )
    args = parser.parse_args()

    rng = random.Random(11)
    bodies = [build_request(100, 10, rng) for _ in range(args.requests)]
    spans = args.requests * 100
    normalizer = Normalizer(PriceTable.load().price)
    # The aggregate inputs as the normalizer writes them: each batch's LLM calls in messages of
    # up to 1,000 (a batch here: 10 requests, about 400 LLM calls).
    inputs = []
    for start in range(0, len(bodies), 10):
        batch = [
            aggregate_input_of(span)
            for body in bodies[start : start + 10]
            for span in normalizer.normalize_request(
                ExportTraceServiceRequest.FromString(body), tenant="t"
            )
            if is_aggregated(span)
        ]
        inputs.extend(encode_aggregate_inputs(batch))
    figures: dict[str, Any] = {"args": vars(args), "spans_per_repeat": spans}
    with tempfile.TemporaryDirectory(prefix="llmtap-bench-stream-") as temporary:
        root = Path(temporary)
        broker = LocalKafkaBroker(
            LocalKafkaSettings(jar_cache_dir=REPO_ROOT / ".llmtap" / "kafka" / "dist"),
            root / "kafka",
            print,
        )
        state = broker.start()
        try:
            runs: dict[str, list[float]] = {
                "baseline_spans_per_s": [],
                "baseline_cpu_us_per_span": [],
                "processor_spans_per_s": [],
                "processor_cpu_us_per_span": [],
                "aggregation_cpu_us_per_span": [],
            }
            for repeat in range(args.repeats):
                overrides: dict[str, Any] = {}
                if args.normalizer_batch is not None:
                    overrides["batch_max_messages"] = args.normalizer_batch
                config = bench_config(state.bootstrap_servers, root, **overrides)
                settings = Settings.model_validate(config)
                produce(
                    state.bootstrap_servers, settings.topics.raw_spans, [(None, b) for b in bodies]
                )
                wall, cpu = baseline_consume(
                    state.bootstrap_servers, settings.topics.raw_spans, len(bodies)
                )
                runs["baseline_spans_per_s"].append(spans / wall)
                runs["baseline_cpu_us_per_span"].append(cpu / spans * 1e6)
                if args.split:
                    wall, cpu = processor_drain_split(config, root)
                else:
                    wall, cpu = asyncio.run(processor_drain(settings))
                runs["processor_spans_per_s"].append(spans / wall)
                runs["processor_cpu_us_per_span"].append(cpu / spans * 1e6)
                runs["aggregation_cpu_us_per_span"].append(aggregation_only(inputs, spans))
                print(
                    f"repeat {repeat + 1}/{args.repeats}: processor "
                    f"{runs['processor_spans_per_s'][-1]:,.0f} spans/s, "
                    f"{runs['processor_cpu_us_per_span'][-1]:.1f} CPU-µs/span; baseline consume "
                    f"{runs['baseline_spans_per_s'][-1]:,.0f} spans/s; aggregation alone "
                    f"{runs['aggregation_cpu_us_per_span'][-1]:.1f} CPU-µs/span"
                )
            latencies = asyncio.run(alert_latency(state.bootstrap_servers, root, args.breaches))
        finally:
            broker.stop()
    medians = {name: statistics.median(values) for name, values in runs.items()}
    figures["runs"] = runs
    figures["medians"] = medians
    ratio = medians["processor_spans_per_s"] / medians["baseline_spans_per_s"]
    print()
    print(f"{'measure':<44}{'median':>14}")
    print(
        f"{'processor (normalize + aggregate) spans/s':<44}{medians['processor_spans_per_s']:>14,.0f}"
        + ("  (2 processes)" if args.split else "")
    )
    print(f"{'processor CPU-µs/span':<44}{medians['processor_cpu_us_per_span']:>14.1f}")
    print(
        f"{'aggregation stages alone CPU-µs/span':<44}{medians['aggregation_cpu_us_per_span']:>14.1f}"
    )
    print(f"{'baseline: consume+decode spans/s':<44}{medians['baseline_spans_per_s']:>14,.0f}")
    print(f"{'processor / baseline':<44}{ratio:>14.2f}")
    if latencies:
        ordered = sorted(latencies)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        figures["alert_latency_seconds"] = {
            "p50": statistics.median(ordered),
            "p95": p95,
            "n": len(ordered),
        }
        print(
            f"{'alert latency breach -> webhook (s)':<44}"
            f"p50 {statistics.median(ordered):.2f}  p95 {p95:.2f}  ({len(ordered)}/{args.breaches} received)"
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = RESULTS_DIR / f"stream-{time.strftime('%Y%m%dT%H%M%S')}.json"
    output.write_text(json.dumps(figures, indent=2))
    print(f"\nwritten {output}")


if __name__ == "__main__":
    main()
