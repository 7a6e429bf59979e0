"""How the dashboard tells readers apart and pins a tenant token (no engine needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from llmtap.errors import LlmtapError
from llmtap.settings import Settings
from llmtap.web import queries
from llmtap.web.queries import Query, TimeRange
from llmtap.web.server import _READER_KEY, OPERATOR, Forbidden, Reader, WebDashboard, _filters

OPERATOR_TOKEN = "operator-token-0123456789"
ACME_TOKEN = "acme-token-0123456789"


def dashboard(tmp_path: Path) -> WebDashboard:
    settings = Settings(
        data_dir=tmp_path,
        web={
            "auth_token": OPERATOR_TOKEN,
            "tenant_tokens": [{"tenant": "acme", "token": ACME_TOKEN}],
        },
    )
    return WebDashboard(settings, progress=print)


def test_each_token_names_its_reader(tmp_path: Path) -> None:
    server = dashboard(tmp_path)
    assert server._reader_of(f"Bearer {OPERATOR_TOKEN}") == OPERATOR
    assert server._reader_of(f"bearer {ACME_TOKEN} ") == Reader(tenant="acme")
    for refused in ("", "Bearer", f"Basic {ACME_TOKEN}", f"Bearer {ACME_TOKEN}x", "Bearer x"):
        assert server._reader_of(refused) is None


def test_a_tenant_token_is_pinned_and_refused_other_tenants() -> None:
    def request(path: str, reader: Reader) -> web.Request:
        mocked = make_mocked_request("GET", path)
        mocked[_READER_KEY] = reader
        return mocked

    acme = Reader(tenant="acme")
    assert _filters(request("/api/overview", acme)).tenant == "acme"
    assert _filters(request("/api/overview?tenant=acme", acme)).tenant == "acme"
    with pytest.raises(Forbidden):
        _filters(request("/api/overview?tenant=globex", acme))
    assert _filters(request("/api/overview?tenant=globex", OPERATOR)).tenant == "globex"
    assert _filters(request("/api/overview", OPERATOR)).tenant == ""


def test_a_query_without_the_tenant_filter_never_runs_for_a_tenant_token(
    tmp_path: Path,
) -> None:
    server = dashboard(tmp_path)
    request = make_mocked_request("GET", "/api/overview")
    request[_READER_KEY] = Reader(tenant="acme")
    time_range = TimeRange(0, 3_600_000)
    unscoped = [
        Query("SELECT count() FROM llm_spans"),
        # the filter, but another tenant's value: as wrong as no filter
        queries.filter_values(time_range, "globex"),
        queries.filter_values(time_range, ""),
    ]
    for query in unscoped:
        with pytest.raises(LlmtapError, match="not tenant-scoped"):
            asyncio.run(server._rows(request, query))
