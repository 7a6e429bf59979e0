"""Drift results: one test of one feature of one key over one window (Kafka, ClickHouse).

JSON objects (msgspec, typed on both ends) on the drift topic, keyed by :attr:`DriftResult.key`
(the drift key), and rows of ClickHouse's ``drift_results`` table (``0001_core.sql``,
``0005_drift.sql``): field names are the column names. Key dimensions that are not part of the
configured drift key are ``""``.

``drifted`` is the alert decision (the window passed its test, and so did the windows before it,
``consecutive_windows`` in a row); ``p_value`` is None for tests without one. ``threshold`` is
on the statistic's scale for every detector, so ``statistic / threshold > 1`` reads "beyond the
bar": the PSI and Wasserstein effect thresholds, the chi-square critical value at the p-value
threshold, and for embeddings the window's permutation-calibrated critical value. ``evidence`` is
JSON text: the most shifted examples and the direction for embeddings, the most shifted bins or
categories for scalars. ``version`` is the emission time in unix milliseconds, so a window
emitted again (after a restart) replaces the earlier row (``ReplacingMergeTree(version)``).
"""

from __future__ import annotations

import msgspec

from llmtap.schemas.llm_span import malformed

DRIFT_SCHEMA_VERSION = 1


class DriftResult(msgspec.Struct, kw_only=True):
    schema_version: int = DRIFT_SCHEMA_VERSION
    window_start: int  # unix seconds: the first event of the window
    window_end: int  # unix seconds: the last event of the window
    tenant: str = ""
    service_name: str = ""
    environment: str = ""
    provider: str = ""
    operation: str = ""
    request_model: str = ""
    prompt_template_version: str = ""
    feature: str  # prompt_embedding, completion_embedding, input_tokens, latency_ms, outcome...
    detector: str  # centroid_permutation, psi, wasserstein, chi_square
    statistic: float
    p_value: float | None = None
    threshold: float
    drifted: bool
    reference_size: int
    current_size: int
    evidence: str = "{}"
    version: int

    @property
    def key(self) -> str:
        """The drift key and feature: the Kafka message key (one key's results stay in order)."""
        return "|".join(
            (
                self.tenant,
                self.service_name,
                self.environment,
                self.provider,
                self.operation,
                self.request_model,
                self.prompt_template_version,
                self.feature,
            )
        )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DriftResult)


def encode_drift_result(result: DriftResult) -> bytes:
    return _encoder.encode(result)


def decode_drift_result(value: bytes) -> DriftResult:
    """Raises msgspec.ValidationError / DecodeError on a value that is not a DriftResult."""
    try:
        return _decoder.decode(value)
    except (UnicodeDecodeError, RecursionError) as error:
        raise malformed(error) from None


def drift_result_key(result: DriftResult) -> bytes:
    return result.key.encode("utf-8")
