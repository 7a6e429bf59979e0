"""``llmtap query``: cost, latency, risk, drift and alerts from ClickHouse, as tables, JSON or CSV.

Every query is parameterised (``{name:Type}``); the only text put into SQL is a column name from
a fixed allow-list (``--by``), so no option value reaches the SQL text. ``--tenant`` limits every
statement of a command to one tenant (the same ``{tenant:String}`` filter on each table read).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import click

from llmtap.cli_alerts import parse_time
from llmtap.errors import LlmtapError

# --by name -> column, per table. Names are the user's words; columns never come from input.
_AGGREGATE_GROUPS = {
    "model": "request_model",
    "service": "service_name",
    "tenant": "tenant",
    "prompt_version": "prompt_template_version",
    "provider": "provider",
    "environment": "environment",
    "operation": "operation",
}
_USER_AGGREGATE_GROUPS = {"tenant": "tenant", "user": "user_id"}
_SPAN_GROUPS = {**_AGGREGATE_GROUPS, "user": "user_id"}
_SCORE_GROUPS = {
    "model": "request_model",
    "service": "service_name",
    "tenant": "tenant",
    "prompt_version": "prompt_template_version",
}
_DRIFT_GROUPS = {
    **{key: _AGGREGATE_GROUPS[key] for key in ("model", "service", "tenant", "prompt_version")},
    "provider": "provider",
    "environment": "environment",
    "feature": "feature",
    "detector": "detector",
}
_ALERT_GROUPS = {
    "tenant": "tenant",
    "rule": "rule_id",
    "severity": "severity",
    "state": "state",
}
HIGH_RISK = 0.7
# Every statement carries it; an empty --tenant matches every tenant.
_TENANT_FILTER = "({tenant:String} = '' OR tenant = {tenant:String})"


@dataclass(frozen=True)
class Column:
    name: str
    unit: str = ""
    kind: str = "text"  # text, int, cost, ms, ratio, score, time

    @property
    def heading(self) -> str:
        """For tables: the name and its unit."""
        return f"{self.name} ({self.unit})" if self.unit else self.name

    @property
    def key(self) -> str:
        """For JSON and CSV: snake_case, with the unit (input_tokens, p95_ms)."""
        name = self.name.replace(">", " over ")
        if self.unit:
            name = f"{name} {self.unit}"
        return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Result:
    columns: list[Column]
    rows: list[Sequence[Any]]
    title: str = ""


# -- shared options -------------------------------------------------------------------------


def _query_options(
    default_by: str | None, groups: Sequence[str]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option(
                "--since",
                default="1h",
                show_default=True,
                help="Start: a duration ago (90m, 24h, 7d) or an ISO time (UTC if no zone).",
            ),
            click.option(
                "--until", default="now", show_default=True, help="End: now, a duration or ISO."
            ),
            click.option(
                "--by",
                "by",
                multiple=True,
                metavar="|".join(groups),
                help="Group by (repeat or comma-separate)"
                + (f"; default {default_by}." if default_by else "; default: list rows."),
            ),
            click.option(
                "--format",
                "output_format",
                type=click.Choice(["table", "json", "csv"]),
                default="table",
                show_default=True,
            ),
            click.option(
                "--limit",
                type=click.IntRange(min=1),
                default=20,
                show_default=True,
                help="At most this many rows.",
            ),
            click.option(
                "--tenant",
                default="",
                metavar="TENANT",
                help="Only this tenant's rows (every table the command reads); default: all.",
            ),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


@dataclass(frozen=True)
class _Range:
    since_ms: int
    until_ms: int

    @property
    def parameters(self) -> dict[str, int]:
        return {"since": self.since_ms, "until": self.until_ms}


def _time_range(since: str, until: str) -> _Range:
    now = time.time()
    since_ms, until_ms = _moment(since, now, "--since"), _moment(until, now, "--until")
    if since_ms >= until_ms:
        raise click.BadParameter(f"--since {since!r} is not before --until {until!r}")
    return _Range(since_ms, until_ms)


def _moment(text: str, now: float, option: str) -> int:
    try:
        milliseconds = parse_time(text, now)
    except (ValueError, OverflowError):  # a duration with more digits than a number may have
        raise click.BadParameter("is not a time llmtap can use", param_hint=option) from None
    if not 0 <= milliseconds < 2**53:  # the queries take Int64 milliseconds since 1970
        raise click.BadParameter("is before 1970 or too far ahead", param_hint=option)
    return milliseconds


def _groups(by: Sequence[str], allowed: dict[str, str], default: str | None) -> list[str]:
    names = [name.strip() for value in by for name in value.split(",") if name.strip()]
    if not names and default:
        names = [default]
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise click.BadParameter(
            f"cannot group by {', '.join(unknown)} here; choose from {', '.join(allowed)}",
            param_hint="--by",
        )
    return list(dict.fromkeys(names))


def _run(obj: Any, table: str, sql: str, parameters: dict[str, Any]) -> list[Sequence[Any]]:
    """Run one query; a missing table or an unreachable store becomes one clear message."""
    from llmtap import clickhouse

    settings = obj.settings
    where = settings.clickhouse_target().describe()
    client = clickhouse.open_client(settings, create_database=False)
    try:
        try:
            exists = client.query(
                "SELECT count() FROM system.tables "
                "WHERE database = currentDatabase() AND name = {table:String}",
                parameters={"table": table},
            ).result_rows[0][0]
        except Exception as error:
            if "UNKNOWN_DATABASE" in str(error) or "does not exist" in str(error):
                exists = 0
            else:
                raise _unavailable(where, error) from None
        if not exists:
            raise LlmtapError(
                f"{where} has no table {table}: run `llmtap migrate` (or `llmtap up`) first."
            )
        try:
            return list(client.query(sql, parameters=parameters).result_rows)
        except Exception as error:
            raise _unavailable(where, error) from None
    finally:
        client.close()


def _unavailable(where: str, error: Exception) -> LlmtapError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return LlmtapError(f"{where}: query failed: {first_line}")


def _group_columns(names: list[str], allowed: dict[str, str]) -> tuple[str, list[Column]]:
    select = ", ".join(f"{allowed[name]} AS {name}" for name in names)
    return select, [Column(name) for name in names]


# -- the group --------------------------------------------------------------------------------


@click.group()
def query() -> None:
    """Query what llmtap stored: cost, latency, risk, drift and alerts.

    Reads ClickHouse through the configured store. With the embedded store (the default),
    stop `llmtap up` first or point LLMTAP_CLICKHOUSE__DSN at a ClickHouse server: one process
    at a time can open an embedded store.
    """


@query.command()
@_query_options("model", [*_AGGREGATE_GROUPS, "user"])
@click.pass_obj
def cost(
    obj: Any,
    since: str,
    until: str,
    by: tuple[str, ...],
    output_format: str,
    limit: int,
    tenant: str,
) -> None:
    """Cost, tokens, requests, errors and unpriced calls per group (1-minute aggregates).

    `--by user` (alone or with tenant) reads the per-user aggregates.
    """
    window = _time_range(since, until)
    names = [n.strip() for value in by for n in value.split(",") if n.strip()]
    if "user" in names:
        names = _groups(names, _USER_AGGREGATE_GROUPS, None)
        table = "llm_user_aggregates"
        usage_sums = "sum(input_tokens), sum(output_tokens), NULL, NULL"  # not kept per user
    else:
        names = _groups(names, _AGGREGATE_GROUPS, "model")
        table = "llm_aggregates"
        usage_sums = (
            "sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(reasoning_tokens)"
        )
    allowed = _USER_AGGREGATE_GROUPS if table == "llm_user_aggregates" else _AGGREGATE_GROUPS
    select, columns = _group_columns(names, allowed)
    # The stream also writes longer rollups of the same spans: read only the shortest window.
    sql = (
        f"SELECT {select}, currency, sum(requests), sum(errors), sum(unpriced_requests), "  # noqa: S608 (allow-listed identifiers)
        f"{usage_sums}, sum(cost_total) AS cost "
        f"FROM {table} FINAL "
        "WHERE window_start >= toDateTime(intDiv({since:Int64}, 1000)) "
        "AND window_start < toDateTime(intDiv({until:Int64}, 1000)) "
        f"AND {_TENANT_FILTER} "
        f"AND window_seconds = (SELECT min(window_seconds) FROM {table} "
        "WHERE window_start >= toDateTime(intDiv({since:Int64}, 1000)) "
        "AND window_start < toDateTime(intDiv({until:Int64}, 1000)) "
        f"AND {_TENANT_FILTER}) "
        f"GROUP BY {', '.join(names)}, currency ORDER BY cost DESC, {', '.join(names)} "
        "LIMIT {limit:UInt32}"
    )
    rows = _run(obj, table, sql, {**window.parameters, "limit": limit, "tenant": tenant})
    columns += [
        Column("currency"),
        Column("requests", kind="int"),
        Column("errors", kind="int"),
        Column("unpriced", kind="int"),
        Column("input", "tokens", "int"),
        Column("output", "tokens", "int"),
        Column("cache read", "tokens", "int"),
        Column("reasoning", "tokens", "int"),
        Column("cost", kind="cost"),
    ]
    _emit(Result(columns, rows, _title("cost", window)), output_format)


@query.command()
@_query_options("model", list(_SPAN_GROUPS))
@click.pass_obj
def latency(
    obj: Any,
    since: str,
    until: str,
    by: tuple[str, ...],
    output_format: str,
    limit: int,
    tenant: str,
) -> None:
    """Latency percentiles and time to first token of LLM calls per group (stored spans)."""
    window = _time_range(since, until)
    names = _groups(by, _SPAN_GROUPS, "model")
    select, columns = _group_columns(names, _SPAN_GROUPS)
    sql = (
        f"SELECT {select}, count() AS requests, countIf(status = 'error'), "  # noqa: S608 (allow-listed identifiers)
        "quantile(0.5)(duration_ms), quantile(0.95)(duration_ms) AS p95, "
        "quantile(0.99)(duration_ms), max(duration_ms), "
        "quantile(0.5)(time_to_first_token_ms), quantile(0.95)(time_to_first_token_ms) "
        "FROM llm_spans FINAL WHERE span_type = 'llm' "
        "AND timestamp >= fromUnixTimestamp64Milli({since:Int64}) "
        "AND timestamp < fromUnixTimestamp64Milli({until:Int64}) "
        f"AND {_TENANT_FILTER} "
        f"GROUP BY {', '.join(names)} ORDER BY p95 DESC, {', '.join(names)} "
        "LIMIT {limit:UInt32}"
    )
    rows = _run(obj, "llm_spans", sql, {**window.parameters, "limit": limit, "tenant": tenant})
    columns += [
        Column("requests", kind="int"),
        Column("errors", kind="int"),
        Column("p50", "ms", "ms"),
        Column("p95", "ms", "ms"),
        Column("p99", "ms", "ms"),
        Column("max", "ms", "ms"),
        Column("ttft p50", "ms", "ms"),
        Column("ttft p95", "ms", "ms"),
    ]
    _emit(Result(columns, rows, _title("latency of LLM calls", window)), output_format)


@query.command()
@_query_options("service", list(_SCORE_GROUPS))
@click.option(
    "--top",
    type=click.IntRange(min=1),
    help="List the N riskiest responses (with prompt and answer) instead of group statistics.",
)
@click.pass_obj
def risk(
    obj: Any,
    since: str,
    until: str,
    by: tuple[str, ...],
    output_format: str,
    limit: int,
    tenant: str,
    top: int | None,
) -> None:
    """Hallucination risk of scored responses per group: mean, p95, share above 0.7, injections."""
    window = _time_range(since, until)
    in_range = (
        "timestamp >= fromUnixTimestamp64Milli({since:Int64}) "
        f"AND timestamp < fromUnixTimestamp64Milli({{until:Int64}}) AND {_TENANT_FILTER}"
    )
    if top is not None:
        sql = (
            "SELECT s.timestamp, s.service_name, s.request_model, s.risk_score, "  # noqa: S608 (constants)
            "s.injection_flag, s.trace_id, s.span_id, "
            "substring(replaceAll(l.prompt_text, '\\n', ' '), 1, 80), "
            "substring(replaceAll(l.completion_text, '\\n', ' '), 1, 100) "
            "FROM span_scores AS s FINAL "
            "LEFT ANY JOIN (SELECT trace_id, span_id, prompt_text, completion_text FROM llm_spans "
            f"WHERE {in_range}) AS l ON s.trace_id = l.trace_id AND s.span_id = l.span_id "
            "WHERE s.timestamp >= fromUnixTimestamp64Milli({since:Int64}) "
            "AND s.timestamp < fromUnixTimestamp64Milli({until:Int64}) "
            "AND ({tenant:String} = '' OR s.tenant = {tenant:String}) "
            "ORDER BY s.risk_score DESC, s.timestamp DESC LIMIT {top:UInt32}"
        )
        rows = _run(obj, "span_scores", sql, {**window.parameters, "top": top, "tenant": tenant})
        columns = [
            Column("time", kind="time"),
            Column("service"),
            Column("model"),
            Column("risk", kind="score"),
            Column("injection", kind="int"),
            Column("trace_id"),
            Column("span_id"),
            Column("prompt"),
            Column("answer"),
        ]
        _emit(Result(columns, rows, _title(f"{top} riskiest responses", window)), output_format)
        return
    names = _groups(by, _SCORE_GROUPS, "service")
    select, columns = _group_columns(names, _SCORE_GROUPS)
    sql = (
        f"SELECT {select}, count() AS scored, avg(risk_score) AS mean_risk, "  # noqa: S608 (allow-listed identifiers)
        "quantile(0.95)(risk_score), countIf(risk_score > {high:Float32}) / count(), "
        "countIf(injection_flag = 1), countIf(has_context = 1) "
        f"FROM span_scores FINAL WHERE {in_range} "
        f"GROUP BY {', '.join(names)} ORDER BY mean_risk DESC, {', '.join(names)} "
        "LIMIT {limit:UInt32}"
    )
    parameters = {**window.parameters, "limit": limit, "high": HIGH_RISK, "tenant": tenant}
    rows = _run(obj, "span_scores", sql, parameters)
    columns += [
        Column("scored", kind="int"),
        Column("mean risk", kind="score"),
        Column("p95 risk", kind="score"),
        Column(f"risk>{HIGH_RISK}", kind="ratio"),
        Column("injections", kind="int"),
        Column("with context", kind="int"),
    ]
    _emit(Result(columns, rows, _title("risk", window)), output_format)


@query.command()
@_query_options(None, list(_DRIFT_GROUPS))
@click.option("--drifted-only", is_flag=True, help="Only tests that found drift.")
@click.pass_obj
def drift(
    obj: Any,
    since: str,
    until: str,
    by: tuple[str, ...],
    output_format: str,
    limit: int,
    tenant: str,
    drifted_only: bool,
) -> None:
    """Drift tests, newest first; with --by, tests and drift found per group."""
    window = _time_range(since, until)
    conditions = (
        "window_end >= toDateTime(intDiv({since:Int64}, 1000)) "
        f"AND window_end < toDateTime(intDiv({{until:Int64}}, 1000)) AND {_TENANT_FILTER}"
        + (" AND drifted = 1" if drifted_only else "")
    )
    names = _groups(by, _DRIFT_GROUPS, None)
    if names:
        select, columns = _group_columns(names, _DRIFT_GROUPS)
        sql = (
            f"SELECT {select}, count(), sum(drifted) AS found, max(statistic), "  # noqa: S608 (allow-listed identifiers)
            "maxIf(window_end, drifted = 1) "
            f"FROM drift_results FINAL WHERE {conditions} "
            f"GROUP BY {', '.join(names)} ORDER BY found DESC, {', '.join(names)} "
            "LIMIT {limit:UInt32}"
        )
        columns += [
            Column("tests", kind="int"),
            Column("drifted", kind="int"),
            Column("max statistic", kind="score"),
            Column("last drift", kind="time"),
        ]
    else:
        sql = (
            "SELECT window_end, service_name, request_model, prompt_template_version, feature, "  # noqa: S608 (constants)
            "detector, statistic, p_value, threshold, drifted, reference_size, current_size "
            f"FROM drift_results FINAL WHERE {conditions} "
            "ORDER BY window_end DESC, service_name, feature LIMIT {limit:UInt32}"
        )
        columns = [
            Column("window end", kind="time"),
            Column("service"),
            Column("model"),
            Column("prompt_version"),
            Column("feature"),
            Column("detector"),
            Column("statistic", kind="score"),
            Column("p value", kind="score"),
            Column("threshold", kind="score"),
            Column("drifted", kind="int"),
            Column("reference size", kind="int"),
            Column("current size", kind="int"),
        ]
    rows = _run(obj, "drift_results", sql, {**window.parameters, "limit": limit, "tenant": tenant})
    _emit(Result(columns, rows, _title("drift", window)), output_format)


@query.command()
@_query_options(None, list(_ALERT_GROUPS))
@click.option(
    "--state", type=click.Choice(["firing", "resolved"]), help="Only alerts in this state."
)
@click.pass_obj
def alerts(
    obj: Any,
    since: str,
    until: str,
    by: tuple[str, ...],
    output_format: str,
    limit: int,
    tenant: str,
    state: str | None,
) -> None:
    """Alerts fired in the range, newest first; with --by, counts per group."""
    window = _time_range(since, until)
    conditions = (
        "fired_at >= fromUnixTimestamp64Milli({since:Int64}) "
        f"AND fired_at < fromUnixTimestamp64Milli({{until:Int64}}) AND {_TENANT_FILTER}"
        + (" AND state = {state:String}" if state else "")
    )
    parameters: dict[str, Any] = {**window.parameters, "limit": limit, "tenant": tenant}
    if state:
        parameters["state"] = state
    names = _groups(by, _ALERT_GROUPS, None)
    if names:
        select, columns = _group_columns(names, _ALERT_GROUPS)
        sql = (
            f"SELECT {select}, count() AS fired, countIf(state = 'firing'), max(fired_at) "  # noqa: S608 (allow-listed identifiers)
            f"FROM alerts FINAL WHERE {conditions} "
            f"GROUP BY {', '.join(names)} ORDER BY fired DESC, {', '.join(names)} "
            "LIMIT {limit:UInt32}"
        )
        columns += [
            Column("alerts", kind="int"),
            Column("firing", kind="int"),
            Column("last fired", kind="time"),
        ]
    else:
        sql = (
            "SELECT fired_at, severity, state, rule_id, group_key, value, threshold, "  # noqa: S608 (constants)
            "delivery_status, message FROM alerts FINAL "
            f"WHERE {conditions} ORDER BY fired_at DESC, rule_id LIMIT {{limit:UInt32}}"
        )
        columns = [
            Column("fired", kind="time"),
            Column("severity"),
            Column("state"),
            Column("rule"),
            Column("group"),
            Column("value", kind="score"),
            Column("threshold", kind="score"),
            Column("delivery"),
            Column("message"),
        ]
    rows = _run(obj, "alerts", sql, parameters)
    _emit(Result(columns, rows, _title("alerts", window)), output_format)


# -- output -----------------------------------------------------------------------------------


def _title(what: str, window: _Range) -> str:
    def moment(milliseconds: int) -> str:
        return datetime.fromtimestamp(milliseconds / 1000).astimezone().strftime("%Y-%m-%d %H:%M")

    return f"{what}, {moment(window.since_ms)} to {moment(window.until_ms)}"


def _emit(result: Result, output_format: str) -> None:
    if output_format == "json":
        records = [
            {
                column.key: _json_value(column, value)
                for column, value in zip(result.columns, row, strict=True)
            }
            for row in result.rows
        ]
        click.echo(json.dumps(records, indent=2, ensure_ascii=False))
    elif output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(column.key for column in result.columns)
        for row in result.rows:
            writer.writerow(
                _csv_value(column, value) for column, value in zip(result.columns, row, strict=True)
            )
        click.echo(buffer.getvalue(), nl=False)
    else:
        click.echo(render_table(result))


def render_table(result: Result) -> str:
    """Aligned columns (numbers right, text left), units in the headings, '-' for no value."""
    headings = [column.heading for column in result.columns]
    cells = [
        [_cell(column, value) for column, value in zip(result.columns, row, strict=True)]
        for row in result.rows
    ]
    widths = [
        max([len(heading), *(len(row[index]) for row in cells)])
        for index, heading in enumerate(headings)
    ]
    right = [column.kind != "text" and column.kind != "time" for column in result.columns]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if is_right else value.ljust(width)
            for value, width, is_right in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [result.title] if result.title else []
    lines += [line(headings), line(["-" * width for width in widths])]
    lines += [line(row) for row in cells]
    if not cells:
        lines.append("(no rows in this range)")
    return "\n".join(lines)


def _cell(column: Column, value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # NULL or NaN
        return "-"
    if column.kind == "int":
        return f"{int(value):,}"
    if column.kind == "cost":
        return f"{Decimal(value):,.6f}"
    if column.kind == "ms":
        return f"{float(value):,.0f}"
    if column.kind == "ratio":
        return f"{float(value) * 100:.1f}%"
    if column.kind == "score":
        return f"{float(value):.3f}"
    if column.kind == "time" and isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    return text if text else "(none)"


def _json_value(column: Column, value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value.normalize()) if value else "0"  # exact: costs stay decimal strings
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        # Quantiles carry float noise; a microsecond and six decimals are precise enough.
        return round(value, 3 if column.kind == "ms" else 6)
    return value


def _csv_value(column: Column, value: Any) -> Any:
    converted = _json_value(column, value)
    return "" if converted is None else converted
