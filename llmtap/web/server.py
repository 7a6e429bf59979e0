"""The web dashboard: a read-only JSON API over llmtap's ClickHouse tables, and the page using it.

It runs inside the process that holds the store: ``llmtap up`` on the embedded engine (where
Grafana cannot reach), or ``llmtap ui`` against a ClickHouse server. Queries run in a worker
thread, one at a time, with ``readonly=2`` so no request can change data or schema.

Who reads what: the operator token (``auth_token``) reads every tenant; a tenant token
(``tenant_tokens``) reads its own tenant only. The middleware records the caller on the request,
every handler takes its tenant filter from ``_filters`` (which pins it, or answers 403 for
another tenant), and ``_rows`` refuses to run a query of a pinned request unless the query
filters on that tenant, so a handler that forgets the filter fails loudly instead of leaking.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmtap.errors import LlmtapError
from llmtap.settings import Settings
from llmtap.web import queries
from llmtap.web.queries import Filters, Query, TimeRange

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
RANGE_PRESETS = {
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 86400,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
}
DEFAULT_RANGE = "1h"
MAX_FILTER_LENGTH = 200
TOP_SERIES = 8
_TRACE_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
# Paths that hold no stored data: the page, its scripts, liveness and the page's settings.
PUBLIC_API_PATHS = frozenset({"/api/health", "/api/config"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(ValueError):
    """A request parameter is missing or invalid (answered 400)."""


class Forbidden(ValueError):
    """A tenant token asked for another tenant's data (answered 403)."""


@dataclass(frozen=True)
class Reader:
    """Who sent a request: ``tenant`` is None for the operator (or when auth is off)."""

    tenant: str | None


OPERATOR = Reader(tenant=None)
_READER_KEY = web.RequestKey("llmtap.reader", Reader)


