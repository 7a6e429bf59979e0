"""Migrations on the embedded engine: tables, idempotence, refusals, retention, CLI, Grafana."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.sinks.clickhouse.migrations import (
    MIGRATIONS_TABLE,
    MigrationIntegrityError,
    Migrator,
    Topology,
    bootstrap_statements,
    load_migrations,
    migrations_folder,
)

pytestmark = pytest.mark.integration

# The columns the sink writes, with the types agreed for them (schemas/llm_span.py).
LLM_SPANS_COLUMNS = [
    ("timestamp", "DateTime64(9)"),
    ("end_timestamp", "DateTime64(9)"),
    ("duration_ms", "Float64"),
    ("trace_id", "String"),
    ("span_id", "String"),
    ("parent_span_id", "String"),
    ("name", "LowCardinality(String)"),
    ("kind", "LowCardinality(String)"),
    ("status", "LowCardinality(String)"),
    ("status_message", "String"),
    ("service_name", "LowCardinality(String)"),
    ("service_version", "LowCardinality(String)"),
    ("environment", "LowCardinality(String)"),
    ("tenant", "LowCardinality(String)"),
    ("scope_name", "LowCardinality(String)"),
    ("scope_version", "LowCardinality(String)"),
    ("span_type", "LowCardinality(String)"),
    ("convention", "LowCardinality(String)"),
    ("provider", "LowCardinality(String)"),
    ("operation", "LowCardinality(String)"),
    ("request_model", "LowCardinality(String)"),
    ("response_model", "LowCardinality(String)"),
    ("response_id", "String"),
    ("temperature", "Nullable(Float64)"),
    ("top_p", "Nullable(Float64)"),
    ("max_tokens", "Nullable(UInt32)"),
    ("stream", "Nullable(UInt8)"),
    ("finish_reasons", "Array(LowCardinality(String))"),
    ("input_tokens", "Nullable(UInt64)"),
    ("output_tokens", "Nullable(UInt64)"),
    ("cache_read_tokens", "Nullable(UInt64)"),
    ("cache_write_tokens", "Nullable(UInt64)"),
    ("reasoning_tokens", "Nullable(UInt64)"),
    ("priced", "UInt8"),
    ("cost_total", "Nullable(Decimal(38, 12))"),
    ("cost_input", "Nullable(Decimal(38, 12))"),
    ("cost_output", "Nullable(Decimal(38, 12))"),
    ("cost_cache_read", "Nullable(Decimal(38, 12))"),
    ("cost_cache_write", "Nullable(Decimal(38, 12))"),
    ("cost_reasoning", "Nullable(Decimal(38, 12))"),
    ("currency", "LowCardinality(String)"),
    ("price_version", "LowCardinality(String)"),
    ("price_id", "LowCardinality(String)"),
    ("unpriced_reason", "LowCardinality(String)"),
    ("time_to_first_token_ms", "Nullable(Float64)"),
    ("user_id", "String"),
    ("session_id", "String"),
    ("prompt_template_id", "LowCardinality(String)"),
    ("prompt_template_version", "LowCardinality(String)"),
    ("system_instructions", "String"),
    ("prompt_text", "String"),
    ("completion_text", "String"),
    ("input_messages", "String"),
    ("output_messages", "String"),
    ("retrieved_documents", "String"),
    ("tool_calls", "String"),
    ("error_type", "LowCardinality(String)"),
    ("error_message", "String"),
    ("attributes", "Map(LowCardinality(String), String)"),
    ("resource_attributes", "Map(LowCardinality(String), String)"),
    ("received_at", "Nullable(DateTime64(9))"),
    ("kafka_topic", "LowCardinality(String)"),
    ("kafka_partition", "UInt16"),
    ("kafka_offset", "UInt64"),
    ("ingested_at", "DateTime64(3)"),
]

# The OTel Collector ClickHouse exporter's otel_traces columns (sqltemplates/traces_table.sql).
OTEL_TRACES_COLUMNS = [
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", "Map(LowCardinality(String), String)"),
    ("Duration", "UInt64"),
    ("StatusCode", "LowCardinality(String)"),
    ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"),
    ("Events.Name", "Array(LowCardinality(String))"),
    ("Events.Attributes", "Array(Map(LowCardinality(String), String))"),
    ("Links.TraceId", "Array(String)"),
    ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", "Array(Map(LowCardinality(String), String))"),
]

TABLES = {
    "llm_spans",
    "span_embeddings",
    "span_scores",
    "llm_aggregates",
    "drift_results",
    "alerts",
    "dead_letters",
    "llm_user_aggregates",  # 0004
}


def columns(client: Any, database: str, table: str) -> list[tuple[str, str]]:
    result = client.query(
        "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String} "
        "ORDER BY position",
        parameters={"d": database, "t": table},
    )
    return [tuple(row) for row in result.result_rows]


def table_ttl(client: Any, database: str, table: str) -> str | None:
    """The TTL line of SHOW CREATE TABLE, without the keyword; None when the table has none."""
    statement = str(client.query(f"SHOW CREATE TABLE {database}.{table}").result_rows[0][0])
    match = re.search(r"^TTL (.*)$", statement, re.MULTILINE)
    return match.group(1) if match else None


def records(client: Any, database: str) -> list[tuple[Any, ...]]:
    rows = client.query(
        f"SELECT version, name, checksum, applied_at FROM {database}.{MIGRATIONS_TABLE} "  # noqa: S608
        "ORDER BY version, applied_at"
    ).result_rows
    return [tuple(row) for row in rows]


# -- apply ---------------------------------------------------------------------------------------


def test_apply_creates_every_table_with_the_agreed_columns(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    database = clickhouse_target.database
    messages: list[str] = []
    report = Migrator(clickhouse_client, database).apply(messages.append)

    assert [m.name for m in report.applied] == [m.name for m in load_migrations()]
    assert messages[:2] == [
        "applied 0001_core (7 statements)",
        "applied 0002_otel_traces_view (1 statement)",
    ]
    tables = dict(
        clickhouse_client.query(
            "SELECT name, engine FROM system.tables WHERE database = {d:String}",
            parameters={"d": database},
        ).result_rows
    )
    assert tables == {
        **dict.fromkeys(TABLES - {"dead_letters"}, "ReplacingMergeTree"),
        "dead_letters": "MergeTree",
        "otel_traces": "View",
        MIGRATIONS_TABLE: "ReplacingMergeTree",
    }
    assert columns(clickhouse_client, database, "llm_spans") == LLM_SPANS_COLUMNS
    assert columns(clickhouse_client, database, "otel_traces") == OTEL_TRACES_COLUMNS

    layout = clickhouse_client.query(
        "SELECT partition_key, sorting_key, engine_full FROM system.tables "
        "WHERE database = {d:String} AND name = 'llm_spans'",
        parameters={"d": database},
    ).result_rows[0]
    assert layout[0] == "toDate(timestamp)"
    assert layout[1] == "tenant, service_name, toStartOfHour(timestamp), trace_id, span_id"
    assert layout[2].startswith("ReplacingMergeTree(ingested_at)")
    assert "non_replicated_deduplication_window = 1000" in layout[2]
    indexes = dict(
        clickhouse_client.query(
            "SELECT name, type FROM system.data_skipping_indices "
            "WHERE database = {d:String} AND table = 'llm_spans'",
            parameters={"d": database},
        ).result_rows
    )
    for name in ("trace_id", "span_id", "user_id", "session_id", "attribute_keys"):
        assert indexes[f"idx_{name}"] == "bloom_filter"
    assert indexes["idx_attribute_values"] == "bloom_filter"
    assert indexes["idx_kafka_offset"] == "minmax"


def test_llm_spans_takes_every_column_the_sink_writes(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    from llmtap.sinks.clickhouse.rows import SPAN_COLUMNS

    Migrator(clickhouse_client, clickhouse_target.database).apply()
    names = [
        name for name, _ in columns(clickhouse_client, clickhouse_target.database, "llm_spans")
    ]
    assert set(SPAN_COLUMNS) <= set(names)


def test_a_second_apply_changes_nothing(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    database = clickhouse_target.database
    Migrator(clickhouse_client, database).apply()
    before = records(clickhouse_client, database)
    messages: list[str] = []

    report = Migrator(clickhouse_client, database).apply(messages.append)

    assert not report.changed
    assert messages == []
    assert records(clickhouse_client, database) == before
    assert len(before) == len(load_migrations())
    assert Migrator(clickhouse_client, database).plan() == []
    assert Migrator(clickhouse_client, database).dry_run() == ""
    states = {s.name: s.state for s in Migrator(clickhouse_client, database).status()}
    assert set(states.values()) == {"applied"}


def test_a_concurrent_run_recording_the_same_version_leaves_one_record(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    """Two runs that both found a version pending both record it: deduplication keeps one row."""
    database = clickhouse_target.database
    first = Migrator(clickhouse_client, database)
    first.apply()
    second = Migrator(clickhouse_client, database)
    for migration in second.migrations:
        second._record(migration)  # what the slower run does after its idempotent statements

    raw = clickhouse_client.query(
        f"SELECT version, count() FROM {database}.{MIGRATIONS_TABLE} GROUP BY version "  # noqa: S608
        "ORDER BY version"
    ).result_rows
    assert raw == [(m.version, 1) for m in second.migrations]


def test_dry_run_prints_the_sql_and_changes_nothing(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    database = clickhouse_target.database
    script = Migrator(clickhouse_client, database).dry_run()
    assert script.startswith(f"-- bootstrap\nCREATE DATABASE IF NOT EXISTS {database};\n")
    assert f"CREATE TABLE IF NOT EXISTS {database}.llm_spans\n(" in script
    assert f"ALTER TABLE {database}.llm_spans MODIFY TTL toDateTime(timestamp)" in script
    tables = clickhouse_client.query(
        "SELECT count() FROM system.tables WHERE database = {d:String}", parameters={"d": database}
    ).result_rows
    assert tables == [(0,)]


def test_cluster_sql_parses_on_the_real_engine(clickhouse_client: Any) -> None:
    """The embedded engine has no cluster or macros to run it; its parser still checks it."""
    topology = Topology("llmtap", "prod")
    statements = [
        *bootstrap_statements(topology),
        *(s.sql for m in load_migrations() for s in m.render(topology)),
    ]
    for sql in statements:
        formatted = clickhouse_client.query(
            "SELECT formatQuery({sql:String})", parameters={"sql": sql}
        ).result_rows[0][0]
        assert "ON CLUSTER prod" in formatted.splitlines()[0]


# -- refusals ------------------------------------------------------------------------------------


def test_a_changed_checksum_is_refused(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    database = clickhouse_target.database
    Migrator(clickhouse_client, database).apply()
    time.sleep(0.01)  # a later applied_at, so this record replaces the real one
    clickhouse_client.insert(
        MIGRATIONS_TABLE,
        [[1, "0001_core", "0" * 64]],
        column_names=["version", "name", "checksum"],
        database=database,
    )
    migrator = Migrator(clickhouse_client, database)

    message = r"Migration 0001_core\.sql changed after it was applied"
    with pytest.raises(MigrationIntegrityError, match=message):
        migrator.plan()
    with pytest.raises(MigrationIntegrityError, match=message):
        migrator.apply()
    with pytest.raises(MigrationIntegrityError, match=message):
        migrator.dry_run()
    shipped = len(load_migrations())
    assert [s.state for s in migrator.status()] == ["changed"] + ["applied"] * (shipped - 1)


def copy_migrations(folder: Path) -> Path:
    folder.mkdir()
    for entry in migrations_folder().iterdir():
        if entry.name.endswith(".sql"):
            (folder / entry.name).write_bytes(entry.read_bytes())
    return folder


def test_an_edited_file_is_refused(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget, tmp_path: Path
) -> None:
    database = clickhouse_target.database
    folder = copy_migrations(tmp_path / "migrations")
    Migrator(clickhouse_client, database, migrations=load_migrations(folder)).apply()
    view = folder / "0002_otel_traces_view.sql"
    view.write_text(view.read_text(encoding="utf-8") + "\n-- a harmless edit\n", encoding="utf-8")

    migrator = Migrator(clickhouse_client, database, migrations=load_migrations(folder))
    with pytest.raises(MigrationIntegrityError, match=r"0002_otel_traces_view\.sql changed"):
        migrator.apply()


def test_a_removed_file_is_refused(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget, tmp_path: Path
) -> None:
    database = clickhouse_target.database
    folder = copy_migrations(tmp_path / "migrations")
    Migrator(clickhouse_client, database, migrations=load_migrations(folder)).apply()
    latest = sorted(folder.glob("*.sql"))[-1]  # the newest: removing one mid-way leaves a gap
    latest.unlink()

    migrator = Migrator(clickhouse_client, database, migrations=load_migrations(folder))
    with pytest.raises(MigrationIntegrityError, match=rf"{re.escape(latest.name)} is recorded"):
        migrator.plan()
    shipped = len(load_migrations())
    assert [s.state for s in migrator.status()] == ["applied"] * (shipped - 1) + ["missing"]


def test_a_new_migration_is_applied_alone(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget, tmp_path: Path
) -> None:
    database = clickhouse_target.database
    folder = copy_migrations(tmp_path / "migrations")
    Migrator(clickhouse_client, database, migrations=load_migrations(folder)).apply()
    version = len(load_migrations()) + 1
    (folder / f"{version:04d}_span_tags.sql").write_text(
        "-- both tables on a cluster; the same table, and a no-op, on one node\n"
        "ALTER TABLE {{table llm_spans}} {{on_cluster}}\n"
        "    ADD COLUMN IF NOT EXISTS tags Array(String);\n"
        "ALTER TABLE {{database}}.llm_spans {{on_cluster}}\n"
        "    ADD COLUMN IF NOT EXISTS tags Array(String);\n",
        encoding="utf-8",
    )
    messages: list[str] = []

    Migrator(clickhouse_client, database, migrations=load_migrations(folder)).apply(messages.append)

    assert messages == [f"applied {version:04d}_span_tags (2 statements)"]
    assert columns(clickhouse_client, database, "llm_spans")[-1] == ("tags", "Array(String)")


# -- retention -----------------------------------------------------------------------------------


def test_retention_ttl_follows_the_setting(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    database = clickhouse_target.database
    Migrator(clickhouse_client, database, retention_days=30).apply()
    assert {table: table_ttl(clickhouse_client, database, table) for table in TABLES} == {
        "llm_spans": "toDateTime(timestamp) + toIntervalDay(30)",
        "span_embeddings": "toDateTime(timestamp) + toIntervalDay(30)",
        "span_scores": "toDateTime(timestamp) + toIntervalDay(30)",
        "llm_aggregates": "toDateTime(window_start) + toIntervalDay(30)",
        "drift_results": "toDateTime(window_end) + toIntervalDay(30)",
        "alerts": "toDateTime(fired_at) + toIntervalDay(30)",
        "dead_letters": "toDateTime(received_at) + toIntervalDay(30)",
        "llm_user_aggregates": "toDateTime(window_start) + toIntervalDay(30)",
    }

    messages: list[str] = []
    report = Migrator(clickhouse_client, database, retention_days=7).apply(messages.append)
    assert sorted(change.table for change in report.retention) == sorted(TABLES)
    assert "retention llm_spans: keep 7 days" in messages
    assert table_ttl(clickhouse_client, database, "llm_spans") == (
        "toDateTime(timestamp) + toIntervalDay(7)"
    )
    assert not Migrator(clickhouse_client, database, retention_days=7).apply().changed

    report = Migrator(clickhouse_client, database, retention_days=None).apply()
    assert len(report.retention) == len(TABLES)
    for table in TABLES:
        assert table_ttl(clickhouse_client, database, table) is None
    assert not Migrator(clickhouse_client, database, retention_days=None).apply().changed


# -- the command line ----------------------------------------------------------------------------


def run_migrate(data_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LLMTAP_")}
    environment["LLMTAP_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "llmtap", "migrate", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=180,
        check=False,
    )


def test_cli_migrate_twice_is_up_to_date(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    rendered = run_migrate(data_dir, "--render-cluster", "prod")
    assert rendered.returncode == 0, rendered.stderr
    assert "CREATE TABLE IF NOT EXISTS llmtap.llm_spans_local ON CLUSTER 'prod'" in rendered.stdout
    assert not (data_dir / "clickhouse").exists()  # rendering does not connect

    first = run_migrate(data_dir)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[:2] == [
        "applied 0001_core (7 statements)",
        "applied 0002_otel_traces_view (1 statement)",
    ]
    second = run_migrate(data_dir)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "up to date\n"
    dry_run = run_migrate(data_dir, "--dry-run")
    assert dry_run.stdout == "up to date\n"


def test_cli_refuses_a_bad_cluster_name_clearly(tmp_path: Path) -> None:
    result = run_migrate(tmp_path, "--render-cluster", "prod'; DROP")
    assert result.returncode == 1
    assert result.stderr.startswith("error: Invalid ClickHouse cluster name")
    assert "Traceback" not in result.stderr


# -- Grafana's ClickHouse data source on otel_traces ---------------------------------------------

TRACE_ID = "5b8efff798038103d269b633813fc60c"
ROOT_SPAN_ID = "eee19b7ec3c1b174"
LLM_SPAN_ID = "eee19b7ec3c1b173"
SPAN_COLUMNS_WRITTEN = [
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
    "tenant",
    "scope_name",
    "scope_version",
    "span_type",
    "provider",
    "operation",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "priced",
    "cost_total",
    "user_id",
    "session_id",
    "attributes",
    "resource_attributes",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
]


def insert_trace(client: Any, database: str, start_ns: int) -> None:
    resource = {"service.name": "chat-api", "deployment.environment.name": "prod"}
    root = [
        start_ns,
        start_ns + 900_000_000,
        900.0,
        TRACE_ID,
        ROOT_SPAN_ID,
        "",
        "POST /chat",
        "server",
        "unset",
        "",
        "chat-api",
        "default",
        "opentelemetry.instrumentation.fastapi",
        "0.50b0",
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
        {"http.route": "/chat"},
        resource,
        "llmtap.spans.normalized",
        0,
        41,
    ]
    llm = [
        start_ns + 100_000_000,
        start_ns + 850_000_000,
        750.0,
        TRACE_ID,
        LLM_SPAN_ID,
        ROOT_SPAN_ID,
        "chat gpt-4o-mini",
        "client",
        "error",
        "rate limited",
        "chat-api",
        "default",
        "opentelemetry.instrumentation.openai_v2",
        "2.1b0",
        "llm",
        "openai",
        "chat",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        120,
        35,
        1,
        "0.000039000000",
        "user-7",
        "session-3",
        {"server.address": "api.openai.com"},
        resource,
        "llmtap.spans.normalized",
        0,
        42,
    ]
    # The LLM span arrives twice (a replay): the view must still show it once.
    for rows in ([root, llm], [llm]):
        client.insert("llm_spans", rows, column_names=SPAN_COLUMNS_WRITTEN, database=database)


def test_otel_traces_answers_grafanas_trace_queries(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    database = clickhouse_target.database
    Migrator(clickhouse_client, database).apply()
    start_ns = (time.time_ns() // 1_000_000) * 1_000_000 - 60_000_000_000
    insert_trace(clickhouse_client, database, start_ns)

    # What the plugin's trace view issues for a trace id (OTel mode, no trace_id_ts table).
    trace_query = (
        'SELECT "TraceId" as traceID, "SpanId" as spanID, '  # noqa: S608 (test values)
        '"ParentSpanId" as parentSpanID, '
        '"ServiceName" as serviceName, "SpanName" as operationName, '
        'multiply(toUnixTimestamp64Nano("Timestamp"), 0.000001) as startTime, '
        'multiply("Duration", 0.000001) as duration, '
        "arrayMap(key -> map('key', key, 'value',\"SpanAttributes\"[key]), "
        'mapKeys("SpanAttributes")) as tags, '
        "arrayMap(key -> map('key', key, 'value',\"ResourceAttributes\"[key]), "
        'mapKeys("ResourceAttributes")) as serviceTags, '
        "if(\"StatusCode\" IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) as statusCode, "
        "arrayMap((name, timestamp, attributes) -> tuple(name, "
        "toString(toUnixTimestamp64Milli(timestamp)), arrayMap( key -> map('key', key, 'value', "
        "attributes[key]), mapKeys(attributes)))::Tuple(name String, timestamp String, "
        'fields Array(Map(String, String))), "Events".Name, "Events".Timestamp, '
        '"Events".Attributes) AS logs, '
        "arrayMap((traceID, spanID, attributes) -> tuple(traceID, spanID, arrayMap(key -> "
        "map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(traceID String, "
        'spanID String, tags Array(Map(String, String))), "Links".TraceId, "Links".SpanId, '
        '"Links".Attributes) AS references, '
        '"SpanKind" as kind, "StatusMessage" as statusMessage, '
        '"ScopeName" as instrumentationLibraryName, '
        '"ScopeVersion" as instrumentationLibraryVersion, "TraceState" as traceState '
        f'FROM "{database}"."otel_traces" WHERE traceID = \'{TRACE_ID}\' '
        "ORDER BY startTime ASC LIMIT 1000"
    )
    result = clickhouse_client.query(trace_query)
    spans = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    assert [span["spanID"] for span in spans] == [ROOT_SPAN_ID, LLM_SPAN_ID]
    root, llm = spans
    assert root["parentSpanID"] == ""
    assert llm["parentSpanID"] == ROOT_SPAN_ID
    assert {span["traceID"] for span in spans} == {TRACE_ID}
    assert {span["serviceName"] for span in spans} == {"chat-api"}
    assert llm["operationName"] == "chat gpt-4o-mini"
    assert llm["startTime"] == pytest.approx((start_ns + 100_000_000) / 1e6)
    assert llm["duration"] == pytest.approx(750.0)
    assert root["duration"] == pytest.approx(900.0)
    assert {tag["key"]: tag["value"] for tag in llm["tags"]} == {
        "server.address": "api.openai.com",
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": "120",
        "gen_ai.usage.output_tokens": "35",
        "llmtap.cost.total": "0.000039",
        "llmtap.span_type": "llm",
        "user.id": "user-7",
        "session.id": "session-3",
    }
    # empty promoted fields are left out rather than shown as empty tags
    assert {tag["key"]: tag["value"] for tag in root["tags"]} == {
        "http.route": "/chat",
        "llmtap.span_type": "other",
    }
    assert {tag["key"]: tag["value"] for tag in llm["serviceTags"]} == {
        "service.name": "chat-api",
        "deployment.environment.name": "prod",
    }
    assert (root["statusCode"], llm["statusCode"]) == (0, 2)
    assert (root["kind"], llm["kind"]) == ("Server", "Client")
    assert llm["statusMessage"] == "rate limited"
    assert llm["instrumentationLibraryName"] == "opentelemetry.instrumentation.openai_v2"
    assert llm["instrumentationLibraryVersion"] == "2.1b0"
    assert (llm["logs"], llm["references"], llm["traceState"]) == ([], [], "")

    # The plugin's trace search: root spans of one service in the dashboard's time range.
    start_seconds = start_ns // 1_000_000_000
    search_query = (
        'SELECT "TraceId" as traceID, "ServiceName" as serviceName, '  # noqa: S608 (test values)
        '"SpanName" as operationName, '
        '"Timestamp" as startTime, multiply("Duration", 0.000001) as duration '
        f'FROM "{database}"."otel_traces" '
        f"WHERE ( Timestamp >= toDateTime({start_seconds - 60}) "
        f"AND Timestamp <= toDateTime({start_seconds + 60}) ) "
        "AND ( ParentSpanId = '' ) AND ( Duration > 0 ) AND ( ServiceName = 'chat-api' ) "
        "ORDER BY Timestamp DESC, Duration DESC LIMIT 1000"
    )
    found = clickhouse_client.query(search_query).result_rows
    assert [(row[0], row[1], row[2], row[4]) for row in found] == [
        (TRACE_ID, "chat-api", "POST /chat", pytest.approx(900.0))
    ]
    elsewhere = search_query.replace("toDateTime(", "toDateTime(86400 + ")
    assert clickhouse_client.query(elsewhere).result_rows == []


def test_the_otel_traces_view_counts_a_replayed_span_once(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    database = clickhouse_target.database
    Migrator(clickhouse_client, database).apply()
    # No background merge may collapse the copies before the count below.
    clickhouse_client.command(f"SYSTEM STOP MERGES {database}.llm_spans")
    insert_trace(clickhouse_client, database, time.time_ns() - 60_000_000_000)
    stored = clickhouse_client.query(f"SELECT count() FROM {database}.llm_spans").result_rows  # noqa: S608
    shown = clickhouse_client.query(f"SELECT count() FROM {database}.otel_traces").result_rows  # noqa: S608
    assert stored == [(3,)]
    assert shown == [(2,)]


def test_risk_migration_adds_the_score_columns_the_risk_stage_writes(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    from llmtap.schemas.scores import SpanScore

    database = clickhouse_target.database
    Migrator(clickhouse_client, database).apply()
    stored = {name for name, _ in columns(clickhouse_client, database, "span_scores")}
    written = set(SpanScore.__struct_fields__) - {"schema_version"}
    assert written <= stored, written - stored
