"""Backtest: replay stored aggregates through a fresh evaluator to show what rules would do.

Aggregates are read from ``llm_aggregates FINAL`` (current versions only), starting one longest
rule window before the range so the first evaluation sees full windows, and replayed in time
order; the evaluator runs at every base-window boundary in the range, exactly as the stream runs
it, so what it reports is what the stream would have sent. Risk and drift rules read other
inputs and are reported as not backtested; so are per-user rules while the stored aggregates
carry no user dimension.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llmtap.processors.alerts.evaluator import DEFAULT_BASE_WINDOW_SECONDS, AlertEvaluator
from llmtap.processors.alerts.rules import DriftRule, HighRiskRateRule, Rule, RuleSet
from llmtap.schemas.aggregates import Aggregate, AlertEvent

AGGREGATES_TABLE = "llm_aggregates"
# Columns of schemas/clickhouse/0001_core.sql that the rules read.
_COLUMNS = (
    "toUnixTimestamp(window_start)",
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
    "toString(cost_total)",
    "latency_sketch",
    "version",
)


@dataclass
class BacktestResult:
    since_ms: int
    until_ms: int
    events: list[AlertEvent] = field(default_factory=list)
    aggregates_read: int = 0
    evaluations: int = 0
    skipped_rules: dict[str, str] = field(default_factory=dict)  # rule id -> why


def skipped_rules(rules: RuleSet) -> dict[str, str]:
    """The rules a backtest over stored aggregates cannot replay, and why."""
    skipped: dict[str, str] = {}
    for rule in rules.rules:
        if isinstance(rule, HighRiskRateRule | DriftRule):
            skipped[rule.id] = (
                f"{rule.kind} rules read risk scores and drift results, not aggregates"
            )
        elif getattr(rule, "dimension_set", "model") == "user":
            skipped[rule.id] = "per-user rules need user aggregates, which are not stored"
    return skipped


def replay(
    rules: RuleSet,
    aggregates: Iterable[Aggregate],
    since_ms: int,
    until_ms: int,
    *,
    base_window_seconds: int = DEFAULT_BASE_WINDOW_SECONDS,
) -> BacktestResult:
    """Feed ``aggregates`` (in window_start order) to a fresh evaluator, evaluating at every
    base-window boundary in ``[since, until]``; returns the events it emitted."""
    skipped = skipped_rules(rules)
    kept: list[Rule] = [rule for rule in rules.rules if rule.id not in skipped]
    evaluator = AlertEvaluator(kept, {}, base_window_seconds=base_window_seconds)
    result = BacktestResult(since_ms, until_ms, skipped_rules=skipped)
    step_ms = base_window_seconds * 1000
    boundary = -(-since_ms // step_ms) * step_ms
    pending = iter(aggregates)
    upcoming = next(pending, None)
    while boundary <= until_ms:
        # Everything of the windows that started before this boundary has been seen.
        while upcoming is not None and upcoming.window_start * 1000 < boundary:
            evaluator.observe_aggregate(upcoming)
            result.aggregates_read += 1
            upcoming = next(pending, None)
        result.events.extend(evaluator.evaluate(boundary))
        result.evaluations += 1
        boundary += step_ms
    return result


def read_aggregates(
    client: Any, since_seconds: int, until_seconds: int, *, base_window_seconds: int
) -> Iterator[Aggregate]:
    """The stored base-window aggregates starting in ``[since, until)``, in start order."""
    model_rows_only = ""
    if _has_column(client, "dimension_set"):
        model_rows_only = "AND dimension_set = 'model' "
    query = (
        f"SELECT {', '.join(_COLUMNS)} FROM {AGGREGATES_TABLE} FINAL "  # noqa: S608 (constants)
        "WHERE window_seconds = {window_seconds:UInt32} "
        "AND window_start >= toDateTime({since:Int64}) "
        "AND window_start < toDateTime({until:Int64}) "
        f"{model_rows_only}"
        "ORDER BY window_start, tenant, service_name, environment, provider, request_model, "
        "operation, prompt_template_version"
    )
    result = client.query(
        query,
        parameters={
            "window_seconds": base_window_seconds,
            "since": since_seconds,
            "until": until_seconds,
        },
        column_formats={"latency_sketch": "bytes"},
    )
    for row in result.result_rows:
        (
            window_start,
            window_seconds,
            tenant,
            service_name,
            environment,
            provider,
            request_model,
            operation,
            prompt_template_version,
            requests,
            errors,
            unpriced_requests,
            cost_total,
            latency_sketch,
            version,
        ) = row
        yield Aggregate(
            window_start=int(window_start),
            window_seconds=int(window_seconds),
            tenant=tenant,
            service_name=service_name,
            environment=environment,
            provider=provider,
            request_model=request_model,
            operation=operation,
            prompt_template_version=prompt_template_version,
            requests=int(requests),
            errors=int(errors),
            unpriced_requests=int(unpriced_requests),
            cost_total=str(cost_total),
            latency_sketch=latency_sketch
            if isinstance(latency_sketch, bytes)
            else str(latency_sketch).encode("latin-1"),
            version=int(version),
        )


def backtest(
    client: Any,
    rules: RuleSet,
    since_ms: int,
    until_ms: int,
    *,
    base_window_seconds: int = DEFAULT_BASE_WINDOW_SECONDS,
) -> BacktestResult:
    """What ``rules`` would have sent over ``[since, until]``, from the stored aggregates."""
    warm_up_seconds = rules.longest_window_seconds + base_window_seconds
    aggregates = read_aggregates(
        client,
        since_ms // 1000 - warm_up_seconds,
        -(-until_ms // 1000),
        base_window_seconds=base_window_seconds,
    )
    return replay(rules, aggregates, since_ms, until_ms, base_window_seconds=base_window_seconds)


def _has_column(client: Any, column: str) -> bool:
    result = client.query(
        "SELECT count() FROM system.columns WHERE database = currentDatabase() "
        "AND table = {table:String} AND name = {column:String}",
        parameters={"table": AGGREGATES_TABLE, "column": column},
    )
    return bool(result.result_rows[0][0])
