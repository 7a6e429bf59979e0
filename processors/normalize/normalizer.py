"""OTLP spans to normalized LLM spans, whatever convention the instrumentation followed.

Conventions, in order of precedence when several are present on one span: current OTel GenAI
semantic conventions, their deprecated names, OpenInference, Traceloop/OpenLLMetry (old and
new), and Langfuse. Each mapping reads through one :class:`Reader`, which records the keys it
used; everything left is kept verbatim in ``attributes``.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmtap.processors.normalize.attributes import Reader, ScalarFields, attributes_of, parse_json
from llmtap.processors.normalize.messages import (
    documents_from_indexed,
    documents_from_json,
    first_text,
    instructions_text,
    last_text,
    message_from_dict,
    messages_from_indexed,
    messages_from_json,
)
from llmtap.schemas.llm_span import (
    Cost,
    LlmSpan,
    Message,
    RequestParameters,
    RetrievedDocument,
    TokenUsage,
    ToolCall,
)

_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}

_LLM_OPERATIONS = {"chat", "text_completion", "completion", "generate_content", "responses"}
_SPAN_TYPES = {
    "embeddings": "embedding",
    "embedding": "embedding",
    "retrieval": "retrieval",
    "retrieve": "retrieval",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "rerank": "retrieval",
}
_OPENINFERENCE_KINDS = {
    "LLM": "chat",
    "EMBEDDING": "embeddings",
    "RETRIEVER": "retrieval",
    "RERANKER": "rerank",
    "TOOL": "execute_tool",
    "AGENT": "invoke_agent",
}
_LANGFUSE_TYPES = {
    "generation": "chat",
    "embedding": "embeddings",
    "retriever": "retrieval",
    "tool": "execute_tool",
    "agent": "invoke_agent",
}
_PROVIDER_ALIASES = {
    "az.ai.openai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "google": "gcp.gen_ai",
    "bedrock": "aws.bedrock",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "cohere": "cohere",
}

Pricer = Callable[[str | None, str | None, TokenUsage, int], Cost]

# No call uses this many tokens: a larger count is corrupt data. The bound also keeps the
# aggregates' window sums within UInt64 (msgpack and ClickHouse refuse larger integers).
MAX_TOKEN_COUNT = 2**32 - 1

# Every single-valued attribute the conventions use: field -> (conversion, keys by precedence).
SCALARS = ScalarFields(
    {
        "operation": ("text", ("gen_ai.operation.name",)),
        "llm_request_type": ("text", ("llm.request.type",)),
        "openinference_kind": ("text", ("openinference.span.kind",)),
        "langfuse_type": ("text", ("langfuse.observation.type",)),
        "provider": (
            "text",
            ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "llm.vendor"),
        ),
        "request_model": (
            "text",
            (
                "gen_ai.request.model",
                "llm.request.model",
                "langfuse.observation.model.name",
                "embedding.model_name",
            ),
        ),
        "response_model": ("text", ("gen_ai.response.model", "llm.response.model")),
        "openinference_model": ("text", ("llm.model_name",)),
        "response_id": ("text", ("gen_ai.response.id", "llm.response.id")),
        "user_id": (
            "text",
            (
                "user.id",
                "enduser.id",
                "langfuse.user.id",
                "traceloop.association.properties.user_id",
            ),
        ),
        "session_id": (
            "text",
            (
                "gen_ai.conversation.id",
                "session.id",
                "langfuse.session.id",
                "traceloop.association.properties.session_id",
            ),
        ),
        "input_tokens": (
            "integer",
            (
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.prompt_tokens",
                "llm.usage.prompt_tokens",
                "llm.token_count.prompt",
            ),
        ),
        "output_tokens": (
            "integer",
            (
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
                "llm.usage.completion_tokens",
                "llm.token_count.completion",
            ),
        ),
        "cache_read": (
            "integer",
            (
                "gen_ai.usage.cache_read.input_tokens",
                "gen_ai.usage.cache_read_input_tokens",
                "llm.token_count.prompt_details.cache_read",
            ),
        ),
        "cache_write": (
            "integer",
            (
                "gen_ai.usage.cache_creation.input_tokens",
                "gen_ai.usage.cache_write.input_tokens",
                "gen_ai.usage.cache_creation_input_tokens",
                "llm.token_count.prompt_details.cache_write",
            ),
        ),
        "reasoning": (
            "integer",
            (
                "gen_ai.usage.reasoning.output_tokens",
                "gen_ai.usage.reasoning_tokens",
                "llm.token_count.completion_details.reasoning",
            ),
        ),
        "total_tokens": (
            "integer",
            ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total"),
        ),
        "usage_details": ("structured", ("langfuse.observation.usage_details",)),
        "temperature": ("number", ("gen_ai.request.temperature", "llm.temperature")),
        "max_tokens": ("integer", ("gen_ai.request.max_tokens", "llm.request.max_tokens")),
        "top_p": ("number", ("gen_ai.request.top_p", "llm.top_p")),
        "top_k": ("number", ("gen_ai.request.top_k",)),
        "stream": ("flag", ("gen_ai.request.stream", "gen_ai.is_streaming", "llm.is_streaming")),
        "frequency_penalty": (
            "number",
            ("gen_ai.request.frequency_penalty", "llm.frequency_penalty"),
        ),
        "presence_penalty": ("number", ("gen_ai.request.presence_penalty", "llm.presence_penalty")),
        "seed": ("integer", ("gen_ai.request.seed",)),
        "stop_sequences": ("strings", ("gen_ai.request.stop_sequences", "llm.chat.stop_sequences")),
        "invocation_parameters": ("structured", ("llm.invocation_parameters",)),
        "finish_reasons": (
            "strings",
            ("gen_ai.response.finish_reasons", "llm.finish_reason", "llm.response.finish_reason"),
        ),
        "template_id": (
            "text",
            (
                "llmtap.prompt.template.id",
                "gen_ai.prompt.name",
                "langfuse.observation.prompt.name",
                "traceloop.prompt.key",
            ),
        ),
        "template_version": (
            "text",
            (
                "llmtap.prompt.template.version",
                "langfuse.observation.prompt.version",
                "traceloop.prompt.version",
                "llm.prompt_template.version",
            ),
        ),
        "template_text": ("text", ("llm.prompt_template.template", "traceloop.prompt.template")),
        "template_variables": ("structured", ("llm.prompt_template.variables",)),
        "error_type": ("text", ("error.type",)),
        "ttft_seconds": (
            "number",
            (
                "gen_ai.response.time_to_first_chunk",
                "gen_ai.server.time_to_first_token",
                "llm.response.time_to_first_token",
            ),
        ),
        "input_messages": ("structured", ("gen_ai.input.messages",)),
        "output_messages": ("structured", ("gen_ai.output.messages",)),
        "system_instructions": ("structured", ("gen_ai.system_instructions",)),
        "retrieval_documents": ("structured", ("gen_ai.retrieval.documents",)),
        "input_value": ("raw", ("input.value", "langfuse.observation.input")),
        "output_value": ("raw", ("output.value", "langfuse.observation.output")),
        "mime_types": ("raw", ("input.mime_type", "output.mime_type")),
    }
)


@dataclass(frozen=True)
class Origin:
    """What a span inherits from its message and resource."""

    tenant: str
    received_at_unix_nano: int | None
    service_name: str
    service_version: str | None
    environment: str | None
    resource_attributes: dict[str, str]
    scope_name: str | None
    scope_version: str | None


class Normalizer:
    def __init__(self, pricer: Pricer | None = None, recent_retrievals: int = 10_000) -> None:
        self._pricer = pricer
        # trace id -> retrieval spans seen lately, so an LLM span in a later message of the same
        # trace still finds its context. Bounded: oldest traces are forgotten first.
        self._retrievals: OrderedDict[str, list[LlmSpan]] = OrderedDict()
        self._recent_retrievals = recent_retrievals

    def normalize_request(
        self,
        request: ExportTraceServiceRequest,
        *,
        tenant: str | None = None,
        received_at_unix_nano: int | None = None,
        on_error: Callable[[Span, Exception], None] | None = None,
    ) -> list[LlmSpan]:
        """Normalize every span; a span that fails goes to ``on_error`` (or raises without it)."""
        results: list[LlmSpan] = []
        for resource_spans in request.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                origin = _origin(
                    resource,
                    scope_spans.scope.name,
                    scope_spans.scope.version,
                    tenant,
                    received_at_unix_nano,
                )
                for span in scope_spans.spans:
                    try:
                        results.append(self.normalize_span(span, origin))
                    except Exception as error:
                        if on_error is None:
                            raise
                        on_error(span, error)
        self._link_retrievals(results)
        return results

    def normalize_span(self, span: Span, origin: Origin) -> LlmSpan:
        reader = Reader(attributes_of(span.attributes))
        events = [
            (event.name, event.time_unix_nano, attributes_of(event.attributes))
            for event in span.events
        ]

        values = SCALARS.read(reader)
        get = values.get
        operation = _operation(values)
        provider = _provider(values)
        request_model = get("request_model")
        response_model = get("response_model")
        openinference_model = get("openinference_model")
        if openinference_model is not None:
            request_model = request_model or openinference_model
            response_model = response_model or openinference_model
        usage = _usage(values, reader.warnings)
        input_messages, output_messages, system_instructions = _messages(reader, values, events)
        documents = _documents(reader, values)
        tool_calls = [call for message in output_messages for call in message.tool_calls]
        span_type = _span_type(operation, request_model or response_model, usage)
        template_id, template_version, template_variables = _prompt_template(reader, values)
        error_type, error_message = _error(values, events, span)

        normalized = LlmSpan(
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex() or None,
            name=span.name,
            kind=_KINDS.get(span.kind, "unspecified"),
            start_time_unix_nano=span.start_time_unix_nano,
            end_time_unix_nano=span.end_time_unix_nano,
            status=_STATUS.get(span.status.code, "unset"),
            status_message=span.status.message or None,
            service_name=origin.service_name,
            service_version=origin.service_version,
            environment=origin.environment,
            tenant=origin.tenant,
            scope_name=origin.scope_name,
            scope_version=origin.scope_version,
            received_at_unix_nano=origin.received_at_unix_nano,
            span_type=span_type,
            convention=_convention(reader),
            provider=provider,
            operation=operation,
            request_model=request_model,
            response_model=response_model,
            response_id=get("response_id"),
            request=_request_parameters(values),
            finish_reasons=get("finish_reasons") or _finish_reasons(output_messages),
            usage=usage,
            time_to_first_token_ms=_time_to_first_token(values, events, span.start_time_unix_nano),
            user_id=get("user_id"),
            session_id=get("session_id"),
            system_instructions=system_instructions,
            input_messages=input_messages,
            output_messages=output_messages,
            prompt_text=_prompt_text(reader, input_messages, span_type),
            completion_text=last_text(output_messages, "assistant") or first_text(output_messages),
            retrieved_documents=documents,
            tool_calls=tool_calls,
            prompt_template_id=template_id,
            prompt_template_version=template_version,
            prompt_template_variables=template_variables,
            error_type=error_type,
            error_message=error_message,
            attributes=reader.remaining(),
            resource_attributes=origin.resource_attributes,
        )
        if reader.warnings:
            normalized.attributes["llmtap.normalize.warnings"] = "; ".join(reader.warnings[:20])
        # A failed call that reports no usage was not billed: nothing to price, nothing to flag.
        failed_unbilled = (
            normalized.status == "error" and usage.input is None and usage.output is None
        )
        if self._pricer is not None and span_type in ("llm", "embedding") and not failed_unbilled:
            model = response_model or request_model
            normalized.cost = self._pricer(
                provider, model, usage, span.end_time_unix_nano or span.start_time_unix_nano
            )
        return normalized

    def _link_retrievals(self, spans: list[LlmSpan]) -> None:
        """Give an LLM span the documents of a retrieval span under the same parent (or its own
        parent), from this message or a recent one of the same trace."""
        for span in spans:
            if span.span_type == "retrieval" and span.retrieved_documents:
                recent = self._retrievals.setdefault(span.trace_id, [])
                recent.append(span)
                self._retrievals.move_to_end(span.trace_id)
                while len(self._retrievals) > self._recent_retrievals:
                    self._retrievals.popitem(last=False)
        for span in spans:
            if span.span_type != "llm" or span.retrieved_documents:
                continue
            for retrieval in self._retrievals.get(span.trace_id, ()):
                related = retrieval.parent_span_id is not None and retrieval.parent_span_id in (
                    span.parent_span_id,
                    span.span_id,
                )
                if related or retrieval.span_id == span.parent_span_id:
                    span.retrieved_documents.extend(
                        RetrievedDocument(
                            id=d.id,
                            content=d.content,
                            score=d.score,
                            source_span_id=retrieval.span_id,
                        )
                        for d in retrieval.retrieved_documents
                    )


def _origin(
    resource: dict[str, Any],
    scope_name: str,
    scope_version: str,
    tenant: str | None,
    received_at: int | None,
) -> Origin:
    def text(*keys: str) -> str | None:
        for key in keys:
            value = resource.get(key)
            if value not in (None, ""):
                return str(value)
        return None

    return Origin(
        tenant=tenant or text("llmtap.tenant", "tenant.id") or "default",
        received_at_unix_nano=received_at,
        service_name=text("service.name") or "unknown_service",
        service_version=text("service.version"),
        environment=text("deployment.environment.name", "deployment.environment"),
        resource_attributes={
            key: v if isinstance(v, str) else str(v) for key, v in resource.items() if v is not None
        },
        scope_name=scope_name or None,
        scope_version=scope_version or None,
    )


def _operation(values: dict[str, Any]) -> str | None:
    operation = values.get("operation")
    if operation is None and (request_type := values.get("llm_request_type")) is not None:
        operation = {"completion": "text_completion", "embedding": "embeddings"}.get(
            request_type, request_type
        )
    if operation is None and (kind := values.get("openinference_kind")) is not None:
        operation = _OPENINFERENCE_KINDS.get(kind.upper())
    if operation is None and (kind := values.get("langfuse_type")) is not None:
        operation = _LANGFUSE_TYPES.get(kind.lower())
    return operation.lower() if operation else None


def _provider(values: dict[str, Any]) -> str | None:
    provider: str | None = values.get("provider")
    if provider is None:
        return None
    provider = provider.lower()
    return _PROVIDER_ALIASES.get(provider, provider)


_CONVENTION_PREFIXES = (
    (
        "openinference",
        ("openinference.", "llm.token_count.", "llm.input_messages.", "llm.output_messages."),
    ),
    ("langfuse", ("langfuse.",)),
    (
        "traceloop_legacy",
        (
            "gen_ai.prompt.",
            "gen_ai.completion.",
            "llm.usage.",
            "llm.request.",
            "llm.prompts.",
            "llm.vendor",
        ),
    ),
)
_LEGACY_GENAI_KEYS = frozenset(
    ("gen_ai.system", "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens")
)


def _convention(reader: Reader) -> str:
    joined = reader.joined_keys()
    if (
        "\nllm." in joined
        or "\nlangfuse." in joined
        or "\nopeninference." in joined
        or ("\ngen_ai.prompt." in joined or "\ngen_ai.completion." in joined)
    ):
        for name, prefixes in _CONVENTION_PREFIXES:
            for prefix in prefixes:
                if "\n" + prefix in joined:
                    return name
    keys = reader.used
    if "gen_ai.provider.name" not in keys and not _LEGACY_GENAI_KEYS.isdisjoint(keys):
        return "otel_genai_legacy"
    if "\ngen_ai." in joined:
        return "otel_genai"
    return "none"


def _span_type(operation: str | None, model: str | None, usage: TokenUsage) -> str:
    if operation in _LLM_OPERATIONS:
        return "llm"
    if operation in _SPAN_TYPES:
        return _SPAN_TYPES[operation]
    if model is not None and (usage.input is not None or usage.output is not None):
        return "llm"
    return "other"


def _usage(values: dict[str, Any], warnings: list[str]) -> TokenUsage:
    usage_details = values.get("usage_details")
    details = usage_details if isinstance(usage_details, dict) else {}
    input_tokens = values.get("input_tokens")
    output_tokens = values.get("output_tokens")
    cache_read = values.get("cache_read")
    cache_write = values.get("cache_write")
    reasoning = values.get("reasoning")
    total = values.get("total_tokens")
    if details:
        input_tokens = (
            input_tokens if input_tokens is not None else _detail(details, "input", "prompt_tokens")
        )
        output_tokens = (
            output_tokens
            if output_tokens is not None
            else _detail(details, "output", "completion_tokens")
        )
        cache_read = (
            cache_read
            if cache_read is not None
            else _detail(
                details, "input_cached_tokens", "cache_read_input_tokens", "input_cache_read"
            )
        )
        cache_write = (
            cache_write
            if cache_write is not None
            else _detail(details, "cache_creation_input_tokens", "input_cache_creation")
        )
        reasoning = (
            reasoning
            if reasoning is not None
            else _detail(details, "output_reasoning_tokens", "reasoning")
        )
        total = total if total is not None else _detail(details, "total")
    input_tokens = _token_count(input_tokens, "input tokens", warnings)
    output_tokens = _token_count(output_tokens, "output tokens", warnings)
    cache_read = _token_count(cache_read, "cache read tokens", warnings)
    cache_write = _token_count(cache_write, "cache write tokens", warnings)
    reasoning = _token_count(reasoning, "reasoning tokens", warnings)
    total = _token_count(total, "total tokens", warnings)
    if input_tokens is None and output_tokens is None and total is not None:
        input_tokens = total  # e.g. embeddings report only a total
    # One rule downstream: input includes cache reads and writes, output includes reasoning.
    # A source that reported them separately shows itself by a part larger than the whole.
    cached = (cache_read or 0) + (cache_write or 0)
    if input_tokens is not None and cached > input_tokens:
        input_tokens += cached
    if output_tokens is not None and reasoning is not None and reasoning > output_tokens:
        output_tokens += reasoning
    return TokenUsage(
        input=input_tokens,
        output=output_tokens,
        cache_read=cache_read,
        cache_write=cache_write,
        reasoning=reasoning,
    )


def _token_count(count: int | None, name: str, warnings: list[str]) -> int | None:
    if count is not None and count > MAX_TOKEN_COUNT:
        warnings.append(f"{name}: more than {MAX_TOKEN_COUNT}")
        return None
    return count


def _detail(details: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = details.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _request_parameters(values: dict[str, Any]) -> RequestParameters:
    get = values.get
    invocation = get("invocation_parameters")
    invocation = invocation if isinstance(invocation, dict) else {}

    def from_invocation(*keys: str) -> Any:
        for key in keys:
            if key in invocation and not isinstance(invocation[key], bool | dict | list):
                return invocation[key]
        return None

    temperature = get("temperature")
    max_tokens = get("max_tokens")
    top_p = get("top_p")
    stream = get("stream")
    invocation_stream = invocation.get("stream")
    return RequestParameters(
        temperature=temperature
        if temperature is not None
        else _as_float(from_invocation("temperature")),
        top_p=top_p if top_p is not None else _as_float(from_invocation("top_p")),
        top_k=get("top_k"),
        max_tokens=max_tokens
        if max_tokens is not None
        else _as_int(from_invocation("max_tokens", "max_completion_tokens")),
        frequency_penalty=get("frequency_penalty"),
        presence_penalty=get("presence_penalty"),
        seed=get("seed"),
        stop_sequences=get("stop_sequences") or [],
        stream=stream
        if stream is not None
        else (invocation_stream if isinstance(invocation_stream, bool) else None),
    )


def _finish_reasons(output_messages: list[Message]) -> list[str]:
    return [message.finish_reason for message in output_messages if message.finish_reason]


def _messages(
    reader: Reader, values: dict[str, Any], events: list[tuple[str, int, dict[str, Any]]]
) -> tuple[list[Message], list[Message], str | None]:
    # Current conventions: attributes on the span, or on the operation-details event.
    input_value = values.get("input_messages")
    output_value = values.get("output_messages")
    instructions = instructions_text(values.get("system_instructions"))
    for name, _, attributes in events:
        if name == "gen_ai.client.inference.operation.details":
            event_reader = Reader(attributes)
            input_value = (
                input_value
                if input_value is not None
                else event_reader.structured("gen_ai.input.messages")
            )
            output_value = (
                output_value
                if output_value is not None
                else event_reader.structured("gen_ai.output.messages")
            )
            instructions = instructions or instructions_text(
                event_reader.structured("gen_ai.system_instructions")
            )
            reader.warnings.extend(event_reader.warnings)
    inputs = messages_from_json(input_value, "user")
    outputs = messages_from_json(output_value, "assistant")

    if not inputs:  # deprecated / Traceloop indexed attributes (llm.prompts: before 0.17)
        inputs = messages_from_indexed(reader.indexed("gen_ai.prompt."))
        inputs = inputs or messages_from_indexed(reader.indexed("llm.prompts."))
    if not outputs:
        outputs = messages_from_indexed(reader.indexed("gen_ai.completion."))
        outputs = outputs or messages_from_indexed(reader.indexed("llm.completions."))
    if not inputs:  # OpenInference
        inputs = messages_from_indexed(reader.indexed("llm.input_messages."), prefix="message.")
    if not outputs:
        outputs = messages_from_indexed(reader.indexed("llm.output_messages."), prefix="message.")
    if not inputs or not outputs:  # deprecated span events
        event_inputs, event_outputs = _messages_from_events(events)
        inputs = inputs or event_inputs
        outputs = outputs or event_outputs
    if not inputs:  # OpenInference / Langfuse raw input and output values
        inputs = messages_from_json(_maybe_json(values.get("input_value")), "user")
    if not outputs:
        outputs = _outputs_from_value(_maybe_json(values.get("output_value")))

    if instructions is None:
        system = [
            message.content
            for message in inputs
            if message.role in ("system", "developer") and message.content
        ]
        instructions = "\n".join(system) or None
    return inputs, outputs, instructions


def content_from_events(
    events: list[tuple[str, int, dict[str, Any]]],
) -> tuple[list[Message], list[Message], str | None, list[str]]:
    """Input and output messages, system instructions and warnings from GenAI events alone
    (span events, or log records joined to their span by ``genai_events``)."""
    reader = Reader({})
    inputs, outputs, instructions = _messages(reader, {}, events)
    return inputs, outputs, instructions, reader.warnings


def _messages_from_events(
    events: list[tuple[str, int, dict[str, Any]]],
) -> tuple[list[Message], list[Message]]:
    inputs: list[Message] = []
    outputs: list[Message] = []
    roles = {
        "gen_ai.system.message": "system",
        "gen_ai.user.message": "user",
        "gen_ai.assistant.message": "assistant",
        "gen_ai.tool.message": "tool",
    }
    for name, _, attributes in events:
        if name in roles:
            body = attributes.get("gen_ai.event.content", attributes)
            body = parse_json(body) if isinstance(body, str) else body
            if isinstance(body, dict):
                message = message_from_dict(
                    {**body, "role": body.get("role", roles[name])}, roles[name]
                )
                if message is not None:
                    inputs.append(message)
        elif name == "gen_ai.choice":
            body = attributes.get("gen_ai.event.content", attributes)
            body = parse_json(body) if isinstance(body, str) else body
            if isinstance(body, dict):
                message = message_from_dict(body, "assistant")
                if message is not None:
                    outputs.append(message)
        elif name == "gen_ai.content.prompt":  # semantic conventions 1.26-1.27
            inputs.extend(messages_from_json(_json_attribute(attributes, "gen_ai.prompt"), "user"))
        elif name == "gen_ai.content.completion":
            outputs.extend(
                messages_from_json(_json_attribute(attributes, "gen_ai.completion"), "assistant")
            )
    return inputs, outputs


def _json_attribute(attributes: dict[str, Any], key: str) -> Any:
    value = attributes.get(key)
    return parse_json(value) if isinstance(value, str) and value[:1] in "[{" else value


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        parsed = parse_json(value)
        return value if parsed is None else parsed
    return value


def _outputs_from_value(value: Any) -> list[Message]:
    """output.value may be a whole response ({"choices": [...]}) or messages or text."""
    if isinstance(value, dict) and isinstance(value.get("choices"), list):
        messages = []
        for choice in value["choices"]:
            if isinstance(choice, dict):
                message = message_from_dict(choice, "assistant")
                if message is not None:
                    messages.append(message)
        return messages
    return messages_from_json(value, "assistant")


def _documents(reader: Reader, values: dict[str, Any]) -> list[RetrievedDocument]:
    documents = documents_from_json(values.get("retrieval_documents"))
    if not documents:
        documents = documents_from_indexed(reader.indexed("retrieval.documents."))
    return documents


def _prompt_text(reader: Reader, inputs: list[Message], span_type: str) -> str | None:
    if span_type == "embedding":
        texts = [
            str(fields.get("embedding.text"))
            for fields in reader.indexed("embedding.embeddings.").values()
            if fields.get("embedding.text") is not None
        ]
        if texts:
            return "\n".join(texts)
    return last_text(inputs, "user") or first_text(inputs)


def _prompt_template(
    reader: Reader, values: dict[str, Any]
) -> tuple[str | None, str | None, dict[str, str]]:
    template_id = values.get("template_id")
    version = values.get("template_version")
    template_text = values.get("template_text")
    if template_id is None and template_text is not None:
        template_id = "sha256:" + hashlib.sha256(template_text.encode()).hexdigest()[:12]
    variables_value = values.get("template_variables")
    variables: dict[str, str] = {}
    if isinstance(variables_value, dict):
        variables = {str(key): str(value) for key, value in variables_value.items()}
    for key, value in reader.indexed_prefix("traceloop.prompt.template_variables.").items():
        variables[key] = str(value)
    return template_id, version, variables


def _error(
    values: dict[str, Any], events: list[tuple[str, int, dict[str, Any]]], span: Span
) -> tuple[str | None, str | None]:
    error_type = values.get("error_type")
    error_message = None
    for name, _, attributes in events:
        if name == "exception":
            error_type = error_type or _str(attributes.get("exception.type"))
            error_message = error_message or _str(attributes.get("exception.message"))
    if span.status.code == 2:
        error_message = error_message or (span.status.message or None)
        error_type = error_type or "error"
    return error_type, error_message


def _time_to_first_token(
    values: dict[str, Any], events: list[tuple[str, int, dict[str, Any]]], start: int
) -> float | None:
    seconds = values.get("ttft_seconds")
    if seconds is not None:
        milliseconds = float(seconds) * 1000
        if math.isfinite(milliseconds) and milliseconds >= 0:  # 1e308 s overflows to inf
            return milliseconds
    for name, time_unix_nano, _ in events:
        if (
            name in ("First Token Stream Event", "gen_ai.content.first_chunk")
            and time_unix_nano >= start
        ):
            return (time_unix_nano - start) / 1e6
    return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_float(value: Any) -> float | None:
    try:
        number = None if value is None else float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float
        return None
    return number if number is not None and math.isfinite(number) else None


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


__all__ = ["LlmSpan", "Normalizer", "Origin", "ToolCall"]
