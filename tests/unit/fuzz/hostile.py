"""Hostile telemetry for the fuzz tests (issue #10): OTLP requests, AnyValues, JSON text, bytes.

Every fuzz target runs at least 10,000 cases and the module must stay within about 90 s on a
2-core runner, so a case is built by plain Python from one Hypothesis-seeded ``Random``
(``st.randoms``): a few microseconds per case instead of a few milliseconds of strategy draws.
Hypothesis still drives the run (reproducible seeds with ``derandomize``, the per-case deadline,
``@example`` regressions); failures print the built case, which is what a regression keeps.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

FUZZ_CASES = 10_000

# Reproducible in CI (derandomize, no example database); no shrinking (a case is one seed, and
# the failing case is printed whole). The deadline is the per-case "no hang" bound: generous
# for a loaded 2-core runner, far below any real hang.
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_CASES,
    deadline=timedelta(seconds=1),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.generate],
)

_Built = TypeVar("_Built")


def seeded(build: Callable[[random.Random], _Built]) -> st.SearchStrategy[_Built]:
    """A strategy whose cases ``build`` makes from one Hypothesis-seeded random generator."""
    return st.randoms(use_true_random=True).map(build)


UINT64_MAX = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NOW_NANOS = 1_767_225_600_000_000_000

# Timestamps: zero, far past/future, the int64 edge, the largest fixed64, and ordinary ones.
TIMESTAMPS = (0, 1, 2**62, 2**63 - 1, 2**63, UINT64_MAX, NOW_NANOS, NOW_NANOS + 10**9)
# Enum fields hold any int32 on the wire (proto3 enums are open): unknown kinds and codes.
ENUM_VALUES = (0, 1, 2, 3, 4, 5, 6, 99, -1, 2**31 - 1, -(2**31))
HOSTILE_TEXTS = (
    "",
    " ",
    "chat",
    "-5",
    "--5",
    "+5",
    " 7 ",
    "²",
    "١٢",
    "1e3",
    "0x10",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "true",
    "False",
    "9" * 19,
    "9" * 20,
    "9" * 40,
    "9" * 400,
    "9" * 4_301,
    "\x00",
    "\ufeff",
    "🙂",
    "e\u0301",
    "{",
    "[",
    '{"role":',
)
HUGE_TEXTS = ("x" * 4_097, "é" * 40_000, "🙂" * 20_000, "{" * 70_000, "[" * 70_000)
NASTY_NUMBERS = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1" + "0" * 30,
    "1" + "0" * 400,
    "1" + "0" * 5_000,
    "-" + "9" * 40,
    "18446744073709551616",
    "-9223372036854775809",
    "4.5",
    "-0.0",
    "-1",
)
# Keys the message, document and usage readers look for, so generated JSON reaches them.
JSON_KEYS = (
    "role",
    "content",
    "parts",
    "type",
    "text",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "id",
    "tool_call_id",
    "finish_reason",
    "message",
    "messages",
    "response",
    "result",
    "documents",
    "score",
    "page_content",
    "choices",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "input",
    "output",
    "total",
    "prompt_tokens",
    "completion_tokens",
    "input_cached_tokens",
    "reasoning",
)
JSON_TYPES = ("text", "tool_call", "tool_call_response", "reasoning", "image", None)
GENAI_KEYS = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.id",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.total_tokens",
    "gen_ai.request.temperature",
    "gen_ai.request.max_tokens",
    "gen_ai.request.top_p",
    "gen_ai.request.top_k",
    "gen_ai.request.seed",
    "gen_ai.request.stream",
    "gen_ai.request.stop_sequences",
    "gen_ai.request.frequency_penalty",
    "gen_ai.response.finish_reasons",
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.retrieval.documents",
    "gen_ai.conversation.id",
    "gen_ai.prompt.name",
    "gen_ai.prompt.0.role",
    "gen_ai.prompt.0.content",
    "gen_ai.prompt.1.content",
    "gen_ai.completion.0.content",
    "gen_ai.completion.0.tool_calls.0.name",
    "gen_ai.completion.0.tool_calls.0.arguments",
    "llm.request.type",
    "llm.usage.prompt_tokens",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "llm.token_count.total",
    "llm.invocation_parameters",
    "llm.model_name",
    "llm.input_messages.0.message.role",
    "llm.input_messages.0.message.content",
    "llm.input_messages.0.message.contents.0.message_content.text",
    "llm.output_messages.0.message.content",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments",
    "llm.prompt_template.template",
    "llm.prompt_template.variables",
    "llm.prompts.0.content",
    "openinference.span.kind",
    "input.value",
    "output.value",
    "retrieval.documents.0.document.score",
    "retrieval.documents.0.document.content",
    "embedding.embeddings.0.embedding.text",
    "langfuse.observation.type",
    "langfuse.observation.usage_details",
    "langfuse.observation.input",
    "traceloop.prompt.template_variables.name",
    "error.type",
    "user.id",
    "session.id",
    "",
    "gen_ai.",
    "gen_ai.prompt.",
    "gen_ai.prompt.x.content",
    "llm.input_messages.99999999999999999999.message.content",
)
# Values that steer a span into the LLM code paths (operation, kind, model, provider).
STEERING = {
    "gen_ai.operation.name": ("chat", "embeddings", "retrieval", "execute_tool", "CHAT", "warp"),
    "openinference.span.kind": ("LLM", "RETRIEVER", "EMBEDDING", "nonsense"),
    "gen_ai.request.model": ("gpt-4o", "claude-sonnet-4-20250514", "text-embedding-3-small"),
    "gen_ai.provider.name": ("openai", "anthropic", "azure", "unknown.provider"),
}
EVENT_NAMES = (
    "gen_ai.client.inference.operation.details",
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
    "gen_ai.choice",
    "gen_ai.content.prompt",
    "gen_ai.content.completion",
    "gen_ai.content.first_chunk",
    "First Token Stream Event",
    "exception",
    "something.else",
)
EVENT_KEYS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.event.content",
    "gen_ai.prompt",
    "gen_ai.completion",
    "exception.type",
    "exception.message",
    "role",
    "content",
    "event.name",
)
RESOURCE_KEYS = ("service.name", "service.version", "deployment.environment", "tenant")


# -- JSON ------------------------------------------------------------------------------------


def nested_json(depth: int, opener: str = "[") -> str:
    """``[[[...1...]]]`` (or ``{"a":{"a":...}}``), ``depth`` levels deep."""
    closer = "]" if opener == "[" else "}"
    inner = '"a":' if opener == "{" else ""
    return (opener + inner) * depth + "1" + closer * depth


def _text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.5:
        return rng.choice(HOSTILE_TEXTS)
    if roll < 0.53:
        return rng.choice(HUGE_TEXTS)
    return "".join(
        chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x80, 0x3000))))
        for _ in range(rng.randrange(8))
    )


def _json_scalar(rng: random.Random) -> Any:
    return rng.choice(
        (
            None,
            True,
            False,
            0,
            -1,
            rng.randrange(-(2**70), 2**70),
            INT64_MAX,
            2**64,
            -(2**63) - 1,
            10**300,
            rng.uniform(-1e6, 1e6),
            float("nan"),
            float("inf"),
            -float("inf"),
            1e308,
            _text(rng),
            rng.choice(JSON_KEYS),
        )
    )


def json_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON-like value, shaped like messages and documents often enough to reach their code."""
    roll = rng.random()
    if depth >= 4 or roll < 0.35:
        return _json_scalar(rng)
    if roll < 0.55:
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if roll < 0.75:
        return {rng.choice(JSON_KEYS): json_value(rng, depth + 1) for _ in range(rng.randrange(5))}
    message: dict[str, Any] = {"role": rng.choice(("user", "assistant", "tool", "system", "", 7))}
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(JSON_KEYS)
        if key == "parts":
            message[key] = [
                {"type": rng.choice(JSON_TYPES), rng.choice(JSON_KEYS): json_value(rng, depth + 2)}
                for _ in range(rng.randrange(3))
            ]
        else:
            message[key] = json_value(rng, depth + 1)
    return [message] if rng.random() < 0.5 else message


