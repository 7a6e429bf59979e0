"""Tenant isolation of the dashboard's API: a tenant token reads its own tenant on every route.

The routes are read from the application's router, so a new route fails
``test_every_route_is_checked`` until it is added to DATA_CALLS (called here with each kind of
token), PUBLIC_ROUTES (no stored data) or OPERATOR_ONLY_ROUTES.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.settings import Settings
from llmtap.web import queries
from llmtap.web.server import WebDashboard
from tests.integration.web.conftest import DashboardThread, dashboard_settings
from tests.integration.web.tenants import ALPHA, BRAVO, SHARED_TRACE_ID, Tenant, seed_tenants

pytestmark = pytest.mark.integration

OPERATOR_TOKEN = "operator-token-0123456789"
TOKENS = {ALPHA.name: "alpha-token-0123456789", BRAVO.name: "bravo-token-0123456789"}

# Every data route, with the requests that exercise it (the path's {trace_id} filled in).
DATA_CALLS: dict[str, list[dict[str, str]]] = {
    "/api/filters": [{}],
    "/api/overview": [{}, {"range": "7d"}],
    "/api/cost": [{"group_by": group_by} for group_by in queries.GROUP_BY_CHOICES]
    + [{"group_by": "tenant", "range": "7d"}],
    "/api/drift": [{}],
    "/api/risk": [{}, {"min_risk": "0"}],
    "/api/alerts": [{}, {"rule": "drift"}],
    "/api/spans": [
        {},
        {"trace_id": SHARED_TRACE_ID},
        {"trace_id": BRAVO.trace_id},
        {"trace_id": ALPHA.trace_id},
        {"q": "bravo"},
        {"q": "alpha"},
    ],
    "/api/traces/{trace_id}": [
        {"trace_id": SHARED_TRACE_ID},
        {"trace_id": BRAVO.trace_id},
        {"trace_id": ALPHA.trace_id},
    ],
}
# No stored data: the page, its files, liveness and the page's settings.
PUBLIC_ROUTES = {"/": "/", "/api/health": "/api/health", "/api/config": "/api/config"}
PUBLIC_ROUTES["/static"] = "/static/app.js"
# Routes a tenant token may not call at all (none today: every table has a tenant column).
OPERATOR_ONLY_ROUTES: set[str] = set()


def request(url: str, route: str, parameters: dict[str, str], token: str | None) -> tuple[int, str]:
    parameters = dict(parameters)
    path = route.format(trace_id=parameters.pop("trace_id")) if "{" in route else route
    query = urllib.parse.urlencode(parameters)
    message = urllib.request.Request(f"{url}{path}{'?' + query if query else ''}")
    if token is not None:
        message.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(message, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def calls() -> Iterator[tuple[str, dict[str, str]]]:
    for route, parameter_sets in DATA_CALLS.items():
        for parameters in parameter_sets:
            yield route, parameters


def leaked(body: str, other: Tenant, asked: dict[str, str] | None = None) -> list[str]:
    """The other tenant's markers in an answer, but for those the request itself named (an
    answer may echo the trace id asked for)."""
    echoed = " ".join((asked or {}).values())
    return [marker for marker in other.markers() if marker in body and marker not in echoed]


@pytest.fixture
def guarded(
    clickhouse_client: Any, clickhouse_target: ClickHouseTarget, tmp_path: Path
) -> Iterator[DashboardThread]:
    seed_tenants(clickhouse_client, clickhouse_target.database)
    settings = dashboard_settings(
        clickhouse_target,
        tmp_path,
        auth_token=OPERATOR_TOKEN,
        tenant_tokens=[{"tenant": name, "token": token} for name, token in TOKENS.items()],
    )
    running = DashboardThread(settings)
    try:
        yield running
    finally:
        running.close()


def test_every_route_is_checked(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, web={"port": 0})  # type: ignore[arg-type]
    dashboard = WebDashboard(settings, progress=print)  # the router needs no store
    routes = {resource.canonical for resource in dashboard.application().router.resources()}
    classified = set(DATA_CALLS) | set(PUBLIC_ROUTES) | OPERATOR_ONLY_ROUTES
    assert routes == classified, (
        f"unchecked routes: {sorted(routes - classified)}; "
        f"gone routes still listed: {sorted(classified - routes)}"
    )


@pytest.mark.parametrize(("reader", "other"), [(ALPHA, BRAVO), (BRAVO, ALPHA)])
def test_a_tenant_token_reads_its_own_tenant_on_every_route(
    guarded: DashboardThread, reader: Tenant, other: Tenant
) -> None:
    token = TOKENS[reader.name]
    seen_own: dict[str, bool] = dict.fromkeys(DATA_CALLS, False)
    for route, parameters in calls():
        status, body = request(guarded.url, route, parameters, token)
        assert status == 200, (route, parameters, body)
        assert not leaked(body, other, parameters), (route, parameters, body[:2000])
        seen_own[route] = seen_own[route] or reader.name in body
        # naming the own tenant is allowed; naming the other one is refused
        status, body = request(guarded.url, route, {**parameters, "tenant": reader.name}, token)
        assert status == 200, (route, parameters, body)
        assert not leaked(body, other, parameters)
        status, body = request(guarded.url, route, {**parameters, "tenant": other.name}, token)
        assert status == 403, (route, parameters, body)
        assert not leaked(body, other)
    # the test is not vacuous: every route answered with this tenant's own rows
    assert all(seen_own.values()), seen_own
    for path in PUBLIC_ROUTES.values():
        status, body = request(guarded.url, path, {}, token)
        assert status == 200
        assert not leaked(body, other)


def test_tenant_token_answers_hold_the_tenants_numbers_only(guarded: DashboardThread) -> None:
    def answer(route: str, token: str, **parameters: str) -> Any:
        status, body = request(guarded.url, route, parameters, token)
        assert status == 200, body
        return json.loads(body)

    alpha, operator = TOKENS[ALPHA.name], OPERATOR_TOKEN
    assert answer("/api/overview", alpha)["totals"]["spans"] == 4
    assert answer("/api/overview", operator)["totals"]["spans"] == 8
    assert answer("/api/cost", alpha, group_by="tenant")["breakdown"][0]["key"] == "alpha"
    assert len(answer("/api/cost", operator, group_by="tenant")["breakdown"]) == 2
    filters = answer("/api/filters", alpha)
    assert (filters["tenants"], filters["pinned_tenant"]) == (["alpha"], "alpha")
    assert answer("/api/filters", operator)["tenants"] == ["alpha", "bravo"]
    assert answer("/api/filters", operator)["pinned_tenant"] is None
    shared = answer(f"/api/traces/{SHARED_TRACE_ID}", alpha)["spans"]
    assert [span["tenant"] for span in shared] == ["alpha"]
    assert shared[0]["span_id"] == ALPHA.span_ids[3]
    assert shared[0]["score"]["details"] == {"reason": "alpha"}
    assert len(answer(f"/api/traces/{SHARED_TRACE_ID}", operator)["spans"]) == 2
    assert answer(f"/api/traces/{BRAVO.trace_id}", alpha)["spans"] == []
    risky = answer("/api/risk", alpha)["riskiest"]
    assert {row["context"]["prompt_text"] for row in risky} == {"prompt alpha"}
    assert {alert["tenant"] for alert in answer("/api/alerts", alpha)["alerts"]} == {"alpha"}
    assert {row["tenant"] for row in answer("/api/drift", alpha)["results"]} == {"alpha"}
    # the operator may still narrow to one tenant
    assert answer("/api/overview", operator, tenant="bravo")["totals"]["spans"] == 4


def test_the_operator_token_reads_every_tenant(guarded: DashboardThread) -> None:
    seen: dict[str, set[str]] = {route: set() for route in DATA_CALLS}
    for route, parameters in calls():
        status, body = request(guarded.url, route, parameters, OPERATOR_TOKEN)
        assert status == 200, (route, parameters, body)
        seen[route] |= {tenant.name for tenant in (ALPHA, BRAVO) if tenant.name in body}
    assert all(names == {"alpha", "bravo"} for names in seen.values()), seen


def test_without_a_valid_token_every_data_route_is_401(guarded: DashboardThread) -> None:
    for route, parameters in calls():
        for token in (None, "wrong-token-0123456789", TOKENS["alpha"] + "x", ""):
            status, body = request(guarded.url, route, parameters, token)
            assert status == 401, (route, token, body)
            assert not leaked(body, ALPHA)
            assert not leaked(body, BRAVO)
    status, body = request(guarded.url, "/api/config", {}, None)
    assert (status, json.loads(body)["auth_required"]) == (200, True)
