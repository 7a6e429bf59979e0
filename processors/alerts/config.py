"""Settings of the alerting stage: where the rules are, how often they run, where alerts go."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Severity = Literal["info", "warning", "critical"]


class WebhookConfig(BaseModel):
    """One alert destination: a generic JSON webhook or a Slack-compatible incoming webhook."""

    # Errors never echo input: the secret, the URL (a Slack webhook URL is a credential) and
    # headers (Authorization) are all secrets.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(pattern=r"^https?://\S+$", description="Endpoint the alert is POSTed to.")
    kind: Literal["json", "slack"] = Field(
        default="json",
        description="`json`: the alert event as JSON; `slack`: a Slack message (text + blocks).",
    )
    secret: SecretStr | None = Field(
        default=None,
        description=(
            "Shared secret: each request is signed with HMAC-SHA256 over `<timestamp>.<body>` "
            "in the `X-Llmtap-Signature` header (see docs/alerts.md)."
        ),
    )
    timeout_seconds: float = Field(default=5.0, gt=0, le=120, description="Limit per attempt.")
    max_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts before an alert counts as failed."
    )
    backoff_initial_seconds: float = Field(
        default=0.5, ge=0, le=60, description="Wait before the second attempt; doubles each time."
    )
    backoff_max_seconds: float = Field(
        default=30.0, ge=0, le=600, description="Longest wait between two attempts."
    )
    min_severity: Severity = Field(
        default="info", description="Alerts below this severity are not sent here."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers (e.g. Authorization)."
    )


class AlertsConfig(BaseModel):
    """Alert rules and delivery (docs/alerts.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    rules_file: Path | None = Field(
        default=None,
        description="YAML alert rules (docs/alerts.md). Unset: no rules are evaluated.",
    )
    evaluation_interval_seconds: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description=(
            "How often the rules are evaluated (bounds the breach-to-notification latency; an "
            "evaluation reads only the evaluator's state, never ClickHouse)."
        ),
    )
    base_window_seconds: int = Field(
        default=60,
        ge=1,
        description="Length of the aggregate windows the rolling rule windows are summed from.",
    )
    webhooks: list[WebhookConfig] = Field(
        default_factory=list,
        description=(
            "Destinations: a list of {url, kind, secret, timeout_seconds, max_attempts, "
            "backoff_initial_seconds, backoff_max_seconds, min_severity, headers}."
        ),
    )


def delivery_group(settings: Any) -> str:
    """Consumer group of the alert delivery stage: the stream's app id + ``-delivery``."""
    return f"{settings.processor.stream.app_id}-delivery"
