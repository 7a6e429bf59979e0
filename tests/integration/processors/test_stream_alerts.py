"""Alerting on the live stream: a budget breach reaches a webhook once, then its resolution."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from llmtap.clickhouse import open_target
from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.dev.kafka_broker import BrokerState
from llmtap.processors.alerts.delivery import verify_signature
from llmtap.processors.alerts.delivery_stage import AlertDeliveryStage
from llmtap.processors.stream.app import StreamApp
from llmtap.settings import Settings
from llmtap.sinks.clickhouse.derived import DerivedSink
from tests.integration.processors.test_stream_aggregates import (
    _Thread,
    migrated_target,  # noqa: F401 (fixture)
    produce_like_the_normalizer,
    stream_settings,
    synthetic_spans,
)

pytestmark = pytest.mark.integration

SECRET = "a-webhook-secret-of-some-length"
WINDOW = 20
RULES = """\
rules:
  - id: tenant-minute-budget
    kind: cost_budget
    severity: critical
    group_by: [tenant]
    where: {tenant: acme}
    window_seconds: 20
    threshold: 1.0
    cooldown_seconds: 0
"""


class WebhookReceiver:
    """A local HTTP endpoint that records what it is sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            self.requests.append((dict(request.headers), await request.read()))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def states(self) -> list[str]:
        return [json.loads(body)["state"] for _, body in self.requests]


def test_a_budget_breach_fires_one_alert_then_resolves(
    kafka_broker: BrokerState,
    tmp_path: Path,
    migrated_target: ClickHouseTarget,  # noqa: F811
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    receiver = WebhookReceiver()

    async def scenario() -> tuple[Settings, list[float]]:
        await receiver.start()
        base = stream_settings(
            kafka_broker.bootstrap_servers,
            tmp_path,
            dsn=f"chdb://{migrated_target.path}",
            database=migrated_target.database,
        )
        processor: dict[str, Any] = base.processor.model_dump()
        processor["alerts"] = {
            "rules_file": str(rules_file),
            "evaluation_interval_seconds": 0.5,
            "webhooks": [{"url": receiver.url, "kind": "json", "secret": SECRET}],
            # 20-second windows: the alert resolves once its window has passed, so the test
            # waits one window, not the default minute
            "base_window_seconds": WINDOW,
        }
        processor["stream"] = {**processor["stream"], "window_seconds": (WINDOW, 3600)}
        settings = base.model_copy(
            update={"processor": type(base.processor).model_validate(processor)}
        )
        app = StreamApp(settings)
        await app.start()
        delivery = _Thread(AlertDeliveryStage(settings)).__enter__()
        timeline: list[float] = []
        try:
            # The spans must stay inside the rule's window until the alert fired: they are
            # produced early in a window (at least 13 s before it ends).
            if time.time() % WINDOW > 7:
                await asyncio.sleep(WINDOW + 0.5 - time.time() % WINDOW)
            now = int(time.time())
            window_start = now - now % WINDOW
            spans = [
                span
                for span in synthetic_spans(400, seed=21, start_seconds=window_start)
                if span.tenant == "acme"
            ]
            for span in spans:  # in this window, and priced: about 0.005 USD each
                span.start_time_unix_nano = window_start * 10**9 + span.start_time_unix_nano % (
                    2 * 10**9
                )
            produced_at = time.monotonic()
            await asyncio.to_thread(produce_like_the_normalizer, settings, spans)
            deadline = time.monotonic() + 150
            while receiver.states() != ["firing", "resolved"]:
                assert time.monotonic() < deadline, receiver.states()
                if receiver.states() == ["firing"] and len(timeline) == 0:
                    timeline.append(time.monotonic() - produced_at)
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)  # nothing more arrives: no duplicate, no re-fire
        finally:
            await asyncio.to_thread(delivery.__exit__, None, None, None)
            await app.stop()
            await receiver.stop()
        return settings, timeline

    settings, timeline = asyncio.run(scenario())
    assert receiver.states() == ["firing", "resolved"]
    ids = set()
    for headers, body in receiver.requests:
        assert verify_signature(SECRET, headers["X-Llmtap-Signature"], body)
        ids.add(headers["X-Llmtap-Event-Id"])
        alert = json.loads(body)
        assert alert["rule_id"] == "tenant-minute-budget"
        assert alert["labels"]["tenant"] == "acme"
    assert len(ids) == 2
    assert timeline, "the firing was never seen alone"
    assert timeline[0] < 30, timeline  # breach produced -> webhook received

    # The alerts table shows both notifications with their delivery outcome.
    with _Thread(DerivedSink(settings)):
        client = open_target(migrated_target)
        try:
            deadline = time.monotonic() + 60
            while True:
                rows = client.query(
                    "SELECT state, delivery_status, delivery_attempts FROM alerts FINAL "
                    "ORDER BY state"
                ).result_rows
                if rows == [("firing", "delivered", 1), ("resolved", "delivered", 1)]:
                    break
                assert time.monotonic() < deadline, rows
                time.sleep(0.5)
        finally:
            client.close()
