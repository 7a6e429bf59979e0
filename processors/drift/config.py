"""Settings of the drift stage (``processor.drift``): keys, reference policy, windows, tests.

The defaults are the configuration measured in ``bench/drift.py`` and documented in
``docs/drift.md``: windows of 200 events (or 5 minutes), a 500-event reference sample, 200
permutations, p < 0.01 confirmed by MMD, three consecutive windows before ``drifted`` is set.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KeyDimension = Literal[
    "tenant",
    "service_name",
    "environment",
    "provider",
    "operation",
    "request_model",
    "prompt_template_version",
]
# What "a new model / prompt version / deploy" means for reset_on_change.
VersionField = Literal[
    "response_model", "request_model", "prompt_template_version", "service_version"
]
EmbeddingKind = Literal["prompt", "completion", "context"]


class DriftConfig(BaseModel):
    """Drift detection on live traffic: embedding drift (prompts, responses) and scalar drift."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Run the drift stage in the processor role.")
    consumer_group: str = Field(
        default="llmtap-drift",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Kafka consumer group of the drift stage (reads spans and embeddings).",
    )
    key_dimensions: tuple[KeyDimension, ...] = Field(
        default=("tenant", "service_name", "operation", "request_model", "prompt_template_version"),
        min_length=1,
        description=(
            "Span fields that identify a drift key; drop some for coarser keys (e.g. "
            "[tenant, service_name]). The tenant is always part of the key."
        ),
    )
    reference_policy: Literal["fixed", "trailing", "reset_on_change"] = Field(
        default="reset_on_change",
        description=(
            "fixed: the first reference_events events of a key, kept; trailing: the last "
            "reservoir_size events before the current window; reset_on_change: fixed, rebuilt "
            "when a version_fields value of the key changes (new model, prompt version, deploy)."
        ),
    )
    version_fields: tuple[VersionField, ...] = Field(
        default=("response_model", "prompt_template_version", "service_version"),
        description="Span fields whose change resets the reference under reset_on_change.",
    )
    reference_events: int = Field(
        default=1000,
        ge=20,
        description="Events that form a fixed reference (warm-up before the first window).",
    )
    reservoir_size: int = Field(
        default=500,
        ge=20,
        le=20_000,
        description="Reference events kept per key and feature (uniform reservoir) for the tests.",
    )
    window_events: int = Field(
        default=200, ge=10, le=20_000, description="A current window closes at this many events."
    )
    window_seconds: float = Field(
        default=300.0,
        gt=0,
        description="... or when this much event time has passed since its first event.",
    )
    min_window_events: int = Field(
        default=50,
        ge=5,
        description="A window closed by time with fewer events stays open until it has this many.",
    )
    permutations: int = Field(
        default=200, ge=19, le=10_000, description="Permutations per calibrated p-value."
    )
    p_value_threshold: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="A window passes a test at p below this (embedding and Wasserstein tests).",
    )
    categorical_p_value_threshold: float = Field(
        default=0.001,
        gt=0,
        lt=1,
        description="Chi-square p-value below which a categorical feature's window passes.",
    )
    categorical_permutations: int = Field(
        default=9999,
        ge=99,
        le=1_000_000,
        description="Permutations of the chi-square p-value (hypergeometric draws: cheap).",
    )
    consecutive_windows: int = Field(
        default=3,
        ge=1,
        le=100,
        description="A result is drifted only when this many consecutive windows passed.",
    )
    psi_bins: int = Field(default=10, ge=2, le=100, description="PSI bins, at reference quantiles.")
    psi_smoothing: float = Field(
        default=0.5, gt=0, description="Pseudo-count added to each PSI bin (both sides)."
    )
    psi_threshold: float = Field(
        default=0.2,
        gt=0,
        description="PSI at or above which (and chi-square p below the threshold) a window passes.",
    )
    wasserstein_threshold: float = Field(
        default=0.3,
        gt=0,
        description="Wasserstein-1 distance on log values, in reference standard deviations.",
    )
    embedding_kinds: tuple[EmbeddingKind, ...] = Field(
        default=("prompt", "completion"),
        description="Which span embeddings are tested for drift.",
    )
    evidence_examples: int = Field(
        default=5, ge=0, le=100, description="Most shifted examples listed in an embedding result."
    )
    max_keys: int = Field(
        default=2_000,
        ge=1,
        description=(
            "Keys tracked at once; the least recently seen is dropped. A key holds about 2.7 MB "
            "with 384-d prompt and completion embeddings and the default sizes."
        ),
    )
    pending_embeddings: int = Field(
        default=20_000,
        ge=0,
        description="Embeddings held while their span has not arrived; the oldest is dropped.",
    )
    span_index_entries: int = Field(
        default=200_000,
        ge=0,
        description="Recent LLM spans remembered to join later embeddings to their key.",
    )
    batch_max_messages: int = Field(
        default=1000, ge=1, le=100_000, description="Messages read per Kafka transaction."
    )
    seed: int = Field(default=0, description="Seed of the reservoirs and permutations.")

    @model_validator(mode="after")
    def _check_sizes(self) -> DriftConfig:
        errors = []
        if self.min_window_events > self.window_events:
            errors.append("min_window_events must not exceed window_events")
        if self.reservoir_size > self.reference_events:
            errors.append("reservoir_size must not exceed reference_events")
        for permutations, threshold, names in (
            (self.permutations, self.p_value_threshold, "permutations / p_value_threshold"),
            (
                self.categorical_permutations,
                self.categorical_p_value_threshold,
                "categorical_permutations / categorical_p_value_threshold",
            ),
        ):
            if 1 / (permutations + 1) >= threshold:
                errors.append(
                    f"{names}: the smallest permutation p-value, 1 / (permutations + 1), must be "
                    "below the threshold (use at least 10 / threshold permutations)"
                )
        if errors:
            raise ValueError("; ".join(errors))
        return self
