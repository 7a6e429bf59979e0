"""Settings of the OTLP collector: where it listens, what it accepts, and how it protects itself."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from llmtap.collectors.redaction import RedactionConfig

MEBIBYTE = 1024 * 1024


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    tenant: str = Field(
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$", description="Tenant id the key maps to."
    )
    key: SecretStr = Field(description="The secret clients send as `Authorization: Bearer <key>`.")

    @model_validator(mode="after")
    def _long_enough(self) -> ApiKey:
        if len(self.key.get_secret_value()) < 16:
            raise ValueError(f"the API key of tenant {self.tenant!r} is shorter than 16 characters")
        return self


class CollectorConfig(BaseModel):
    """The OTLP receivers (HTTP :4318, gRPC :4317) that write spans to the raw Kafka topic."""

    # Errors never echo input: api_keys holds secrets.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    address: str = Field(
        default="127.0.0.1",
        description="Interface the receivers listen on. Non-loopback addresses require API keys.",
    )
    http_port: int = Field(default=4318, ge=0, le=65535, description="OTLP/HTTP port; 0 picks one.")
    grpc_port: int | None = Field(
        default=4317, ge=0, le=65535, description="OTLP/gRPC port; unset disables gRPC."
    )
    max_request_bytes: int = Field(
        default=16 * MEBIBYTE, ge=1024, description="Largest request body as sent (compressed)."
    )
    max_decompressed_bytes: int = Field(
        default=64 * MEBIBYTE,
        ge=1024,
        description="Largest request body after decompression (413).",
    )
    max_spans_per_request: int = Field(default=20_000, ge=1, description="More spans: 413.")
    max_attributes_per_span: int = Field(
        default=512, ge=1, description="Spans with more attributes are rejected (partial success)."
    )
    max_events_per_span: int = Field(
        default=1024, ge=0, description="Spans with more events are rejected (partial success)."
    )
    max_attribute_value_bytes: int = Field(
        default=4 * MEBIBYTE,
        ge=64,
        description="Spans with a longer string value (UTF-8 bytes) are rejected (partial success)",
    )
    max_in_flight_requests: int = Field(
        default=256, ge=1, description="Requests waiting for Kafka at once; more get 429."
    )
    max_in_flight_bytes: int = Field(
        default=256 * MEBIBYTE,
        ge=MEBIBYTE,
        description="Decompressed bytes waiting for Kafka; more get 429.",
    )
    delivery_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description=(
            "How long a request may wait for Kafka before it is answered 503. Keep it below the "
            "clients' export timeout (10 s in the OTel SDKs) so a client never retries a request "
            "that is still being delivered."
        ),
    )
    retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After sent with 429 and 503 answers."
    )
    api_keys: list[ApiKey] = Field(
        default_factory=list, description="Accepted API keys and their tenants; empty: no auth."
    )
    allow_unauthenticated_remote: bool = Field(
        default=False,
        description="Allow listening on a non-loopback address without API keys (not advised).",
    )
    default_tenant: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        description="Tenant recorded for requests when API keys are off.",
    )
    dead_letter_rejected_spans: bool = Field(
        default=True,
        description="Write spans rejected by the limits to the dead-letter topic with the reason.",
    )
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)

    @model_validator(mode="after")
    def _remote_needs_auth(self) -> CollectorConfig:
        if (
            not self.api_keys
            and not self.allow_unauthenticated_remote
            and not _is_loopback(self.address)
        ):
            raise ValueError(
                f"address {self.address} is reachable from other machines: configure api_keys, "
                "or set allow_unauthenticated_remote: true"
            )
        if self.max_decompressed_bytes < self.max_request_bytes:
            raise ValueError("max_decompressed_bytes must be at least max_request_bytes")
        keys = [api_key.key.get_secret_value() for api_key in self.api_keys]
        if len(set(keys)) != len(keys):
            raise ValueError("the same API key is listed twice")
        return self


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
