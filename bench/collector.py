"""Collector benchmark: OTLP/HTTP protobuf in, raw spans topic out, on a local broker.

Why: the collector must not be the bottleneck of the pipeline (target: 30,000 spans/s per core
with 100-span requests of ~20 attributes, redaction off). Machines here are shared and noisy, so
the figure that matters is CPU time of the collector process per span (measured from /proc, not
wall time), reported as a median over repeats and as a ratio to a baseline measured in the same
run: a bare confluent-kafka producer writing the same per-trace messages (the cheapest possible
forwarder in Python).

    .venv/bin/python bench/collector.py [--seconds 10] [--repeats 3] [--concurrency 8]

The collector runs as its own process (``llmtap collector``), the load generator in this one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from llmtap.collectors.config import CollectorConfig
from llmtap.collectors.trace_ingest import IngestTopics, TraceIngest
from llmtap.dev.kafka_broker import LocalKafkaBroker
from llmtap.schemas.topics import Encoding
from llmtap.settings import LocalKafkaSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

MODELS = ["gpt-4o-mini", "claude-sonnet-4", "llama-3.1-70b", "gemini-2.0-flash"]
PROMPTS = [
    "Summarise the customer's last three orders and flag any late deliveries.",
    "Mail the invoice to jane.doe@example.com and confirm the card ending 4242.",
    "Explain the difference between a Roth IRA and a traditional IRA for a 30 year old.",
    "Translate the discharge instructions into Spanish, keeping dosage units unchanged.",
]


def build_request(spans: int, traces: int, rng: random.Random) -> bytes:
    """One OTLP request: ``spans`` spans over ``traces`` traces, ~20 attributes per span."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in (("service.name", "support-bot"), ("deployment.environment.name", "prod")):
        resource_spans.resource.attributes.add(key=key, value=AnyValue(string_value=value))
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "opentelemetry.instrumentation.openai_v2"
    trace_ids = [rng.randbytes(16) for _ in range(traces)]
    for index in range(spans):
        span = scope.spans.add(
            trace_id=trace_ids[index % traces],
            span_id=rng.randbytes(8),
            name="chat gpt-4o-mini",
            kind=3,
            start_time_unix_nano=time.time_ns(),
            end_time_unix_nano=time.time_ns() + 900_000_000,
        )
        model = rng.choice(MODELS)
        strings = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.response.id": uuid.UUID(bytes=rng.randbytes(16)).hex,
            "server.address": "api.openai.com",
            "user.id": f"user-{rng.randrange(10_000)}",
            "gen_ai.conversation.id": uuid.UUID(bytes=rng.randbytes(16)).hex,
            "llmtap.prompt.template.id": "support-answer",
            "llmtap.prompt.template.version": "v7",
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": rng.choice(PROMPTS)}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": rng.choice(PROMPTS)}]}]
            ),
        }
        for key, value in strings.items():
            span.attributes.add(key=key, value=AnyValue(string_value=value))
        numbers = {
            "gen_ai.usage.input_tokens": rng.randrange(50, 4000),
            "gen_ai.usage.output_tokens": rng.randrange(10, 800),
            "gen_ai.usage.cache_read.input_tokens": rng.randrange(0, 1000),
            "gen_ai.request.max_tokens": 1024,
            "server.port": 443,
        }
        for key, number in numbers.items():
            span.attributes.add(key=key, value=AnyValue(int_value=number))
        span.attributes.add(key="gen_ai.request.temperature", value=AnyValue(double_value=0.2))
        span.attributes.add(key="gen_ai.request.top_p", value=AnyValue(double_value=1.0))
        finish = span.attributes.add(key="gen_ai.response.finish_reasons")
        finish.value.array_value.values.add(string_value="stop")
    return request.SerializeToString()


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def drive_load(
    url: str, bodies: list[bytes], seconds: float, concurrency: int
) -> tuple[int, int]:
    """Send requests back to back from ``concurrency`` workers; returns (requests ok, failures)."""
    ok = failed = 0
    deadline = time.monotonic() + seconds
    headers = {"Content-Type": "application/x-protobuf"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal ok, failed
            index = offset
            while time.monotonic() < deadline:
                async with session.post(
                    url, data=bodies[index % len(bodies)], headers=headers
                ) as response:
                    await response.read()
                    if response.status == 200:
                        ok += 1
                    else:
                        failed += 1
                index += concurrency

        await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
    return ok, failed


def wait_for_port(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"collector exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (loopback URL we built)
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("collector did not start")


def measure_collector(
    bootstrap: str,
    data_dir: Path,
    bodies: list[bytes],
    spans_per_request: int,
    args: argparse.Namespace,
    redaction: bool,
) -> dict[str, float]:
    port = 14318
    suffix = uuid.uuid4().hex[:8]
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLMTAP_")},
        "LLMTAP_DATA_DIR": str(data_dir),
        "LLMTAP_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "LLMTAP_TOPICS__RAW_SPANS": f"bench.raw.{suffix}",
        "LLMTAP_TOPICS__DEAD_LETTER": f"bench.dead.{suffix}",
        "LLMTAP_COLLECTOR__HTTP_PORT": str(port),
        "LLMTAP_COLLECTOR__GRPC_PORT": "0",
        "LLMTAP_COLLECTOR__REDACTION__ENABLED": "true" if redaction else "false",
        "LLMTAP_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "llmtap", "collector"], env=environment, stdin=subprocess.DEVNULL
    )
    try:
        wait_for_port(f"http://127.0.0.1:{port}/healthz", process)
        url = f"http://127.0.0.1:{port}/v1/traces"
        asyncio.run(drive_load(url, bodies, 2.0, args.concurrency))  # warm-up
        cpu_before = process_cpu_seconds(process.pid)
        started = time.monotonic()
        ok, failed = asyncio.run(drive_load(url, bodies, args.seconds, args.concurrency))
        elapsed = time.monotonic() - started
        cpu = process_cpu_seconds(process.pid) - cpu_before
        rss = peak_rss_megabytes(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    spans = ok * spans_per_request
    return {
        "spans_per_second_wall": spans / elapsed,
        "cpu_microseconds_per_span": cpu / spans * 1e6 if spans else float("nan"),
        "spans_per_cpu_second": spans / cpu if cpu else float("nan"),
        "failed_requests": failed,
        "peak_rss_megabytes": rss,
    }


def measure_bare_producer(bootstrap: str, bodies: list[bytes]) -> float:
    """Baseline: CPU-µs per span to produce the same per-trace messages with a bare producer."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topic = f"bench.baseline.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6)])[topic].result(30)
    ingest = TraceIngest(CollectorConfig(), IngestTopics(raw_spans=topic, dead_letter=topic))
    messages = [
        ingest.ingest(body, Encoding.OTLP_PROTO, tenant="t", source="s").messages for body in bodies
    ]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "zstd",
            "linger.ms": 5,
        }
    )
    spans_per_body = sum(
        len(ExportTraceServiceRequest.FromString(m.value).resource_spans[0].scope_spans[0].spans)
        for m in messages[0]
    )
    started = time.process_time()
    rounds = 20
    for _ in range(rounds):
        for batch in messages:
            for message in batch:
                producer.produce(message.topic, message.value, message.key)
            producer.poll(0)
    producer.flush(60)
    cpu = time.process_time() - started
    return cpu / (rounds * len(messages) * spans_per_body) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--spans-per-request", type=int, default=100)
    parser.add_argument("--traces-per-request", type=int, default=10)
    args = parser.parse_args()

    rng = random.Random(7)
    bodies = [
        build_request(args.spans_per_request, args.traces_per_request, rng) for _ in range(64)
    ]
    print(
        f"request: {args.spans_per_request} spans over {args.traces_per_request} traces, "
        f"{statistics.median(len(b) for b in bodies) / 1024:.0f} KiB protobuf"
    )
    with tempfile.TemporaryDirectory(prefix="llmtap-bench-") as temporary:
        root = Path(temporary)
        broker = LocalKafkaBroker(
            LocalKafkaSettings(jar_cache_dir=REPO_ROOT / ".llmtap" / "kafka" / "dist"),
            root / "kafka",
            print,
        )
        state = broker.start()
        try:
            results: dict[str, list[dict[str, float]]] = {"redaction_off": [], "redaction_on": []}
            baselines = []
            for repeat in range(args.repeats):
                baselines.append(measure_bare_producer(state.bootstrap_servers, bodies))
                for name in results:
                    figures = measure_collector(
                        state.bootstrap_servers,
                        root,
                        bodies,
                        args.spans_per_request,
                        args,
                        name == "redaction_on",
                    )
                    results[name].append(figures)
                    print(
                        f"repeat {repeat + 1}/{args.repeats} {name}: "
                        f"{figures['spans_per_second_wall']:,.0f} spans/s wall, "
                        f"{figures['cpu_microseconds_per_span']:.1f} CPU-µs/span, "
                        f"peak RSS {figures['peak_rss_megabytes']:.0f} MB, "
                        f"failed {figures['failed_requests']:.0f}"
                    )
        finally:
            broker.stop()

    baseline = statistics.median(baselines)
    summary: dict[str, object] = {"baseline_bare_producer_cpu_microseconds_per_span": baseline}
    print()
    header = ("variant", "spans/s wall", "CPU-µs/span", "spans/CPU-s", "x baseline", "RSS MB")
    print(
        f"{header[0]:<16}{header[1]:>14}{header[2]:>13}{header[3]:>13}{header[4]:>12}{header[5]:>8}"
    )
    print(
        f"{'bare producer':<16}{'':>14}{baseline:>13.1f}{1e6 / baseline:>13,.0f}{1.0:>12.2f}{'':>8}"
    )
    for name, runs in results.items():
        wall = statistics.median(r["spans_per_second_wall"] for r in runs)
        cpu = statistics.median(r["cpu_microseconds_per_span"] for r in runs)
        rss = max(r["peak_rss_megabytes"] for r in runs)
        ratio = cpu / baseline
        print(f"{name:<16}{wall:>14,.0f}{cpu:>13.1f}{1e6 / cpu:>13,.0f}{ratio:>12.2f}{rss:>8.0f}")
        summary[name] = {
            "runs": runs,
            "median_cpu_microseconds_per_span": cpu,
            "median_spans_per_second_wall": wall,
            "ratio_to_baseline": cpu / baseline,
        }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = RESULTS_DIR / f"collector-{time.strftime('%Y%m%dT%H%M%S')}.json"
    output.write_text(json.dumps({"args": vars(args), **summary}, indent=2))
    print(f"\nwritten {output}")


if __name__ == "__main__":
    main()