def json_text(rng: random.Random) -> str:
    """JSON text, or nearly: non-standard numbers, deep nesting, truncation, lone surrogates."""
    text = json.dumps(json_value(rng), allow_nan=True)
    roll = rng.random()
    if roll < 0.15:  # a number no strict JSON reader accepts as-is, somewhere in the document
        number = rng.choice(NASTY_NUMBERS)
        return json.dumps([{"role": "user", "content": 0, "score": 0, "input": 0}]).replace(
            "0", number, rng.randrange(1, 5)
        )
    if roll < 0.22:
        return nested_json(rng.choice((17, 64, 1_000, 10_000)), rng.choice("[{"))
    if roll < 0.35:
        cut = rng.randrange(len(text) + 1)
        return text[:cut] + rng.choice(("", "\\ud800", '"\\udfff"', "\\", "\x00", ","))
    return text


# -- OTLP AnyValue and attributes --------------------------------------------------------------


def deep_value(depth: int, kvlist: bool) -> AnyValue:
    """An array (or kvlist) nested ``depth`` levels around one string. Protobuf refuses to build
    or parse more than 100 message levels (a kvlist level is 3, an array level 2): deeper wire
    bytes are fuzzed in ``test_fuzz_otlp``."""
    value = AnyValue(string_value="deep")
    for _ in range(depth):
        outer = AnyValue()
        if kvlist:
            outer.kvlist_value.values.add(key="k", value=value)
        else:
            outer.array_value.values.append(value)
        value = outer
    return value