class WebDashboard:
    """The dashboard's HTTP server, with an explicit lifecycle: ``start()``, then ``stop()``."""

    def __init__(self, settings: Settings, progress: Callable[[str], None]) -> None:
        self._settings = settings
        self._config = settings.web
        self._progress = progress
        self._client: Client | None = None
        self._query_lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = self._config.address
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    async def start(self) -> None:
        from llmtap import clickhouse

        self._client = await asyncio.to_thread(
            clickhouse.open_client, self._settings, create_database=False
        )
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._config.address, self._config.port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            self._close_client()
            raise LlmtapError(
                f"The web dashboard cannot listen on {self._config.address}:"
                f"{self._config.port}: {error.strerror or error}. Set LLMTAP_WEB__PORT "
                "(0 picks a free port) or LLMTAP_WEB__ENABLED=false."
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        auth = "token required" if self._config.auth_required else "no auth"
        self._progress(f"dashboard   {self.url} ({auth})")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.to_thread(self._close_client)

    def _close_client(self) -> None:
        with self._query_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- application -----------------------------------------------------------------------------

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._security_headers, self._authenticate])
        routes = [
            ("/", self._index),
            ("/api/health", self._health),
            ("/api/config", self._client_config),
            ("/api/filters", self._filters),
            ("/api/overview", self._overview),
            ("/api/cost", self._cost),
            ("/api/drift", self._drift),
            ("/api/risk", self._risk),
            ("/api/alerts", self._alerts),
            ("/api/spans", self._spans),
            ("/api/traces/{trace_id}", self._trace),
        ]
        for path, handler in routes:
            app.router.add_get(path, handler)
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
        return app

    @web.middleware
    async def _security_headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as error:  # 404, 405: the same headers, then aiohttp answers
            _add_security_headers(request, error)
            raise
        _add_security_headers(request, response)
        return response

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._config.auth_required:
            request[_READER_KEY] = OPERATOR
            return await handler(request)
        if request.path in PUBLIC_API_PATHS or not request.path.startswith("/api/"):
            return await handler(request)  # the page and its scripts hold no data
        reader = self._reader_of(request.headers.get("Authorization", ""))
        if reader is None:
            return web.json_response(
                {"error": "missing or wrong token: send Authorization: Bearer <token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="llmtap"'},
            )
        request[_READER_KEY] = reader
        return await handler(request)

    def _reader_of(self, authorization: str) -> Reader | None:
        """The reader a presented token belongs to; None for a missing or unknown token."""
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        presented_bytes = presented.strip().encode()
        candidates: list[tuple[bytes, Reader]] = [
            (entry.token.get_secret_value().encode(), Reader(tenant=entry.tenant))
            for entry in self._config.tenant_tokens
        ]
        if self._config.auth_token is not None:
            candidates.append((self._config.auth_token.get_secret_value().encode(), OPERATOR))
        found = None
        for expected, reader in candidates:  # compare with every token: the time tells nothing
            if hmac.compare_digest(presented_bytes, expected):
                found = reader
        return found

    # -- handlers --------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def _client_config(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "refresh_interval_seconds": self._config.refresh_interval_seconds,
                "auth_required": self._config.auth_required,
                "range_presets": list(RANGE_PRESETS),
                "default_range": DEFAULT_RANGE,
                "group_by": list(queries.GROUP_BY_CHOICES),
            }
        )

    async def _filters(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> dict[str, Any]:
            time_range = _time_range(request.query)
            _filters(request)  # refuses another tenant's name, as every data route does
            pinned = _reader(request).tenant
            # the operator's lists span every tenant, so that another one can be picked
            (row,) = await self._rows(request, queries.filter_values(time_range, pinned or ""))
            return {
                **{name: sorted(values) for name, values in row.items()},
                "pinned_tenant": pinned,
            }

        return await _json(answer)

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> dict[str, Any]:
            time_range = _time_range(request.query)
            filters = _filters(request)
            (totals,) = await self._rows(request, queries.overview_totals(time_range, filters))
            series = await self._rows(request, queries.overview_series(time_range, filters))
            by_model = await self._rows(request, queries.cost_by_model(time_range, filters))
            unpriced = await self._rows(request, queries.unpriced_reasons(time_range, filters))
            step = time_range.step_seconds()
            for row in series:
                row["spans_per_second"] = row["spans"] / step
                row["error_rate"] = row["errors"] / row["spans"] if row["spans"] else None
            totals["spans_per_second"] = totals["spans"] / time_range.seconds
            totals["error_rate"] = totals["errors"] / totals["spans"] if totals["spans"] else None
            return {
                **_range_json(time_range),
                "step_seconds": step,
                "cost_step_seconds": time_range.step_seconds(minimum=60),
                "totals": totals,
                "series": _columns(series),
                "cost_by_model": _pivot(by_model, "model", "cost"),
                "unpriced": unpriced,
            }

        return await _json(answer)

    async def _cost(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> dict[str, Any]:
            time_range = _time_range(request.query)
            filters = _filters(request)
            group_by = request.query.get("group_by", "service")
            if group_by not in queries.GROUP_BY_CHOICES:
                raise BadRequest(
                    f"unknown group_by {group_by!r}; known: {', '.join(queries.GROUP_BY_CHOICES)}"
                )
            limit = _integer(request.query, "limit", 50, 1, self._config.max_rows)
            breakdown = await self._rows(
                request, queries.cost_breakdown(time_range, filters, group_by, limit)
            )
            keys = [row["key"] for row in breakdown[:TOP_SERIES]]
            series = await self._rows(
                request, queries.cost_series(time_range, filters, group_by, keys)
            )
            return {
                **_range_json(time_range),
                "group_by": group_by,
                "step_seconds": time_range.step_seconds(minimum=60),
                "breakdown": breakdown,
                "series": _pivot(series, "key", "cost"),
                "total_cost": sum(row["cost"] for row in breakdown),
            }

        return await _json(answer)

    async def _drift(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> dict[str, Any]:
            time_range = _time_range(request.query)
            filters = _filters(request)
            limit = _integer(request.query, "limit", self._config.max_rows, 1, 10_000)
            results = await self._rows(request, queries.drift_results(time_range, filters, limit))
            alerts = await self._rows(
                request,
                queries.alerts(time_range, filters, rule="drift", limit=self._config.max_rows),
            )
            for row in results:
                row["evidence"] = _parse_json(row["evidence"])
                row["score"] = row["statistic"] / row["threshold"] if row["threshold"] else None
            timeline = [
                {
                    "bucket_ms": row["window_end_ms"],
                    "key": f"{row['feature']} · {row['detector']}",
                    "score": row["score"],
                }
                for row in results
            ]
            return {
                **_range_json(time_range),
                "results": results,
                "drifted": sum(1 for row in results if row["drifted"]),
                "timeline": _pivot(sorted(timeline, key=lambda r: r["bucket_ms"]), "key", "score"),
                "alerts": alerts,
            }

        return await _json(answer)

    async def _risk(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> dict[str, Any]:
            time_range = _time_range(request.query)
            filters = _filters(request)
            limit = _integer(request.query, "limit", 20, 1, self._config.max_rows)
            min_risk = _number(request.query, "min_risk", 0.0, 0.0, 1.0)
            histogram = await self._rows(request, queries.risk_histogram(time_range, filters))
            series = await self._rows(request, queries.risk_series(time_range, filters))
            riskiest = await self._rows(
                request, queries.riskiest(time_range, filters, min_risk=min_risk, limit=limit)
            )
            contexts: dict[tuple[str, str], dict[str, Any]] = {}
            if riskiest:
                rows = await self._rows(
                    request,
                    queries.span_context(
                        sorted({row["trace_id"] for row in riskiest}),
                        sorted({row["span_id"] for row in riskiest}),
                        filters.tenant,
                    ),
                )
                contexts = {(row["trace_id"], row["span_id"]): row for row in rows}
            for row in riskiest:
                row["details"] = _parse_json(row["details"])
                context = contexts.get((row["trace_id"], row["span_id"]))
                if context is not None:
                    context = dict(context)
                    context["retrieved_documents"] = _parse_json(context["retrieved_documents"])
                row["context"] = context
            bins = queries.HISTOGRAM_BINS
            by_bin = {row["bin"]: row for row in histogram}
            return {
                **_range_json(time_range),
                "histogram": {
                    "bin_start": [index / bins for index in range(bins)],
                    "scored": [by_bin.get(index, {}).get("scored", 0) for index in range(bins)],
                    "weighted": [
                        by_bin.get(index, {}).get("weighted", 0.0) for index in range(bins)
                    ],
                },
                "scored": sum(row["scored"] for row in histogram),
                "injection_flagged": sum(row["injection_flagged"] for row in histogram),
                "series": _columns(series),
                "riskiest": riskiest,
            }

        return await _json(answer)

    async def _alerts(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> dict[str, Any]:
            time_range = _time_range(request.query)
            filters = _filters(request)
            state = _choice(request.query, "state", ("", "firing", "resolved"))
            severity = _choice(request.query, "severity", ("", "info", "warning", "critical"))
            rule = _text(request.query, "rule")
            limit = _integer(
                request.query, "limit", self._config.max_rows, 1, self._config.max_rows
            )
            rows = await self._rows(
                request,
                queries.alerts(
                    time_range, filters, state=state, severity=severity, rule=rule, limit=limit
                ),
            )
            series = await self._rows(
                request,
                queries.alert_series(
                    time_range, filters, state=state, severity=severity, rule=rule
                ),
            )
            return {
                **_range_json(time_range),
                "alerts": rows,
                "firing": sum(1 for row in rows if row["state"] == "firing"),
                "series": _columns(series),
            }

        return await _json(answer)

    async def _spans(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> dict[str, Any]:
            time_range = _time_range(request.query)
            filters = _filters(request)
            trace_id = _text(request.query, "trace_id")
            if trace_id and not _TRACE_ID.match(trace_id):
                raise BadRequest("trace_id must be 1-64 letters, digits, '-' or '_'")
            query = queries.span_search(
                time_range,
                filters,
                trace_id=trace_id,
                status=_choice(request.query, "status", ("", "ok", "error", "unset")),
                span_type=_text(request.query, "span_type"),
                text=_text(request.query, "q"),
                min_duration_ms=_number(request.query, "min_duration_ms", 0.0, 0.0, 1e12),
                limit=_integer(request.query, "limit", 100, 1, self._config.max_rows),
            )
            spans = await self._rows(request, query)
            return {**_range_json(time_range), "spans": spans}

        return await _json(answer)

    async def _trace(self, request: web.Request) -> web.StreamResponse:
        async def answer() -> dict[str, Any]:
            trace_id = request.match_info["trace_id"]
            if not _TRACE_ID.match(trace_id):
                raise BadRequest("trace_id must be 1-64 letters, digits, '-' or '_'")
            tenant = _filters(request).tenant
            spans = await self._rows(request, queries.trace_spans(trace_id, tenant))
            scores = {
                row["span_id"]: row
                for row in await self._rows(request, queries.trace_scores(trace_id, tenant))
            }
            for span in spans:
                for name in (
                    "input_messages",
                    "output_messages",
                    "retrieved_documents",
                    "tool_calls",
                ):
                    span[name] = _parse_json(span[name])
                score = scores.get(span["span_id"])
                if score is not None:
                    score = dict(score)
                    score["details"] = _parse_json(score["details"])
                span["score"] = score
            return {
                "trace_id": trace_id,
                "spans": spans,
                "start_ms": min((span["timestamp_ms"] for span in spans), default=None),
                "end_ms": max((span["end_timestamp_ms"] for span in spans), default=None),
            }

        return await _json(answer)

    # -- ClickHouse ------------------------------------------------------------------------------

    async def _rows(self, request: web.Request, query: Query) -> list[dict[str, Any]]:
        pinned = _reader(request).tenant
        if pinned is not None and (
            "{tenant:String}" not in query.sql or query.parameters.get("tenant") != pinned
        ):  # a handler without the tenant filter: a bug, never an answer with others' data
            raise LlmtapError("internal error: a query of a tenant token is not tenant-scoped")
        return await asyncio.to_thread(self._query, query)

    def _query(self, query: Query) -> list[dict[str, Any]]:
        with self._query_lock:
            if self._client is None:
                raise LlmtapError("the dashboard is stopped")
            result = self._client.query(
                query.sql,
                parameters=query.parameters,
                settings={
                    "readonly": 2,
                    "max_execution_time": self._config.query_timeout_seconds,
                },
            )
            names = result.column_names
            return [
                {name: _plain(value) for name, value in zip(names, row, strict=True)}
                for row in result.result_rows
            ]


# -- request parsing -----------------------------------------------------------------------------


def _time_range(parameters: Mapping[str, str]) -> TimeRange:
    """``from``/``to`` in Unix milliseconds, or ``range`` (a preset) ending now."""
    start, end = parameters.get("from"), parameters.get("to")
    if start is not None or end is not None:
        if start is None or end is None:
            raise BadRequest("give both 'from' and 'to' (Unix milliseconds), or 'range'")
        try:
            start_ms, end_ms = int(start), int(end)
        except ValueError:
            raise BadRequest("'from' and 'to' must be whole Unix milliseconds") from None
        if not (0 <= start_ms < 2**53 and 0 <= end_ms < 2**53):
            raise BadRequest("'from' and 'to' are out of range")
    else:
        preset = parameters.get("range", DEFAULT_RANGE)
        if preset not in RANGE_PRESETS:
            raise BadRequest(f"unknown range {preset!r}; known: {', '.join(RANGE_PRESETS)}")
        end_ms = int(time.time() * 1000)
        start_ms = end_ms - RANGE_PRESETS[preset] * 1000
    try:
        return TimeRange(start_ms, end_ms)
    except ValueError as error:
        raise BadRequest(str(error)) from None


def _reader(request: web.Request) -> Reader:
    reader = request.get(_READER_KEY)
    if not isinstance(reader, Reader):  # a public path reads no data
        raise LlmtapError("internal error: a data query without an authenticated reader")
    return reader


def _filters(request: web.Request) -> Filters:
    """The request's filters, the tenant pinned for a tenant token (403 for another tenant)."""
    parameters = request.query
    tenant = _text(parameters, "tenant")
    pinned = _reader(request).tenant
    if pinned is not None:
        if tenant and tenant != pinned:
            raise Forbidden("this token reads its own tenant only")
        tenant = pinned
    return Filters(
        service=_text(parameters, "service"),
        tenant=tenant,
        model=_text(parameters, "model"),
    )


def _text(parameters: Mapping[str, str], name: str) -> str:
    value = parameters.get(name, "").strip()
    if len(value) > MAX_FILTER_LENGTH:
        raise BadRequest(f"'{name}' is longer than {MAX_FILTER_LENGTH} characters")
    return value


def _choice(parameters: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = parameters.get(name, "")
    if value not in choices:
        raise BadRequest(f"unknown {name} {value!r}; known: {', '.join(c for c in choices if c)}")
    return value


def _integer(
    parameters: Mapping[str, str], name: str, default: int, minimum: int, maximum: int
) -> int:
    raw = parameters.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be a whole number") from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"'{name}' must be between {minimum} and {maximum}")
    return value


def _number(
    parameters: Mapping[str, str], name: str, default: float, minimum: float, maximum: float
) -> float:
    raw = parameters.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be a number") from None
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise BadRequest(f"'{name}' must be between {minimum:g} and {maximum:g}")
    return value


# -- answers -------------------------------------------------------------------------------------


def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")


async def _json(answer: Callable[[], Awaitable[dict[str, Any]]]) -> web.Response:
    try:
        body = await answer()
    except BadRequest as error:
        return web.json_response({"error": str(error)}, status=400)
    except Forbidden as error:
        return web.json_response({"error": str(error)}, status=403)
    except LlmtapError as error:
        return web.json_response({"error": str(error)}, status=503)
    except Exception as error:  # a ClickHouse error: say which, keep the server up
        logger.warning("dashboard query failed: %s", error)
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0][:300]
        return web.json_response(
            {"error": f"ClickHouse query failed: {first_line} (did `llmtap migrate` run?)"},
            status=502,
        )
    return web.json_response(body, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _plain(value: Any) -> Any:
    """A ClickHouse value as JSON: NaN (a quantile of nothing) becomes null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _parse_json(text: str) -> Any:
    """Stored JSON text as a value; text that is not JSON (or was cut) stays text."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _range_json(time_range: TimeRange) -> dict[str, Any]:
    return {"from_ms": time_range.start_ms, "to_ms": time_range.end_ms}


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows as aligned columns (uPlot's data layout); keys from the first row."""
    if not rows:
        return {}
    return {name: [row[name] for row in rows] for name in rows[0]}


def _pivot(rows: list[dict[str, Any]], key: str, value: str) -> dict[str, Any]:
    """Long rows (bucket, key, value) as one aligned series per key, biggest total first.

    Keys past the TOP_SERIES biggest are summed into "(other)"; a bucket without a row for a
    key has null, so lines show gaps rather than invented zeros.
    """
    buckets = sorted({row["bucket_ms"] for row in rows})
    position = {bucket: index for index, bucket in enumerate(buckets)}
    totals: dict[str, float] = {}
    for row in rows:
        totals[row[key]] = totals.get(row[key], 0.0) + abs(row[value] or 0.0)
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    kept = set(ranked[:TOP_SERIES])
    series: dict[str, list[float | None]] = {}
    for row in rows:
        name = row[key] if row[key] in kept else "(other)"
        values = series.setdefault(name, [None] * len(buckets))
        index = position[row["bucket_ms"]]
        if row[value] is not None:
            values[index] = (values[index] or 0.0) + row[value]
    order = [name for name in ranked if name in series]
    if "(other)" in series and "(other)" not in order:
        order.append("(other)")
    return {"x": buckets, "series": [{"label": name, "values": series[name]} for name in order]}
