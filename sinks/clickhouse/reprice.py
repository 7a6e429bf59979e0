"""Re-pricing stored spans after a price fix: the cost of history is correctable.

Each stored LLM span keeps its token counts by kind, its provider, model and price version. After
a price table change (a new version), ``reprice`` reads the spans priced with another version,
prices them again with the current table, and writes them back as newer versions of the same rows:
``llm_spans`` is a ReplacingMergeTree on the span's identity, so the new row replaces the old one.
Each day touched is then merged (``OPTIMIZE ... FINAL``) so that plain queries, not only ``FINAL``
ones, see one row per span.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from llmtap.processors.pricing import PriceTable
from llmtap.schemas.llm_span import TokenUsage

_BATCH_ROWS = 20_000


@dataclass(frozen=True)
class RepriceReport:
    spans: int
    days: int
    cost_before: str
    cost_after: str
    newly_priced: int
    newly_unpriced: int


def reprice(
    client: Any,
    prices: PriceTable,
    *,
    since: date | None = None,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> RepriceReport:
    where = (
        "span_type IN ('llm', 'embedding') AND price_version != {version:String} "
        "AND price_version != ''"
    )
    parameters: dict[str, Any] = {"version": prices.version}
    if since is not None:
        where += " AND timestamp >= {since:DateTime64(9)}"
        parameters["since"] = datetime(since.year, since.month, since.day)
    days = [
        row[0]
        for row in client.query(
            # The clauses are constants; values are bound parameters.
            f"SELECT DISTINCT toDate(timestamp) AS day FROM llm_spans FINAL WHERE {where} "  # noqa: S608
            "ORDER BY day",
            parameters=parameters,
        ).result_rows
    ]
    total = newly_priced = newly_unpriced = 0
    before_sum = Decimal(0)
    after_sum = Decimal(0)
    for day in days:
        result = client.query(
            f"SELECT * FROM llm_spans FINAL WHERE {where} AND toDate(timestamp) = {{day:Date}}",  # noqa: S608
            parameters={**parameters, "day": day},
        )
        columns = list(result.column_names)
        index = {name: position for position, name in enumerate(columns)}
        rows = [list(row) for row in result.result_rows]
        for row in rows:
            before = row[index["cost_total"]]
            was_priced = bool(row[index["priced"]])
            _apply_price(row, index, prices)
            after = row[index["cost_total"]]
            before_sum += Decimal(before or 0)
            after_sum += Decimal(after or 0)
            is_priced = bool(row[index["priced"]])
            newly_priced += int(is_priced and not was_priced)
            newly_unpriced += int(was_priced and not is_priced)
        total += len(rows)
        progress(f"{day}: {len(rows)} spans re-priced{' (dry run)' if dry_run else ''}")
        if dry_run or not rows:
            continue
        for start in range(0, len(rows), _BATCH_ROWS):
            client.insert(
                "llm_spans",
                rows[start : start + _BATCH_ROWS],
                column_names=columns,
                settings={"async_insert": 0},
            )
        client.command(
            "OPTIMIZE TABLE llm_spans PARTITION {day:Date} FINAL", parameters={"day": day}
        )
    return RepriceReport(
        spans=total,
        days=len(days),
        cost_before=str(before_sum),
        cost_after=str(after_sum),
        newly_priced=newly_priced,
        newly_unpriced=newly_unpriced,
    )


def _apply_price(row: list[Any], index: dict[str, int], prices: PriceTable) -> None:
    usage = TokenUsage(
        input=_int(row[index["input_tokens"]]),
        output=_int(row[index["output_tokens"]]),
        cache_read=_int(row[index["cache_read_tokens"]]),
        cache_write=_int(row[index["cache_write_tokens"]]),
        reasoning=_int(row[index["reasoning_tokens"]]),
    )
    model = row[index["response_model"]] or row[index["request_model"]] or None
    provider = row[index["provider"]] or None
    end = row[index["end_timestamp"]]
    at = int(end.timestamp() * 1e9) if isinstance(end, datetime) else int(end or 0)
    cost = prices.price(provider, model, usage, at)
    row[index["priced"]] = 1 if cost.priced else 0
    for part in ("total", "input", "output", "cache_read", "cache_write", "reasoning"):
        row[index[f"cost_{part}"]] = getattr(cost, part)
    row[index["currency"]] = cost.currency
    row[index["price_version"]] = cost.price_version
    row[index["price_id"]] = cost.price_id or ""
    row[index["unpriced_reason"]] = cost.unpriced_reason or ""
    row[index["ingested_at"]] = datetime.now(tz=UTC)  # newer: replaces the stored row


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
