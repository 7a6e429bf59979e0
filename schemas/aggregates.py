"""Windowed aggregates and alert events: the records the stream layer emits (Kafka, ClickHouse).

An :class:`Aggregate` is the state of one tumbling window for one group. On Kafka, a message
value is a msgpack array of them (one message per batch and partition, not per window). The
stream re-emits a window whenever spans change it, with a higher ``version``; the highest
version is the current one (ClickHouse keeps it with ``ReplacingMergeTree(version)``), so a
re-delivered record is harmless. ``source_partition`` is set on the per-partition partials that
the merge stage combines, and is ``-1`` on merged aggregates.

Money is decimal text, as on the span. The latency and time-to-first-token sketches are
serialized DDSketch protobufs (relative accuracy 1 %), so windows and workers merge exactly and
any quantile can be read from the stored bytes later.
"""

from __future__ import annotations

import msgspec

from llmtap.schemas.llm_span import malformed

# The group of the main dimension set; the "user" set uses tenant and user_id only.
MODEL_DIMENSIONS = (
    "tenant",
    "service_name",
    "environment",
    "provider",
    "request_model",
    "operation",
    "prompt_template_version",
)
USER_DIMENSIONS = ("tenant", "user_id")
DIMENSION_SETS = {"model": MODEL_DIMENSIONS, "user": USER_DIMENSIONS}


class Aggregate(msgspec.Struct, kw_only=True, omit_defaults=True):
    dimension_set: str = "model"  # model | user
    window_start: int  # unix seconds
    window_seconds: int
    # the group; dimensions that do not apply to the set stay ""
    tenant: str = ""
    service_name: str = ""
    environment: str = ""
    provider: str = ""
    request_model: str = ""
    operation: str = ""
    prompt_template_version: str = ""
    user_id: str = ""
    # counts
    requests: int = 0
    errors: int = 0
    unpriced_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    # money, decimal text in ``currency``
    currency: str = "USD"
    cost_total: str = "0"
    cost_input: str = "0"
    cost_output: str = "0"
    cost_cache_read: str = "0"
    cost_cache_write: str = "0"
    cost_reasoning: str = "0"
    # sketches (serialized DDSketch) and the quantiles read from them, in milliseconds
    latency_sketch: bytes = b""
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_p99_ms: float = 0.0
    ttft_count: int = 0
    ttft_sketch: bytes = b""
    ttft_p50_ms: float = 0.0
    ttft_p95_ms: float = 0.0
    finish_reasons: dict[str, int] = {}
    # spans that arrived after the window closed (start + length + grace): counted, not merged
    late_spans: int = 0
    version: int = 0
    source_partition: int = -1

    @property
    def group(self) -> tuple[str, ...]:
        """The values of the set's dimensions (``DIMENSION_SETS``), in order; attributes read
        directly: this runs for every partial the merge stage receives."""
        if self.dimension_set == "user":
            return (self.tenant, self.user_id)
        return (
            self.tenant,
            self.service_name,
            self.environment,
            self.provider,
            self.request_model,
            self.operation,
            self.prompt_template_version,
        )

    @property
    def window_key(self) -> str:
        """Identifies the window and group (not the partition): the Kafka key of the record."""
        return "|".join(
            (self.dimension_set, str(self.window_seconds), str(self.window_start), *self.group)
        )


class AlertEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One notification: a rule started firing for a group, or stopped (``resolved``)."""

    event_id: str  # stable: fingerprint + the firing's start, so a re-delivery is recognisable
    fingerprint: str  # stable per (rule, group): dedup and cooldown key
    rule_id: str
    severity: str  # info | warning | critical
    state: str  # firing | resolved
    tenant: str = ""
    group_key: str = ""  # "service_name=chat,request_model=gpt-4o"
    labels: dict[str, str] = {}
    value: float = 0.0
    threshold: float = 0.0
    message: str = ""
    fired_at_ms: int  # when the firing started (unix ms)
    resolved_at_ms: int | None = None
    evaluated_at_ms: int = 0
    # delivery bookkeeping: the evaluator emits "pending"; the deliverer re-emits the outcome
    delivery_status: str = "pending"  # pending | delivered | failed | suppressed
    delivery_attempts: int = 0
    delivered_at_ms: int | None = None
    delivery_error: str = ""
    version: int = 0


_aggregate_encoder = msgspec.msgpack.Encoder()
_aggregate_decoder = msgspec.msgpack.Decoder(Aggregate)
_alert_encoder = msgspec.json.Encoder()
_alert_decoder = msgspec.json.Decoder(AlertEvent)


def encode_aggregate(aggregate: Aggregate) -> bytes:
    return _aggregate_encoder.encode(aggregate)


def decode_aggregate(value: bytes) -> Aggregate:
    """Raises msgspec.ValidationError / DecodeError on a value that is not an Aggregate."""
    try:
        return _aggregate_decoder.decode(value)
    except (UnicodeDecodeError, RecursionError) as error:
        raise malformed(error) from None


_aggregates_decoder = msgspec.msgpack.Decoder(list[Aggregate])


def encode_aggregates(aggregates: list[Aggregate]) -> bytes:
    """Several records in one value: the stream sends one message per batch and partition."""
    return _aggregate_encoder.encode(aggregates)


def join_encoded_aggregates(encoded: list[bytes]) -> bytes:
    """What :func:`encode_aggregates` returns, from records each already encoded by
    :func:`encode_aggregate`: a stage that keeps its records' bytes re-sends unchanged ones
    without encoding them again."""
    return msgpack_array_header(len(encoded)) + b"".join(encoded)


def msgpack_array_header(length: int) -> bytes:
    if length < 16:
        return bytes((0x90 | length,))
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def decode_aggregates(value: bytes) -> list[Aggregate]:
    """A value holding a list of records (what the aggregates topics carry). Raises
    msgspec.ValidationError / DecodeError on anything else."""
    try:
        return _aggregates_decoder.decode(value)
    except (UnicodeDecodeError, RecursionError) as error:
        raise malformed(error) from None


def encode_alert(alert: AlertEvent) -> bytes:
    return _alert_encoder.encode(alert)


def decode_alert(value: bytes) -> AlertEvent:
    """Raises msgspec.ValidationError / DecodeError on a value that is not an AlertEvent."""
    try:
        return _alert_decoder.decode(value)
    except (UnicodeDecodeError, RecursionError) as error:
        raise malformed(error) from None
