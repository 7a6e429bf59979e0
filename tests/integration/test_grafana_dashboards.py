"""The provisioned Grafana dashboards: well-formed, on the provisioned data source, and every
query (panels, variables, annotations) runs on a migrated database and finds the seeded data.

Grafana and its ClickHouse plugin expand macros before a query reaches ClickHouse; this test
does the same expansion with fixed values (the plugin's forms: ``$__timeFilter(c)`` is
``c >= toDateTime(from) AND c <= toDateTime(to)``, ``$__conditionalAll(condition, $v)`` is
``1=1`` when "All" is selected), once with every variable on "All" and once with one value each,
then runs the query on the embedded engine. Parsing alone would not catch a wrong column.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.sinks.clickhouse.migrations import Migrator
from tests.conftest import REPO_ROOT
from tests.integration.web.conftest import Seed, insert_dashboard_data

pytestmark = pytest.mark.integration

DASHBOARDS = REPO_ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCES = REPO_ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "clickhouse.yaml"
REQUIRED = {"cost", "quality-risk", "drift", "alerts", "traces"}
KNOWN_MACROS = {"timeFilter", "interval_s", "conditionalAll"}
INTERVAL_SECONDS = 60
ALL = "$__all"


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def provisioned_datasource_uid() -> str:
    document = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    (source,) = [
        item for item in document["datasources"] if item["type"] == "grafana-clickhouse-datasource"
    ]
    return str(source["uid"])


def queries_of(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, rawSql) of every panel target, query variable and annotation."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["rawSql"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", variable["query"]["rawSql"]))
    for annotation in dashboard["annotations"]["list"]:
        if "target" in annotation:
            found.append((f"annotation {annotation['name']!r}", annotation["target"]["rawSql"]))
    return found


def expand(sql: str, variables: dict[str, str], start_s: int, end_s: int) -> str:
    """Grafana's and the plugin's macro and variable expansion, with fixed values."""
    sql = _expand_conditional_all(sql, variables)

    def variable_value(match: re.Match[str]) -> str:
        name, form = match.group(1) or match.group(3), match.group(2)
        value = variables[name]
        if form == "singlequote":
            return "'" + value.replace("'", "\\'") + "'"
        assert form is None, f"unsupported variable format {form!r}"
        return value

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)", variable_value, sql)
    sql = re.sub(
        r"\$__timeFilter\(([^()]+)\)",
        lambda m: f"{m[1]} >= toDateTime({start_s}) AND {m[1]} <= toDateTime({end_s})",
        sql,
    )
    sql = sql.replace("$__interval_s", str(INTERVAL_SECONDS))
    assert "$" not in sql, f"unexpanded macro or variable left in: {sql}"
    return sql


def _expand_conditional_all(sql: str, variables: dict[str, str]) -> str:
    marker = "$__conditionalAll("
    while marker in sql:
        start = sql.index(marker)
        depth, position = 1, start + len(marker)
        comma = -1
        while depth:
            character = sql[position]
            if character == "(":
                depth += 1
            elif character == ")":
                depth -= 1
            elif character == "," and depth == 1:
                comma = position
            position += 1
        condition = sql[start + len(marker) : comma].strip()
        name = sql[comma + 1 : position - 1].strip().lstrip("$").strip("{}")
        replacement = "1=1" if variables[name] == ALL else condition
        sql = sql[:start] + replacement + sql[position:]
    return sql


def test_the_five_dashboards_are_provisioned_on_the_clickhouse_data_source() -> None:
    boards = dashboards()
    assert set(boards) >= REQUIRED
    uid = provisioned_datasource_uid()
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids), "dashboard uids must be unique"
    for name, board in boards.items():
        assert board["title"].startswith("llmtap"), name
        panel_ids = [panel["id"] for panel in board["panels"]]
        assert len(set(panel_ids)) == len(panel_ids), f"{name}: duplicate panel ids"
        defined = {variable["name"] for variable in board["templating"]["list"]}
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid, f"{name}: {panel['title']}"
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": uid}
                assert target["editorType"] == "sql"
        for where, sql in queries_of(board):
            macros = set(re.findall(r"\$__(\w+)", sql))
            assert macros <= KNOWN_MACROS | {"all"}, f"{name} {where}: unknown macro {macros}"
            used = {a or b for a, b in re.findall(r"\$\{(\w+)|\$(?!__)(\w+)", sql)}
            assert used <= defined, f"{name} {where}: undefined variables {used - defined}"
    panel_types = {panel["type"] for board in boards.values() for panel in board["panels"]}
    assert {"timeseries", "table", "stat", "traces"} <= panel_types


@pytest.fixture
def seeded_database(clickhouse_client: Any, clickhouse_target: ClickHouseTarget) -> Seed:
    Migrator(clickhouse_client, clickhouse_target.database).apply()
    return insert_dashboard_data(
        clickhouse_client, clickhouse_target.database, int(time.time() * 1000)
    )


@pytest.mark.parametrize("selection", ["all", "one value each"])
def test_every_query_runs_on_the_migrated_schema_and_finds_data(
    clickhouse_client: Any, seeded_database: Seed, selection: str
) -> None:
    end_s = seeded_database.now_ms // 1000 + 60
    start_s = end_s - 6 * 3600
    trace_id = seeded_database.riskiest_span[0]
    if selection == "all":
        variables = {"service": ALL, "tenant": ALL, "model": ALL, "trace_id": trace_id}
    else:
        variables = {
            "service": "chat-api",
            "tenant": "acme",
            "model": "gpt-4o-mini",
            "trace_id": trace_id,
        }
    failures = []
    empty = []
    for name, board in dashboards().items():
        for where, raw in queries_of(board):
            sql = expand(raw, variables, start_s, end_s)
            try:
                result = clickhouse_client.query(sql, settings={"readonly": 2})
            except Exception as error:
                failures.append(f"{name} {where}: {str(error).splitlines()[0]}\n  {sql}")
                continue
            if not result.result_rows:
                empty.append(f"{name} {where}")
    assert failures == [], "\n".join(failures)
    if selection == "all":
        assert empty == [], f"queries that found none of the seeded data: {empty}"


def test_the_trace_panel_returns_the_trace_for_grafanas_trace_view(
    clickhouse_client: Any, seeded_database: Seed
) -> None:
    board = dashboards()["traces"]
    (panel,) = [panel for panel in board["panels"] if panel["type"] == "traces"]
    (target,) = panel["targets"]
    assert (target["format"], target["queryType"]) == (3, "traces")
    trace_id = seeded_database.trace_ids[42]
    sql = expand(target["rawSql"], {"trace_id": trace_id}, 0, 0)
    result = clickhouse_client.query(sql)
    spans = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    assert len(spans) == 2
    assert {span["traceID"] for span in spans} == {trace_id}
    root, llm = spans
    assert llm["parentSpanID"] == root["spanID"]
    assert {"traceID", "spanID", "operationName", "startTime", "duration", "serviceName"} <= set(
        result.column_names
    )


def test_expansion_matches_the_plugin_forms() -> None:
    sql = (
        "SELECT 1 WHERE $__timeFilter(t) AND "
        "$__conditionalAll(s IN (${service:singlequote}), $service) AND x = '${trace_id}' "
        "GROUP BY toStartOfInterval(t, INTERVAL $__interval_s second)"
    )
    expanded = expand(sql, {"service": "a'b", "trace_id": "ff"}, 10, 20)
    assert expanded == (
        "SELECT 1 WHERE t >= toDateTime(10) AND t <= toDateTime(20) AND "
        "s IN ('a\\'b') AND x = 'ff' GROUP BY toStartOfInterval(t, INTERVAL 60 second)"
    )
    assert "1=1" in expand(sql, {"service": ALL, "trace_id": ""}, 10, 20)


def test_the_dashboards_folder_is_what_grafana_loads() -> None:
    provider = yaml.safe_load(
        (REPO_ROOT / "deploy/grafana/provisioning/dashboards/llmtap.yaml").read_text("utf-8")
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert Path(DASHBOARDS / "README.md").is_file()
