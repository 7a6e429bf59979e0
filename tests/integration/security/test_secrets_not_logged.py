"""Secrets never reach a log, the output of a process, or the printed settings.

The collector and the dashboard run with API keys and tokens and are sent right and wrong
ones; every log record (at DEBUG) and everything written to stdout and stderr is searched for
the secrets, and for the wrong key a client presented, which may be some other system's secret.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from llmtap.cli import cli
from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.dev.kafka_broker import BrokerState
from llmtap.errors import SettingsError
from llmtap.schemas.topics import Header
from llmtap.settings import load_settings
from llmtap.web.config import WebConfig
from tests.integration.web.conftest import DashboardThread, dashboard_settings
from tests.integration.web.tenants import seed_tenants
from tests.otlp_support import RunningCollector, collector_settings, read_topic

pytestmark = pytest.mark.integration

COLLECTOR_KEYS = {"alpha": "collector-key-alpha-5e1f0c", "bravo": "collector-key-bravo-88d2a4"}
OPERATOR_TOKEN = "web-operator-token-3c9b71"
TENANT_TOKENS = {"alpha": "web-alpha-token-0d4e62", "bravo": "web-bravo-token-a7c315"}
PRESENTED_WRONG = "someone-elses-secret-6b2f9e"
SECRETS = [*COLLECTOR_KEYS.values(), OPERATOR_TOKEN, *TENANT_TOKENS.values(), PRESENTED_WRONG]
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def assert_no_secret(text: str, where: str) -> None:
    found = [secret for secret in SECRETS if secret in text]
    assert not found, f"{where} holds {found}"


def captured(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    out, err = capfd.readouterr()
    records = "\n".join(
        f"{record.name} {record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    )
    return f"{records}\n{out}\n{err}"


def request_claiming(tenant: str) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="llmtap.tenant", value=AnyValue(string_value=tenant))
    span = resource_spans.scope_spans.add().spans.add(
        trace_id=os.urandom(16), span_id=os.urandom(8), name="chat"
    )
    span.attributes.add(key="gen_ai.operation.name", value=AnyValue(string_value="chat"))
    return request.SerializeToString()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    message = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf", **headers}
    )
    try:
        with urllib.request.urlopen(message, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def get(url: str, token: str | None) -> int:
    message = urllib.request.Request(url)
    if token is not None:
        message.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(message, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_collector_logs_no_key(
    kafka_broker: BrokerState,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = collector_settings(
        kafka_broker.bootstrap_servers,
        tmp_path,
        api_keys=[{"tenant": name, "key": key} for name, key in COLLECTOR_KEYS.items()],
    )
    assert_no_secret(repr(settings) + str(settings) + settings.model_dump_json(), "settings")
    body = request_claiming("bravo")  # sent with alpha's key: stored as alpha
    with RunningCollector(settings) as running:
        url = running.traces_url
        assert post(url, body, {"Authorization": f"Bearer {COLLECTOR_KEYS['alpha']}"}) == 200
        assert post(url, body, {"Authorization": f"Bearer {PRESENTED_WRONG}"}) == 401
        assert post(url, body, {"X-Api-Key": PRESENTED_WRONG}) == 401
        assert post(url, b"not protobuf", {"X-Api-Key": COLLECTOR_KEYS["bravo"]}) == 400
        port = running.collector.grpc_port
        assert port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(EXPORT)
            export(body, metadata=(("x-api-key", COLLECTOR_KEYS["alpha"]),), timeout=30)
            with pytest.raises(grpc.RpcError) as refused:
                export(body, metadata=(("authorization", f"Bearer {PRESENTED_WRONG}"),))
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert_no_secret(str(refused.value.details()), "the gRPC refusal")
        messages = read_topic(
            kafka_broker.bootstrap_servers, settings.topics.raw_spans, expect_spans=2
        )
        with urllib.request.urlopen(running.base_url + "/metrics", timeout=10) as response:
            assert_no_secret(response.read().decode(), "the collector's /metrics")
    assert {message.headers[Header.TENANT.value] for message in messages} == {b"alpha"}
    assert_no_secret(captured(caplog, capfd), "the collector's logs and output")


def test_the_dashboard_logs_no_token(
    clickhouse_client: Any,
    clickhouse_target: ClickHouseTarget,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    seed_tenants(clickhouse_client, clickhouse_target.database)
    settings = dashboard_settings(
        clickhouse_target,
        tmp_path,
        auth_token=OPERATOR_TOKEN,
        tenant_tokens=[{"tenant": name, "token": token} for name, token in TENANT_TOKENS.items()],
    )
    assert_no_secret(repr(settings) + str(settings) + settings.model_dump_json(), "settings")
    assert_no_secret(repr(settings.web) + str(settings.web.tenant_tokens), "web settings")
    running = DashboardThread(settings)
    try:
        url = running.url
        assert get(f"{url}/api/overview", OPERATOR_TOKEN) == 200
        assert get(f"{url}/api/overview", TENANT_TOKENS["alpha"]) == 200
        assert get(f"{url}/api/overview?tenant=bravo", TENANT_TOKENS["alpha"]) == 403
        assert get(f"{url}/api/overview", PRESENTED_WRONG) == 401
        assert get(f"{url}/api/overview", None) == 401
        # a failing query is logged: with the error, never with the request's token
        clickhouse_client.command("DROP TABLE llm_spans")
        assert get(f"{url}/api/overview", TENANT_TOKENS["bravo"]) == 502
    finally:
        running.close()
    logged = captured(caplog, capfd)
    assert "dashboard query failed" in logged  # the capture did see the server's log
    assert_no_secret(logged, "the dashboard's logs and output")


def test_printed_settings_mask_every_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = {
        "LLMTAP_DATA_DIR": str(tmp_path),
        "LLMTAP_COLLECTOR__API_KEYS": json.dumps(
            [{"tenant": name, "key": key} for name, key in COLLECTOR_KEYS.items()]
        ),
        "LLMTAP_WEB__AUTH_TOKEN": OPERATOR_TOKEN,
        "LLMTAP_WEB__TENANT_TOKENS": json.dumps(
            [{"tenant": name, "token": token} for name, token in TENANT_TOKENS.items()]
        ),
    }
    result = CliRunner().invoke(cli, ["config", "show"], env=environment)
    assert result.exit_code == 0, result.output
    assert "tenant_tokens" in result.output
    assert "'**********'" in result.output
    assert_no_secret(result.output, "llmtap config show")

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.web.tenant_tokens[0].token.get_secret_value() == TENANT_TOKENS["alpha"]
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert_no_secret(text, "the settings as text")
    assert_no_secret(json.dumps(settings.model_dump(mode="json")), "the settings as JSON")


def test_invalid_secrets_are_reported_without_their_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMTAP_DATA_DIR", str(tmp_path))
    short = "short-" + PRESENTED_WRONG[:6]
    monkeypatch.setenv("LLMTAP_WEB__AUTH_TOKEN", short)
    monkeypatch.setenv(
        "LLMTAP_WEB__TENANT_TOKENS", json.dumps([{"tenant": "alpha", "token": short + "x"}])
    )
    monkeypatch.setenv(
        "LLMTAP_COLLECTOR__API_KEYS", json.dumps([{"tenant": "alpha", "key": short + "y"}])
    )
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "shorter than 16" in message
    assert short not in message
    # the web section's own errors never show their input either
    with pytest.raises(ValueError, match="listed twice") as duplicate:
        WebConfig(
            auth_token=OPERATOR_TOKEN,  # type: ignore[arg-type]
            tenant_tokens=[{"tenant": "alpha", "token": OPERATOR_TOKEN}],  # type: ignore[list-item]
        )
    assert_no_secret(str(duplicate.value), "the web settings' error")


def test_llmtap_ui_prints_no_token(tmp_path: Path) -> None:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLMTAP_")},
        "LLMTAP_DATA_DIR": str(tmp_path),
        "LLMTAP_WEB__AUTH_TOKEN": OPERATOR_TOKEN,
        "LLMTAP_WEB__TENANT_TOKENS": json.dumps(
            [{"tenant": name, "token": token} for name, token in TENANT_TOKENS.items()]
        ),
        "LLMTAP_LOG_LEVEL": "debug",
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "llmtap"),
            "ui",
            "--port",
            "0",
            "--duration-seconds",
            "2",
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "(token required)" in result.stderr
    assert_no_secret(result.stdout + result.stderr, "llmtap ui's output")
