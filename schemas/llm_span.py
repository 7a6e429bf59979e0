"""The normalized LLM span: one model for every instrumentation convention, and its Kafka encoding.

Every processor after the normalizer, and the ClickHouse sink, read this and nothing else, so the
differences between OTel GenAI (current and deprecated names), OpenInference, Traceloop and
Langfuse stop at the normalizer. Non-LLM spans use the same model with ``span_type="other"``:
traces stay whole.

Encoding: one JSON object per span (msgspec, typed on both ends), keyed by the hex trace id.
Token usage follows one rule whatever the source said: ``input`` counts every input token,
including cache reads and cache writes; ``output`` counts every output token, including reasoning.
Money is decimal text (never float), with the price table version that produced it.
"""

from __future__ import annotations

import msgspec

SCHEMA_VERSION = 1


class ToolCall(msgspec.Struct, omit_defaults=True, gc=False):
    name: str
    id: str | None = None
    arguments: str | None = None  # JSON text as the model produced it


class Message(msgspec.Struct, omit_defaults=True, gc=False):
    role: str
    content: str | None = None
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None
    finish_reason: str | None = None


class RetrievedDocument(msgspec.Struct, omit_defaults=True, gc=False):
    id: str | None = None
    content: str | None = None
    score: float | None = None
    source_span_id: str | None = None  # the retrieval span it came from, when not this span


class TokenUsage(msgspec.Struct, omit_defaults=True, gc=False):
    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None

    @property
    def total(self) -> int | None:
        if self.input is None and self.output is None:
            return None
        return (self.input or 0) + (self.output or 0)


class Cost(msgspec.Struct, omit_defaults=True, gc=False):
    """The priced breakdown of one span; amounts are decimal strings in ``currency``.

    Parts add up to ``total``: input is the uncached input, output the non-reasoning output.
    ``priced`` is False (and every amount None) when no price matched: never a silent zero.
    """

    priced: bool
    price_version: str
    currency: str = "USD"
    total: str | None = None
    input: str | None = None
    output: str | None = None
    cache_read: str | None = None
    cache_write: str | None = None
    reasoning: str | None = None
    price_id: str | None = None  # which entry of the table matched
    tier: str | None = None  # context-length tier applied, if any
    unpriced_reason: str | None = None


class RequestParameters(msgspec.Struct, omit_defaults=True, gc=False):
    temperature: float | None = None
    top_p: float | None = None
    top_k: float | None = None
    max_tokens: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop_sequences: list[str] = []
    stream: bool | None = None


class LlmSpan(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    schema_version: int = SCHEMA_VERSION
    # identity and timing
    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    name: str = ""
    kind: str = "internal"
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    status: str = "unset"  # unset | ok | error
    status_message: str | None = None
    # where it came from
    service_name: str = "unknown_service"
    service_version: str | None = None
    environment: str | None = None
    tenant: str = "default"
    scope_name: str | None = None
    scope_version: str | None = None
    received_at_unix_nano: int | None = None
    # what it is
    span_type: str = "other"  # llm | embedding | retrieval | tool | agent | other
    convention: str = "none"  # otel_genai | otel_genai_legacy | openinference | traceloop | ...
    provider: str | None = None
    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    response_id: str | None = None
    request: RequestParameters = msgspec.field(default_factory=RequestParameters)
    finish_reasons: list[str] = []
    usage: TokenUsage = msgspec.field(default_factory=TokenUsage)
    cost: Cost | None = None
    time_to_first_token_ms: float | None = None
    # who
    user_id: str | None = None
    session_id: str | None = None
    # content
    system_instructions: str | None = None
    input_messages: list[Message] = []
    output_messages: list[Message] = []
    prompt_text: str | None = None  # the last user turn: what the model was asked
    completion_text: str | None = None  # the answer text
    retrieved_documents: list[RetrievedDocument] = []
    tool_calls: list[ToolCall] = []
    prompt_template_id: str | None = None
    prompt_template_version: str | None = None
    prompt_template_variables: dict[str, str] = {}
    # what went wrong
    error_type: str | None = None
    error_message: str | None = None
    # everything not mapped above, as text
    attributes: dict[str, str] = {}
    resource_attributes: dict[str, str] = {}

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_time_unix_nano - self.start_time_unix_nano) / 1e6

    @property
    def is_llm_call(self) -> bool:
        return self.span_type in ("llm", "embedding")


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LlmSpan)


def malformed(error: UnicodeDecodeError | RecursionError) -> msgspec.DecodeError:
    """What msgspec raises outside its own DecodeError, as one: invalid UTF-8 inside a string,
    and unknown fields nested deeper than the stack (skipping them recurses). Consumers catch
    DecodeError; a poison message must be dead-lettered, not crash them."""
    if isinstance(error, RecursionError):
        return msgspec.DecodeError("malformed message: nested too deeply")
    return msgspec.DecodeError(f"malformed message: invalid UTF-8 in a string ({error})")


def encode_span(span: LlmSpan) -> bytes:
    return _encoder.encode(span)


def decode_span(value: bytes) -> LlmSpan:
    """Raises msgspec.ValidationError / DecodeError on a value that is not an LlmSpan."""
    try:
        return _decoder.decode(value)
    except (UnicodeDecodeError, RecursionError) as error:
        raise malformed(error) from None


def span_key(span: LlmSpan) -> bytes:
    return span.trace_id.encode("ascii")