def any_value(rng: random.Random, depth: int = 0) -> AnyValue:
    roll = rng.random()
    value = AnyValue()
    if roll < 0.25:
        value.string_value = _text(rng)
    elif roll < 0.45:
        value.string_value = json_text(rng)
    elif roll < 0.55:
        value.int_value = rng.choice(
            (-1, 0, 1, INT64_MIN, INT64_MAX, 2**32, rng.randrange(INT64_MIN, INT64_MAX))
        )
    elif roll < 0.65:
        value.double_value = rng.choice(
            (
                float("nan"),
                float("inf"),
                -float("inf"),
                1e308,
                -0.0,
                5e-324,
                0.5,
                -3.0,
                rng.uniform(-1e9, 1e9),
            )
        )
    elif roll < 0.7:
        value.bool_value = rng.random() < 0.5
    elif roll < 0.74:
        value.bytes_value = rng.randbytes(rng.randrange(17))
    elif roll < 0.76:
        pass  # no value set at all
    elif roll < 0.79:
        return deep_value(rng.choice((15, 16, 17, 28)), rng.random() < 0.5)
    elif depth < 4 and roll < 0.9:
        value.array_value.values.extend(any_value(rng, depth + 1) for _ in range(rng.randrange(4)))
    elif depth < 4:
        for _ in range(rng.randrange(5)):
            value.kvlist_value.values.add(
                key=rng.choice(JSON_KEYS), value=any_value(rng, depth + 1)
            )
    else:
        value.string_value = rng.choice(HOSTILE_TEXTS)
    return value


def attributes(
    rng: random.Random, keys: tuple[str, ...], count: int, steer: bool = False
) -> list[KeyValue]:
    result = []
    if steer:
        for key, values in STEERING.items():
            if rng.random() < 0.6:
                result.append(KeyValue(key=key, value=AnyValue(string_value=rng.choice(values))))
    for _ in range(rng.randrange(count + 1)):
        key = rng.choice(keys) if rng.random() < 0.9 else _text(rng)[:40]
        result.append(KeyValue(key=key, value=any_value(rng)))
    return result


