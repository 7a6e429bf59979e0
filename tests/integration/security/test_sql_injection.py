"""Hostile text in every parameter of every API route and every `llmtap query` option.

Each value must come back as a clean answer (200 with nothing found, 400 or 401/403, a usage
error for the CLI), never a server error; a tenant token must still see its own tenant only;
and every table must still be there with the rows it had.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from llmtap.cli import cli
from llmtap.cli_query import query as query_group
from llmtap.clickhouse import open_target
from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.web import server
from tests.integration.web.conftest import DashboardThread, dashboard_settings
from tests.integration.web.tenants import ALPHA, BRAVO, row_counts, seed_tenants
from tests.integration.web.test_tenant_isolation import DATA_CALLS

pytestmark = pytest.mark.integration

HOSTILE = [
    "' OR 1=1 --",
    "x'); DROP TABLE llm_spans; --",
    "\\'",
    "\\' OR tenant = 'bravo' --",
    "bravo' OR tenant != '",
    "' UNION ALL SELECT name, name, name FROM system.tables --",
    "\u2019 OR \u20181\u2019=\u20181",  # typographic quotes
    "\uff07 OR 1=1 --",  # fullwidth apostrophe
    "{tenant:String}",
    "{start_ms:Int64}",
    "alpha\x00' OR 1=1 --",
    "\x00",
    "%27%20OR%201%3D1",
    "x" * 5000,
    "9" * 5000 + "d",
]
OPERATOR_TOKEN = "operator-token-0123456789"
ALPHA_TOKEN = "alpha-token-0123456789"


def api_parameters() -> tuple[set[str], set[str]]:
    """Every query parameter the server reads, found in its source: (free text, the others)."""
    source = Path(server.__file__).read_text()
    text = set(re.findall(r'_text\(\s*[\w.]+,\s*"(\w+)"', source))
    others = set(re.findall(r'(?:_choice|_integer|_number)\(\s*[\w.]+,\s*"(\w+)"', source))
    others |= set(re.findall(r'(?:parameters|request\.query)\.get\(\s*"(\w+)"', source))
    return text, others - text


def get(url: str, path: str, parameters: dict[str, str], token: str) -> tuple[int, str]:
    query = urllib.parse.urlencode(parameters)
    message = urllib.request.Request(f"{url}{path}{'?' + query if query else ''}")
    message.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(message, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def seeded_target(clickhouse_client: Any, clickhouse_target: ClickHouseTarget) -> ClickHouseTarget:
    seed_tenants(clickhouse_client, clickhouse_target.database)
    return clickhouse_target


@pytest.fixture
def guarded(seeded_target: ClickHouseTarget, tmp_path: Path) -> Iterator[DashboardThread]:
    settings = dashboard_settings(
        seeded_target,
        tmp_path,
        auth_token=OPERATOR_TOKEN,
        tenant_tokens=[{"tenant": ALPHA.name, "token": ALPHA_TOKEN}],
    )
    running = DashboardThread(settings)
    try:
        yield running
    finally:
        running.close()


def test_the_parameter_list_is_complete() -> None:
    text, others = api_parameters()
    assert {"service", "tenant", "model", "q", "rule", "trace_id", "span_type"} <= text, text
    assert {"range", "from", "to", "group_by", "limit", "state", "min_risk"} <= others, others


def test_hostile_parameters_on_every_route(
    guarded: DashboardThread, clickhouse_client: Any
) -> None:
    before = row_counts(clickhouse_client)
    text, others = api_parameters()
    for route in DATA_CALLS:
        for hostile in HOSTILE:
            if "{trace_id}" in route:
                path = route.format(trace_id=urllib.parse.quote(hostile, safe=""))
                requests = [(path, {}, True)]
            else:
                requests = [(route, {name: hostile}, name in text) for name in text | others]
            for path, query, free_text in requests:
                # the values that reach ClickHouse go in with both kinds of token
                for token in (ALPHA_TOKEN, OPERATOR_TOKEN) if free_text else (ALPHA_TOKEN,):
                    status, body = get(guarded.url, path, query, token)
                    allowed = {200, 400, 404} | ({403} if token == ALPHA_TOKEN else set())
                    assert status in allowed, (path, query, token, status, body[:500])
                    if status == 400 or status == 403:  # says why (it may quote the value)
                        assert list(json.loads(body)) == ["error"], body[:500]
                    if status != 200:
                        continue
                    if token == ALPHA_TOKEN:
                        leaked = [marker for marker in BRAVO.markers() if marker in body]
                        assert not leaked, (path, query, body[:2000])
    # still there, with the same rows; "system.tables" never answered anything either
    assert row_counts(clickhouse_client) == before


def test_hostile_cli_options(seeded_target: ClickHouseTarget, clickhouse_client: Any) -> None:
    before = row_counts(clickhouse_client)
    clickhouse_client.close()  # the CLI opens its own client on the same engine path
    environment = {
        "LLMTAP_CLICKHOUSE__DSN": f"chdb://{seeded_target.path}",
        "LLMTAP_CLICKHOUSE__DATABASE": seeded_target.database,
    }
    runner = CliRunner()
    for name, command in query_group.commands.items():
        options = [
            param.opts[0]
            for param in command.params
            if isinstance(param, click.Option) and not param.is_flag
        ]
        assert "--tenant" in options
        for option in options:
            for hostile in HOSTILE:
                arguments = ["query", name, "--format", "json", option, hostile]
                if option != "--tenant":
                    arguments += ["--tenant", ALPHA.name]
                result = runner.invoke(cli, arguments, env=environment)
                # 0: ran (nothing matched), 2: refused as a usage error; never a crash
                assert result.exit_code in (0, 2), (arguments, result.output, result.exception)
                if result.exit_code != 0:
                    continue  # a usage error, which may quote the value
                leaked = [marker for marker in BRAVO.markers() if marker in result.output]
                assert not leaked, (arguments, result.output)
                if option == "--tenant":
                    assert result.output.strip() == "[]", (arguments, result.output)
    client = open_target(seeded_target, create_database=False)
    try:
        assert row_counts(client) == before
    finally:
        client.close()
