"""A migrated embedded ClickHouse database with an hour of traffic, and the dashboard serving it.

The rows have the shapes the sinks write (llm_spans, the windowed aggregates, scores, drift
results, alerts), with recent timestamps: rows older than the 30-day retention are dropped on
insert. The dashboard runs its own event loop in a thread, so the tests talk to it over real
HTTP like a browser does.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.settings import Settings
from llmtap.sinks.clickhouse.migrations import Migrator
from llmtap.web.server import WebDashboard

SERVICES = ("chat-api", "search-api", "support-bot")
TENANTS = ("acme", "globex")
MODELS = (("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-3-5-haiku"))
PROMPT_VERSIONS = ("v1", "v2")
SPAN_COLUMNS = [
    "timestamp",
    "end_timestamp",
    "duration_ms",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "status",
    "status_message",
    "service_name",
    "environment",
    "tenant",
    "span_type",
    "provider",
    "operation",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "priced",
    "cost_total",
    "currency",
    "unpriced_reason",
    "user_id",
    "prompt_template_id",
    "prompt_template_version",
    "prompt_text",
    "completion_text",
    "retrieved_documents",
    "error_type",
    "error_message",
    "attributes",
    "resource_attributes",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
]


@dataclass
class Seed:
    """What was inserted, for the tests' expectations."""

    now_ms: int
    spans: int = 0
    llm_calls: int = 0
    errors: int = 0
    unpriced_calls: int = 0
    cost: float = 0.0
    cost_by_service: dict[str, float] = field(default_factory=dict)
    trace_ids: list[str] = field(default_factory=list)
    riskiest_span: tuple[str, str] = ("", "")
    drift_rows: int = 0
    drifted_rows: int = 0
    alerts: int = 0
    firing_alerts: int = 0


