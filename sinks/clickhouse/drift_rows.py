"""Drift results (``schemas/drift.py``) as rows of ClickHouse's ``drift_results`` table.

The table is ``ReplacingMergeTree(version)``: a window the drift stage emits again (after a
restart) carries a higher version and replaces the earlier row.
"""

from __future__ import annotations

from llmtap.schemas.drift import decode_drift_result
from llmtap.sinks.clickhouse.rows import datetime_from_seconds

DRIFT_COLUMNS = (
    "window_start",
    "window_end",
    "tenant",
    "service_name",
    "environment",
    "provider",
    "operation",
    "request_model",
    "prompt_template_version",
    "feature",
    "detector",
    "statistic",
    "p_value",
    "threshold",
    "drifted",
    "reference_size",
    "current_size",
    "evidence",
    "version",
)


def drift_rows(value: bytes) -> list[tuple[str, tuple[object, ...]]]:
    result = decode_drift_result(value)
    row = (
        datetime_from_seconds("window_start", result.window_start),
        datetime_from_seconds("window_end", result.window_end),
        result.tenant,
        result.service_name,
        result.environment,
        result.provider,
        result.operation,
        result.request_model,
        result.prompt_template_version,
        result.feature,
        result.detector,
        result.statistic,
        result.p_value,
        result.threshold,
        1 if result.drifted else 0,
        result.reference_size,
        result.current_size,
        result.evidence,
        result.version,
    )
    return [("drift_results", row)]
