"""User errors reach the user as one clear message, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(
    *arguments: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LLMTAP_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "llmtap", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("up", "check", "config", "dev"):
        assert f"  {command} " in result.stdout
    kafka_help = run_cli("dev", "kafka", "--help")
    for command in ("start", "status", "stop", "reset", "fetch"):
        assert f"  {command} " in kafka_help.stdout


def test_unknown_setting_in_environment(tmp_path: Path) -> None:
    result = run_cli("check", env={"LLMTAP_KAFKA__BOOTSTRAP": "x:1"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "LLMTAP_KAFKA__BOOTSTRAP: unknown setting" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") <= 3, "one clear message, not a dump"


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    config = tmp_path / "llmtap.yaml"
    config.write_text("kafka:\n  bootstrap_servers: 'a:1'\n  retries: 3\n", encoding="utf-8")
    result = run_cli("--config", str(config), "config", "show", cwd=tmp_path)
    assert result.returncode == 2
    assert "kafka.retries" in result.stderr
    assert "unknown setting" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_dsn_hides_the_password(tmp_path: Path) -> None:
    result = run_cli(
        "check", env={"LLMTAP_CLICKHOUSE__DSN": "http://admin:hunter2@db:notaport/x"}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "clickhouse.dsn" in result.stderr
    assert "port" in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_broker(tmp_path: Path) -> None:
    port = _closed_port()
    result = run_cli(
        "check",
        env={
            "LLMTAP_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "LLMTAP_KAFKA__REQUEST_TIMEOUT_SECONDS": "2",
        },
        cwd=tmp_path,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(
        f"error: Kafka at 127.0.0.1:{port} did not answer a metadata request within 2 s"
    )


def test_no_broker_configured_and_none_running(tmp_path: Path) -> None:
    result = run_cli("check", env={"LLMTAP_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 1
    assert "llmtap dev kafka start" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("arguments", [["config", "show"], ["config", "reference"]])
def test_config_commands_work_on_defaults(arguments: list[str], tmp_path: Path) -> None:
    result = run_cli(*arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bootstrap_servers" in result.stdout


GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def test_normalize_prints_one_json_line_per_span(tmp_path: Path) -> None:
    import json

    result = run_cli(
        "normalize", str(GOLDEN / "openai_v2_chat_latest" / "input.json"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    spans = [json.loads(line) for line in result.stdout.splitlines()]
    assert spans
    assert all(span["span_type"] == "llm" and span["cost"]["priced"] for span in spans)


def test_normalize_explains_an_undecodable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceSpans": 3}')
    result = run_cli("normalize", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "must be an array" in result.stderr
    assert "Traceback" not in result.stderr


def test_cost_prints_the_breakdown_and_price_version(tmp_path: Path) -> None:
    result = run_cli(
        "cost",
        "--provider",
        "openai",
        "--model",
        "gpt-4o",
        "--input-tokens",
        "1000",
        "--cache-read-tokens",
        "400",
        "--output-tokens",
        "200",
        "--at",
        "2026-01-15",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    # 600 x 2.50/M + 400 x 1.25/M + 200 x 10/M = 0.0015 + 0.0005 + 0.002
    assert "0.004000000" in result.stdout
    assert "2026-11-01+" in result.stdout


def test_cost_of_an_unknown_model_exits_3(tmp_path: Path) -> None:
    result = run_cli("cost", "--model", "no-such-model", "--input-tokens", "5", cwd=tmp_path)
    assert result.returncode == 3
    assert "not priced: no provider's price matches model" in result.stdout


def test_processor_stages_choose_what_the_process_runs(tmp_path: Path) -> None:
    from llmtap.cli import _with_processor_stages
    from llmtap.settings import Settings

    settings = Settings(data_dir=tmp_path, processor={"drift": {"enabled": False}})  # type: ignore[arg-type]
    stream_only = _with_processor_stages(settings, "stream").processor
    assert not stream_only.normalizer_enabled
    assert (stream_only.stream.enabled, stream_only.risk.enabled, stream_only.drift.enabled) == (
        True,
        False,
        False,
    )
    # a named stage that the settings turned off stays off (docker-compose.yml names them
    # all); the other settings stay
    rest = _with_processor_stages(settings, " normalize, risk, drift ").processor
    chosen = (rest.normalizer_enabled, rest.stream.enabled, rest.risk.enabled, rest.drift.enabled)
    assert chosen == (True, False, True, False)
    assert rest.stream.app_id == settings.processor.stream.app_id


def test_processor_stages_say_which_named_stage_the_settings_keep_off(tmp_path: Path) -> None:
    result = run_cli(
        "processor",
        "--stages",
        "drift",
        env={"LLMTAP_PROCESSOR__DRIFT__ENABLED": "false"},
        cwd=tmp_path,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "drift not run, it is off in the settings (processor.drift.enabled)" in output
    assert "no stage to run" in output
    assert "Traceback" not in output


def test_processor_stages_reject_unknown_names_before_starting(tmp_path: Path) -> None:
    result = run_cli("processor", "--stages", "normalize,aggregate", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown stage(s) aggregate; known: normalize, stream, risk, drift" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_processor_with_no_stage_refuses_to_start(tmp_path: Path) -> None:
    result = run_cli(
        "processor",
        env={
            "LLMTAP_PROCESSOR__NORMALIZER_ENABLED": "false",
            "LLMTAP_PROCESSOR__STREAM__ENABLED": "false",
            "LLMTAP_PROCESSOR__RISK__ENABLED": "false",
            "LLMTAP_PROCESSOR__DRIFT__ENABLED": "false",
            "LLMTAP_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}",
            "LLMTAP_DATA_DIR": str(tmp_path),
        },
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "the processor has no stage to run" in result.stderr
    assert "Traceback" not in result.stderr