def insert_dashboard_data(client: Any, database: str, now_ms: int, count: int = 240) -> Seed:
    rng = random.Random(7)
    seed = Seed(now_ms=now_ms)
    start_ms = now_ms - 50 * 60_000
    spans: list[list[Any]] = []
    scores: list[list[Any]] = []
    windows: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: defaultdict(float)  # type: ignore[arg-type]
    )
    user_windows: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: defaultdict(float)  # type: ignore[arg-type]
    )
    top_risk = -1.0
    for index in range(count):
        at_ms = start_ms + index * (50 * 60_000 // count) + rng.randrange(1000)
        service = SERVICES[index % len(SERVICES)]
        tenant = TENANTS[index % len(TENANTS)]
        provider, model = MODELS[index % len(MODELS)]
        version = PROMPT_VERSIONS[(index // 7) % 2]
        trace_id = f"{index:08x}{rng.getrandbits(96):024x}"
        root_id, llm_id = f"{rng.getrandbits(64):016x}", f"{rng.getrandbits(64):016x}"
        duration = 200 + rng.random() * 1800 + (900 if model == "gpt-4o" else 0)
        failed = index % 17 == 0
        unpriced = index % 23 == 0
        input_tokens, output_tokens = 200 + rng.randrange(800), 20 + rng.randrange(300)
        cost = None if unpriced else round(input_tokens * 2.5e-7 + output_tokens * 1e-6, 9)
        user = f"user-{index % 5}"
        at_ns = at_ms * 1_000_000
        documents = json.dumps(
            [{"id": f"doc-{index}", "content": f"Refund policy paragraph {index}: 30 days."}]
        )
        common = [service, "prod", tenant]
        spans.append(
            [
                at_ns,
                at_ns + int((duration + 50) * 1e6),
                duration + 50,
                trace_id,
                root_id,
                "",
                "POST /chat",
                "server",
                "unset",
                "",
                *common,
                "other",
                "",
                "",
                "",
                "",
                None,
                None,
                0,
                None,
                "",
                "",
                user,
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                {"http.route": "/chat"},
                {"service.name": service},
                "llmtap.spans.normalized",
                0,
                2 * index,
            ]
        )
        spans.append(
            [
                at_ns + 10_000_000,
                at_ns + 10_000_000 + int(duration * 1e6),
                duration,
                trace_id,
                llm_id,
                root_id,
                f"chat {model}",
                "client",
                "error" if failed else "ok",
                "rate limited" if failed else "",
                *common,
                "llm",
                provider,
                "chat",
                model,
                model,
                input_tokens,
                output_tokens,
                0 if unpriced else 1,
                None if cost is None else f"{cost:.12f}",
                "USD",
                "unknown_model" if unpriced else "",
                user,
                "support-answer",
                version,
                f"How do I get a refund for order {index}?",
                f"You can request a refund within 30 days (order {index}).",
                documents,
                "RateLimitError" if failed else "",
                "429 Too Many Requests" if failed else "",
                {"server.address": "api.example.com"},
                {"service.name": service},
                "llmtap.spans.normalized",
                0,
                2 * index + 1,
            ]
        )
        seed.spans += 2
        seed.llm_calls += 1
        seed.errors += failed
        seed.unpriced_calls += unpriced
        seed.cost += cost or 0.0
        seed.cost_by_service[service] = seed.cost_by_service.get(service, 0.0) + (cost or 0.0)
        seed.trace_ids.append(trace_id)
        risk = rng.random() ** 2
        if risk > top_risk:
            top_risk, seed.riskiest_span = risk, (trace_id, llm_id)
        details = {
            "risk": risk,
            "sentences": [{"text": f"You can request a refund (order {index}).", "support": 0.4}],
            "injection_reasons": [],
        }
        scores.append(
            [
                at_ns + 10_000_000,
                tenant,
                trace_id,
                llm_id,
                service,
                model,
                version,
                risk,
                0.3,
                0.5,
                0.6,
                0.7,
                1,
                0.01,
                0,
                1.0,
                "risk-test-1",
                json.dumps(details),
            ]
        )
        for window_seconds in (60, 3600):
            window_start = at_ms // 1000 // window_seconds * window_seconds
            key = (window_start, window_seconds, tenant, service, provider, model, version)
            window = windows[key]
            window["requests"] += 1
            window["errors"] += failed
            window["unpriced_requests"] += unpriced
            window["input_tokens"] += input_tokens
            window["output_tokens"] += output_tokens
            window["cost_total"] += cost or 0.0
            window["latency"] = max(window["latency"], duration)
            user_window = user_windows[(window_start, window_seconds, tenant, user)]
            user_window["requests"] += 1
            user_window["errors"] += failed
            user_window["unpriced_requests"] += unpriced
            user_window["input_tokens"] += input_tokens
            user_window["output_tokens"] += output_tokens
            user_window["cost_total"] += cost or 0.0

    client.insert("llm_spans", spans, column_names=SPAN_COLUMNS, database=database)
    client.insert(
        "span_scores",
        scores,
        column_names=[
            "timestamp",
            "tenant",
            "trace_id",
            "span_id",
            "service_name",
            "request_model",
            "prompt_template_version",
            "risk_score",
            "support_min",
            "support_mean",
            "answer_context_similarity",
            "answer_question_similarity",
            "has_context",
            "injection_score",
            "injection_flag",
            "sampling_weight",
            "model_version",
            "details",
        ],
        database=database,
    )
    aggregate_rows = []
    for (start, seconds, tenant, service, provider, model, version), window in windows.items():
        for row_version in (1, 2):  # a re-emitted window: FINAL must count it once
            aggregate_rows.append(
                [
                    start,
                    seconds,
                    tenant,
                    service,
                    "prod",
                    provider,
                    model,
                    "chat",
                    version,
                    int(window["requests"]),
                    int(window["errors"]),
                    int(window["unpriced_requests"]),
                    int(window["input_tokens"]),
                    int(window["output_tokens"]),
                    f"{window['cost_total'] * row_version / 2:.12f}",
                    window["latency"] / 2,
                    window["latency"],
                    window["latency"],
                    row_version,
                ]
            )
    client.insert(
        "llm_aggregates",
        aggregate_rows,
        column_names=[
            "window_start",
            "window_seconds",
            "tenant",
            "service_name",
            "environment",
            "provider",
            "request_model",
            "operation",
            "prompt_template_version",
            "requests",
            "errors",
            "unpriced_requests",
            "input_tokens",
            "output_tokens",
            "cost_total",
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
            "version",
        ],
        database=database,
    )
    client.insert(
        "llm_user_aggregates",
        [
            [
                start,
                seconds,
                tenant,
                user,
                int(window["requests"]),
                int(window["errors"]),
                int(window["unpriced_requests"]),
                int(window["input_tokens"]),
                int(window["output_tokens"]),
                "USD",
                f"{window['cost_total']:.12f}",
                1,
            ]
            for (start, seconds, tenant, user), window in user_windows.items()
        ],
        column_names=[
            "window_start",
            "window_seconds",
            "tenant",
            "user_id",
            "requests",
            "errors",
            "unpriced_requests",
            "input_tokens",
            "output_tokens",
            "currency",
            "cost_total",
            "version",
        ],
        database=database,
    )
    drift_rows = []
    for step in range(10):
        window_end = (start_ms // 1000) + (step + 1) * 300
        for feature, detector, threshold in (
            ("prompt_embedding", "mmd", 0.05),
            ("output_tokens", "ks", 0.2),
        ):
            statistic = (
                threshold * (0.4 + step * 0.15)
                if feature == "prompt_embedding"
                else threshold * 0.5
            )
            drifted = int(statistic > threshold)
            evidence = {
                "examples": [f"Prompt example {step}-{n} about refunds" for n in range(2)],
                "top_shifted_bins": [{"bin": "refund", "reference": 0.1, "current": 0.3}],
            }
            drift_rows.append(
                [
                    window_end - 300,
                    window_end,
                    "acme",
                    "chat-api",
                    "prod",
                    "openai",
                    "gpt-4o-mini",
                    "v2",
                    feature,
                    detector,
                    statistic,
                    0.01 if drifted else 0.4,
                    threshold,
                    drifted,
                    500,
                    100,
                    json.dumps(evidence),
                    1,
                ]
            )
            seed.drift_rows += 1
            seed.drifted_rows += drifted
    client.insert(
        "drift_results",
        drift_rows,
        column_names=[
            "window_start",
            "window_end",
            "tenant",
            "service_name",
            "environment",
            "provider",
            "request_model",
            "prompt_template_version",
            "feature",
            "detector",
            "statistic",
            "p_value",
            "threshold",
            "drifted",
            "reference_size",
            "current_size",
            "evidence",
            "version",
        ],
        database=database,
    )
    alert_rows = []
    alert_specs = [
        ("drift.prompt_embedding", "warning", "firing", 0.09, 0.05, "prompt embedding drifted"),
        ("cost.budget", "critical", "firing", 12.5, 10.0, "hourly cost over budget"),
        ("errors.rate", "warning", "resolved", 0.08, 0.05, "error rate above 5%"),
        ("latency.p95", "info", "resolved", 2600.0, 2500.0, "p95 latency above 2.5 s"),
    ]
    for number, (rule, severity, state, value, threshold, message) in enumerate(alert_specs):
        fired_ms = now_ms - (40 - number * 8) * 60_000
        for version, row_state in ((1, "firing"), (2, state)):  # the newest version wins
            alert_rows.append(
                [
                    fired_ms,
                    None if row_state == "firing" else fired_ms + 300_000,
                    "acme",
                    rule,
                    severity,
                    row_state,
                    "service=chat-api",
                    {"service": "chat-api"},
                    value,
                    threshold,
                    message,
                    "delivered",
                    1,
                    f"{rule}:chat-api",
                    version,
                ]
            )
        seed.alerts += 1
        seed.firing_alerts += state == "firing"
    client.insert(
        "alerts",
        alert_rows,
        column_names=[
            "fired_at",
            "resolved_at",
            "tenant",
            "rule_id",
            "severity",
            "state",
            "group_key",
            "labels",
            "value",
            "threshold",
            "message",
            "delivery_status",
            "delivery_attempts",
            "dedup_key",
            "version",
        ],
        database=database,
    )
    return seed


@pytest.fixture
def seeded(clickhouse_client: Any, clickhouse_target: ClickHouseTarget) -> Seed:
    Migrator(clickhouse_client, clickhouse_target.database).apply()
    return insert_dashboard_data(
        clickhouse_client, clickhouse_target.database, int(time.time() * 1000)
    )


def dashboard_settings(target: ClickHouseTarget, data_dir: Path, **web: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        clickhouse={"dsn": f"chdb://{target.path}?database={target.database}"},  # type: ignore[arg-type]
        web={"port": 0, **web},  # type: ignore[arg-type]
    )


class DashboardThread:
    """A WebDashboard on an event loop of its own, stopped by ``close()``."""

    def __init__(self, settings: Settings) -> None:
        self.dashboard = WebDashboard(settings, progress=lambda line: None)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self.dashboard.start())

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard.port}"

    def close(self) -> None:
        try:
            self._call(self.dashboard.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()


@pytest.fixture
def dashboard(
    seeded: Seed, clickhouse_target: ClickHouseTarget, tmp_path: Path
) -> Iterator[DashboardThread]:
    running = DashboardThread(dashboard_settings(clickhouse_target, tmp_path))
    try:
        yield running
    finally:
        running.close()
