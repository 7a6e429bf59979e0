"""The dashboard's JSON API over real HTTP on the embedded engine: answers, validation, auth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.web.queries import Query
from tests.integration.web.conftest import DashboardThread, Seed, dashboard_settings

pytestmark = pytest.mark.integration


def get(
    url: str, path: str, headers: dict[str, str] | None = None, **parameters: Any
) -> tuple[int, Any, dict[str, str]]:
    query = urllib.parse.urlencode(parameters)
    request = urllib.request.Request(f"{url}{path}{'?' + query if query else ''}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body, status, response_headers = response.read(), response.status, response.headers
    except urllib.error.HTTPError as error:
        body, status, response_headers = error.read(), error.code, error.headers
    content_type = response_headers.get("Content-Type", "")
    value = json.loads(body) if content_type.startswith("application/json") else body
    return status, value, dict(response_headers)


def ok(url: str, path: str, **parameters: Any) -> Any:
    status, body, _ = get(url, path, **parameters)
    assert status == 200, body
    return body


def test_overview_counts_every_span_once(dashboard: DashboardThread, seeded: Seed) -> None:
    body = ok(dashboard.url, "/api/overview", range="1h")
    totals = body["totals"]
    assert totals["spans"] == seeded.spans
    assert totals["llm_calls"] == seeded.llm_calls
    assert totals["errors"] == seeded.errors
    assert totals["unpriced_calls"] == seeded.unpriced_calls
    assert totals["traces"] == seeded.llm_calls
    assert totals["cost"] == pytest.approx(seeded.cost, rel=1e-9)
    assert totals["error_rate"] == pytest.approx(seeded.errors / seeded.spans)
    assert 0 < totals["p50_ms"] < totals["p95_ms"]
    series = body["series"]
    assert sum(series["spans"]) == seeded.spans
    assert len(series["bucket_ms"]) > 50
    assert series["bucket_ms"] == sorted(series["bucket_ms"])
    models = {item["label"] for item in body["cost_by_model"]["series"]}
    assert models == {"gpt-4o-mini", "gpt-4o", "claude-3-5-haiku"}
    total = sum(v or 0 for item in body["cost_by_model"]["series"] for v in item["values"])
    assert total == pytest.approx(seeded.cost, rel=1e-9)
    assert sum(row["calls"] for row in body["unpriced"]) == seeded.unpriced_calls
    assert body["unpriced"][0]["reason"] == "unknown_model"


def test_overview_filters_and_explicit_ranges(dashboard: DashboardThread, seeded: Seed) -> None:
    one_service = ok(dashboard.url, "/api/overview", service="chat-api")["totals"]
    assert one_service["llm_calls"] == seeded.llm_calls / 3
    now = seeded.now_ms
    last_ten_minutes = ok(dashboard.url, "/api/overview", **{"from": now - 600_000, "to": now})
    assert 0 < last_ten_minutes["totals"]["spans"] < seeded.spans
    assert last_ten_minutes["step_seconds"] == 10
    nothing = ok(dashboard.url, "/api/overview", **{"from": 0, "to": 1000})["totals"]
    assert (nothing["spans"], nothing["p50_ms"], nothing["error_rate"]) == (0, None, None)


@pytest.mark.parametrize("group_by", ["service", "tenant", "model", "prompt_version", "user"])
def test_cost_breakdown_reads_the_current_window_versions(
    dashboard: DashboardThread, seeded: Seed, group_by: str
) -> None:
    body = ok(dashboard.url, "/api/cost", group_by=group_by)
    breakdown = {row["key"]: row for row in body["breakdown"]}
    # each window was stored twice, version 1 with half the cost: FINAL keeps version 2 only
    assert body["total_cost"] == pytest.approx(seeded.cost, rel=1e-9)
    assert sum(row["requests"] for row in breakdown.values()) == seeded.llm_calls
    if group_by == "service":
        for service, cost in seeded.cost_by_service.items():
            assert breakdown[service]["cost"] == pytest.approx(cost, rel=1e-9)
    costs = [row["cost"] for row in body["breakdown"]]
    assert costs == sorted(costs, reverse=True)
    series_total = sum(v or 0 for item in body["series"]["series"] for v in item["values"])
    assert series_total == pytest.approx(seeded.cost, rel=1e-9)


def test_cost_reads_hour_windows_for_long_ranges(dashboard: DashboardThread, seeded: Seed) -> None:
    week = ok(dashboard.url, "/api/cost", range="7d", group_by="tenant")
    assert week["step_seconds"] == 3600
    assert week["total_cost"] == pytest.approx(seeded.cost, rel=1e-9)
    assert all(x % 3_600_000 == 0 for x in week["series"]["x"])


def test_drift_results_with_evidence_and_drift_alerts(
    dashboard: DashboardThread, seeded: Seed
) -> None:
    body = ok(dashboard.url, "/api/drift")
    assert len(body["results"]) == seeded.drift_rows
    assert body["drifted"] == seeded.drifted_rows
    first = body["results"][0]
    assert first["evidence"]["examples"][0].startswith("Prompt example")
    assert first["score"] == pytest.approx(first["statistic"] / first["threshold"])
    labels = {item["label"] for item in body["timeline"]["series"]}
    assert labels == {"prompt_embedding · mmd", "output_tokens · ks"}
    assert [alert["rule_id"] for alert in body["alerts"]] == ["drift.prompt_embedding"]


def test_risk_distribution_and_riskiest_responses_with_context(
    dashboard: DashboardThread, seeded: Seed
) -> None:
    body = ok(dashboard.url, "/api/risk", limit=5)
    assert sum(body["histogram"]["scored"]) == seeded.llm_calls == body["scored"]
    assert len(body["histogram"]["bin_start"]) == 20
    riskiest = body["riskiest"]
    assert len(riskiest) == 5
    assert (riskiest[0]["trace_id"], riskiest[0]["span_id"]) == seeded.riskiest_span
    scores = [row["risk_score"] for row in riskiest]
    assert scores == sorted(scores, reverse=True)
    context = riskiest[0]["context"]
    assert context["prompt_text"].startswith("How do I get a refund")
    assert context["retrieved_documents"][0]["content"].startswith("Refund policy")
    assert riskiest[0]["details"]["sentences"][0]["support"] == 0.4
    high = ok(dashboard.url, "/api/risk", min_risk=0.99)["riskiest"]
    assert all(row["risk_score"] >= 0.99 for row in high)


def test_alerts_are_listed_once_in_their_latest_state(
    dashboard: DashboardThread, seeded: Seed
) -> None:
    body = ok(dashboard.url, "/api/alerts")
    assert len(body["alerts"]) == seeded.alerts
    assert body["firing"] == seeded.firing_alerts
    fired = [alert["fired_at_ms"] for alert in body["alerts"]]
    assert fired == sorted(fired, reverse=True)
    assert (
        sum(body["series"]["critical"])
        + sum(body["series"]["warning"])
        + sum(body["series"]["info"])
        == seeded.alerts
    )
    resolved = ok(dashboard.url, "/api/alerts", state="resolved")["alerts"]
    assert {alert["rule_id"] for alert in resolved} == {"errors.rate", "latency.p95"}
    assert all(alert["resolved_at_ms"] for alert in resolved)
    critical = ok(dashboard.url, "/api/alerts", severity="critical")["alerts"]
    assert [alert["rule_id"] for alert in critical] == ["cost.budget"]


def test_span_search_and_trace_detail(dashboard: DashboardThread, seeded: Seed) -> None:
    spans = ok(dashboard.url, "/api/spans", q="ORDER 42?")["spans"]
    assert len(spans) == 1
    assert spans[0]["name"].startswith("chat ")
    trace_id = spans[0]["trace_id"]
    by_trace = ok(dashboard.url, "/api/spans", trace_id=trace_id)["spans"]
    assert len(by_trace) == 2
    errors = ok(dashboard.url, "/api/spans", status="error", limit=500)["spans"]
    assert len(errors) == seeded.errors
    slow = ok(dashboard.url, "/api/spans", min_duration_ms=2500, limit=500)["spans"]
    assert slow
    assert all(span["duration_ms"] >= 2500 for span in slow)
    assert len(ok(dashboard.url, "/api/spans", limit=7)["spans"]) == 7

    trace = ok(dashboard.url, f"/api/traces/{trace_id}")
    root, llm = trace["spans"]
    assert llm["parent_span_id"] == root["span_id"]
    assert llm["prompt_text"] == "How do I get a refund for order 42?"
    assert llm["retrieved_documents"][0]["id"] == "doc-42"
    assert llm["attributes"] == {"server.address": "api.example.com"}
    assert llm["score"]["details"]["sentences"]
    assert root["score"] is None
    assert trace["start_ms"] == root["timestamp_ms"]
    assert ok(dashboard.url, "/api/traces/0123456789abcdef")["spans"] == []


def test_filter_values(dashboard: DashboardThread, seeded: Seed) -> None:
    body = ok(dashboard.url, "/api/filters")
    assert body == {
        "services": ["chat-api", "search-api", "support-bot"],
        "tenants": ["acme", "globex"],
        "models": ["claude-3-5-haiku", "gpt-4o", "gpt-4o-mini"],
        "pinned_tenant": None,
    }


@pytest.mark.parametrize(
    ("path", "parameters", "message"),
    [
        ("/api/overview", {"from": 2000, "to": 1000}, "ends before it starts"),
        ("/api/overview", {"from": "yesterday", "to": 1000}, "whole Unix milliseconds"),
        ("/api/overview", {"from": 1000}, "give both"),
        ("/api/overview", {"from": 0, "to": 500 * 86_400_000}, "longer than 400 days"),
        ("/api/overview", {"range": "2w"}, "unknown range"),
        ("/api/overview", {"service": "x" * 201}, "longer than 200"),
        ("/api/cost", {"group_by": "service_name; DROP TABLE llm_spans"}, "unknown group_by"),
        ("/api/cost", {"limit": 0}, "between 1 and"),
        ("/api/cost", {"limit": "ten"}, "whole number"),
        ("/api/risk", {"min_risk": "nan"}, "between 0 and 1"),
        ("/api/alerts", {"state": "exploded"}, "unknown state"),
        ("/api/spans", {"trace_id": "abc' OR 1=1"}, "trace_id must be"),
        ("/api/spans", {"min_duration_ms": -1}, "between 0"),
        ("/api/traces/abc'%20OR%201=1", {}, "trace_id must be"),
    ],
)
def test_bad_parameters_are_answered_400(
    dashboard: DashboardThread, path: str, parameters: dict[str, Any], message: str
) -> None:
    status, body, _ = get(dashboard.url, path, **parameters)
    assert status == 400, body
    assert message in body["error"]


def test_parameters_cannot_inject_sql(
    dashboard: DashboardThread, seeded: Seed, clickhouse_client: Any
) -> None:
    for hostile in (
        "x' OR '1'='1",
        "' UNION ALL SELECT * FROM system.tables --",
        "chat-api'; DROP TABLE llm_spans; --",
        "\\' OR 1=1 --",
    ):
        for path in ("/api/overview", "/api/cost", "/api/risk", "/api/drift"):
            status, body, _ = get(dashboard.url, path, service=hostile, tenant=hostile)
            assert status == 200, body
        assert ok(dashboard.url, "/api/overview", service=hostile)["totals"]["spans"] == 0
        assert ok(dashboard.url, "/api/spans", q=hostile)["spans"] == []
        assert ok(dashboard.url, "/api/alerts", rule=hostile)["alerts"] == []
    assert clickhouse_client.command("SELECT count() FROM llm_spans") == seeded.spans


def test_queries_run_read_only(dashboard: DashboardThread, seeded: Seed) -> None:
    with pytest.raises(Exception, match="readonly"):
        dashboard.dashboard._query(Query("CREATE TABLE hijack (a UInt8) ENGINE = Memory"))
    with pytest.raises(Exception, match="readonly"):
        dashboard.dashboard._query(Query("INSERT INTO alerts (rule_id) VALUES ('x')"))


def test_page_static_files_and_headers(dashboard: DashboardThread) -> None:
    status, page, headers = get(dashboard.url, "/")
    assert status == 200
    assert b'<script src="/static/app.js"' in page
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    for name in ("app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"):
        assert get(dashboard.url, f"/static/{name}")[0] == 200
    assert get(dashboard.url, "/static/../server.py")[0] in (403, 404)
    status, _, headers = get(dashboard.url, "/no-such-page")
    assert status == 404
    assert headers["X-Content-Type-Options"] == "nosniff"
    _, _, api_headers = get(dashboard.url, "/api/health")
    assert api_headers["Cache-Control"] == "no-store"


def test_a_token_guards_every_data_endpoint(
    seeded: Seed, clickhouse_target: ClickHouseTarget, tmp_path: Path
) -> None:
    token = "s3cret-token-for-the-dashboard"
    running = DashboardThread(dashboard_settings(clickhouse_target, tmp_path, auth_token=token))
    try:
        url = running.url
        for path in ("/api/overview", "/api/cost", "/api/spans", "/api/traces/abc"):
            status, _, headers = get(url, path)
            assert status == 401, path
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert get(url, path, {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
            assert get(url, path, {"Authorization": f"Basic {token}"})[0] == 401
            assert get(url, path, {"Authorization": f"Bearer {token}"})[0] == 200
        # the page and the settings it needs to ask for the token stay reachable
        assert get(url, "/")[0] == 200
        assert get(url, "/api/health")[0] == 200
        assert ok(url, "/api/config")["auth_required"] is True
    finally:
        running.close()


def test_a_database_without_tables_gets_an_actionable_answer(
    clickhouse_target: ClickHouseTarget, clickhouse_client: Any, tmp_path: Path
) -> None:
    running = DashboardThread(dashboard_settings(clickhouse_target, tmp_path))
    try:
        status, body, _ = get(running.url, "/api/overview")
        assert status == 502
        assert "llmtap migrate" in body["error"]
        assert get(running.url, "/api/health")[0] == 200
    finally:
        running.close()


def run_llmtap(
    *arguments: str, data_dir: Path, **environment: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLMTAP_")},
        "LLMTAP_DATA_DIR": str(data_dir),
        **environment,
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "llmtap"), *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_ui_serves_the_dashboard_until_its_duration(tmp_path: Path) -> None:
    result = run_llmtap("ui", "--port", "0", "--duration-seconds", "2", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dashboard   http://127.0.0.1:" in result.stderr
    assert "(no auth)" in result.stderr


def test_cli_ui_refuses_a_remote_address_without_a_token(tmp_path: Path) -> None:
    every_interface = "0.0.0.0"  # noqa: S104 (the refusal under test)
    result = run_llmtap("ui", "--address", every_interface, "--port", "0", data_dir=tmp_path)
    assert result.returncode != 0
    assert "set auth_token" in result.stderr
    assert "Traceback" not in result.stderr
