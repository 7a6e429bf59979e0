"""Alert delivery to webhooks: generic JSON or Slack-compatible, retried with backoff, signed.

:meth:`AlertDeliverer.deliver` never raises: it returns the alert with the outcome filled in
(``delivered``, ``failed``, or ``suppressed`` when no webhook takes the alert's severity) and a
higher ``version``, so the stream can write the outcome to the alerts topic and table. Each
attempt writes one log line (the delivery log), naming the webhook by scheme and host only:
Slack webhook URLs carry their secret in the path.

Receivers deduplicate on ``X-Llmtap-Event-Id``. With a secret, ``X-Llmtap-Signature`` is
``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``; :func:`verify_signature` checks it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from llmtap.processors.alerts.config import AlertsConfig, WebhookConfig
from llmtap.processors.alerts.rules import SEVERITY_ORDER
from llmtap.schemas.aggregates import AlertEvent, encode_alert

logger = logging.getLogger("llmtap.alerts.delivery")

EVENT_ID_HEADER = "X-Llmtap-Event-Id"
SIGNATURE_HEADER = "X-Llmtap-Signature"
USER_AGENT = "llmtap-alerts/1"
DEFAULT_SIGNATURE_TOLERANCE_SECONDS = 300


def sign_payload(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Llmtap-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_seconds: float = DEFAULT_SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, within ``tolerance_seconds`` of now."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = sign_payload(secret, timestamp, body).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def slack_payload(alert: AlertEvent) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (notifications, fallback) and blocks."""
    icon = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}
    mark = ":white_check_mark:" if alert.state == "resolved" else icon.get(alert.severity, "")
    title = f"{mark} [{alert.severity.upper()}] {alert.rule_id} is {alert.state}".strip()
    fields = [
        {"type": "mrkdwn", "text": f"*Value*\n{alert.value:g}"},
        {"type": "mrkdwn", "text": f"*Threshold*\n{alert.threshold:g}"},
    ]
    if alert.group_key:
        fields.append({"type": "mrkdwn", "text": f"*Group*\n{alert.group_key}"})
    if alert.tenant:
        fields.append({"type": "mrkdwn", "text": f"*Tenant*\n{alert.tenant}"})
    return {
        "text": f"{title}: {alert.message}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": alert.message[:3000]}},
            {"type": "section", "fields": fields},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"fingerprint `{alert.fingerprint}` · event `{alert.event_id}`",
                    }
                ],
            },
        ],
    }


@dataclass(frozen=True)
class _Outcome:
    delivered: bool
    attempts: int
    error: str = ""
    delivered_at_ms: int | None = None


class _Retryable(Exception):
    pass


class _Permanent(Exception):
    pass


class AlertDeliverer:
    """Posts alerts to the configured webhooks; use as an async context manager or call
    :meth:`start` / :meth:`stop` (``deliver`` starts it on first use).

    ``clock`` and ``sleep`` are injectable so tests control time; ``rng`` sets the jitter.
    """

    def __init__(
        self,
        config: AlertsConfig,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AlertDeliverer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def webhooks_for(self, alert: AlertEvent) -> list[WebhookConfig]:
        rank = SEVERITY_ORDER.get(alert.severity, 0)
        return [hook for hook in self.config.webhooks if rank >= SEVERITY_ORDER[hook.min_severity]]

    async def deliver(self, alert: AlertEvent) -> AlertEvent:
        """Send ``alert`` to every webhook that takes its severity; never raises."""
        webhooks = self.webhooks_for(alert)
        if not webhooks:
            return msgspec.structs.replace(
                alert,
                delivery_status="suppressed",
                delivery_error="no webhook takes this severity",
                version=alert.version + 1,
            )
        try:
            await self.start()
            outcomes = await asyncio.gather(*(self._send(alert, hook) for hook in webhooks))
        except Exception as error:  # a bug must not stop the stream; the alert records it
            logger.exception("alert delivery event_id=%s crashed", alert.event_id)
            outcomes = [_Outcome(False, 0, f"internal error: {type(error).__name__}: {error}")]
        failed = [outcome for outcome in outcomes if not outcome.delivered]
        delivered_at = [o.delivered_at_ms for o in outcomes if o.delivered_at_ms is not None]
        return msgspec.structs.replace(
            alert,
            delivery_status="failed" if failed else "delivered",
            delivery_attempts=alert.delivery_attempts + sum(o.attempts for o in outcomes),
            delivered_at_ms=max(delivered_at) if delivered_at and not failed else None,
            delivery_error="; ".join(outcome.error for outcome in failed),
            version=alert.version + 1,
        )

    async def _send(self, alert: AlertEvent, hook: WebhookConfig) -> _Outcome:
        body = (
            json.dumps(slack_payload(alert)).encode()
            if hook.kind == "slack"
            else encode_alert(alert)
        )
        target = _describe_url(hook.url)
        error = ""
        for attempt in range(1, hook.max_attempts + 1):
            started = time.monotonic()
            try:
                status = await self._post(hook, alert, body)
            except _Permanent as problem:
                error = f"{target}: {problem}"
                self._log(alert, target, attempt, hook, "rejected", str(problem), started)
                return _Outcome(False, attempt, error)
            except _Retryable as problem:
                error = f"{target}: {problem} after {attempt} attempt(s)"
                self._log(alert, target, attempt, hook, "retry", str(problem), started)
            else:
                self._log(alert, target, attempt, hook, "delivered", f"HTTP {status}", started)
                return _Outcome(True, attempt, delivered_at_ms=int(self._clock() * 1000))
            if attempt < hook.max_attempts:
                await self._sleep(self._backoff(hook, attempt))
        return _Outcome(False, hook.max_attempts, error)

    async def _post(self, hook: WebhookConfig, alert: AlertEvent, body: bytes) -> int:
        assert self._session is not None
        headers = {
            **hook.headers,
            "Content-Type": "application/json",
            EVENT_ID_HEADER: alert.event_id,
        }
        if hook.secret is not None:
            timestamp = int(self._clock())
            headers[SIGNATURE_HEADER] = sign_payload(
                hook.secret.get_secret_value(), timestamp, body
            )
        timeout = aiohttp.ClientTimeout(total=hook.timeout_seconds)
        try:
            async with self._session.post(
                hook.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            raise _Retryable(f"timed out after {hook.timeout_seconds:g}s") from None
        except aiohttp.ClientError as error:
            raise _Retryable(f"{type(error).__name__}: {error}") from None
        if 200 <= status < 300:
            return status
        if status >= 500 or status in {408, 429}:
            raise _Retryable(f"HTTP {status}")
        raise _Permanent(f"HTTP {status} (not retried)")

    def _backoff(self, hook: WebhookConfig, attempt: int) -> float:
        """Exponential backoff with jitter: half the step fixed, half random."""
        step = min(hook.backoff_max_seconds, hook.backoff_initial_seconds * 2.0 ** (attempt - 1))
        return step / 2 + self._rng.uniform(0, step / 2)

    def _log(
        self,
        alert: AlertEvent,
        target: str,
        attempt: int,
        hook: WebhookConfig,
        outcome: str,
        detail: str,
        started: float,
    ) -> None:
        level = logging.INFO if outcome == "delivered" else logging.WARNING
        logger.log(
            level,
            "alert delivery event_id=%s rule=%s state=%s webhook=%s attempt=%d/%d "
            "outcome=%s detail=%r elapsed_ms=%.0f",
            alert.event_id,
            alert.rule_id,
            alert.state,
            target,
            attempt,
            hook.max_attempts,
            outcome,
            detail,
            (time.monotonic() - started) * 1000,
        )


def _describe_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
