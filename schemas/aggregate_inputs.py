"""What the aggregation stage reads: the aggregated fields of LLM spans, many per message.

The normalized spans topic holds one message per span, every span of a trace, with content.
Read through faust, each message costs the stream worker more (fetch, event, ack: about
100 CPU-µs) than aggregating the span does, and most spans (tool calls, retrievals, the
application's own) are not aggregated at all. So the normalizer also writes, in the same Kafka
transaction, each batch's LLM and embedding calls to the aggregate inputs topic: only the
fields aggregation reads, msgpack, up to ``MAX_SPANS_PER_MESSAGE`` spans per message.

A message is applied whole or not at all, so exactly-once bookkeeping stays per message offset
(see ``WindowedAggregator``).
"""

from __future__ import annotations

import msgspec

from llmtap.schemas.llm_span import Cost, LlmSpan, TokenUsage

# Spans per message (about 250 bytes a span before compression): keeps a batch's work per
# message small.
MAX_SPANS_PER_MESSAGE = 1000
# And bytes: spans are hostile input, and a thousand with long model or user names must not
# make a message the broker refuses (topics take at least 1 MiB). A message over this is split.
MAX_MESSAGE_BYTES = 512 * 1024

AGGREGATED_SPAN_TYPES = frozenset({"llm", "embedding"})


class AggregateSpan(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The fields of a normalized span that aggregation reads."""

    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    status: str = "unset"
    service_name: str = "unknown_service"
    environment: str | None = None
    tenant: str = "default"
    span_type: str = "other"
    provider: str | None = None
    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    finish_reasons: list[str] = []
    usage: TokenUsage = msgspec.field(default_factory=TokenUsage)
    cost: Cost | None = None
    time_to_first_token_ms: float | None = None
    user_id: str | None = None
    prompt_template_version: str | None = None

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_time_unix_nano - self.start_time_unix_nano) / 1e6

    @property
    def is_llm_call(self) -> bool:
        return self.span_type in AGGREGATED_SPAN_TYPES


def is_aggregated(span: LlmSpan) -> bool:
    """Whether the aggregation stage counts this span (LLM and embedding calls)."""
    return span.span_type in AGGREGATED_SPAN_TYPES


def aggregate_input_of(span: LlmSpan) -> AggregateSpan:
    return AggregateSpan(
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
        status=span.status,
        service_name=span.service_name,
        environment=span.environment,
        tenant=span.tenant,
        span_type=span.span_type,
        provider=span.provider,
        operation=span.operation,
        request_model=span.request_model,
        response_model=span.response_model,
        finish_reasons=span.finish_reasons,
        usage=span.usage,
        cost=span.cost,
        time_to_first_token_ms=span.time_to_first_token_ms,
        user_id=span.user_id,
        prompt_template_version=span.prompt_template_version,
    )


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[AggregateSpan])
_json_decoder = msgspec.json.Decoder(AggregateSpan)


def encode_aggregate_inputs(
    spans: list[AggregateSpan], max_bytes: int = MAX_MESSAGE_BYTES
) -> list[bytes]:
    """Messages of at most ``MAX_SPANS_PER_MESSAGE`` spans and ``max_bytes`` each (a single
    span over ``max_bytes`` is a message of its own), in order."""
    messages: list[bytes] = []
    for start in range(0, len(spans), MAX_SPANS_PER_MESSAGE):
        _encode_within(spans[start : start + MAX_SPANS_PER_MESSAGE], max_bytes, messages)
    return messages


def _encode_within(spans: list[AggregateSpan], max_bytes: int, messages: list[bytes]) -> None:
    value = _encoder.encode(spans)
    if len(value) <= max_bytes or len(spans) == 1:
        messages.append(value)
        return
    half = len(spans) // 2
    _encode_within(spans[:half], max_bytes, messages)
    _encode_within(spans[half:], max_bytes, messages)


def decode_aggregate_inputs(value: bytes) -> list[AggregateSpan]:
    """One message's spans (msgspec errors on a malformed value, ValueError on one too long)."""
    spans = _decoder.decode(value)
    if len(spans) > MAX_SPANS_PER_MESSAGE:
        raise ValueError(f"{len(spans)} spans in one message, at most {MAX_SPANS_PER_MESSAGE}")
    return spans


def decode_aggregate_span(value: bytes) -> AggregateSpan:
    """The aggregated fields of one normalized-spans message (JSON ``LlmSpan``)."""
    return _json_decoder.decode(value)
