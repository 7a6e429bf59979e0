"""`llmtap alerts test`: replay aggregates stored in the embedded ClickHouse through the rules."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ddsketch import DDSketch
from ddsketch.pb.proto import DDSketchProto

from llmtap.cli import cli
from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.processors.alerts.backtest import backtest, read_aggregates
from llmtap.processors.alerts.rules import parse_rules
from llmtap.sinks.clickhouse.migrations import Migrator

pytestmark = pytest.mark.integration

COLUMNS = [
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
    "cost_total",
    "latency_sketch",
    "latency_p95_ms",
    "version",
]

RULES = """\
rules:
  - id: budget
    kind: cost_budget
    severity: critical
    group_by: [tenant]
    window_seconds: 600
    threshold: 10
    cooldown_seconds: 0
  - id: errors
    kind: error_rate
    group_by: [service_name]
    window_seconds: 300
    threshold: 0.5
    min_requests: 5
  - id: risky
    kind: high_risk_rate
    threshold: 0.1
"""

# An hour ago, on a minute boundary: recent enough to survive the table's TTL.
START = (int(time.time()) - 3600) // 60 * 60


def sketch() -> bytes:
    values = DDSketch(relative_accuracy=0.01)
    for value in (120.0, 250.0, 900.0):
        values.add(value)
    return bytes(DDSketchProto.to_proto(values).SerializeToString())


def row(minute: int, cost: str, version: int = 1, **fields: Any) -> list[Any]:
    values: dict[str, Any] = {
        "window_start": datetime.fromtimestamp(START + minute * 60, UTC),
        "window_seconds": 60,
        "tenant": "acme",
        "service_name": "chat",
        "environment": "prod",
        "provider": "openai",
        "request_model": "gpt-4o",
        "operation": "chat",
        "prompt_template_version": "v1",
        "requests": 10,
        "errors": 0,
        "unpriced_requests": 0,
        "cost_total": Decimal(cost),
        "latency_sketch": sketch(),
        "latency_p95_ms": 900.0,
        "version": version,
    }
    values.update(fields)
    return [values[name] for name in COLUMNS]


@pytest.fixture
def stored(clickhouse_client: Any, clickhouse_target: ClickHouseTarget) -> Any:
    Migrator(clickhouse_client, clickhouse_target.database).apply()
    rows = [
        # tenant acme spends 3 a minute for 5 minutes (minutes 10-14), then nothing
        *(row(minute, "3") for minute in range(10, 15)),
        # minute 12 was re-emitted: version 2 replaces version 1 (FINAL), never adds to it
        row(12, "4", version=2),
        # chat errors on minutes 30-31
        row(30, "0.1", errors=8),
        row(31, "0.1", errors=9),
        # a 5-minute aggregate: not a base window, never read
        row(0, "500", window_seconds=300),
    ]
    clickhouse_client.insert("llm_aggregates", rows, column_names=COLUMNS)
    return clickhouse_client


def test_backtest_replays_stored_aggregates(stored: Any) -> None:
    rules = parse_rules(RULES)
    since_ms, until_ms = (START + 5 * 60) * 1000, (START + 50 * 60) * 1000

    aggregates = list(read_aggregates(stored, START, START + 3600, base_window_seconds=60))
    assert len(aggregates) == 7
    assert [a.cost_total for a in aggregates if a.window_start == START + 12 * 60] == ["4"]
    assert aggregates[0].latency_sketch == sketch()

    result = backtest(stored, rules, since_ms, until_ms)

    assert result.skipped_rules == {
        "risky": "high_risk_rate rules read risk scores and drift results, not aggregates"
    }
    assert result.evaluations == 46
    summary = [
        (event.state, event.rule_id, event.group_key, (event.evaluated_at_ms // 1000 - START) // 60)
        for event in result.events
    ]
    assert summary == [
        # minutes 10-12 spent 3 + 3 + 4 = 10 (the threshold): fires at the boundary after them
        ("firing", "budget", "tenant=acme", 13),
        # at minute 23 the window holds minutes 13-22: 3 + 3 spent, under the threshold
        ("resolved", "budget", "tenant=acme", 23),
        ("firing", "errors", "service_name=chat", 31),
        ("resolved", "errors", "service_name=chat", 37),
    ]
    assert result.events[0].value == 10.0


def test_the_cli_prints_what_would_have_fired(
    stored: Any, clickhouse_target: ClickHouseTarget, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    since = datetime.fromtimestamp(START, UTC).isoformat()
    until = datetime.fromtimestamp(START + 50 * 60, UTC).isoformat()
    environment = {
        "LLMTAP_CLICKHOUSE__DSN": f"chdb://{clickhouse_target.path}",
        "LLMTAP_CLICKHOUSE__DATABASE": clickhouse_target.database,
    }
    stored.close()  # the CLI opens its own client on the same engine path
    runner = CliRunner()

    table = runner.invoke(
        cli,
        ["alerts", "test", str(rules_file), "--since", since, "--until", until],
        env=environment,
    )
    assert table.exit_code == 0, table.output
    assert "3 rule(s) valid; replayed" in table.output
    assert "not backtested: risky" in table.output
    assert "2 firing, 2 resolved" in table.output

    as_json = runner.invoke(
        cli,
        ["alerts", "test", str(rules_file), "--since", since, "--until", until, "--format", "json"],
        env=environment,
    )
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.output)
    assert [event["state"] for event in document["events"]] == [
        "firing",
        "resolved",
        "firing",
        "resolved",
    ]


def test_the_cli_reports_every_rule_problem(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("rules:\n  - id: a\n    kind: cost_budget\n    colour: red\n")
    result = CliRunner().invoke(cli, ["alerts", "test", str(rules_file)])
    assert result.exit_code != 0
    assert f"{rules_file}:2: rules[0].threshold: required field is missing" in str(result.exception)
    assert f"{rules_file}:4: rules[0].colour: unknown field" in str(result.exception)
