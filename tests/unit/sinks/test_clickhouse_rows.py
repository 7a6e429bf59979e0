"""The ClickHouse sinks' row builders refuse a time its column cannot hold, naming the field.

A refused message is dead-lettered with the builder's error as the reason (``span_row`` in the
span sink, every ``*_rows`` in the derived sink), so the error must read as a reason: which
field, which value, and the column's range; not ``OSError: [Errno 75]`` from
``datetime.fromtimestamp``, nor an insert error that fails (and retries) the whole batch.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from llmtap.schemas.aggregates import Aggregate, AlertEvent, encode_aggregates, encode_alert
from llmtap.schemas.drift import DriftResult, encode_drift_result
from llmtap.schemas.llm_span import LlmSpan
from llmtap.schemas.scores import SpanEmbedding, SpanScore, encode_embedding, encode_score
from llmtap.sinks.clickhouse.derived import (
    AGGREGATE_COLUMNS,
    ALERT_COLUMNS,
    aggregate_rows,
    alert_rows,
    embedding_rows,
    score_rows,
)
from llmtap.sinks.clickhouse.drift_rows import DRIFT_COLUMNS, drift_rows
from llmtap.sinks.clickhouse.rows import SPAN_COLUMNS, span_row

NANOS = 10**9
YEAR_3000_NANOS = int(datetime(3000, 1, 1, tzinfo=UTC).timestamp()) * NANOS
INT64_MAX = 2**63 - 1  # DateTime64(9)'s last tick: 2262-04-11 23:47:16.854775807


def span(**times: int | None) -> LlmSpan:
    values: dict[str, int | None] = {
        "start_time_unix_nano": 1_767_225_600 * NANOS,
        "end_time_unix_nano": 1_767_225_601 * NANOS,
    }
    values.update(times)
    return LlmSpan(trace_id="01" * 16, span_id="02" * 8, **values)  # type: ignore[arg-type]


def drift(window_start: int, window_end: int) -> bytes:
    return encode_drift_result(
        DriftResult(
            window_start=window_start,
            window_end=window_end,
            feature="input_tokens",
            detector="psi",
            statistic=0.3,
            threshold=0.2,
            drifted=True,
            reference_size=10,
            current_size=10,
            version=1,
        )
    )


def alert(**times: int | None) -> bytes:
    values: dict[str, int | None] = {"fired_at_ms": 1_767_225_600_000}
    values.update(times)
    return encode_alert(
        AlertEvent(
            event_id="e",
            fingerprint="f",
            rule_id="r",
            severity="warning",
            state="firing",
            **values,  # type: ignore[arg-type]
        )
    )


def test_a_span_in_year_3000_is_refused_with_the_field_and_range() -> None:
    reason = (
        f"start_time_unix_nano {YEAR_3000_NANOS} is outside ClickHouse's DateTime64(9) range "
        "(1900-01-01 00:00:00 to 2262-04-11 23:47:16.854775807 UTC)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        span_row(span(start_time_unix_nano=YEAR_3000_NANOS), "normalized", 0, 0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("end_time_unix_nano", INT64_MAX + 1),  # 2262: beyond what the client can encode
        ("end_time_unix_nano", 2**64 - 1),  # OTLP's largest fixed64 (2554)
        ("received_at_unix_nano", YEAR_3000_NANOS),
        ("start_time_unix_nano", -3 * 10**18),  # 1874
    ],
)
def test_every_span_time_is_checked(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=rf"^{field} {value} is outside"):
        span_row(span(**{field: value}), "normalized", 0, 0)


def test_span_times_at_the_edges_of_the_range_pass_unchanged() -> None:
    row = span_row(span(end_time_unix_nano=INT64_MAX, received_at_unix_nano=None), "t", 0, 0)
    named = dict(zip(SPAN_COLUMNS, row, strict=True))
    assert named["end_timestamp"] == INT64_MAX
    assert named["timestamp"] == 1_767_225_600 * NANOS
    assert named["received_at"] is None


def test_drift_window_outside_datetime_reads_as_a_reason() -> None:
    reason = (
        "window_start 99999999999999 is outside ClickHouse's DateTime range "
        "(1970-01-01 00:00:00 to 2106-02-07 06:28:15 UTC)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        drift_rows(drift(99_999_999_999_999, 99_999_999_999_999))
    with pytest.raises(ValueError, match=r"^window_end 4294967296 is outside"):
        drift_rows(drift(1_767_225_600, 2**32))  # one second after 2106-02-07 06:28:15
    with pytest.raises(ValueError, match=r"^window_start -1 is outside"):
        drift_rows(drift(-1, 1_767_225_600))
    [(_, row)] = drift_rows(drift(0, 2**32 - 1))
    named = dict(zip(DRIFT_COLUMNS, row, strict=True))
    assert named["window_end"] == datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)


def test_aggregate_window_outside_datetime_reads_as_a_reason() -> None:
    aggregate = Aggregate(window_start=10**18, window_seconds=60, tenant="acme")
    with pytest.raises(ValueError, match=r"^window_start 1000000000000000000 is outside"):
        aggregate_rows(encode_aggregates([aggregate]))
    user = Aggregate(window_start=-60, window_seconds=60, dimension_set="user")
    with pytest.raises(ValueError, match=r"^window_start -60 is outside .* DateTime range"):
        aggregate_rows(encode_aggregates([user]))
    fine = Aggregate(window_start=1_767_225_600, window_seconds=60)
    [(table, row)] = aggregate_rows(encode_aggregates([fine]))
    assert table == "llm_aggregates"
    assert dict(zip(AGGREGATE_COLUMNS, row, strict=True))["window_start"] == datetime(
        2026, 1, 1, tzinfo=UTC
    )


@pytest.mark.parametrize("field", ["fired_at_ms", "resolved_at_ms", "delivered_at_ms"])
def test_alert_times_outside_datetime64_3_read_as_a_reason(field: str) -> None:
    beyond = int(datetime(2300, 1, 1, tzinfo=UTC).timestamp()) * 1000  # 2299-12-31 is the last
    reason = (
        f"{field} {beyond} is outside ClickHouse's DateTime64(3) range "
        "(1900-01-01 00:00:00 to 2299-12-31 23:59:59.999 UTC)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        alert_rows(alert(**{field: beyond}))
    [(_, row)] = alert_rows(alert(**{field: beyond - 1}))
    named = dict(zip(ALERT_COLUMNS, row, strict=True))
    column = field.removesuffix("_ms")
    assert named[column] == datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    first = int(datetime(1900, 1, 1, tzinfo=UTC).timestamp()) * 1000
    [(_, row)] = alert_rows(alert(**{field: first}))
    assert dict(zip(ALERT_COLUMNS, row, strict=True))[column] == datetime(1900, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match=rf"^{field} {first - 1} is outside"):
        alert_rows(alert(**{field: first - 1}))


def test_score_and_embedding_times_are_checked() -> None:
    score = SpanScore(
        timestamp=YEAR_3000_NANOS,
        tenant="t",
        trace_id="01" * 16,
        span_id="02" * 8,
        service_name="s",
        risk_score=0.5,
        support_min=0.1,
        support_mean=0.2,
        answer_context_similarity=0.3,
        answer_question_similarity=0.4,
        has_context=True,
        injection_score=0.0,
        injection_flag=False,
        model_version="m",
    )
    with pytest.raises(ValueError, match=r"^timestamp \d+ is outside .* DateTime64\(9\) range"):
        score_rows(encode_score(score))
    embedding = SpanEmbedding(
        timestamp=YEAR_3000_NANOS,
        tenant="t",
        trace_id="01" * 16,
        span_id="02" * 8,
        kind="prompt",
        model="m",
        content_hash="h",
        vector=[0.1],
    )
    with pytest.raises(ValueError, match=r"^timestamp \d+ is outside .* DateTime64\(9\) range"):
        embedding_rows(encode_embedding(embedding))
