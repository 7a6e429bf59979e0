"""``llmtap alerts``: check alert rules, and backtest them on the aggregates already stored."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from llmtap.errors import LlmtapError

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float) -> int:
    """``now``, a duration ago (``90m``, ``24h``, ``7d``) or an ISO time (UTC if no zone) -> ms."""
    value = text.strip().lower()
    if value == "now":
        return int(now * 1000)
    match = _DURATION.match(value)
    if match:
        return int((now - int(match.group(1)) * _UNIT_SECONDS[match.group(2)]) * 1000)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not 'now', a duration like 24h / 90m / 7d, or an ISO time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@click.group()
def alerts() -> None:
    """Alert rules: validate a rules file and backtest it on stored aggregates."""


@alerts.command("test")
@click.argument("rules_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--since", default="24h", show_default=True, help="Start: 24h, 90m, 7d or ISO time.")
@click.option("--until", default="now", show_default=True, help="End: now, a duration or ISO.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people, json for scripts.",
)
@click.option("--validate-only", is_flag=True, help="Only check the file; do not read ClickHouse.")
@click.pass_obj
def test_rules(
    state: Any,
    rules_file: Path,
    since: str,
    until: str,
    output_format: str,
    validate_only: bool,
) -> None:
    """Validate RULES_FILE, then show what it would have fired over a stored time range.

    Reads the stored aggregates (llm_aggregates) from the configured ClickHouse, replays them
    through the evaluator at every base-window boundary, and prints each firing and resolve.
    """
    from llmtap.processors.alerts.rules import load_rules

    rules = load_rules(rules_file)
    if validate_only:
        click.echo(f"{rules_file}: {len(rules.rules)} rule(s) valid")
        return
    from llmtap import clickhouse
    from llmtap.processors.alerts.backtest import backtest

    now = time.time()
    since_ms, until_ms = parse_time(since, now), parse_time(until, now)
    if since_ms >= until_ms:
        raise LlmtapError(f"--since ({since}) must be before --until ({until}).")
    settings = state.settings
    client = clickhouse.open_client(settings, create_database=False)
    try:
        result = backtest(
            client,
            rules,
            since_ms,
            until_ms,
            base_window_seconds=settings.processor.alerts.base_window_seconds,
        )
    finally:
        client.close()
    if output_format == "json":
        click.echo(json.dumps(_as_json(rules_file, result), indent=2))
    else:
        _print_table(rules_file, result, len(rules.rules))


def _as_json(rules_file: Path, result: Any) -> dict[str, Any]:
    import msgspec

    return {
        "rules_file": str(rules_file),
        "since_ms": result.since_ms,
        "until_ms": result.until_ms,
        "aggregates_read": result.aggregates_read,
        "evaluations": result.evaluations,
        "skipped_rules": result.skipped_rules,
        "events": [msgspec.to_builtins(event) for event in result.events],
    }


def _print_table(rules_file: Path, result: Any, rule_count: int) -> None:
    click.echo(
        f"{rules_file}: {rule_count} rule(s) valid; replayed {result.aggregates_read} aggregates "
        f"from {_when(result.since_ms)} to {_when(result.until_ms)} "
        f"({result.evaluations} evaluations)"
    )
    for rule_id, reason in result.skipped_rules.items():
        click.echo(f"not backtested: {rule_id}: {reason}")
    if not result.events:
        click.echo("no alert would have fired")
        return
    click.echo(f"{'time (UTC)':<20} {'state':<9} {'severity':<9} {'rule':<24} {'value':>12}  group")
    for event in result.events:
        click.echo(
            f"{_when(event.evaluated_at_ms):<20} {event.state:<9} {event.severity:<9} "
            f"{event.rule_id:<24} {event.value:>12.4g}  {event.group_key or '-'}"
        )
    firing = sum(1 for event in result.events if event.state == "firing")
    click.echo(f"{firing} firing, {len(result.events) - firing} resolved")


def _when(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
