"""Settings of the processor role (the stream stages after the raw spans topic)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmtap.processors.aggregates.config import StreamConfig
from llmtap.processors.alerts.config import AlertsConfig
from llmtap.processors.drift.config import DriftConfig


class RiskConfig(BaseModel):
    """The risk stage: embeddings, hallucination-risk and prompt-injection scores of LLM spans."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Run the risk stage in the processor role.")
    consumer_group: str = Field(
        default="llmtap-risk",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Kafka consumer group of the risk stage (separate from the normalizer's).",
    )
    model_path: Path | None = Field(
        default=None,
        description="Folder of a sentence-transformers model (default: shipped all-MiniLM-L6-v2).",
    )
    weights_file: Path | None = Field(
        default=None,
        description="Risk model weights from `llmtap risk fit`; default: the shipped weights.",
    )
    backend: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Embedding precision; auto measures bf16 against fp32 at start-up.",
    )
    min_backend_agreement: float = Field(
        default=0.99,
        gt=0,
        le=1,
        description="Lowest bf16-vs-fp32 cosine on the probe set before falling back to fp32.",
    )
    batch_size: int = Field(default=32, ge=1, le=4096, description="Texts per model call.")
    max_tokens: int = Field(
        default=256, ge=8, le=8192, description="Token cap per text; longer texts are truncated."
    )
    cache_entries: int = Field(
        default=50_000, ge=0, description="Embeddings kept in the LRU cache (0 disables it)."
    )
    sampling_budget_spans_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Spans scored per second at most; above it spans are sampled by priority "
        "and weighted (null: score every span).",
    )
    batch_max_messages: int = Field(
        default=200, ge=1, le=100_000, description="Normalized spans read per Kafka transaction."
    )
    injection_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Injection score at or above which a span is flagged."
    )
    emit_embeddings: bool = Field(
        default=True, description="Write prompt, completion and context vectors to Kafka."
    )


class ProcessorConfig(BaseModel):
    """Stream stages: normalization and pricing (more stages join as they land)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    normalizer_enabled: bool = Field(
        default=True,
        description=(
            "Run the normalizer in this processor process. Off (or `llmtap processor --stages`) "
            "for a process that runs only the stages after it, e.g. the stream worker on its "
            "own core."
        ),
    )
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
    stall_timeout_seconds: float = Field(
        default=300.0,
        ge=10,
        description=(
            "A normalizer loop that has not turned for this long (a Kafka transaction stuck "
            "after a broker restart) makes the process exit 1, for its supervisor to restart."
        ),
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
    genai_event_wait_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description=(
            "How long an LLM span without message content waits for its GenAI event log records, "
            "and a record for its span; 0 joins only records that arrived before their span."
        ),
    )
    price_overrides_file: Path | None = Field(
        default=None,
        description="YAML price entries that replace shipped ones (same id) or add custom models.",
    )
    risk: RiskConfig = Field(default_factory=RiskConfig)
    stream: StreamConfig = Field(
        default_factory=StreamConfig,
        description="The faust worker: windowed aggregates and alert evaluation.",
    )
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
