"""Settings of the web dashboard: where it listens and who may read it."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

MINIMUM_TOKEN_LENGTH = 16


class WebConfig(BaseModel):
    """The read-only web dashboard that `llmtap up` and `llmtap ui` serve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Serve the dashboard from `llmtap up`.")
    address: str = Field(
        default="127.0.0.1",
        description="Interface the dashboard listens on. Non-loopback addresses need auth_token.",
    )
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    auth_token: SecretStr | None = Field(
        default=None,
        description=(
            "Token the API requires as `Authorization: Bearer <token>` (at least 16 "
            "characters). Unset: no auth, which is only allowed on a loopback address."
        ),
    )
    refresh_interval_seconds: int = Field(
        default=10, ge=1, le=3600, description="How often the pages reload their data by default."
    )
    max_rows: int = Field(
        default=500, ge=10, le=10_000, description="Most rows a list (spans, alerts) returns."
    )
    query_timeout_seconds: int = Field(
        default=30, ge=1, le=600, description="ClickHouse max_execution_time of each query."
    )

    @model_validator(mode="after")
    def _remote_needs_token(self) -> WebConfig:
        token = self.auth_token.get_secret_value() if self.auth_token is not None else None
        if token is not None and len(token) < MINIMUM_TOKEN_LENGTH:
            raise ValueError(f"auth_token is shorter than {MINIMUM_TOKEN_LENGTH} characters")
        if token is None and not is_loopback(self.address):
            raise ValueError(
                f"address {self.address} is reachable from other machines: set auth_token "
                "(or listen on 127.0.0.1)"
            )
        return self


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
