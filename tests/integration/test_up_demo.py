"""`llmtap up --demo` end to end: the README's main command, on a fresh data folder.

Everything is real and in one process tree: the local Kafka broker that `up` starts, the
embedded ClickHouse, the collector, normalizer, stream worker, risk and drift stages (with the
real embedding model), the sink, the web dashboard and the demo traffic. The test reads what a
user would see through the dashboard's API (the embedded store belongs to the `up` process).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import JAR_CACHE_DIR

pytestmark = pytest.mark.integration

DEADLINE_SECONDS = 90


def environment(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LLMTAP_")}
    env.update(
        {
            "LLMTAP_DATA_DIR": str(data_dir),
            "LLMTAP_LOCAL_KAFKA__JAR_CACHE_DIR": str(JAR_CACHE_DIR),
            "LLMTAP_COLLECTOR__HTTP_PORT": "0",
            "LLMTAP_COLLECTOR__GRPC_PORT": "0",
            "LLMTAP_WEB__PORT": "0",
        }
    )
    return env


def start_up(data_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "llmtap", "up", "--demo", "--demo-rate", "20"],
            env=environment(data_dir),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )


def wait_for_dashboard(process: subprocess.Popen[bytes], log_path: Path, after: int) -> str:
    deadline = time.monotonic() + 240  # broker start, migrations, model load on a busy machine
    while True:
        text = log_path.read_text(errors="replace")[after:]
        match = re.search(r"dashboard\s+(http://127\.0\.0\.1:\d+)/", text)
        if match and "running" in text:
            return match.group(1)
        assert process.poll() is None, text[-4000:]
        assert time.monotonic() < deadline, text[-4000:]
        time.sleep(0.5)


def api(base: str, path: str) -> Any:
    with urllib.request.urlopen(f"{base}{path}", timeout=30) as response:
        return json.loads(response.read())


def demo_cases(base: str, trace_ids: list[str]) -> list[str]:
    """The case the demo planted on each trace's LLM span (its ``llmtap.demo.case`` attribute)."""
    cases = []
    for trace_id in trace_ids:
        spans = api(base, f"/api/traces/{trace_id}")["spans"]
        for span in spans:
            attributes = span.get("attributes") or {}
            if span.get("span_type") == "llm":
                cases.append(attributes.get("llmtap.demo.case", ""))
    return cases


def test_up_demo_shows_cost_drift_and_risk_then_stops_cleanly_and_resumes(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "up.log"
    process = start_up(tmp_path / "data", log_path)
    try:
        base = wait_for_dashboard(process, log_path, 0)
        started = time.monotonic()
        seen: dict[str, float] = {}
        while len(seen) < 4:
            elapsed = time.monotonic() - started
            assert elapsed < DEADLINE_SECONDS, (
                f"after {elapsed:.0f} s only {sorted(seen)}; log:\n"
                + log_path.read_text(errors="replace")[-4000:]
            )
            assert process.poll() is None, log_path.read_text(errors="replace")[-4000:]
            if "spans" not in seen and api(base, "/api/overview?range=15m")["totals"]["spans"]:
                seen["spans"] = elapsed
            if "cost" not in seen:
                breakdown = api(base, "/api/cost?range=15m&group_by=model")["breakdown"]
                if sum(1 for row in breakdown if row["cost"] and row["cost"] > 0) >= 2:
                    seen["cost"] = elapsed
            if "drift" not in seen:
                alerts = api(base, "/api/alerts?range=15m")["alerts"]
                if any(a["rule_id"] == "demo-prompt-drift" for a in alerts):
                    seen["drift"] = elapsed
            if "risk" not in seen:
                riskiest = api(base, "/api/risk?range=15m&limit=15")["riskiest"]
                traces = [row["trace_id"] for row in riskiest]
                if traces and demo_cases(base, traces).count("ungrounded") >= 3:
                    seen["risk"] = elapsed
            time.sleep(2)
        print(f"seen after (s): {seen}")
        spans_before = api(base, "/api/overview?range=1h")["totals"]["spans"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)  # Ctrl-C: everything stops within 30 s
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, log_path.read_text(errors="replace")[-4000:]

    # A restart on the same data folder continues: what was stored is still there, new
    # traffic adds to it.
    offset = len(log_path.read_text(errors="replace"))
    process = start_up(tmp_path / "data", log_path)
    try:
        base = wait_for_dashboard(process, log_path, offset)
        deadline = time.monotonic() + 60
        while True:
            spans_after = api(base, "/api/overview?range=1h")["totals"]["spans"]
            if spans_after > spans_before:
                break
            assert time.monotonic() < deadline, (spans_before, spans_after)
            time.sleep(2)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode == 0, log_path.read_text(errors="replace")[-4000:]
