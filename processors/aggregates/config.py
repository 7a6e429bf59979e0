"""Settings of the stream app (faust worker): aggregation windows and batching."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StreamConfig(BaseModel):
    """The faust worker that hosts aggregation and alerting; workers share it by partitions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Run aggregation and alerting.")
    app_id: str = Field(
        default="llmtap-stream",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description=(
            "faust app id: the consumer group of the stream workers and the prefix of their "
            "state changelog topics."
        ),
    )
    window_seconds: tuple[int, ...] = Field(
        default=(60, 3600),
        min_length=1,
        description="Tumbling window lengths, shortest first (1-minute windows, 1-hour rollups).",
    )
    grace_seconds: int = Field(
        default=60,
        ge=0,
        description="How long after a window ends late spans are still merged into it.",
    )
    retention_seconds: int = Field(
        default=7200,
        ge=60,
        description="How long closed windows stay in worker state (later spans count as dropped).",
    )
    per_user_windows: bool = Field(
        default=True,
        description="Also aggregate cost and requests per (tenant, user id), for user budgets.",
    )
    input_batch_max_messages: int = Field(
        default=20,
        ge=1,
        le=1000,
        description=(
            "Aggregate inputs messages (up to 1,000 LLM calls each) the aggregate agent takes "
            "per batch (stream.take_events): bounds a batch's memory when a backlog is read."
        ),
    )
    batch_max_messages: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Messages the merge and alert agents take per batch (stream.take_events).",
    )
    batch_max_wait_seconds: float = Field(
        default=0.5, gt=0, le=30, description="Longest wait for a batch to fill (adds latency)."
    )
    commit_interval_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How often the worker commits its Kafka offsets."
    )

    @field_validator("window_seconds")
    @classmethod
    def _check_windows(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(seconds < 1 or 86400 % seconds for seconds in value):
            raise ValueError("every window must be a whole divisor of a day, in seconds")
        if list(value) != sorted(set(value)):
            raise ValueError("list each window once, shortest first")
        return value
