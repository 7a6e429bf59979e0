"""Settings of the processor role (the stream stages after the raw spans topic)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ProcessorConfig(BaseModel):
    """Stream stages: normalization and pricing (more stages join as they land)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consumer_group: str = Field(
        default="llmtap-normalizer",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Kafka consumer group of the normalizer; its workers share the partitions.",
    )
    batch_max_messages: int = Field(
        default=500, ge=1, le=100_000, description="Raw messages normalized per Kafka transaction."
    )
    poll_timeout_seconds: float = Field(
        default=0.2, gt=0, le=10, description="Longest wait for a batch to fill (adds latency)."
    )
    dedupe_window_spans: int = Field(
        default=200_000,
        ge=0,
        description="Recent (trace id, span id) pairs kept to drop duplicates from client retries.",
    )
    recent_retrieval_traces: int = Field(
        default=10_000,
        ge=0,
        description="Traces whose retrieval spans are kept to link context to later LLM spans.",
    )
    price_overrides_file: Path | None = Field(
        default=None,
        description="YAML price entries that replace shipped ones (same id) or add custom models.",
    )
