"""Settings of the web dashboard: where it listens and who may read it."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

MINIMUM_TOKEN_LENGTH = 16


class TenantToken(BaseModel):
    """A token that reads one tenant's data only: every query it makes is pinned to the tenant."""

    # a refused token must not be echoed by the error (pydantic shows the input by default)
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    tenant: str = Field(
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        description="The tenant this token may read (the collector's api_keys tenant).",
    )
    token: SecretStr = Field(
        description="Sent as `Authorization: Bearer <token>` (at least 16 characters)."
    )

    @model_validator(mode="after")
    def _long_enough(self) -> TenantToken:
        if len(self.token.get_secret_value()) < MINIMUM_TOKEN_LENGTH:
            raise ValueError(
                f"the token of tenant {self.tenant!r} is shorter than {MINIMUM_TOKEN_LENGTH} "
                "characters"
            )
        return self


class WebConfig(BaseModel):
    """The read-only web dashboard that `llmtap up` and `llmtap ui` serve."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    enabled: bool = Field(default=True, description="Serve the dashboard from `llmtap up`.")
    address: str = Field(
        default="127.0.0.1",
        description=(
            "Interface the dashboard listens on. Non-loopback addresses need auth_token or "
            "tenant_tokens."
        ),
    )
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    auth_token: SecretStr | None = Field(
        default=None,
        description=(
            "Operator token: reads every tenant, sent as `Authorization: Bearer <token>` (at "
            "least 16 characters). Unset with no tenant_tokens: no auth, which is only allowed "
            "on a loopback address."
        ),
    )
    tenant_tokens: list[TenantToken] = Field(
        default_factory=list,
        description=(
            "Tokens that read one tenant each: the API pins every query of such a token to its "
            "tenant and answers 403 when it asks for another one. Setting any token makes the "
            "API require one."
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

    @property
    def auth_required(self) -> bool:
        return self.auth_token is not None or bool(self.tenant_tokens)

    @model_validator(mode="after")
    def _remote_needs_token(self) -> WebConfig:
        token = self.auth_token.get_secret_value() if self.auth_token is not None else None
        if token is not None and len(token) < MINIMUM_TOKEN_LENGTH:
            raise ValueError(f"auth_token is shorter than {MINIMUM_TOKEN_LENGTH} characters")
        if not self.auth_required and not is_loopback(self.address):
            raise ValueError(
                f"address {self.address} is reachable from other machines: set auth_token "
                "or tenant_tokens (or listen on 127.0.0.1)"
            )
        tokens = [entry.token.get_secret_value() for entry in self.tenant_tokens]
        if token is not None:
            tokens.append(token)
        if len(set(tokens)) != len(tokens):
            # one token for two readers would make "which tenant is this?" ambiguous
            raise ValueError("the same token is listed twice (auth_token and tenant_tokens)")
        return self


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