def _trace_id(rng: random.Random) -> bytes:
    return (
        rng.choice((bytes(16), b"", b"\x01" * 15, b"\x01" * 17))
        if rng.random() < 0.1
        else rng.randbytes(16)
    )


def _span_id(rng: random.Random) -> bytes:
    return rng.choice((bytes(8), b"", b"\x02" * 7)) if rng.random() < 0.1 else rng.randbytes(8)


def _timestamp(rng: random.Random) -> int:
    return rng.choice(TIMESTAMPS) if rng.random() < 0.5 else rng.randrange(UINT64_MAX + 1)


def span(rng: random.Random) -> Span:
    result = Span(
        trace_id=_trace_id(rng),
        span_id=_span_id(rng),
        parent_span_id=_span_id(rng) if rng.random() < 0.5 else b"",
        name=_text(rng),
        start_time_unix_nano=_timestamp(rng),
        end_time_unix_nano=_timestamp(rng),
    )
    result.kind = rng.choice(ENUM_VALUES)  # type: ignore[assignment]
    result.status.code = rng.choice(ENUM_VALUES)  # type: ignore[assignment]
    result.status.message = _text(rng)
    result.attributes.extend(attributes(rng, GENAI_KEYS, 8, steer=True))
    for _ in range(rng.randrange(3)):
        event = result.events.add(name=rng.choice(EVENT_NAMES), time_unix_nano=_timestamp(rng))
        event.attributes.extend(attributes(rng, EVENT_KEYS, 3))
    return result


def trace_request(rng: random.Random) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(rng.choice((1, 1, 1, 2))):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(attributes(rng, RESOURCE_KEYS, 2))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = _text(rng)[:100]
        scope_spans.spans.extend(span(rng) for _ in range(rng.randrange(1, 4)))
    return request


def logs_request(rng: random.Random, spans: list[Span] | None = None) -> ExportLogsServiceRequest:
    """GenAI event records (and others); with ``spans``, most records belong to one of them."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(attributes(rng, RESOURCE_KEYS, 2))
    scope_logs = resource_logs.scope_logs.add()
    for _ in range(rng.randrange(1, 4)):
        record = scope_logs.log_records.add(
            trace_id=_trace_id(rng) if rng.random() < 0.5 else b"",
            span_id=_span_id(rng) if rng.random() < 0.5 else b"",
            time_unix_nano=_timestamp(rng),
            observed_time_unix_nano=_timestamp(rng),
        )
        if spans and rng.random() < 0.7:
            owner = rng.choice(spans)
            record.trace_id, record.span_id = owner.trace_id, owner.span_id
        if rng.random() < 0.5:
            record.event_name = rng.choice(EVENT_NAMES)
        else:
            record.attributes.add(
                key="event.name", value=AnyValue(string_value=rng.choice(EVENT_NAMES))
            )
        record.severity_number = rng.choice(ENUM_VALUES)  # type: ignore[assignment]
        record.attributes.extend(attributes(rng, EVENT_KEYS, 3))
        if rng.random() < 0.6:
            record.body.CopyFrom(any_value(rng))
    return request


def to_otlp_json(document: dict[str, Any]) -> bytes:
    """A ``MessageToDict`` document as OTLP/JSON: ids as hex, not base64."""

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(document)
    return json.dumps(document).encode()


# -- Bytes: random, and valid encodings mutated ------------------------------------------------


def mutate(rng: random.Random, valid: bytes) -> bytes:
    """``valid`` truncated, with bits flipped, bytes inserted or removed: the classic mutations."""
    data = bytearray(valid)
    for _ in range(rng.randrange(1, 5)):
        operation = rng.randrange(4)
        position = rng.randrange(len(data) + 1)
        if operation == 0:
            del data[position:]
        elif operation == 1 and position < len(data):
            data[position] ^= 1 << rng.randrange(8)
        elif operation == 2:
            data[position:position] = rng.randbytes(rng.randrange(1, 9))
        else:
            del data[position : position + rng.randrange(9)]
    return bytes(data)


def random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randrange(65))
