"""The fault-injection harness: the whole pipeline as separate processes, a counted load, checks.

Every role runs as its own ``llmtap`` process (collector, processor, sink) on a private Kafka
broker and the embedded ClickHouse engine, exactly as a user runs them, so a test can SIGKILL
one, stop the broker, or make ClickHouse's data folder unwritable. The load generator behaves
like an OpenTelemetry exporter: it retries 429/503/connection errors (honouring Retry-After)
and records the span ids of every request answered 200. The checks then compare what is stored
with what was acknowledged, span id by span id.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import KafkaException
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmtap.dev.kafka_broker import LocalKafkaBroker
from llmtap.settings import Settings
from tests.conftest import JAR_CACHE_DIR, local_kafka_settings

ROLES = ("collector", "processor", "sink")
# As docker-compose.yml runs them: the stream worker in a process of its own.
SPLIT_ROLES = ("collector", "processor", "stream", "sink")
_SPLIT_COMMANDS = {
    "processor": ["processor", "--stages", "normalize,risk"],
    "stream": ["processor", "--stages", "stream,drift"],
}
SERVICES = ("chat", "search", "support", "billing")
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-20241022")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the load ------------------------------------------------------------------------------------


def _attribute(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def build_request(rng: random.Random, spans: int) -> tuple[bytes, list[str]]:
    """One OTLP/protobuf request of LLM spans, and the hex span ids it carries."""
    request = ExportTraceServiceRequest()
    service = rng.choice(SERVICES)
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(_attribute("service.name", service))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "llmtap.faults"
    now = time.time_ns()
    ids = []
    for _ in range(spans):
        model = rng.choice(MODELS)
        span = Span(
            trace_id=rng.randbytes(16),
            span_id=rng.randbytes(8),
            name=f"chat {model}",
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=now - rng.randint(200, 3_000) * 1_000_000,
            end_time_unix_nano=now,
        )
        span.attributes.extend(
            [
                _attribute("gen_ai.operation.name", "chat"),
                _attribute("gen_ai.provider.name", "anthropic" if "claude" in model else "openai"),
                _attribute("gen_ai.request.model", model),
                _attribute("gen_ai.usage.input_tokens", rng.randint(10, 4_000)),
                _attribute("gen_ai.usage.output_tokens", rng.randint(1, 800)),
            ]
        )
        if rng.random() < 0.05:
            span.status.code = 2  # STATUS_CODE_ERROR
        scope_spans.spans.append(span)
        ids.append(span.span_id.hex())
    return request.SerializeToString(), ids


@dataclass
class LoadReport:
    acknowledged: set[str] = field(default_factory=set)
    refusals: Counter[int] = field(default_factory=Counter)  # status -> answers (429, 503, ...)
    connection_errors: int = 0
    # answers that are neither 200 nor retryable
    unexpected: list[str] = field(default_factory=list)


class LoadGenerator:
    """Sends OTLP/HTTP protobuf at a fixed rate and retries like an OpenTelemetry exporter.

    A request is retried (same body, same span ids) until it is answered 200; the exporter's
    retry is what turns the collector's 429/503 into "nothing lost", so the harness does it too.
    """

    def __init__(
        self, port: int, spans_per_second: float, spans_per_request: int = 10, seed: int = 0
    ) -> None:
        self._port = port
        self._interval = spans_per_request / spans_per_second
        self._spans_per_request = spans_per_request
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.report = LoadReport()
        self.sent_requests = 0

    def start(self) -> LoadGenerator:
        self._thread.start()
        return self

    def stop(self, timeout: float = 120) -> LoadReport:
        """Stop sending new requests; the one in flight is retried until it is acknowledged."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the last request was never acknowledged"
        return self.report

    def _run(self) -> None:
        next_send = time.monotonic()
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            body, ids = build_request(self._rng, self._spans_per_request)
            connection = self._deliver(connection, body, ids)
            self.sent_requests += 1
            next_send += self._interval
            delay = next_send - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_send = time.monotonic()  # behind (retrying): do not burst to catch up
        if connection is not None:
            connection.close()

    def _deliver(
        self, connection: http.client.HTTPConnection | None, body: bytes, ids: list[str]
    ) -> http.client.HTTPConnection | None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=15)
                connection.request(
                    "POST",
                    "/v1/traces",
                    body=body,
                    headers={"Content-Type": "application/x-protobuf"},
                )
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                self.report.connection_errors += 1
                if connection is not None:
                    connection.close()
                connection = None
                time.sleep(0.3)
                continue
            if response.status == 200:
                self.report.acknowledged.update(ids)
                return connection
            if response.status in (429, 503):
                self.report.refusals[response.status] += 1
                time.sleep(min(float(response.getheader("Retry-After") or 1), 2.0))
                continue
            self.report.unexpected.append(f"{response.status} {response.reason}")
            return connection
        self.report.unexpected.append("request not acknowledged within 180 s")
        return connection


