"""The dashboard's settings and the query builder's rules (no engine needed)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from llmtap.settings import load_settings
from llmtap.web import queries
from llmtap.web.config import WebConfig
from llmtap.web.queries import Filters, TimeRange


def test_defaults_listen_on_loopback_without_auth() -> None:
    config = WebConfig()
    assert (config.enabled, config.address, config.port, config.auth_token) == (
        True,
        "127.0.0.1",
        8080,
        None,
    )


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.10", "::", "dashboard.example"])  # noqa: S104
def test_a_remote_address_needs_a_token(address: str) -> None:
    with pytest.raises(ValidationError, match="set auth_token"):
        WebConfig(address=address)
    config = WebConfig(address=address, auth_token="a-long-enough-token")  # type: ignore[arg-type]
    assert config.auth_token is not None


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_addresses_need_no_token(address: str) -> None:
    assert WebConfig(address=address).address == address


def test_tenant_tokens_alone_allow_a_remote_address() -> None:
    config = WebConfig(
        address="0.0.0.0",  # noqa: S104
        tenant_tokens=[{"tenant": "acme", "token": "acme-token-0123456789"}],  # type: ignore[list-item]
    )
    assert config.auth_required
    assert config.tenant_tokens[0].tenant == "acme"


@pytest.mark.parametrize(
    ("entries", "auth_token", "message"),
    [
        ([{"tenant": "acme", "token": "short"}], None, "shorter than 16"),
        ([{"tenant": "", "token": "acme-token-0123456789"}], None, "String should match"),
        ([{"tenant": "a b", "token": "acme-token-0123456789"}], None, "String should match"),
        (
            [
                {"tenant": "acme", "token": "shared-token-0123456789"},
                {"tenant": "globex", "token": "shared-token-0123456789"},
            ],
            None,
            "listed twice",
        ),
        (
            [{"tenant": "acme", "token": "shared-token-0123456789"}],
            "shared-token-0123456789",
            "listed twice",
        ),
    ],
)
def test_tenant_tokens_are_validated(
    entries: list[dict[str, str]], auth_token: str | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        WebConfig(tenant_tokens=entries, auth_token=auth_token)  # type: ignore[arg-type]


def test_short_tokens_and_unknown_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="shorter than 16"):
        WebConfig(auth_token="short")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Extra inputs"):
        WebConfig(listen="0.0.0.0")  # type: ignore[call-arg]  # noqa: S104


def test_settings_read_the_web_section_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMTAP_WEB__PORT", "0")
    monkeypatch.setenv("LLMTAP_WEB__AUTH_TOKEN", "environment-token-123")
    settings = load_settings()
    assert settings.web.port == 0
    assert settings.web.auth_token is not None
    assert "environment-token-123" not in str(settings.model_dump(mode="json"))


def test_buckets_split_a_range_into_at_most_240() -> None:
    hour = TimeRange(0, 3_600_000)
    assert hour.step_seconds() == 30
    assert hour.step_seconds(minimum=60) == 60
    assert TimeRange(0, 7 * 86_400_000).step_seconds() == 3600
    assert TimeRange(0, 300_000).step_seconds() == 10
    with pytest.raises(ValueError, match="ends before"):
        TimeRange(5, 5)


def test_request_values_only_travel_as_parameters() -> None:
    """Every statement names its values as {name:Type}; none holds a request's text."""
    hostile = "x'); DROP TABLE llm_spans; --"
    time_range = TimeRange(0, 3_600_000)
    filters = Filters(service=hostile, tenant=hostile, model=hostile)
    built = [
        queries.overview_series(time_range, filters),
        queries.overview_totals(time_range, filters),
        queries.cost_by_model(time_range, filters),
        queries.unpriced_reasons(time_range, filters),
        *(
            queries.cost_breakdown(time_range, filters, group_by, 10)
            for group_by in queries.GROUP_BY_CHOICES
        ),
        queries.cost_series(time_range, filters, "service", [hostile]),
        queries.drift_results(time_range, filters, 10),
        queries.alerts(time_range, filters, rule=hostile, limit=10),
        queries.alert_series(time_range, filters, rule=hostile),
        queries.risk_histogram(time_range, filters),
        queries.risk_series(time_range, filters),
        queries.riskiest(time_range, filters, min_risk=0.5, limit=10),
        queries.span_context([hostile], [hostile], hostile),
        queries.span_search(time_range, filters, text=hostile, limit=10),
        queries.trace_spans(hostile, hostile),
        queries.trace_scores(hostile, hostile),
        queries.filter_values(time_range, hostile),
    ]
    for query in built:
        assert hostile not in query.sql
        named = set(re.findall(r"\{(\w+):[^}]+\}", query.sql))
        assert named <= set(query.parameters), query.sql
        # the server pins a tenant token to its tenant through this parameter
        assert "{tenant:String}" in query.sql, query.sql
        assert query.parameters["tenant"] == hostile, query.sql
    finals = [q for q in built if "llm_aggregates" in q.sql or "alerts " in q.sql]
    assert all("FINAL" in query.sql for query in finals)
    with pytest.raises(ValueError, match="unknown group_by"):
        queries.cost_breakdown(time_range, filters, "service_name", 10)
