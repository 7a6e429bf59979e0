"""Settings of the sink role (Kafka topics into ClickHouse tables)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SinkConfig(BaseModel):
    """How the ClickHouse sink batches, retries and commits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consumer_group: str = Field(
        default="llmtap-sink",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Kafka consumer group of the sink; its instances share the partitions.",
    )
    derived_consumer_group: str = Field(
        default="llmtap-sink-derived",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Consumer group of the sink for aggregates, alerts, scores and embeddings.",
    )
    batch_max_rows: int = Field(
        default=50_000,
        ge=1,
        description="Rows buffered before an insert (all partitions); while one batch is "
        "inserted the next one fills, so memory holds up to two.",
    )
    batch_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Message bytes buffered before an insert."
    )
    flush_interval_seconds: float = Field(
        default=1.0, gt=0, le=60, description="Longest a row waits in the buffer (freshness)."
    )
    retry_initial_seconds: float = Field(
        default=0.5, gt=0, description="First wait after a failed insert; doubles up to the max."
    )
    retry_max_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait between retries of a failed insert."
    )
