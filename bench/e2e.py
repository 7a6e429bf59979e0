"""End-to-end benchmark: OTLP/HTTP in, queryable in the embedded ClickHouse out, on this machine.

The whole pipeline runs as a user runs it: a private Kafka broker, ``llmtap migrate``, then the
sink, processor and collector roles as separate processes (through ``e2e_role.py``, which only
names their threads), on llmtap's defaults. It runs twice: embeddings off
(``processor.risk.enabled: false``) and on (the risk stage with its default sampling policy).
A load generator process (``e2e_load.py``) sends realistic GenAI traces (demo planner: RAG
answers with retrieved documents, tool calls, failures; prompt and completion content).

Per mode:

1. capacity search: fixed-rate steps (from ``--start-rate``, x1.5 while sustained, then
   bisection to within 15 %). A step is sustained when the generator kept its schedule and no
   stage's Kafka lag grew: growing means a least-squares slope over the second part of the step
   above 5 % of the stage's input rate, and more than 2 s of input (and 50 messages) added
   since the step began. The first stage whose lag grew is the bottleneck. The pipeline drains
   between steps;
2. steady steps at 25 %, 50 % and 90 % of that capacity: freshness, CPU per stage and thread,
   memory, embedding coverage;
3. optionally (``--profile-seconds``) a py-spy profile of the bottleneck's process at capacity;
4. last, a probe: back-to-back load for a few seconds (what the collector accepts, and its CPU
   per span, compared with the OpenTelemetry Collector's under the same load).

Freshness is read after the run from the rows themselves (the sink stopped: the engine path
belongs to one process): ``ingested_at`` (set by ClickHouse as the sink's insert runs) minus
the span's end, for root spans (they end at the instant their request is sent), and minus the
collector's ``received_at`` for every span. Coverage: LLM responses (a completion) in a step
that have a ``span_scores`` row, and that had it within ``--coverage-seconds`` of arriving.

Baselines, same run, same workload: plain confluent-kafka produce + consume of the same messages,
clickhouse-connect inserts of the same rows, plain SentenceTransformer encode of the same texts,
and the OpenTelemetry Collector (otlpreceiver -> kafkaexporter) when a binary is given or found.

    .venv/bin/python bench/e2e.py [--quick] [--embeddings off|on|both] [--step-seconds 30]
        [--profile-seconds 20] [--otelcol PATH]

Results: a table on stdout and ``bench/results/e2e-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import e2e_baselines  # noqa: E402
from e2e_load import Workload, build_workload, generate  # noqa: E402
from e2e_proc import (  # noqa: E402
    peak_rss_megabytes,
    process_cpu_seconds,
    rss_megabytes,
    thread_cpu_seconds,
)

from llmtap.dev.kafka_broker import LocalKafkaBroker  # noqa: E402
from llmtap.settings import LocalKafkaSettings, Settings  # noqa: E402

REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
JAR_CACHE_DIR = REPO_ROOT / ".llmtap" / "kafka" / "dist"
ROLES = ("sink", "processor", "collector")
# --split-processor: as docker-compose.yml runs them, the stream worker in a process of its own
SPLIT_ROLES = ("sink", "stream", "processor", "collector")
SPLIT_COMMANDS = {
    "processor": ["processor", "--stages", "normalize,risk"],
    "stream": ["processor", "--stages", "stream,drift"],
}
# stage -> the process that runs it (llmtap.status.kafka_lag's stage names)
STAGE_PROCESS = {
    "normalizer": "processor",
    "aggregate": "processor",
    "merge": "processor",
    "risk": "processor",
    "drift": "processor",
    "sink": "sink",
    "sink-derived": "sink",
}
OTELCOL_NAMES = ("otelcol-bench", "otelcol-contrib", "otelcol-k8s")  # looked up on PATH
TARGETS = {
    "sustained_spans_per_second": 15_000,
    "freshness_p99_seconds_at_50_percent": 3.0,
    "context_responses_per_second_fully_scored": 100,
    "steady_memory_megabytes": 2048,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the pipeline --------------------------------------------------------------------------------


class Pipeline:
    """The roles of one mode as processes, on their own topics, groups and data folder."""

    def __init__(self, root: Path, bootstrap: str, embeddings: bool, split: bool = False) -> None:
        self.root = root
        self.roles = SPLIT_ROLES if split else ROLES
        self.commands = SPLIT_COMMANDS if split else {}
        self.suffix = uuid.uuid4().hex[:6]
        self.data_dir = root / "data"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.http_port = e2e_baselines.free_port()
        self.config_file = root / "llmtap.yaml"
        s = self.suffix
        config: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "log_level": "warning",
            "kafka": {"bootstrap_servers": bootstrap},
            "local_kafka": {"jar_cache_dir": str(JAR_CACHE_DIR)},
            "topics": {
                name: f"{default}.{s}"
                for name, default in (
                    ("raw_spans", "otlp_spans"),
                    ("raw_logs", "otlp_logs"),
                    ("normalized_spans", "llmtap.spans.normalized"),
                    ("scores", "llmtap.scores"),
                    ("embeddings", "llmtap.embeddings"),
                    ("aggregate_inputs", "llmtap.aggregates.inputs"),
                    ("aggregate_partials", "llmtap.aggregates.partials"),
                    ("aggregates", "llmtap.aggregates"),
                    ("alert_signals", "llmtap.alerts.signals"),
                    ("alerts", "llmtap.alerts"),
                    ("drift", "llmtap.drift"),
                    ("dead_letter", "llmtap.dead_letter"),
                )
            },
            "collector": {"http_port": self.http_port, "grpc_port": None},
            "processor": {
                "consumer_group": f"llmtap-normalizer-{s}",
                "risk": {"enabled": embeddings, "consumer_group": f"llmtap-risk-{s}"},
                "drift": {"consumer_group": f"llmtap-drift-{s}"},
                "stream": {"app_id": f"llmtap-stream-{s}"},
            },
            "sink": {
                "consumer_group": f"llmtap-sink-{s}",
                "derived_consumer_group": f"llmtap-sink-derived-{s}",
            },
        }
        self.config_file.write_text(yaml.safe_dump(config))
        self.settings = Settings.model_validate(config)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("LLMTAP_")}
        env["LLMTAP_CONFIG_FILE"] = str(self.config_file)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "llmtap", "migrate"],
            env=self.environment(),
            check=True,
            capture_output=True,
            timeout=300,
        )

    def start(self) -> None:
        for role in self.roles:
            log_file = (self.logs / f"{role}.log").open("w")
            self.processes[role] = subprocess.Popen(
                [sys.executable, str(BENCH_DIR / "e2e_role.py"), *self.commands.get(role, [role])],
                env=self.environment(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            self.wait_running(role)

    def wait_running(self, role: str, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        path = self.logs / f"{role}.log"
        while "running" not in path.read_text(errors="replace"):
            process = self.processes[role]
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{role} did not start:\n{path.read_text()[-3000:]}")
            time.sleep(0.3)

    def pids(self) -> dict[str, int]:
        return {role: process.pid for role, process in self.processes.items()}

    def log_line(self, marker: str) -> str | None:
        """The first line of the roles' logs that holds ``marker`` (its text after it)."""
        for role in self.roles:
            path = self.logs / f"{role}.log"
            if path.exists():
                for line in path.read_text(errors="replace").splitlines():
                    if marker in line:
                        return line.split(marker, 1)[1].strip()
        return None

    def stop(self) -> None:
        for role in reversed(self.roles):  # collector first, sink last (it flushes)
            process = self.processes.get(role)
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(120)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(30)

    def query(self, statements: list[str]) -> list[list[list[Any]]]:
        """Run SQL on the embedded store from a separate process (the sink must be stopped)."""
        program = (
            "import json, sys; from llmtap.clickhouse import open_target; "
            "from llmtap.clickhouse_dsn import ClickHouseTarget; "
            "target = ClickHouseTarget(kind='chdb', path=sys.argv[1], database='llmtap'); "
            "c = open_target(target, create_database=False); "
            "out = [[list(r) for r in c.query(q).result_rows] for q in json.loads(sys.argv[2])]; "
            "c.close(); print(json.dumps(out, default=str))"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                program,
                str(self.data_dir / "clickhouse"),
                json.dumps(statements),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
        return list(json.loads(result.stdout.strip().splitlines()[-1]))


class LagReader:
    """Kafka lag per stage (as ``llmtap status``), with long-lived clients: cheap to sample."""

    def __init__(self, settings: Settings, embeddings: bool) -> None:
        from confluent_kafka import Consumer

        topics, processor, sink = settings.topics, settings.processor, settings.sink
        stages = [
            ("normalizer", topics.raw_spans, processor.consumer_group),
            ("aggregate", topics.aggregate_inputs, processor.stream.app_id),
            ("merge", topics.aggregate_partials, processor.stream.app_id),
            ("drift", topics.normalized_spans, processor.drift.consumer_group),
            ("sink", topics.normalized_spans, sink.consumer_group),
            ("sink-derived", topics.aggregates, sink.derived_consumer_group),
        ]
        if embeddings:
            stages.append(("risk", topics.normalized_spans, processor.risk.consumer_group))
        self.partitions = settings.topics.partitions
        self._partitions: dict[str, list[int]] = {}
        bootstrap = settings.kafka.bootstrap_servers
        self._stages = [
            (
                stage,
                topic,
                Consumer(
                    {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
                ),
            )
            for stage, topic, group in stages
        ]

    @property
    def stages(self) -> list[str]:
        return [stage for stage, _, _ in self._stages]

    def read(self) -> dict[str, tuple[int, int]]:
        """stage -> (end offsets, committed offsets), summed over partitions."""
        from confluent_kafka import TopicPartition

        result = {}
        ends: dict[str, int] = {}
        for stage, topic, consumer in self._stages:
            if topic not in self._partitions:
                metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if metadata is None or metadata.error is not None or not metadata.partitions:
                    result[stage] = (0, 0)
                    continue
                self._partitions[topic] = sorted(metadata.partitions)
            partitions = [TopicPartition(topic, p) for p in self._partitions[topic]]
            if topic not in ends:
                ends[topic] = sum(
                    max(0, consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1])
                    for tp in partitions
                )
            committed = sum(max(0, tp.offset) for tp in consumer.committed(partitions, timeout=10))
            result[stage] = (ends[topic], committed)
        return result

    def close(self) -> None:
        for _, _, consumer in self._stages:
            consumer.close()


@dataclass
class Sample:
    at: float  # monotonic
    cpu: dict[str, float]  # role -> CPU seconds
    rss: dict[str, float]  # role -> MB
    lag: dict[str, tuple[int, int]] = field(default_factory=dict)


class Monitor:
    """Samples the roles' CPU and memory every second and the stages' lag every two."""

    def __init__(self, pids: dict[str, int], lag: LagReader) -> None:
        self.pids = pids
        self.lag = lag
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(1.0):
            try:
                sample = Sample(
                    time.monotonic(),
                    {role: process_cpu_seconds(pid) for role, pid in self.pids.items()},
                    {role: rss_megabytes(pid) for role, pid in self.pids.items()},
                )
                if tick % 2 == 0:
                    sample.lag = self.lag.read()
                self.samples.append(sample)
            except Exception as error:  # a sample lost is not a benchmark lost
                log(f"monitor: {error}")
            tick += 1

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def snapshot(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per role: CPU seconds of the process ("total") and per thread label."""
    result = {}
    for role, pid in pids.items():
        threads = thread_cpu_seconds(pid)
        threads["total"] = process_cpu_seconds(pid)
        result[role] = threads
    return result


def cpu_per_thousand(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], spans: int
) -> dict[str, dict[str, float]]:
    return {
        role: {
            label: round(
                (after[role].get(label, 0.0) - before[role].get(label, 0.0)) / spans * 1e3, 4
            )
            for label in after[role]
            if after[role].get(label, 0.0) - before[role].get(label, 0.0) > 0.005
            or label == "total"
        }
        for role in after
    }


def slope(points: Sequence[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    if denominator == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / denominator


# -- one mode ------------------------------------------------------------------------------------


class ModeRun:
    def __init__(
        self,
        args: argparse.Namespace,
        workload: Workload,
        bootstrap: str,
        root: Path,
        broker_pid: int,
        embeddings: bool,
    ) -> None:
        self.args = args
        self.workload = workload
        self.embeddings = embeddings
        self.broker_pid = broker_pid
        self.pipeline = Pipeline(root, bootstrap, embeddings, args.split_processor)
        self.steps: list[dict[str, Any]] = []
        self.spans_sent = 0
        self.monitor: Monitor | None = None
        self.lag: LagReader | None = None

    # the load

    def send(self, rate: float, seconds: float) -> dict[str, Any]:
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        process = context.Process(
            target=generate,
            args=(
                self.pipeline.http_port,
                self.workload.bodies,
                rate,
                seconds,
                self.args.senders,
                results,
            ),
        )
        process.start()
        report = dict(results.get(timeout=seconds + 300))
        process.join(60)
        self.spans_sent += report["spans_ok"]
        return report

    def step(self, label: str, rate: float, seconds: float) -> dict[str, Any]:
        """Load at ``rate`` (0: back to back) for ``seconds``; what every stage did meanwhile."""
        assert self.monitor is not None
        assert self.lag is not None
        pids = self.pipeline.pids()
        before = snapshot({**pids, "broker": self.broker_pid})
        lag_before = self.lag.read()
        started_ns, started = time.time_ns(), time.monotonic()
        report = self.send(rate, seconds)
        ended_ns, ended = time.time_ns(), time.monotonic()
        after = snapshot({**pids, "broker": self.broker_pid})
        lag_after = self.lag.read()
        spans = max(1, report["spans_ok"])
        samples = [s for s in self.monitor.between(started, ended) if s.lag]
        # lag trend over the second part of the step (the first part fills the pipeline)
        settle = started + 0.35 * (ended - started)
        late = [s for s in samples if s.at >= settle]
        stages = {}
        for stage in self.lag.stages:
            end0, committed0 = lag_before[stage]
            end1, committed1 = lag_after[stage]
            input_rate = (end1 - end0) / (ended - started)
            points = [(s.at, s.lag[stage][0] - s.lag[stage][1]) for s in late]
            growth = slope(points)
            final = end1 - committed1
            # Batching and commit intervals leave a steady lag of a few hundred messages (the
            # sink's flush, faust's commit interval): growth must be larger than that.
            growing = (
                input_rate > 0
                and growth > 0.05 * input_rate
                and final - (end0 - committed0) > max(3 * input_rate, 250)
            )
            stages[stage] = {
                "input_messages_per_second": round(input_rate, 1),
                "processed_messages_per_second": round(
                    (committed1 - committed0) / (ended - started), 1
                ),
                "lag_start": end0 - committed0,
                "lag_end": final,
                "lag_slope_messages_per_second": round(growth, 1),
                "growing": growing,
            }
        achieved = report["spans_ok"] / seconds
        kept_schedule = rate == 0 or achieved >= 0.95 * rate
        sustained = (
            None if rate == 0 else kept_schedule and not any(v["growing"] for v in stages.values())
        )
        rss = [s.rss for s in self.monitor.between(started, ended)]
        result = {
            "label": label,
            "offered_spans_per_second": rate or None,
            "achieved_spans_per_second": round(achieved, 1),
            "kept_schedule": kept_schedule,
            "sustained": sustained,
            "growing_stages": [name for name, v in stages.items() if v["growing"]],
            "window_ns": [started_ns, ended_ns],
            "seconds": round(ended - started, 2),
            "load": report,
            "stages": stages,
            "cpu_seconds_per_1000_spans": cpu_per_thousand(before, after, spans),
            "load_generator_cpu_seconds_per_1000_spans": round(
                report["cpu_seconds"] / spans * 1e3, 4
            ),
            "steady_rss_megabytes_total_max": round(max((sum(r.values()) for r in rss), default=0)),
            "rss_megabytes_max": {
                role: round(max((r.get(role, 0) for r in rss), default=0)) for role in pids
            },
        }
        self.steps.append(result)
        log(
            f"{label}: offered {rate or 'max'} spans/s, achieved {achieved:,.0f}; "
            + (
                "sustained"
                if sustained or sustained is None
                else f"NOT sustained ({', '.join(result['growing_stages']) or 'schedule missed'})"
            )
            + "; lag end "
            + ", ".join(f"{k}={v['lag_end']}" for k, v in stages.items())
        )
        return result

    def drain(self, timeout: float, stages: tuple[str, ...] | None = None) -> bool:
        """Until every stage caught up: lag within a few messages per partition, or nothing
        moves for a few seconds with less than a batch in lag (the aggregate stage's faust
        consumer leaves about its last batch uncommitted while the topic is idle)."""
        assert self.lag is not None
        deadline = time.monotonic() + timeout
        previous: dict[str, tuple[int, int]] = {}
        while time.monotonic() < deadline:
            lags = self.lag.read()
            watched = {k: v for k, v in lags.items() if stages is None or k in stages}
            if all(
                end - committed <= 4 * self.lag.partitions for end, committed in watched.values()
            ):
                return True
            if watched == previous and all(end - c <= 2500 for end, c in watched.values()):
                return True
            previous = watched
            time.sleep(3.0)
        log(f"not drained after {timeout:.0f} s: {self.lag.read()}")
        return False

    # the phases

    def run(self) -> dict[str, Any]:
        args = self.args
        name = "embeddings on" if self.embeddings else "embeddings off"
        log(f"== {name}: migrate, start sink, processor, collector")
        self.pipeline.migrate()
        try:
            self.pipeline.start()
        except BaseException:
            self.pipeline.stop()
            raise
        self.lag = LagReader(self.pipeline.settings, self.embeddings)
        self.monitor = Monitor(self.pipeline.pids(), self.lag)
        result: dict[str, Any] = {"mode": name}
        try:
            self.send(args.warmup_rate, args.warmup_seconds)  # warm-up: groups joined, caches
            self.drain(args.drain_seconds)
            capacity, bottleneck = self.search()
            result["capacity_spans_per_second"] = capacity
            result["bottleneck_stage"] = bottleneck
            for share in (0.25, 0.5, 0.9):
                self.step(f"{share:.0%} of capacity", capacity * share, args.step_seconds)
                self.drain(args.drain_seconds)
            if args.profile_seconds:
                result["profile"] = self.profile(capacity, bottleneck)
            # last: what the collector accepts back to back (its backlog is not drained before)
            result["probe"] = self.step("probe (back to back)", 0, args.probe_seconds)
            result["peak_rss_megabytes"] = {
                role: round(peak_rss_megabytes(pid)) for role, pid in self.pipeline.pids().items()
            }
            self.drain(args.drain_seconds, ("normalizer", "sink", "risk"))
            time.sleep(3)  # the sink's last flush
        finally:
            self.monitor.stop()
            self.lag.close()
            self.pipeline.stop()
        result["steps"] = self.steps
        # fp32 or bf16, chosen by the processor at start-up on a probe (it varies with load):
        # the risk stage's start line ends with "(model/backend+weights; reason)"
        started_line = self.pipeline.log_line("risk: ")
        result["embedding_backend"] = (
            started_line.rsplit("(", 1)[-1].rstrip(")") if started_line else None
        )
        # Steady state is where no lag grows: the sustained steps. Unsustained steps (capacity
        # search above capacity) and the back-to-back probe fill buffers while lag grows, so
        # they are reported apart, as memory under overload.
        totals = [
            (step["sustained"], step["steady_rss_megabytes_total_max"]) for step in self.steps
        ]
        result["steady_memory_megabytes"] = max((t for ok, t in totals if ok), default=0)
        result["overload_memory_megabytes"] = max((t for ok, t in totals if not ok), default=0)
        result["spans_sent"] = self.spans_sent
        result["kafka_bytes"] = self.kafka_bytes()
        self.read_store(result)
        return result

    def search(self) -> tuple[float, str | None]:
        """Fixed-rate steps: up by x1.5 while sustained, then bisection to within 15 %."""
        args = self.args
        rate = args.start_rate
        good: float | None = None
        bad: float | None = None
        bottleneck: str | None = None
        for _ in range(args.max_steps):
            rate = round(rate, -1) if rate >= 100 else round(rate)
            step = self.step(f"search {rate:,.0f} spans/s", rate, args.step_seconds)
            self.drain(args.drain_seconds)
            if step["sustained"]:
                good = rate
            elif bad is None or rate <= bad:  # the lowest failing rate names the bottleneck
                bad = rate
                bottleneck = (step["growing_stages"] or ["collector"])[0]
            if good is not None and bad is not None:
                if bad / good <= 1.15:
                    break
                rate = (good + bad) / 2
            elif good is not None:
                rate *= 1.5
            else:
                rate *= 0.6
        if good is None:
            good = rate
        return good, bottleneck

    def profile(self, capacity: float, bottleneck: str | None) -> dict[str, Any]:
        role = STAGE_PROCESS.get(bottleneck or "", "processor")
        if (
            role == "processor"
            and bottleneck in ("aggregate", "merge", "drift")
            and "stream" in self.pipeline.roles
        ):
            role = "stream"
        pid = self.pipeline.pids()[role]
        output = self.pipeline.root / f"profile-{role}.txt"
        seconds = self.args.profile_seconds
        py_spy = Path(sys.executable).parent / "py-spy"
        command = [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "50",
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--output",
            str(output),
        ]
        profiler = threading.Thread(
            target=subprocess.run,
            args=(command,),
            kwargs={"capture_output": True, "timeout": seconds + 120, "check": False},
        )
        log(f"profiling {role} (pid {pid}) for {seconds:.0f} s at {capacity:,.0f} spans/s")
        profiler.start()
        self.step(f"profile {role} at capacity", capacity, seconds + 4)
        profiler.join()
        self.drain(self.args.drain_seconds)
        if not output.exists():
            return {"error": "py-spy wrote nothing"}
        summary = summarize_profile(output.read_text(), seconds * 50)
        summary["role"] = role
        kept = RESULTS_DIR / f"e2e-profile-{role}-{'on' if self.embeddings else 'off'}.txt"
        shutil.copyfile(output, kept)
        summary["collapsed_stacks"] = str(kept.relative_to(REPO_ROOT))
        return summary

    # after the run

    def kafka_bytes(self) -> dict[str, Any]:
        """Bytes on the broker's disk per topic of this mode, per span sent."""
        data = self.args.broker_data_dir
        sizes: dict[str, int] = {}
        for folder in data.iterdir():
            topic, _, partition = folder.name.rpartition("-")
            if not folder.is_dir() or not partition.isdigit() or self.pipeline.suffix not in topic:
                continue
            size = sum(f.stat().st_size for f in folder.iterdir() if f.suffix == ".log")
            sizes[topic] = sizes.get(topic, 0) + size
        spans = max(1, self.spans_sent)
        return {
            "per_span_by_topic": {t: round(b / spans, 1) for t, b in sorted(sizes.items())},
            "per_span_total": round(sum(sizes.values()) / spans, 1),
            "bytes_total": sum(sizes.values()),
        }

    def read_store(self, result: dict[str, Any]) -> None:
        grace_ms = int(self.args.coverage_seconds * 1000)
        statements = [
            "SELECT count(), uniqExact(span_id) FROM llm_spans",
            "SELECT table, sum(bytes_on_disk), sum(rows) FROM system.parts "
            "WHERE database = 'llmtap' AND active GROUP BY table ORDER BY table",
        ]
        for step in self.steps:
            low, high = step["window_ns"]
            window = f"toDateTime64({low / 1e9:.6f}, 9) AND toDateTime64({high / 1e9:.6f}, 9)"
            statements += [
                # root spans end when their request is sent
                "SELECT quantiles(0.5, 0.95, 0.99)(toUnixTimestamp64Milli(ingested_at) - "
                "intDiv(toUnixTimestamp64Nano(end_timestamp), 1000000)) / 1000, count() "
                f"FROM llm_spans WHERE parent_span_id = '' AND end_timestamp BETWEEN {window}",
                "SELECT quantiles(0.5, 0.95, 0.99)(toUnixTimestamp64Milli(ingested_at) - "
                "intDiv(toUnixTimestamp64Nano(received_at), 1000000)) / 1000, count() "
                f"FROM llm_spans WHERE received_at BETWEEN {window}",
                "SELECT retrieved_documents NOT IN ('', '[]') AS context, count(), "
                "countIf(scores.span_id != ''), countIf(scores.span_id != '' AND "
                "toUnixTimestamp64Milli(scores.first) - intDiv(toUnixTimestamp64Nano(received_at),"
                f" 1000000) <= {grace_ms}) FROM (SELECT span_id, received_at, retrieved_documents "
                "FROM llm_spans WHERE span_type = 'llm' AND completion_text != '' AND "
                f"received_at BETWEEN {window}) AS spans LEFT JOIN (SELECT span_id, "
                "min(ingested_at) AS first FROM span_scores GROUP BY span_id) AS scores "
                "ON spans.span_id = scores.span_id GROUP BY context ORDER BY context",
            ]
        rows = self.pipeline.query(statements)
        stored, distinct = rows[0][0]
        result["stored_spans"] = {"rows": stored, "distinct": distinct, "sent": self.spans_sent}
        result["clickhouse_bytes_per_span"] = {
            table: round(int(size) / max(1, distinct), 1) for table, size, _ in rows[1]
        }
        result["clickhouse_bytes_per_span_total"] = round(
            sum(int(size) for _, size, _ in rows[1]) / max(1, distinct), 1
        )
        for index, step in enumerate(self.steps):
            root, received, coverage = rows[2 + 3 * index : 5 + 3 * index]
            step["freshness_root_end_seconds"] = {
                "p50": root[0][0][0],
                "p95": root[0][0][1],
                "p99": root[0][0][2],
                "spans": root[0][1],
            }
            step["freshness_received_seconds"] = {
                "p50": received[0][0][0],
                "p95": received[0][0][1],
                "p99": received[0][0][2],
                "spans": received[0][1],
            }
            step["stored_spans"] = received[0][1]
            by_context = {bool(int(r[0])): r[1:] for r in coverage}
            step["coverage"] = {
                key: {
                    "responses": values[0],
                    "scored": values[1],
                    "scored_within_grace": values[2],
                    "share_scored": round(values[1] / values[0], 4) if values[0] else None,
                    "share_within_grace": round(values[2] / values[0], 4) if values[0] else None,
                    "responses_per_second": round(values[0] / step["seconds"], 1),
                }
                for key, values in (
                    ("with_context", by_context.get(True, [0, 0, 0])),
                    ("without_context", by_context.get(False, [0, 0, 0])),
                )
            }


# -- the report ----------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_report(report: dict[str, Any]) -> None:
    baselines = report["baselines"]
    for mode in report["modes"]:
        print(f"\n=== {mode['mode']} ===")
        capacity = mode["capacity_spans_per_second"]
        print(
            f"sustained capacity: {capacity:,.0f} spans/s "
            f"(bottleneck: {mode['bottleneck_stage'] or 'none found below the last step'}); "
            f"probe (back to back): collector accepted "
            f"{mode['probe']['achieved_spans_per_second']:,.0f} spans/s"
        )
        if mode.get("embedding_backend"):
            print(f"embedding backend chosen at start-up: {mode['embedding_backend']}")
        print(
            f"\n{'step':<30}{'offered':>9}{'achieved':>10}{'ok':>4}  "
            f"{'fresh p50/p95/p99 s (root end)':>31}{'recv p99':>9}  "
            f"{'ctx scored':>10}{'other':>7}"
        )
        for step in mode["steps"]:
            fresh = step.get("freshness_root_end_seconds", {})
            received = step.get("freshness_received_seconds", {})
            coverage = step.get("coverage", {}) if mode["mode"] == "embeddings on" else {}
            offered = step["offered_spans_per_second"]
            print(
                f"{step['label']:<30}{offered or 0:>9,.0f}{step['achieved_spans_per_second']:>10,.0f}"
                f"{ {True: 'y', False: 'n', None: '-'}[step['sustained']]:>4}  "
                f"{fresh.get('p50', 0):>10.2f}{fresh.get('p95', 0):>10.2f}{fresh.get('p99', 0):>11.2f}"
                f"{received.get('p99', 0):>9.2f}  "
                f"{percent(coverage.get('with_context', {}).get('share_within_grace')):>10}"
                f"{percent(coverage.get('without_context', {}).get('share_within_grace')):>7}"
            )
        half = next((s for s in mode["steps"] if s["label"].startswith("50%")), None)
        if half is not None:
            print("\nCPU-seconds per 1,000 spans at 50 % of capacity (process total; threads):")
            for role, values in half["cpu_seconds_per_1000_spans"].items():
                threads = sorted(
                    ((k, v) for k, v in values.items() if k != "total"), key=lambda kv: -kv[1]
                )
                print(
                    f"  {role:<10}{values['total']:>8.3f}   "
                    + ", ".join(f"{k} {v:.3f}" for k, v in threads[:6])
                )
            print(f"  {'generator':<10}{half['load_generator_cpu_seconds_per_1000_spans']:>8.3f}")
        print(
            "peak RSS MB: "
            + ", ".join(f"{k} {v}" for k, v in mode["peak_rss_megabytes"].items())
            + f"; total of the processes (max of 1 s samples): steady state (sustained steps) "
            f"{mode['steady_memory_megabytes']} MB, under overload (unsustained steps, probe) "
            f"{mode['overload_memory_megabytes']} MB"
        )
        print(
            f"bytes per span: Kafka {mode['kafka_bytes']['per_span_total']:,.0f} "
            f"(all topics of this mode), ClickHouse {mode['clickhouse_bytes_per_span_total']:,.0f}"
            f" (llm_spans {mode['clickhouse_bytes_per_span'].get('llm_spans', 0):,.0f})"
        )
        stored = mode["stored_spans"]
        print(
            f"spans sent {stored['sent']:,}, stored {stored['rows']:,} ({stored['distinct']:,} distinct)"
        )
        if "profile" in mode:
            profile = mode["profile"]
            print(f"profile of {profile.get('role')}: busy share by thread (samples / possible)")
            for thread, share in list(profile.get("busy_share_by_thread", {}).items())[:6]:
                print(f"  {share:>6.1%}  {thread}")
            print("top self frames (share of samples)")
            for frame, share in profile.get("top_self", [])[:8]:
                print(f"  {share:>6.1%}  {frame}")
    print("\n=== baselines (same run, same workload) ===")
    for name, values in baselines.items():
        print(f"{name:<12}{json.dumps(values)[:300]}")
    print("\n=== ratios ===")
    for name, value in report["ratios"].items():
        print(f"{name:<70}{value}")


def summarize_profile(collapsed: str, possible_samples: float) -> dict[str, Any]:
    """Top frames of py-spy's raw (collapsed) output: self time and inclusive time.

    py-spy records only threads that are running (not waiting), so a thread's samples over the
    samples possible in the recording (``possible_samples``) is the share of time it was busy."""
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] = threads.get(frames[0], 0) + count
        leaf = frames[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + count
        for frame in set(frames[1:]):
            inclusive[frame] = inclusive.get(frame, 0) + count
    total = max(1, total)

    def top(counts: dict[str, int], n: int) -> list[tuple[str, float]]:
        return [
            (k, round(v / total, 4)) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        ]

    return {
        "samples": total,
        "threads": top(threads, 12),
        "busy_share_by_thread": {
            thread: round(count / possible_samples, 3)
            for thread, count in sorted(threads.items(), key=lambda kv: -kv[1])[:12]
        },
        "top_self": top(self_counts, 20),
        "top_inclusive": top(inclusive, 30),
    }


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    baselines = report["baselines"]
    modes = {m["mode"]: m for m in report["modes"]}
    result: dict[str, Any] = {}
    off = modes.get("embeddings off")
    on = modes.get("embeddings on")
    kafka = baselines.get("kafka", {}).get("spans_per_second")
    clickhouse = baselines.get("clickhouse", {}).get("rows_per_second")
    for mode in (off, on):
        if mode is None:
            continue
        capacity = mode["capacity_spans_per_second"]
        if kafka:
            result[f"{mode['mode']}: capacity / plain Kafka produce+consume (2 hops)"] = round(
                capacity / kafka, 4
            )
        if clickhouse:
            result[f"{mode['mode']}: capacity / raw clickhouse-connect inserts"] = round(
                capacity / clickhouse, 4
            )
    embedding = baselines.get("embeddings", {}).get("responses_per_second")
    if on is not None:
        full = [
            step["coverage"]["with_context"]["responses_per_second"]
            for step in on["steps"]
            if step.get("coverage", {}).get("with_context", {}).get("share_within_grace") == 1.0
        ]
        best = max(full, default=0.0)
        result["embeddings on: most context responses/s all scored within grace"] = best
        scorable = [
            step["coverage"]["with_context"]["responses_per_second"]
            + step["coverage"]["without_context"]["responses_per_second"]
            for step in on["steps"]
            if step["sustained"] and "coverage" in step
        ]
        if embedding and scorable:
            result["embeddings on: responses/s scored at capacity / plain encode responses/s"] = (
                round(max(scorable) / embedding, 4)
            )
    otelcol = baselines.get("otelcol", {})
    if off is not None and otelcol.get("cpu_seconds_per_1000_spans"):
        probe = off["probe"]
        ours = probe["cpu_seconds_per_1000_spans"]["collector"]["total"]
        result["collector CPU per span / OTel Collector CPU per span (back to back)"] = round(
            ours / otelcol["cpu_seconds_per_1000_spans"], 3
        )
        result["collector accepted spans/s / OTel Collector spans/s (back to back)"] = round(
            probe["achieved_spans_per_second"] / otelcol["spans_per_second"], 3
        )
    return result


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="~2-minute smoke run (short steps)")
    parser.add_argument(
        "--embeddings", choices=("off", "on", "both"), help="default: both (--quick: off)"
    )
    parser.add_argument("--step-seconds", type=float, default=30.0)
    parser.add_argument("--probe-seconds", type=float, default=8.0)
    parser.add_argument("--warmup-seconds", type=float, default=8.0)
    parser.add_argument("--warmup-rate", type=float, default=200.0)
    parser.add_argument("--drain-seconds", type=float, default=90.0)
    parser.add_argument("--max-steps", type=int, default=7, help="capacity search steps")
    parser.add_argument("--start-rate", type=float, default=200.0, help="first search rate")
    parser.add_argument("--senders", type=int, default=4, help="load generator threads")
    parser.add_argument("--interactions", type=int, default=3000, help="planned per workload")
    parser.add_argument("--coverage-seconds", type=float, default=10.0)
    parser.add_argument("--profile-seconds", type=float, default=0.0)
    parser.add_argument("--otelcol", type=Path, help="OTel Collector binary (otlp -> kafka)")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument(
        "--split-processor",
        action="store_true",
        help="run the stream worker in its own process (llmtap processor --stages), as compose does",
    )
    args = parser.parse_args()
    if args.quick:
        args.embeddings = args.embeddings or "off"
        args.step_seconds = min(args.step_seconds, 6.0)
        args.probe_seconds = min(args.probe_seconds, 3.0)
        args.warmup_seconds = min(args.warmup_seconds, 3.0)
        args.drain_seconds = min(args.drain_seconds, 15.0)
        args.max_steps = min(args.max_steps, 1)
        args.interactions = min(args.interactions, 600)
    args.embeddings = args.embeddings or "both"
    if args.otelcol is None:
        found = next(filter(None, map(shutil.which, OTELCOL_NAMES)), None)
        args.otelcol = Path(found) if found else None

    workload = build_workload(args.interactions)
    log(
        f"workload: {len(workload.bodies)} requests, {workload.spans:,} spans "
        f"({workload.spans_per_request:.0f} per request, "
        f"{sum(map(len, workload.bodies)) / len(workload.bodies) / 1024:.0f} KiB), "
        f"interactions {dict(workload.interactions)}, LLM responses with context "
        f"{workload.share_with_context:.1%} of spans"
    )
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.embeddings]
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": {
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "git_commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
                cwd=REPO_ROOT,
            ).stdout.strip(),
        },
        "workload": {
            "requests": len(workload.bodies),
            "spans": workload.spans,
            "interactions": dict(workload.interactions),
            "responses_with_context": workload.responses_with_context,
            "responses_without_context": workload.responses_without_context,
            "context_responses_per_span": round(workload.share_with_context, 4),
        },
        "targets": TARGETS,
        "modes": [],
        "baselines": {},
    }
    with tempfile.TemporaryDirectory(prefix="llmtap-e2e-") as temporary:
        root = Path(temporary)
        broker = LocalKafkaBroker(
            LocalKafkaSettings(jar_cache_dir=JAR_CACHE_DIR), root / "kafka", progress=log
        )
        state = broker.start()
        args.broker_data_dir = root / "kafka" / "broker" / "data"
        try:
            for embeddings in modes:
                run = ModeRun(
                    args,
                    workload,
                    state.bootstrap_servers,
                    root / ("on" if embeddings else "off"),
                    state.pid,
                    embeddings,
                )
                report["modes"].append(run.run())
            if not args.skip_baselines:
                rows = 20_000 if args.quick else 200_000
                repeats = max(1, -(-rows // workload.spans))
                log("baseline: plain Kafka produce + consume of the same messages")
                report["baselines"]["kafka"] = e2e_baselines.run_isolated(
                    e2e_baselines.kafka_baseline, state.bootstrap_servers, workload.bodies, repeats
                )
                log("baseline: raw clickhouse-connect inserts of the same rows")
                report["baselines"]["clickhouse"] = e2e_baselines.run_isolated(
                    e2e_baselines.clickhouse_baseline, workload.bodies, repeats
                )
                if True in modes:
                    log("baseline: plain SentenceTransformer encode of the same texts")
                    report["baselines"]["embeddings"] = e2e_baselines.run_isolated(
                        e2e_baselines.embedding_baseline,
                        workload.bodies,
                        100 if args.quick else 400,
                    )
                if args.otelcol is not None and args.otelcol.exists():
                    log(f"baseline: OpenTelemetry Collector {args.otelcol}")
                    try:  # starts processes of its own: not from a pool worker
                        report["baselines"]["otelcol"] = e2e_baselines.otelcol_baseline(
                            args.otelcol,
                            state.bootstrap_servers,
                            workload.bodies,
                            args.probe_seconds,
                            args.senders,
                            root,
                        )
                    except Exception as error:
                        report["baselines"]["otelcol"] = {"error": f"{error}"}
                else:
                    report["baselines"]["otelcol"] = {
                        "skipped": "no OpenTelemetry Collector binary (see --otelcol)"
                    }
        finally:
            broker.stop()
    report["ratios"] = ratios(report)
    print_report(report)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = RESULTS_DIR / f"e2e-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    report["args"].pop("broker_data_dir", None)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwritten {output}")


if __name__ == "__main__":
    main()
