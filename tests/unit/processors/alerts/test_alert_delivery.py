"""Webhook delivery against a real HTTP server on 127.0.0.1: retries, timeouts, signing, Slack."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from llmtap.processors.alerts.config import AlertsConfig, WebhookConfig
from llmtap.processors.alerts.delivery import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    AlertDeliverer,
    sign_payload,
    verify_signature,
)
from llmtap.schemas.aggregates import AlertEvent, decode_alert

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def alert(severity: str = "critical") -> AlertEvent:
    return AlertEvent(
        event_id="e1",
        fingerprint="f1",
        rule_id="budget",
        severity=severity,
        state="firing",
        tenant="acme",
        group_key="tenant=acme",
        labels={"tenant": "acme"},
        value=12.0,
        threshold=10.0,
        message="[firing] budget (tenant=acme): spend 12 over 600s",
        fired_at_ms=1_900_000_000_000,
    )


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook/{token}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook/secret-token"
    finally:
        await runner.cleanup()


def config(url: str, **fields: Any) -> AlertsConfig:
    hook: dict[str, Any] = {"url": url, "backoff_initial_seconds": 0.01, **fields}
    return AlertsConfig(webhooks=[WebhookConfig(**hook)])


def test_a_server_error_is_retried_then_delivered(caplog: pytest.LogCaptureFixture) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=500 if len(received) == 1 else 200)

    async def scenario() -> AlertEvent:
        async with server(handler) as url, AlertDeliverer(config(url), rng=random.Random(1)) as d:
            return await d.deliver(alert())

    caplog.set_level(logging.INFO, logger="llmtap.alerts.delivery")
    result = asyncio.run(scenario())

    assert result.delivery_status == "delivered"
    assert result.delivery_attempts == 2
    assert result.delivered_at_ms is not None
    assert result.delivery_error == ""
    assert result.version == 1
    assert len(received) == 2
    headers, body = received[1]
    assert headers[EVENT_ID_HEADER] == "e1"
    assert SIGNATURE_HEADER not in headers
    assert decode_alert(body) == alert()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert "attempt=1/5 outcome=retry detail='HTTP 500'" in lines[0]
    assert "attempt=2/5 outcome=delivered" in lines[1]
    assert all("secret-token" not in line for line in lines)  # the URL path is not logged


def test_a_client_error_is_not_retried() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=404)

    async def scenario() -> AlertEvent:
        async with server(handler) as url, AlertDeliverer(config(url)) as deliverer:
            return await deliverer.deliver(alert())

    result = asyncio.run(scenario())
    assert calls == 1
    assert result.delivery_status == "failed"
    assert result.delivery_attempts == 1
    assert "HTTP 404 (not retried)" in result.delivery_error
    assert result.delivered_at_ms is None


def test_a_hanging_endpoint_times_out_and_fails_in_bounded_time() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(30)
        return web.Response(status=200)

    async def scenario() -> AlertEvent:
        async with server(handler) as url:
            hook = config(url, timeout_seconds=0.2, max_attempts=3)
            async with AlertDeliverer(hook) as deliverer:
                return await deliverer.deliver(alert())

    started = time.monotonic()
    result = asyncio.run(scenario())
    elapsed = time.monotonic() - started

    assert calls == 3
    assert result.delivery_status == "failed"
    assert result.delivery_attempts == 3
    assert "timed out after 0.2s after 3 attempt(s)" in result.delivery_error
    assert elapsed < 5  # 3 x 0.2 s plus small backoffs and server shutdown


def test_a_refused_connection_fails_without_raising() -> None:
    async def scenario() -> AlertEvent:
        async with AlertDeliverer(config("http://127.0.0.1:9/hook", max_attempts=2)) as d:
            return await d.deliver(alert())

    result = asyncio.run(scenario())
    assert result.delivery_status == "failed"
    assert result.delivery_attempts == 2


def test_the_signature_verifies_and_detects_tampering() -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    async def scenario() -> AlertEvent:
        async with server(handler) as url:
            hook = config(url, secret="s3cret", headers={"Authorization": "Bearer t"})
            async with AlertDeliverer(hook, clock=lambda: 1_900_000_000.5) as deliverer:
                return await deliverer.deliver(alert())

    result = asyncio.run(scenario())
    assert result.delivery_status == "delivered"
    headers, body = received[0]
    assert headers["Authorization"] == "Bearer t"
    signature = headers[SIGNATURE_HEADER]
    assert signature == sign_payload("s3cret", 1_900_000_000, body)
    assert signature.startswith("t=1900000000,v1=")
    assert verify_signature("s3cret", signature, body, now=1_900_000_010)
    assert not verify_signature("s3cret", signature, body + b" ", now=1_900_000_010)
    assert not verify_signature("other", signature, body, now=1_900_000_010)
    assert not verify_signature("s3cret", signature, body, now=1_900_001_000)  # replayed late
    assert not verify_signature("s3cret", "garbage", body)


def test_slack_webhooks_get_text_and_blocks() -> None:
    received: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(text="ok")

    async def scenario() -> AlertEvent:
        async with server(handler) as url, AlertDeliverer(config(url, kind="slack")) as d:
            return await d.deliver(alert())

    assert asyncio.run(scenario()).delivery_status == "delivered"
    payload = received[0]
    assert set(payload) == {"text", "blocks"}
    assert payload["text"].startswith(":red_circle: [CRITICAL] budget is firing")
    assert [block["type"] for block in payload["blocks"]] == [
        "header",
        "section",
        "section",
        "context",
    ]
    fields = [field["text"] for field in payload["blocks"][2]["fields"]]
    assert "*Group*\ntenant=acme" in fields


def test_severity_routing_and_no_matching_webhook() -> None:
    deliverer = AlertDeliverer(
        AlertsConfig(
            webhooks=[
                WebhookConfig(url="http://127.0.0.1:9/a", min_severity="critical"),
                WebhookConfig(url="http://127.0.0.1:9/b", min_severity="warning"),
            ]
        )
    )
    assert [hook.url for hook in deliverer.webhooks_for(alert("warning"))] == [
        "http://127.0.0.1:9/b"
    ]
    result = asyncio.run(deliverer.deliver(alert("info")))
    assert result.delivery_status == "suppressed"
    assert result.delivery_attempts == 0
    assert result.version == 1


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    deliverer = AlertDeliverer(AlertsConfig(), rng=random.Random(7))
    hook = WebhookConfig(url="http://x/", backoff_initial_seconds=1, backoff_max_seconds=4)
    waits = [deliverer._backoff(hook, attempt) for attempt in range(1, 6)]
    for attempt, wait in enumerate(waits, start=1):
        step = min(4, 2 ** (attempt - 1))
        assert step / 2 <= wait <= step
