"""Re-pricing stored spans after a price fix: the cost of history is correctable.

Each stored LLM span keeps its token counts by kind, its provider, model and price version. After
a price table change (a new version), ``reprice`` reads the spans priced with another version,
prices them again with the current table, and writes them back as newer versions of the same rows:
``llm_spans`` is a ReplacingMergeTree on the span's identity, so the new row replaces the old one.
Each day touched is then merged (``OPTIMIZE ... FINAL``) so that plain queries, not only ``FINAL``
ones, see one row per span.

The stream's windowed aggregates (``llm_aggregates``, ``llm_user_aggregates``), which the cost
dashboards read, are corrected too: each stored window that holds a re-priced span gets the
difference between the span's new cost and its old one, in a newer version of its row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from llmtap.processors.pricing import PriceTable
from llmtap.schemas.aggregates import MODEL_DIMENSIONS, USER_DIMENSIONS
from llmtap.schemas.llm_span import TokenUsage

_BATCH_ROWS = 20_000


_PARTS = ("total", "input", "output", "cache_read", "cache_write", "reasoning")


# Windows that may hold a span of the day: those starting that day, and any of a length that
# does not divide a day starting the day before.
_NEAR_DAY = "toDate(window_start) BETWEEN {day:Date} - 1 AND {day:Date}"


@dataclass(frozen=True)
class RepriceReport:
    spans: int
    days: int
    cost_before: str
    cost_after: str
    newly_priced: int
    newly_unpriced: int
    windows: int = 0  # aggregate rows corrected (llm_aggregates and llm_user_aggregates)


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
    total = newly_priced = newly_unpriced = windows = 0
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
        corrections = _WindowCorrections(client, day)
        for row in rows:
            before = [Decimal(row[index[f"cost_{part}"]] or 0) for part in _PARTS]
            was_priced = bool(row[index["priced"]])
            _apply_price(row, index, prices)
            after = [Decimal(row[index[f"cost_{part}"]] or 0) for part in _PARTS]
            before_sum += before[0]
            after_sum += after[0]
            is_priced = bool(row[index["priced"]])
            newly_priced += int(is_priced and not was_priced)
            newly_unpriced += int(was_priced and not is_priced)
            corrections.add(
                row,
                index,
                [b - a for a, b in zip(before, after, strict=True)],
                int(was_priced) - int(is_priced),
            )
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
        windows += corrections.write()
    return RepriceReport(
        spans=total,
        days=len(days),
        cost_before=str(before_sum),
        cost_after=str(after_sum),
        newly_priced=newly_priced,
        newly_unpriced=newly_unpriced,
        windows=windows,
    )


class _WindowCorrections:
    """What re-pricing one day's spans changes in the stored windows that hold them.

    Each window gets the sum of its spans' cost differences (new minus old, per part) and the
    change in its unpriced count, written as a newer version of its row. A late span (counted by
    the stream but not merged into its window) is corrected like the others: its cost difference
    joins the window it belongs to.
    """

    def __init__(self, client: Any, day: date) -> None:
        self._client = client
        self._day = day
        self._lengths = {
            table: [
                int(row[0])
                for row in client.query(
                    f"SELECT DISTINCT window_seconds FROM {table} "  # noqa: S608 (constant)
                    f"WHERE {_NEAR_DAY}",
                    parameters={"day": day},
                ).result_rows
            ]
            for table in ("llm_aggregates", "llm_user_aggregates")
        }
        self._model: dict[tuple[Any, ...], tuple[list[Decimal], int]] = {}
        self._user: dict[tuple[Any, ...], tuple[list[Decimal], int]] = {}

    def add(
        self, row: list[Any], index: dict[str, int], cost: list[Decimal], unpriced: int
    ) -> None:
        if not unpriced and not any(cost):
            return
        start = _epoch_seconds(row[index["timestamp"]])
        values = {name: row[index[name]] or "" for name in MODEL_DIMENSIONS}
        values["request_model"] = values["request_model"] or row[index["response_model"]] or ""
        group = tuple(values[name] for name in MODEL_DIMENSIONS)
        for length in self._lengths["llm_aggregates"]:
            _accumulate(self._model, (length, start - start % length, *group), cost, unpriced)
        user_id = row[index["user_id"]]
        if user_id:
            for length in self._lengths["llm_user_aggregates"]:
                key = (length, start - start % length, values["tenant"], user_id)
                _accumulate(self._user, key, cost, unpriced)

    def write(self) -> int:
        """Insert the corrected versions of the windows that changed; how many."""
        written = self._write("llm_aggregates", MODEL_DIMENSIONS, self._model, _PARTS)
        written += self._write("llm_user_aggregates", USER_DIMENSIONS, self._user, ("total",))
        return written

    def _write(
        self,
        table: str,
        group: tuple[str, ...],
        changes: dict[tuple[Any, ...], tuple[list[Decimal], int]],
        parts: tuple[str, ...],
    ) -> int:
        if not changes:
            return 0
        result = self._client.query(
            f"SELECT *, toUnixTimestamp(window_start) AS window_start_epoch "  # noqa: S608
            f"FROM {table} FINAL WHERE {_NEAR_DAY}",
            parameters={"day": self._day},
        )
        columns = list(result.column_names)[:-1]
        index = {name: position for position, name in enumerate(columns)}
        corrected = []
        for stored in result.result_rows:
            key = (
                int(stored[index["window_seconds"]]),
                int(stored[-1]),
                *(stored[index[name]] for name in group),
            )
            change = changes.get(key)
            if change is None:
                continue
            cost, unpriced = change
            row = list(stored[:-1])
            for part, difference in zip(_PARTS, cost, strict=True):
                if part in parts:
                    column = index[f"cost_{part}"]
                    row[column] = Decimal(row[column] or 0) + difference
            row[index["unpriced_requests"]] = max(
                0, int(row[index["unpriced_requests"]]) + unpriced
            )
            row[index["version"]] = int(row[index["version"]]) + 1
            row[index["ingested_at"]] = datetime.now(tz=UTC)
            corrected.append(row)
        for start in range(0, len(corrected), _BATCH_ROWS):
            self._client.insert(
                table,
                corrected[start : start + _BATCH_ROWS],
                column_names=columns,
                settings={"async_insert": 0},
            )
        return len(corrected)


def _accumulate(
    changes: dict[tuple[Any, ...], tuple[list[Decimal], int]],
    key: tuple[Any, ...],
    cost: list[Decimal],
    unpriced: int,
) -> None:
    current = changes.get(key)
    if current is None:
        changes[key] = (list(cost), unpriced)
    else:
        changes[key] = (
            [a + b for a, b in zip(current[0], cost, strict=True)],
            current[1] + unpriced,
        )


def _epoch_seconds(value: Any) -> int:
    """A stored DateTime64 as Unix seconds (clickhouse-connect returns naive UTC datetimes)."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(moment.timestamp())
    return int(value) // 1_000_000_000


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