# -- the webhook ---------------------------------------------------------------------------------


class FlakyWebhook:
    """An alert receiver that fails on purpose: 500 on first attempts, hangs on others.

    It records every request it sees and every event id it answered 2xx, so a test can tell an
    alert that was lost (never acknowledged) from one that was sent again after it was
    acknowledged (acknowledged twice).
    """

    def __init__(self, fail_first: int = 2, hang_every: int = 3, hang_seconds: float = 4) -> None:
        self.seen: Counter[str] = Counter()
        self.acknowledged: Counter[str] = Counter()
        self.events: dict[str, dict[str, Any]] = {}
        self._fail_first = fail_first
        self._hang_every = hang_every
        self._hang_seconds = hang_seconds
        self._lock = threading.Lock()
        self._requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                event_id = self.headers.get("X-Llmtap-Event-Id", "")
                with receiver._lock:
                    receiver._requests += 1
                    number = receiver._requests
                    receiver.seen[event_id] += 1
                    attempts = receiver.seen[event_id]
                if attempts <= receiver._fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                if number % receiver._hang_every == 0:
                    time.sleep(receiver._hang_seconds)  # longer than the sender's timeout
                    self.send_response(200)
                    self.end_headers()
                    return  # the sender gave up: not an acknowledgement it received
                self.send_response(200)
                self.end_headers()
                with receiver._lock:
                    receiver.acknowledged[event_id] += 1
                    receiver.events[event_id] = json.loads(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- the pipeline --------------------------------------------------------------------------------


class Pipeline:
    """Kafka broker, collector, processor and sink as separate processes on one data folder."""

    def __init__(
        self,
        root: Path,
        webhook: FlakyWebhook | None = None,
        collector: dict[str, Any] | None = None,
        split_processor: bool = False,
    ) -> None:
        self.root = root
        self.roles = SPLIT_ROLES if split_processor else ROLES
        self._commands = _SPLIT_COMMANDS if split_processor else {}
        self._collector_overrides = collector or {}
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True)
        self.logs = root / "logs"
        self.logs.mkdir()
        self.broker = LocalKafkaBroker(local_kafka_settings(), root / "kafka", progress=print)
        self.http_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: Counter[str] = Counter()
        # Exits nobody asked for, as a supervisor (docker-compose's restart policy) sees them:
        # role -> the tail of its log at the time. The supervisor thread restarts the role.
        self.crashes: list[tuple[str, str]] = []
        self._expected_exit: set[str] = set()
        self._lock = threading.RLock()
        self._supervising = threading.Event()
        self.config_file = root / "llmtap.yaml"
        self._webhook = webhook
        self.settings: Settings | None = None

    # configuration

    def _write_config(self, bootstrap: str) -> Settings:
        suffix = uuid.uuid4().hex[:8]
        rules = self.root / "rules.yaml"
        rules.write_text(
            yaml.safe_dump(
                {
                    "rules": [
                        {
                            # fires once per service as soon as it has spent anything: one
                            # alert per service, never again (cooldown far beyond the test)
                            "id": "any-spend",
                            "kind": "cost_budget",
                            "severity": "critical",
                            "group_by": ["service_name"],
                            "window_seconds": 3600,
                            "threshold": 0.000001,
                            "cooldown_seconds": 86400,
                        }
                    ]
                }
            )
        )
        webhooks = (
            [
                {
                    "url": self._webhook.url,
                    "timeout_seconds": 1.0,
                    "max_attempts": 20,
                    "backoff_initial_seconds": 0.2,
                    "backoff_max_seconds": 1.0,
                }
            ]
            if self._webhook is not None
            else []
        )
        config: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "kafka": {"bootstrap_servers": bootstrap},
            "local_kafka": {"jar_cache_dir": str(JAR_CACHE_DIR)},
            "topics": {"partitions": 3, "dead_letter": f"faults.dead.{suffix}"},
            "collector": {
                "http_port": self.http_port,
                "grpc_port": None,
                "retry_after_seconds": 1,
                "delivery_timeout_seconds": 3.0,
                **self._collector_overrides,
            },
            "processor": {
                "stall_timeout_seconds": 60,
                "risk": {"enabled": False},
                "drift": {"enabled": False},
                "stream": {
                    "batch_max_messages": 500,
                    "batch_max_wait_seconds": 0.2,
                    "commit_interval_seconds": 0.5,
                },
                "alerts": {
                    "rules_file": str(rules),
                    "evaluation_interval_seconds": 1.0,
                    "webhooks": webhooks,
                },
            },
            "sink": {
                "flush_interval_seconds": 0.3,
                "retry_initial_seconds": 0.2,
                "retry_max_seconds": 1.0,
            },
        }
        self.config_file.write_text(yaml.safe_dump(config))
        return Settings.model_validate(config)

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("LLMTAP_")}
        env["LLMTAP_CONFIG_FILE"] = str(self.config_file)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    # processes

    def start_broker(self) -> None:
        state = self.broker.start()
        if self.settings is None:
            self.settings = self._write_config(state.bootstrap_servers)
            self.run_cli("migrate")

    def run_cli(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "llmtap", *arguments],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert not check or result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result

    def log_path(self, role: str) -> Path:
        return self.logs / f"{role}.log"

    def start(self, role: str, wait: bool = True, preexec: Any = None) -> None:
        with self._lock:
            self._start(role, preexec)
        if wait:
            self.wait_running(role)

    def _start(self, role: str, preexec: Any) -> None:
        assert role not in self.processes or self.processes[role].poll() is not None
        self._expected_exit.discard(role)
        self.starts[role] += 1
        log_path = self.log_path(role)
        with log_path.open("a") as log:
            log.write(f"\n=== start {self.starts[role]} ===\n")
        # Output goes through a pipe, copied to the log by this process: a role whose own file
        # writes fail (the disk-full scenario) can still say so.
        process = subprocess.Popen(
            [sys.executable, "-m", "llmtap", *self._commands.get(role, [role])],
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec,
        )
        self.processes[role] = process
        threading.Thread(target=_copy_output, args=(process, log_path), daemon=True).start()

    def wait_running(self, role: str, timeout: float = 180) -> None:
        marker = f"=== start {self.starts[role]} ==="
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path(role).read_text(errors="replace")
            tail = text[text.rindex(marker) :]
            if "running" in tail:
                return
            process = self.processes[role]
            assert process.poll() is None, f"{role} exited {process.returncode}:\n{tail[-3000:]}"
            assert time.monotonic() < deadline, f"{role} did not start:\n{tail[-3000:]}"
            time.sleep(0.2)

    def start_all(self) -> None:
        self.start_broker()
        for role in sorted(self.roles, key=("sink", "processor", "stream", "collector").index):
            self.start(role)
        threading.Thread(target=self._supervise, name="supervisor", daemon=True).start()

    def _supervise(self) -> None:
        """Restart a role that exited by itself, like ``restart: unless-stopped``."""
        self._supervising.set()
        while self._supervising.is_set():
            time.sleep(0.5)
            with self._lock:
                for role, process in list(self.processes.items()):
                    if process.poll() is None or role in self._expected_exit:
                        continue
                    tail = self.log_path(role).read_text(errors="replace")[-1500:]
                    self.crashes.append((role, tail))
                    self._start(role, None)

    def kill(self, role: str) -> None:
        with self._lock:
            self._expected_exit.add(role)
            process = self.processes[role]
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)

    def stop(self, role: str, timeout: float = 60) -> int:
        with self._lock:
            self._expected_exit.add(role)
            process = self.processes[role]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
                raise AssertionError(f"{role} did not stop within {timeout} s") from None
        return process.returncode

    def close(self) -> None:
        self._supervising.clear()
        with self._lock:
            self._expected_exit.update(self.roles)
        for role in self.roles:
            process = self.processes.get(role)
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        self.broker.stop()

    def pid(self, role: str) -> int:
        return self.processes[role].pid

    def peak_rss_megabytes(self, role: str) -> float:
        """The process's peak resident memory (VmHWM), while it still runs."""
        for line in Path(f"/proc/{self.pid(role)}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    # draining and reading back

    def wait_drained(self, timeout: float = 240) -> None:
        """Until every stage has committed everything its input topic holds, steadily.

        ``llmtap status``'s lag does not count the offsets no consumer receives (transaction
        markers, the records of a transaction aborted when its normalizer was killed), so a
        drained pipeline shows lag 0 at every stage.
        """
        from llmtap.status import kafka_lag

        assert self.settings is not None
        watched = {"normalizer", "sink", "aggregate", "merge", "sink-derived"}
        deadline = time.monotonic() + timeout
        previous: list[tuple[str, int, int, int]] = []
        steady_since = time.monotonic()
        while True:
            try:
                lags = [lag for lag in kafka_lag(self.settings) if lag.stage in watched]
            except KafkaException as problem:  # a coordinator still loading after a restart
                if time.monotonic() > deadline:
                    raise AssertionError(f"lag unavailable: {problem}") from problem
                time.sleep(1)
                continue
            current = [(lag.stage, lag.end_offsets, lag.committed, lag.lag) for lag in lags]
            if current != previous:
                previous, steady_since = current, time.monotonic()
            done = all(lag.lag == 0 for lag in lags)
            if done and time.monotonic() - steady_since > 4:
                return
            assert time.monotonic() < deadline, (
                f"not drained (stage, end, committed, lag): {current}"
            )
            time.sleep(0.5)

    def topic_values(self, topic: str) -> list[bytes]:
        """Every committed message of ``topic`` (for diagnostics)."""
        from confluent_kafka import Consumer

        assert self.settings is not None
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka.bootstrap_servers,
                "group.id": f"faults-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        values = []
        try:
            consumer.subscribe([topic])
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 5:
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    values.append(message.value())
                    quiet_since = time.monotonic()
        finally:
            consumer.close()
        return values

    def query(self, sql: str) -> list[list[Any]]:
        """Query the embedded store from a separate process (the sink must be stopped: the
        engine path belongs to one process at a time)."""
        program = (
            "import json, sys; from llmtap.clickhouse import open_target; "
            "from llmtap.clickhouse_dsn import ClickHouseTarget; "
            "target = ClickHouseTarget(kind='chdb', path=sys.argv[1], database='llmtap'); "
            "c = open_target(target, create_database=False); "
            "rows = c.query(sys.argv[2]).result_rows; c.close(); "
            "print(json.dumps([list(r) for r in rows], default=str))"
        )
        result = subprocess.run(
            [sys.executable, "-c", program, str(self.data_dir / "clickhouse"), sql],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return list(json.loads(result.stdout.strip().splitlines()[-1]))


def _copy_output(process: subprocess.Popen[bytes], log_path: Path) -> None:
    assert process.stdout is not None
    with log_path.open("ab") as log:
        for line in process.stdout:
            log.write(line)
            log.flush()


@contextmanager
def running_pipeline(
    root: Path,
    webhook: FlakyWebhook | None = None,
    collector: dict[str, Any] | None = None,
    split_processor: bool = False,
) -> Iterator[Pipeline]:
    pipeline = Pipeline(root, webhook, collector, split_processor)
    try:
        pipeline.start_all()
        yield pipeline
    finally:
        pipeline.close()


# -- the checks ----------------------------------------------------------------------------------


def check_spans_stored_exactly_once(pipeline: Pipeline, report: LoadReport) -> None:
    """Every span answered 200 is in llm_spans exactly once, and nothing else is."""
    assert report.unexpected == [], report.unexpected[:10]
    rows = pipeline.query("SELECT span_id, count() FROM llm_spans GROUP BY span_id")
    stored = {span_id: count for span_id, count in rows}
    twice = {span_id: count for span_id, count in stored.items() if count > 1}
    lost = report.acknowledged - stored.keys()
    invented = stored.keys() - report.acknowledged
    assert not lost, f"{len(lost)} acknowledged spans not stored, e.g. {sorted(lost)[:5]}"
    assert not twice, f"{len(twice)} spans stored more than once, e.g. {list(twice.items())[:5]}"
    assert not invented, f"{len(invented)} stored spans never acknowledged"


AGGREGATE_MISMATCHES = """
WITH from_spans AS (
    SELECT toStartOfMinute(timestamp) AS minute, tenant, service_name, request_model,
        prompt_template_version, count() AS requests, countIf(status = 'error') AS errors,
        sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
        sum(cost_total) AS cost
    FROM llm_spans
    GROUP BY ALL
), from_stream AS (
    SELECT window_start AS minute, tenant, service_name, request_model,
        prompt_template_version, sum(requests) AS requests, sum(errors) AS errors,
        sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
        sum(cost_total) AS cost
    FROM llm_aggregates FINAL
    WHERE window_seconds = 60
    GROUP BY ALL
)
SELECT minute, service_name, request_model, from_spans.requests, from_stream.requests,
    from_spans.input_tokens, from_stream.input_tokens, toString(from_spans.cost),
    toString(from_stream.cost)
FROM from_spans FULL OUTER JOIN from_stream
    USING (minute, tenant, service_name, request_model, prompt_template_version)
WHERE from_spans.requests != from_stream.requests
    OR from_spans.errors != from_stream.errors
    OR from_spans.input_tokens != from_stream.input_tokens
    OR from_spans.output_tokens != from_stream.output_tokens
    OR toDecimal128(from_spans.cost, 12) != toDecimal128(from_stream.cost, 12)
"""


def aggregate_mismatches(pipeline: Pipeline) -> list[list[Any]]:
    """Per-minute stream aggregates that differ from the same totals recomputed from llm_spans."""
    return pipeline.query(AGGREGATE_MISMATCHES)


def check_alerts(
    pipeline: Pipeline, webhook: FlakyWebhook, services: set[str], redeliveries: int = 0
) -> None:
    """One alert per service, each acknowledged by the webhook, none lost; acknowledged twice
    at most ``redeliveries`` times (the documented crash window: a processor killed between a
    webhook's 2xx and the outcome reaching Kafka resends that alert with the same event id)."""
    rows = pipeline.query(
        "SELECT splitByChar(':', dedup_key)[1], argMax(delivery_status, version), "
        "argMax(group_key, version) FROM alerts WHERE state = 'firing' GROUP BY dedup_key"
    )
    stored = {event_id: (status, group) for event_id, status, group in rows}
    groups = Counter(group for _, group in stored.values())
    assert set(groups) == {f"service_name={service}" for service in services}, groups
    assert all(count == 1 for count in groups.values()), f"an alert fired twice: {groups}"
    assert set(webhook.acknowledged) == set(stored), (webhook.acknowledged, stored)
    twice = {event: n - 1 for event, n in webhook.acknowledged.items() if n > 1}
    assert sum(twice.values()) <= redeliveries, f"alerts acknowledged more than once: {twice}"
    if twice:
        print(f"redelivered after a crash, same event id: {twice}")
    assert all(status == "delivered" for status, _ in stored.values()), stored
