"""`llmtap status`: Kafka lag per stage, ClickHouse health and the spans stored lately."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from llmtap.cli import cli
from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.dev.kafka_broker import BrokerState
from llmtap.sinks.clickhouse.migrations import Migrator

pytestmark = pytest.mark.integration


def test_status_shows_store_health_and_recent_spans(
    kafka_broker: BrokerState, clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    Migrator(clickhouse_client, clickhouse_target.database).apply()
    now = datetime.now(UTC).replace(tzinfo=None)
    clickhouse_client.insert(
        "llm_spans",
        [
            [now - timedelta(minutes=5), "a" * 32, "1" * 16, "llm"],
            [now - timedelta(hours=3), "b" * 32, "2" * 16, "llm"],
        ],
        column_names=["timestamp", "trace_id", "span_id", "span_type"],
    )
    clickhouse_client.close()

    result = CliRunner().invoke(
        cli,
        ["status"],
        env={
            "LLMTAP_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
            "LLMTAP_CLICKHOUSE__DSN": f"chdb://{clickhouse_target.path}",
            "LLMTAP_CLICKHOUSE__DATABASE": clickhouse_target.database,
        },
    )

    assert result.exit_code == 0, (result.output, result.exception)
    assert "clickhouse  ok  embedded ClickHouse" in result.stdout
    assert "stored spans 2 (2 distinct): llm 2" in result.stdout
    assert "stored spans that started in the last hour: 1" in result.stdout


def test_status_reports_an_unreachable_store_in_one_line(kafka_broker: BrokerState) -> None:
    result = CliRunner().invoke(
        cli,
        ["status"],
        env={
            "LLMTAP_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
            "LLMTAP_CLICKHOUSE__DSN": "http://default:x@127.0.0.1:9/llmtap",
        },
    )
    assert result.exit_code == 3
    assert "clickhouse  unavailable: " in result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit)
