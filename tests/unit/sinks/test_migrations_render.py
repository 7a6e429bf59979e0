"""ClickHouse migration templates: naming, parsing, checksums, single-node and cluster rendering."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from pathlib import Path

import pytest

from llmtap.sinks.clickhouse.migrations import (
    MigrationError,
    MigrationTemplateError,
    Topology,
    bootstrap_statements,
    check_sequence,
    checksum,
    load_migrations,
    migrations_folder,
    parse_migration,
    render_schema,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
MIGRATIONS_DIR = REPO_ROOT / "schemas" / "clickhouse"
CORE_TABLES = [
    "llm_spans",
    "span_embeddings",
    "span_scores",
    "llm_aggregates",
    "drift_results",
    "alerts",
    "dead_letters",
]
# created by later migrations (0004: per-user aggregates), after the otel_traces view of 0002
LATER_TABLES = ["llm_user_aggregates"]
SHARDED_TABLES = CORE_TABLES + LATER_TABLES
SINGLE = Topology("llmtap")
CLUSTER = Topology("llmtap", "prod")
DDL = re.compile(r"^(CREATE|ALTER|DROP|RENAME|TRUNCATE|EXCHANGE)\b")


def rendered(topology: Topology) -> list[str]:
    return [statement.sql for m in load_migrations() for statement in m.render(topology)]


def created(topology: Topology) -> list[str]:
    """The CREATE statements (later migrations also ALTER existing tables)."""
    return [sql for sql in rendered(topology) if sql.startswith("CREATE")]


def created_name(sql: str) -> str:
    match = re.match(r"CREATE (?:TABLE|VIEW) IF NOT EXISTS (\S+)", sql)
    assert match is not None, sql
    return match.group(1)


# -- the shipped files ---------------------------------------------------------------------------


def test_shipped_migrations_are_numbered_from_one_without_gaps() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "0001_core"
    for migration in migrations:
        assert (MIGRATIONS_DIR / migration.filename).is_file()


def test_the_package_finds_the_files_in_the_source_tree() -> None:
    assert Path(str(migrations_folder())).resolve() == MIGRATIONS_DIR.resolve()


def test_checksum_is_the_sha256_of_the_template_file() -> None:
    for migration in load_migrations():
        data = (MIGRATIONS_DIR / migration.filename).read_bytes()
        assert migration.checksum == hashlib.sha256(data).hexdigest()


def test_checksum_changes_with_any_edit_even_a_comment() -> None:
    text = "CREATE VIEW IF NOT EXISTS {{database}}.v {{on_cluster}} AS SELECT 1;\n"
    edited = "-- a comment\n" + text
    assert checksum(text) == hashlib.sha256(text.encode()).hexdigest()
    assert checksum(edited) != checksum(text)
    # comments are not rendered, so the SQL is the same: only the checksum tells them apart
    first, second = parse_migration("0001_v.sql", text), parse_migration("0001_v.sql", edited)
    assert [s.sql for s in first.render(SINGLE)] == [s.sql for s in second.render(SINGLE)]
    assert first.checksum != second.checksum


def test_every_time_series_table_is_sharded_and_under_retention() -> None:
    core = load_migrations()[0]
    assert [d.table for d in core.distributed] == CORE_TABLES
    assert {d.table: d.column for d in core.retention} == {
        "llm_spans": "timestamp",
        "span_embeddings": "timestamp",
        "span_scores": "timestamp",
        "llm_aggregates": "window_start",
        "drift_results": "window_end",
        "alerts": "fired_at",
        "dead_letters": "received_at",
    }
    sharding = {d.table: d.sharding_key for d in core.distributed}
    assert sharding["llm_spans"] == "cityHash64(trace_id)"  # a trace stays on one shard


def test_pyproject_ships_the_migration_files_as_package_data() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["llmtap.schemas"]
    for path in MIGRATIONS_DIR.iterdir():
        relative = f"clickhouse/{path.name}"
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


# -- single node ---------------------------------------------------------------------------------


def test_single_node_has_plain_engines_and_no_cluster_clauses() -> None:
    statements = rendered(SINGLE)
    text = "\n".join(statements)
    for absent in ("ON CLUSTER", "Replicated", "Distributed", "_local", "{{", "}}", "{shard}"):
        assert absent not in text
    assert [created_name(sql) for sql in created(SINGLE)] == [
        *(f"llmtap.{table}" for table in CORE_TABLES),
        "llmtap.otel_traces",
        *(f"llmtap.{table}" for table in LATER_TABLES),
    ]
    assert "ENGINE = ReplacingMergeTree(ingested_at)\n" in statements[0]
    assert "ENGINE = MergeTree\n" in statements[SHARDED_TABLES.index("dead_letters")]


def test_single_node_spans_table_has_the_agreed_layout() -> None:
    spans = rendered(SINGLE)[0]
    assert spans.startswith("CREATE TABLE IF NOT EXISTS llmtap.llm_spans\n(")
    assert "PARTITION BY toDate(timestamp)\n" in spans
    assert "ORDER BY (tenant, service_name, toStartOfHour(timestamp), trace_id, span_id)\n" in spans
    assert "non_replicated_deduplication_window = 1000" in spans
    assert "index_granularity = 8192" in spans
    for index in (
        "INDEX idx_trace_id trace_id TYPE bloom_filter",
        "INDEX idx_span_id span_id TYPE bloom_filter",
        "INDEX idx_user_id user_id TYPE bloom_filter",
        "INDEX idx_session_id session_id TYPE bloom_filter",
        "INDEX idx_attribute_keys mapKeys(attributes) TYPE bloom_filter",
        "INDEX idx_attribute_values mapValues(attributes) TYPE bloom_filter",
        "INDEX idx_kafka_offset kafka_offset TYPE minmax",
    ):
        assert index in spans
    assert "--" not in spans  # full-line comments document the template and are not sent


def test_an_empty_on_cluster_leaves_no_double_space() -> None:
    for sql in rendered(SINGLE):
        for line in sql.splitlines():
            assert "  " not in line.strip(), line


# -- cluster -------------------------------------------------------------------------------------


def test_cluster_ddl_all_runs_on_cluster() -> None:
    statements = [*bootstrap_statements(CLUSTER), *rendered(CLUSTER)]
    for sql in statements:
        assert DDL.match(sql)
        first_line = sql.splitlines()[0]
        assert "ON CLUSTER 'prod'" in first_line, first_line


def test_cluster_local_tables_are_replicated_with_shard_and_replica_macros() -> None:
    statements = created(CLUSTER)
    locals_ = [sql for sql in statements if created_name(sql).endswith("_local")]
    assert [created_name(sql) for sql in locals_] == [
        f"llmtap.{table}_local" for table in SHARDED_TABLES
    ]
    spans = locals_[0]
    assert (
        "ENGINE = ReplicatedReplacingMergeTree("
        "'/clickhouse/tables/{shard}/llmtap/llm_spans_local', '{replica}', ingested_at)\n"
    ) in spans
    dead_letters = locals_[SHARDED_TABLES.index("dead_letters")]
    assert (
        "ENGINE = ReplicatedMergeTree("
        "'/clickhouse/tables/{shard}/llmtap/dead_letters_local', '{replica}')\n"
    ) in dead_letters
    aggregates = locals_[SHARDED_TABLES.index("llm_aggregates")]
    assert "'/clickhouse/tables/{shard}/llmtap/llm_aggregates_local', '{replica}', version)" in (
        aggregates
    )


def test_cluster_distributed_table_follows_its_local_table() -> None:
    statements = created(CLUSTER)
    names = [created_name(sql) for sql in statements]
    for table in SHARDED_TABLES:
        local_at = names.index(f"llmtap.{table}_local")
        distributed = statements[local_at + 1]
        assert names[local_at + 1] == f"llmtap.{table}"
        assert distributed.startswith(
            f"CREATE TABLE IF NOT EXISTS llmtap.{table} ON CLUSTER 'prod' AS llmtap.{table}_local\n"
        )
        assert f"ENGINE = Distributed('prod', 'llmtap', '{table}_local', " in distributed
    spans_distributed = statements[names.index("llmtap.llm_spans")]
    assert spans_distributed.endswith(", cityHash64(trace_id))")


def test_cluster_views_read_the_distributed_tables() -> None:
    statements = created(CLUSTER)
    names = [created_name(sql) for sql in statements]
    view = statements[names.index("llmtap.otel_traces")]
    assert view.startswith("CREATE VIEW IF NOT EXISTS llmtap.otel_traces ON CLUSTER 'prod' AS\n")
    assert view.endswith("FROM llmtap.llm_spans FINAL")
    assert "_local" not in view
    assert names.index("llmtap.llm_spans") < names.index("llmtap.otel_traces")


def test_cluster_migrations_table_is_replicated_to_every_node() -> None:
    database, table = bootstrap_statements(CLUSTER)
    assert database == "CREATE DATABASE IF NOT EXISTS llmtap ON CLUSTER 'prod'"
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/llmtap_cluster_wide/llmtap/"
        "llmtap_schema_migrations', '{shard}-{replica}', applied_at)"
    ) in table
    single_database, single_table = bootstrap_statements(SINGLE)
    assert single_database == "CREATE DATABASE IF NOT EXISTS llmtap"
    assert "ENGINE = ReplacingMergeTree(applied_at)\nORDER BY version" in single_table


def test_render_schema_sets_retention_on_the_tables_that_hold_rows() -> None:
    script = render_schema(CLUSTER, retention_days=14)
    assert (
        "ALTER TABLE llmtap.llm_spans_local ON CLUSTER 'prod' "
        "MODIFY TTL toDateTime(timestamp) + toIntervalDay(14);\n"
    ) in script
    assert script.count("MODIFY TTL") == len(SHARDED_TABLES)
    assert "MODIFY TTL" not in render_schema(CLUSTER, retention_days=None)
    single = render_schema(SINGLE, retention_days=30)
    assert (
        "ALTER TABLE llmtap.alerts MODIFY TTL toDateTime(fired_at) + toIntervalDay(30);\n" in single
    )


def test_the_database_name_is_rendered_everywhere() -> None:
    text = "\n".join(rendered(Topology("observability", "prod")))
    assert "llmtap." not in text.replace("llmtap.cost.total", "").replace("llmtap.span_type", "")
    assert "'/clickhouse/tables/{shard}/observability/llm_spans_local'" in text
    assert "Distributed('prod', 'observability', 'llm_spans_local'" in text


@pytest.mark.parametrize(
    ("database", "cluster"),
    [
        ("llm-tap", None),
        ("x; DROP TABLE y", None),
        ("", None),
        ("llmtap\n", None),
        ("ok", "pro'd"),
        ("ok", "a b"),
        ("ok", "prod\n"),
    ],
)
def test_names_from_settings_are_validated(database: str, cluster: str | None) -> None:
    with pytest.raises(MigrationError, match="Invalid ClickHouse"):
        Topology(database, cluster)


# -- the template language -----------------------------------------------------------------------

VIEW = "CREATE VIEW IF NOT EXISTS {{database}}.v {{on_cluster}} AS SELECT 1;\n"
TABLE = """\
-- distributed: t sharding=rand()
CREATE TABLE IF NOT EXISTS {{table t}} {{on_cluster}} (a String)
ENGINE = {{engine MergeTree}}
ORDER BY a;
"""


@pytest.mark.parametrize(
    "placeholder",
    ["{{nope}}", "{{table}}", "{{table bad-name}}", "{{engine Log}}", "{{database x}}", "{{ }}"],
)
def test_unknown_placeholders_are_errors_with_file_and_line(placeholder: str) -> None:
    template = (
        "-- header\n\nCREATE VIEW IF NOT EXISTS {{database}}.v {{on_cluster}} AS\n"
        f"SELECT {placeholder};\n"
    )
    with pytest.raises(MigrationTemplateError, match=r"0001_v\.sql line 3: unknown placeholder"):
        parse_migration("0001_v.sql", template)


def test_unbalanced_braces_are_errors() -> None:
    with pytest.raises(MigrationTemplateError, match="unbalanced"):
        parse_migration("0001_v.sql", "CREATE VIEW {{database}}.v {{on_cluster}} AS SELECT '{{';\n")


def test_placeholders_in_full_line_comments_are_ignored() -> None:
    migration = parse_migration("0001_v.sql", "-- see {{anything}} in README.md\n" + VIEW)
    assert [s.sql for s in migration.render(SINGLE)] == [
        "CREATE VIEW IF NOT EXISTS llmtap.v AS SELECT 1"
    ]


def test_statements_split_at_semicolons_ending_a_line() -> None:
    template = (
        "-- two statements\n"
        "CREATE VIEW IF NOT EXISTS {{database}}.a {{on_cluster}} AS\n"
        "SELECT 'x;y' AS text;\n"
        "\n"
        "INSERT INTO {{database}}.b SELECT 1;\n"
        "-- trailing comment\n"
    )
    migration = parse_migration("0002_two.sql", template)
    assert [(s.sql, s.line) for s in migration.render(SINGLE)] == [
        ("CREATE VIEW IF NOT EXISTS llmtap.a AS\nSELECT 'x;y' AS text", 2),
        ("INSERT INTO llmtap.b SELECT 1", 5),
    ]


def test_an_unterminated_statement_is_an_error() -> None:
    with pytest.raises(MigrationTemplateError, match=r"line 2: .*does not end with ';'"):
        parse_migration("0001_v.sql", VIEW + "INSERT INTO {{database}}.b SELECT 1\n")


def test_a_file_without_statements_is_an_error() -> None:
    with pytest.raises(MigrationTemplateError, match="no statements"):
        parse_migration("0001_v.sql", "-- nothing here\n")


def test_ddl_without_on_cluster_is_an_error() -> None:
    with pytest.raises(MigrationTemplateError, match=r"line 1: DDL must carry \{\{on_cluster\}\}"):
        parse_migration("0001_v.sql", "ALTER TABLE {{table t}} ADD COLUMN IF NOT EXISTS b UInt8;\n")


def test_create_table_must_use_table_and_engine_placeholders() -> None:
    with pytest.raises(MigrationTemplateError, match=r"\{\{table NAME\}\}"):
        parse_migration(
            "0001_t.sql",
            "CREATE TABLE {{database}}.t {{on_cluster}} (a UInt8) ENGINE = MergeTree ORDER BY a;\n",
        )
    with pytest.raises(MigrationTemplateError, match=r"\{\{engine \.\.\.\}\}"):
        parse_migration(
            "0001_t.sql",
            "-- distributed: t sharding=rand()\n"
            "CREATE TABLE {{table t}} {{on_cluster}} (a String) ENGINE = MergeTree ORDER BY a;\n",
        )
    with pytest.raises(MigrationTemplateError, match="belongs in a CREATE TABLE"):
        parse_migration("0001_v.sql", "SELECT '{{engine MergeTree}}';\n")


def test_directives_are_checked() -> None:
    with pytest.raises(MigrationTemplateError, match=r"line 1: unknown directive '-- retain:'"):
        parse_migration("0001_t.sql", "-- retain: t a\n" + TABLE)
    with pytest.raises(MigrationTemplateError, match="needs a '-- distributed: t"):
        parse_migration("0001_t.sql", TABLE.split("\n", 1)[1])
    with pytest.raises(MigrationTemplateError, match="does not create"):
        parse_migration("0001_t.sql", "-- distributed: other sharding=rand()\n" + TABLE)
    with pytest.raises(MigrationTemplateError, match="sharding=EXPRESSION"):
        parse_migration("0001_t.sql", TABLE.replace("sharding=rand()", "rand()"))
    with pytest.raises(MigrationTemplateError, match="TABLE TIME_COLUMN"):
        parse_migration("0001_t.sql", "-- retention: t\n" + TABLE)


def test_engine_rendering_for_both_topologies() -> None:
    migration = parse_migration("0001_t.sql", TABLE.replace("MergeTree", "SummingMergeTree(a)"))
    single, *_ = migration.render(Topology("db"))
    local, distributed = migration.render(Topology("db", "c1"))
    assert single.sql == (
        "CREATE TABLE IF NOT EXISTS db.t (a String)\nENGINE = SummingMergeTree(a)\nORDER BY a"
    )
    assert local.sql == (
        "CREATE TABLE IF NOT EXISTS db.t_local ON CLUSTER 'c1' (a String)\n"
        "ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db/t_local', "
        "'{replica}', a)\nORDER BY a"
    )
    assert distributed.sql == (
        "CREATE TABLE IF NOT EXISTS db.t ON CLUSTER 'c1' AS db.t_local\n"
        "ENGINE = Distributed('c1', 'db', 't_local', rand())"
    )
    assert local.line == distributed.line == 2


def test_materialized_views_use_local_tables_on_a_cluster() -> None:
    view_template = (
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {{database}}.t_mv {{on_cluster}} "
        "TO {{table t}} AS SELECT a FROM {{table t}};\n"
    )
    template = TABLE + view_template
    *_, view = parse_migration("0001_t.sql", template).render(Topology("db", "c1"))
    assert view.sql == (
        "CREATE MATERIALIZED VIEW IF NOT EXISTS db.t_mv ON CLUSTER 'c1' "
        "TO db.t_local AS SELECT a FROM db.t_local"
    )


# -- file naming and ordering --------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    ["1_core.sql", "0001-core.sql", "0001_Core.sql", "0001_.sql", "0001core.sql", "00001_x.sql"],
)
def test_file_names_must_be_four_digits_and_a_lowercase_description(filename: str) -> None:
    with pytest.raises(MigrationTemplateError, match=r"NNNN_description\.sql"):
        parse_migration(filename, VIEW)


def test_version_zero_is_refused() -> None:
    with pytest.raises(MigrationTemplateError, match="start at 0001"):
        parse_migration("0000_x.sql", VIEW)


def _folder(tmp_path: Path, *names: str) -> Path:
    for name in names:
        (tmp_path / name).write_text(VIEW.replace(".v ", f".{name[5:-4]} "), encoding="utf-8")
    return tmp_path


def test_a_folder_loads_in_version_order_and_skips_other_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0002_second.sql", "0001_first.sql", "0003_third.sql")
    (folder / "README.md").write_text("# notes\n", encoding="utf-8")
    assert [m.name for m in load_migrations(folder)] == ["0001_first", "0002_second", "0003_third"]


def test_a_gap_in_versions_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0001_first.sql", "0003_third.sql")
    with pytest.raises(MigrationTemplateError, match=r"0002 is missing before 0003_third\.sql"):
        load_migrations(folder)


def test_two_files_with_one_version_are_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0001_first.sql", "0002_mine.sql", "0002_theirs.sql")
    with pytest.raises(MigrationTemplateError, match="same version 0002"):
        load_migrations(folder)


def test_a_misnamed_sql_file_in_the_folder_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0001_first.sql")
    (folder / "add_index.sql").write_text(VIEW, encoding="utf-8")
    with pytest.raises(MigrationTemplateError, match=r"add_index\.sql: migration files are named"):
        load_migrations(folder)


def test_retention_must_name_a_created_table() -> None:
    first = parse_migration("0001_t.sql", TABLE)
    second = parse_migration("0002_r.sql", "-- retention: missing ts\n" + VIEW)
    with pytest.raises(MigrationTemplateError, match="names a table that no migration creates"):
        check_sequence([first, second])
    check_sequence([first, parse_migration("0002_r.sql", "-- retention: t ts\n" + VIEW)])
