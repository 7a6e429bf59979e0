"""Normalized spans as ``llm_spans`` rows: the one place that knows the table's column order.

Also the time columns' ranges, for every row builder of the ClickHouse sinks: a time outside
its column's range is refused before the insert with a ValueError that names the field, so the
message is dead-lettered with a reason an operator can read. Unchecked, it would fail the whole
batch in the client's encoder (an error that looks like ClickHouse being away: retried forever),
be stored as another time, or raise ``OSError: [Errno 75]`` in ``datetime.fromtimestamp``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec

from llmtap.schemas.llm_span import LlmSpan

SPAN_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "end_timestamp",
    "duration_ms",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "status",
    "status_message",
    "service_name",
    "service_version",
    "environment",
    "tenant",
    "scope_name",
    "scope_version",
    "span_type",
    "convention",
    "provider",
    "operation",
    "request_model",
    "response_model",
    "response_id",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "finish_reasons",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "priced",
    "cost_total",
    "cost_input",
    "cost_output",
    "cost_cache_read",
    "cost_cache_write",
    "cost_reasoning",
    "currency",
    "price_version",
    "price_id",
    "unpriced_reason",
    "time_to_first_token_ms",
    "user_id",
    "session_id",
    "prompt_template_id",
    "prompt_template_version",
    "system_instructions",
    "prompt_text",
    "completion_text",
    "input_messages",
    "output_messages",
    "retrieved_documents",
    "tool_calls",
    "error_type",
    "error_message",
    "attributes",
    "resource_attributes",
    "received_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)


# Settings of every insert into llm_spans, on either path of the sink.
INSERT_SETTINGS: dict[str, int] = {
    # Synchronous: the insert is durable when it returns (the point where offsets commit).
    "async_insert": 0,
    "insert_deduplicate": 1,
    # No ReplacingMergeTree pass over each inserted block: it halved the insert rate, and a
    # span replayed twice within one batch is collapsed by the background merges like one
    # replayed across batches (exact counts use FINAL or uniqExact either way).
    "optimize_on_insert": 0,
}


class TimeRange(NamedTuple):
    """The values a ClickHouse time column holds, in the unit the message carries."""

    column_type: str
    low: int
    high: int  # inclusive
    text: str  # low to high, as dates


_DATETIME64_LOW_SECONDS = -2_208_988_800  # 1900-01-01 00:00:00 UTC
_DATETIME64_END_SECONDS = 10_413_792_000  # 2300-01-01 00:00:00 UTC, the first second beyond
# DateTime: unsigned 32-bit seconds. DateTime64: 1900-01-01 to 2299-12-31; at precision 9 the
# Int64 tick count ends sooner, at 2262-04-11 (the client cannot encode more).
DATETIME_SECONDS = TimeRange(
    "DateTime", 0, 2**32 - 1, "1970-01-01 00:00:00 to 2106-02-07 06:28:15 UTC"
)
DATETIME64_3_MILLIS = TimeRange(
    "DateTime64(3)",
    _DATETIME64_LOW_SECONDS * 1000,
    _DATETIME64_END_SECONDS * 1000 - 1,
    "1900-01-01 00:00:00 to 2299-12-31 23:59:59.999 UTC",
)
DATETIME64_9_NANOS = TimeRange(
    "DateTime64(9)",
    _DATETIME64_LOW_SECONDS * 10**9,
    2**63 - 1,
    "1900-01-01 00:00:00 to 2262-04-11 23:47:16.854775807 UTC",
)


def check_time(field: str, value: int, allowed: TimeRange) -> int:
    """The value, or ValueError naming the field when its column cannot hold it."""
    if not allowed.low <= value <= allowed.high:
        raise ValueError(
            f"{field} {value} is outside ClickHouse's {allowed.column_type} range ({allowed.text})"
        )
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_from_seconds(field: str, seconds: int) -> datetime:
    """A ``DateTime`` column's value from unix seconds."""
    return _EPOCH + timedelta(seconds=check_time(field, seconds, DATETIME_SECONDS))


def datetime64_from_millis(field: str, millis: int | None) -> datetime | None:
    """A ``DateTime64(3)`` column's value from unix milliseconds (None stays None). Exact:
    ``fromtimestamp(millis / 1000)`` goes through a float and can be a microsecond off."""
    if millis is None:
        return None
    return _EPOCH + timedelta(milliseconds=check_time(field, millis, DATETIME64_3_MILLIS))


def nanos_in_range(field: str, nanos: int | None) -> int | None:
    """A ``DateTime64(9)`` column's value: the unix nanoseconds themselves, once checked."""
    return None if nanos is None else check_time(field, nanos, DATETIME64_9_NANOS)


_encode = msgspec.json.Encoder().encode


def _json(items: list[object]) -> str:
    return _encode(items).decode() if items else ""


def span_row(span: LlmSpan, topic: str, partition: int, offset: int) -> tuple[object, ...]:
    """One row in SPAN_COLUMNS order; timestamps as integer nanoseconds (DateTime64(9) ticks).
    ValueError for a time the table cannot hold (the normalizer passes span times through)."""
    cost = span.cost
    usage = span.usage
    request = span.request
    return (
        check_time("start_time_unix_nano", span.start_time_unix_nano, DATETIME64_9_NANOS),
        check_time("end_time_unix_nano", span.end_time_unix_nano, DATETIME64_9_NANOS),
        span.duration_ms,
        span.trace_id,
        span.span_id,
        span.parent_span_id or "",
        span.name,
        span.kind,
        span.status,
        span.status_message or "",
        span.service_name,
        span.service_version or "",
        span.environment or "",
        span.tenant,
        span.scope_name or "",
        span.scope_version or "",
        span.span_type,
        span.convention,
        span.provider or "",
        span.operation or "",
        span.request_model or "",
        span.response_model or "",
        span.response_id or "",
        request.temperature,
        request.top_p,
        request.max_tokens if request.max_tokens is None or request.max_tokens < 2**32 else None,
        None if request.stream is None else int(request.stream),
        span.finish_reasons,
        usage.input,
        usage.output,
        usage.cache_read,
        usage.cache_write,
        usage.reasoning,
        1 if cost is not None and cost.priced else 0,
        cost.total if cost else None,
        cost.input if cost else None,
        cost.output if cost else None,
        cost.cache_read if cost else None,
        cost.cache_write if cost else None,
        cost.reasoning if cost else None,
        cost.currency if cost else "",
        cost.price_version if cost else "",
        (cost.price_id or "") if cost else "",
        (cost.unpriced_reason or "") if cost else "",
        span.time_to_first_token_ms,
        span.user_id or "",
        span.session_id or "",
        span.prompt_template_id or "",
        span.prompt_template_version or "",
        span.system_instructions or "",
        span.prompt_text or "",
        span.completion_text or "",
        _json(span.input_messages),  # type: ignore[arg-type]
        _json(span.output_messages),  # type: ignore[arg-type]
        _json(span.retrieved_documents),  # type: ignore[arg-type]
        _json(span.tool_calls),  # type: ignore[arg-type]
        span.error_type or "",
        span.error_message or "",
        span.attributes,
        span.resource_attributes,
        nanos_in_range("received_at_unix_nano", span.received_at_unix_nano),
        topic,
        partition,
        offset,
    )
