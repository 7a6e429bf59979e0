"""`llmtap query`: cost, latency, risk, drift and alerts read from the embedded ClickHouse."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner, Result

from llmtap.cli import cli
from llmtap.cli_query import query as query_group
from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.errors import LlmtapError
from llmtap.sinks.clickhouse.migrations import Migrator
from tests.integration.web.tenants import ALPHA, BRAVO, seed_tenants

pytestmark = pytest.mark.integration

# Recent, whole minutes: rows older than the retention TTL would be dropped at insert.
NOW = datetime.fromtimestamp(int(time.time()) // 60 * 60, UTC).replace(tzinfo=None)
TEN_MINUTES_AGO = NOW - timedelta(minutes=10)


def environment(target: ClickHouseTarget) -> dict[str, str]:
    return {
        "LLMTAP_CLICKHOUSE__DSN": f"chdb://{target.path}",
        "LLMTAP_CLICKHOUSE__DATABASE": target.database,
    }


def invoke(target: ClickHouseTarget, *arguments: str) -> Result:
    result = CliRunner().invoke(cli, ["query", *arguments], env=environment(target))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def insert(client: Any, table: str, rows: list[dict[str, Any]]) -> None:
    names = list(rows[0])
    client.insert(table, [[row[name] for name in names] for row in rows], column_names=names)


def aggregate(
    minute: int, service: str, model: str, requests: int, errors: int, cost: str, **more: Any
) -> dict[str, Any]:
    return {
        "window_start": TEN_MINUTES_AGO + timedelta(minutes=minute),
        "window_seconds": 60,
        "tenant": "acme",
        "service_name": service,
        "environment": "prod",
        "provider": "openai",
        "request_model": model,
        "operation": "chat",
        "prompt_template_version": "v1",
        "requests": requests,
        "errors": errors,
        "unpriced_requests": 0,
        "input_tokens": requests * 1000,
        "output_tokens": requests * 100,
        "cache_read_tokens": requests * 10,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "currency": "USD",
        "cost_total": Decimal(cost),
        "latency_sketch": "",
        "latency_p50_ms": 0.0,
        "latency_p95_ms": 0.0,
        "latency_p99_ms": 0.0,
        "late_spans": 0,
        "version": 1,
        **more,
    }


def span(index: int, service: str, model: str, duration_ms: float, **more: Any) -> dict[str, Any]:
    start = TEN_MINUTES_AGO + timedelta(seconds=index)
    return {
        "timestamp": start,
        "end_timestamp": start + timedelta(milliseconds=duration_ms),
        "duration_ms": duration_ms,
        "trace_id": f"{index:032x}",
        "span_id": f"{index:016x}",
        "service_name": service,
        "tenant": "acme",
        "span_type": "llm",
        "status": "ok",
        "request_model": model,
        "user_id": f"u-{index % 2}",
        "prompt_text": f"question number {index}",
        "completion_text": f"answer number {index}",
        "time_to_first_token_ms": None,
        **more,
    }


@pytest.fixture
def stored(clickhouse_client: Any, clickhouse_target: ClickHouseTarget) -> ClickHouseTarget:
    client = clickhouse_client
    Migrator(client, clickhouse_target.database).apply()
    insert(
        client,
        "llm_aggregates",
        [
            aggregate(0, "support-bot", "gpt-4o-mini", 10, 1, "0.012500000000"),
            aggregate(1, "support-bot", "gpt-4o-mini", 5, 0, "0.006250000000"),
            aggregate(0, "docs", "claude-sonnet-4", 4, 2, "0.080000000000"),
            # A re-emitted window: FINAL keeps the higher version only.
            aggregate(0, "docs", "claude-sonnet-4", 6, 2, "0.120000000000", version=2),
            # The hourly rollup of the same spans must not be counted a second time.
            aggregate(0, "docs", "claude-sonnet-4", 6, 2, "0.120000000000", window_seconds=3600),
        ],
    )
    insert(
        client,
        "llm_user_aggregates",
        [
            {
                "window_start": TEN_MINUTES_AGO,
                "window_seconds": 60,
                "tenant": "acme",
                "user_id": user,
                "requests": requests,
                "errors": 0,
                "unpriced_requests": 0,
                "input_tokens": 100,
                "output_tokens": 10,
                "currency": "USD",
                "cost_total": Decimal(cost),
                "late_spans": 0,
                "version": 1,
            }
            for user, requests, cost in (("u-1", 3, "0.3"), ("u-2", 1, "0.05"))
        ],
    )
    insert(
        client,
        "llm_spans",
        [
            span(i, "support-bot", "gpt-4o-mini", 100.0 + i, time_to_first_token_ms=50.0)
            for i in range(20)
        ]
        + [span(100 + i, "docs", "claude-sonnet-4", 2000.0 + 10 * i) for i in range(10)]
        + [span(200, "docs", "claude-sonnet-4", 9.0, span_type="retrieval")],
    )
    insert(
        client,
        "span_scores",
        [
            {
                "timestamp": TEN_MINUTES_AGO + timedelta(seconds=index),
                "tenant": "acme",
                "trace_id": f"{index:032x}",
                "span_id": f"{index:016x}",
                "service_name": service,
                "request_model": "gpt-4o-mini",
                "risk_score": risk,
                "support_min": 0.5,
                "answer_context_similarity": 0.5,
                "answer_question_similarity": 0.5,
                "sampling_weight": 1.0,
                "model_version": "test",
                "details": "{}",
                "injection_flag": int(risk > 0.9),
                "has_context": 1,
            }
            for index, service, risk in (
                (0, "support-bot", 0.1),
                (1, "support-bot", 0.2),
                (2, "support-bot", 0.95),
                (3, "docs", 0.8),
            )
        ],
    )
    insert(
        client,
        "drift_results",
        [
            {
                "window_start": TEN_MINUTES_AGO - timedelta(minutes=5),
                "window_end": TEN_MINUTES_AGO + timedelta(minutes=minute),
                "tenant": "acme",
                "service_name": "support-bot",
                "environment": "prod",
                "provider": "openai",
                "request_model": "gpt-4o-mini",
                "prompt_template_version": "v1",
                "feature": "prompt_embedding",
                "detector": "mmd",
                "statistic": statistic,
                "p_value": p_value,
                "threshold": 0.05,
                "drifted": int(p_value < 0.05),
                "reference_size": 500,
                "current_size": 200,
                "evidence": "{}",
                "version": 1,
            }
            for minute, statistic, p_value in ((1, 0.02, 0.4), (2, 0.31, 0.001))
        ],
    )
    insert(
        client,
        "alerts",
        [
            {
                "fired_at": TEN_MINUTES_AGO + timedelta(minutes=3),
                "tenant": "acme",
                "rule_id": "daily-budget",
                "severity": "critical",
                "state": "firing",
                "group_key": "tenant=acme",
                "labels": {"tenant": "acme"},
                "value": 12.5,
                "threshold": 10.0,
                "message": "acme spent 12.50 USD of a 10 USD budget",
                "delivery_status": "delivered",
                "delivery_attempts": 1,
                "delivery_error": "",
                "dedup_key": "k1",
                "version": 1,
            }
        ],
    )
    client.close()  # the CLI opens its own client on the same engine path
    return clickhouse_target


def test_cost_per_model_reads_the_current_one_minute_windows(stored: ClickHouseTarget) -> None:
    table = invoke(stored, "cost", "--since", "1h").stdout
    lines = table.splitlines()
    assert lines[0].startswith("cost, ")
    header = lines[1]
    for heading in ("model", "cost", "input (tokens)", "cache read (tokens)"):
        assert heading in header
    # Highest cost first; the re-emitted window replaced the first one; the rollup is ignored.
    assert lines[3].split()[:4] == ["claude-sonnet-4", "USD", "6", "2"]
    assert lines[3].split()[-1] == "0.120000"
    assert lines[4].split()[:4] == ["gpt-4o-mini", "USD", "15", "1"]
    assert lines[4].split()[-1] == "0.018750"
    # Numbers are right-aligned: every data line is as wide as the separator line.
    assert len(lines[3]) == len(lines[4]) == len(lines[2])

    records = json.loads(invoke(stored, "cost", "--by", "service,model", "--format", "json").stdout)
    assert records == [
        {
            "service": "docs",
            "model": "claude-sonnet-4",
            "currency": "USD",
            "requests": 6,
            "errors": 2,
            "unpriced": 0,
            "input_tokens": 6000,
            "output_tokens": 600,
            "cache_read_tokens": 60,
            "reasoning_tokens": 0,
            "cost": "0.12",
        },
        {
            "service": "support-bot",
            "model": "gpt-4o-mini",
            "currency": "USD",
            "requests": 15,
            "errors": 1,
            "unpriced": 0,
            "input_tokens": 15000,
            "output_tokens": 1500,
            "cache_read_tokens": 150,
            "reasoning_tokens": 0,
            "cost": "0.01875",
        },
    ]


def test_cost_per_user_and_csv(stored: ClickHouseTarget) -> None:
    rows = list(
        csv.DictReader(
            io.StringIO(invoke(stored, "cost", "--by", "user", "--format", "csv").stdout)
        )
    )
    assert [(row["user"], row["requests"], row["cost"]) for row in rows] == [
        ("u-1", "3", "0.3"),
        ("u-2", "1", "0.05"),
    ]


def test_latency_percentiles_of_llm_spans(stored: ClickHouseTarget) -> None:
    records = json.loads(invoke(stored, "latency", "--format", "json").stdout)
    assert [record["model"] for record in records] == ["claude-sonnet-4", "gpt-4o-mini"]
    docs, support = records
    assert docs["requests"] == 10  # the retrieval span is not an LLM call
    assert 2000 <= docs["p50_ms"] <= docs["p95_ms"] <= docs["max_ms"] == 2090
    assert docs["ttft_p50_ms"] is None
    assert support["ttft_p95_ms"] == pytest.approx(50.0)

    table = invoke(stored, "latency", "--by", "user", "--limit", "1").stdout
    assert "p95 (ms)" in table.splitlines()[1]
    assert len(table.splitlines()) == 4  # title, header, rule, one row


def test_risk_statistics_and_riskiest_responses(stored: ClickHouseTarget) -> None:
    records = json.loads(invoke(stored, "risk", "--format", "json").stdout)
    assert [(r["service"], r["scored"], r["injections"]) for r in records] == [
        ("docs", 1, 0),
        ("support-bot", 3, 1),
    ]
    assert records[1]["mean_risk"] == pytest.approx((0.1 + 0.2 + 0.95) / 3, abs=1e-6)
    assert records[1]["risk_over_0_7"] == pytest.approx(1 / 3)
    assert "33.3%" in invoke(stored, "risk").stdout

    top = json.loads(invoke(stored, "risk", "--top", "2", "--format", "json").stdout)
    assert [row["risk"] for row in top] == pytest.approx([0.95, 0.8])
    assert top[0]["prompt"] == "question number 2"
    assert top[0]["answer"] == "answer number 2"


def test_drift_lists_tests_and_summarises_by_group(stored: ClickHouseTarget) -> None:
    listed = json.loads(invoke(stored, "drift", "--format", "json").stdout)
    assert [row["drifted"] for row in listed] == [1, 0]  # newest first
    only = json.loads(invoke(stored, "drift", "--drifted-only", "--format", "json").stdout)
    assert [row["feature"] for row in only] == ["prompt_embedding"]

    summary = json.loads(invoke(stored, "drift", "--by", "service", "--format", "json").stdout)
    assert summary[0]["service"] == "support-bot"
    assert (summary[0]["tests"], summary[0]["drifted"]) == (2, 1)


def test_alerts_list_and_counts(stored: ClickHouseTarget) -> None:
    table = invoke(stored, "alerts").stdout
    assert table.splitlines()[3].split()[2:6] == [
        "critical",
        "firing",
        "daily-budget",
        "tenant=acme",
    ]
    counts = json.loads(invoke(stored, "alerts", "--by", "rule", "--format", "json").stdout)
    assert [(row["rule"], row["alerts"], row["firing"]) for row in counts] == [
        ("daily-budget", 1, 1)
    ]
    assert "(no rows in this range)" in invoke(stored, "alerts", "--state", "resolved").stdout


def test_an_empty_range_and_a_bad_group_are_explained(stored: ClickHouseTarget) -> None:
    old = invoke(stored, "cost", "--since", "3d", "--until", "2d").stdout
    assert "(no rows in this range)" in old

    result = CliRunner().invoke(cli, ["query", "risk", "--by", "user"], env=environment(stored))
    assert result.exit_code == 2
    assert "cannot group by user here" in result.output


def test_missing_tables_ask_for_migrations(clickhouse_target: ClickHouseTarget) -> None:
    result = CliRunner().invoke(cli, ["query", "cost"], env=environment(clickhouse_target))
    assert isinstance(result.exception, LlmtapError)
    assert "run `llmtap migrate` (or `llmtap up`) first" in str(result.exception)


def test_an_unreachable_server_is_one_message(clickhouse_target: ClickHouseTarget) -> None:
    result = CliRunner().invoke(
        cli,
        ["query", "alerts"],
        env={"LLMTAP_CLICKHOUSE__DSN": "http://default:x@127.0.0.1:9/llmtap"},
    )
    assert isinstance(result.exception, LlmtapError)
    assert "127.0.0.1:9" in str(result.exception)


# -- --tenant: every subcommand, every statement ----------------------------------------------

# Each subcommand with the option sets that reach each of its statements.
TENANT_RUNS = {
    "cost": [["--by", "model"], ["--by", "user"], ["--by", "tenant,service"]],
    "latency": [["--by", "model,user"]],
    "risk": [["--by", "service"], ["--top", "5"]],
    "drift": [[], ["--by", "feature"]],
    "alerts": [[], ["--by", "rule"]],
}


@pytest.fixture
def two_tenants(clickhouse_client: Any, clickhouse_target: ClickHouseTarget) -> ClickHouseTarget:
    seed_tenants(clickhouse_client, clickhouse_target.database)
    clickhouse_client.close()  # the CLI opens its own client on the same engine path
    return clickhouse_target


def test_every_query_subcommand_is_checked_for_tenant_isolation() -> None:
    assert set(query_group.commands) == set(TENANT_RUNS)
    for name, command in query_group.commands.items():
        assert "--tenant" in {opt for param in command.params for opt in param.opts}, name


def test_tenant_limits_every_statement_of_every_subcommand(two_tenants: ClickHouseTarget) -> None:
    for command, option_sets in TENANT_RUNS.items():
        for options in option_sets:
            arguments = [command, *options, "--since", "2h", "--format", "json"]
            for reader, other in ((ALPHA, BRAVO), (BRAVO, ALPHA)):
                output = invoke(two_tenants, *arguments, "--tenant", reader.name).stdout
                assert json.loads(output), (arguments, reader)
                assert reader.name in output, (arguments, output)
                assert not [marker for marker in other.markers() if marker in output], output
            everyone = invoke(two_tenants, *arguments).stdout
            assert "alpha" in everyone, (arguments, everyone)
            assert "bravo" in everyone, (arguments, everyone)
    nobody = invoke(two_tenants, "cost", "--tenant", "nobody", "--format", "json").stdout
    assert json.loads(nobody) == []
