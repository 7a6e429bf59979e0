"""Send an application's LLM telemetry to llmtap: one call to set up, one context manager per call.

This module is the only part of llmtap an application needs. It depends on the OpenTelemetry API
and SDK and the OTLP/HTTP exporter, nothing else: importing it costs no more than the OpenTelemetry
API, and the SDK and exporter are imported when :func:`configure` is first called.

Usage::

    from llmtap.sdk import configure, record_llm_call

    provider = configure(service_name="support-bot", environment="production")

    with record_llm_call(
        provider="openai",
        model="gpt-4o-mini",
        messages=[("user", "Where is my parcel?")],
        system_instructions="You are a polite support agent.",
        conversation_id=session_id,
        user_id=user_id,
    ) as call:
        response = client.chat.completions.create(...)
        call.set_response(
            model=response.model,
            response_id=response.id,
            finish_reasons=[choice.finish_reason for choice in response.choices],
            output_messages=[response.choices[0].message.content],
            input_tokens=response.usage.prompt_tokens,
            output_tokens=response.usage.completion_tokens,
        )

    provider.shutdown()  # flush what is still queued before a short script exits

Applications that already use an OpenTelemetry instrumentation library for their LLM client
only need :func:`configure`; :func:`record_llm_call` is for code that calls a model some other way.

The span follows the OpenTelemetry GenAI semantic conventions (development status, moved to
https://github.com/open-telemetry/semantic-conventions-genai). Structured values (messages,
system instructions, retrieved documents) are recorded as JSON strings, which the conventions
allow on spans and which every OTLP backend can store. Attributes the conventions do not define
are in the ``llmtap.`` namespace and listed in :func:`record_llm_call`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "DEFAULT_ENDPOINT",
    "LlmCallRecorder",
    "MessageInput",
    "RetrievedDocument",
    "configure",
    "record_llm_call",
]

_logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
"""Where llmtap's collector listens for OTLP/HTTP when nothing else is configured."""

_TRACES_PATH = "/v1/traces"
_INSTRUMENTATION_NAME = "llmtap.sdk"

# Standard OpenTelemetry environment variables (OpenTelemetry specification, "OTLP Exporter").
# The signal-specific one is a complete URL; the generic one is a base URL that gets /v1/traces.
_ENV_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
_ENV_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"

# Resource attributes (OpenTelemetry semantic conventions, stable / development).
_SERVICE_NAME = "service.name"
_DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"

# GenAI span attributes (semantic-conventions-genai registry).
_OPERATION_NAME = "gen_ai.operation.name"
_PROVIDER_NAME = "gen_ai.provider.name"
_REQUEST_MODEL = "gen_ai.request.model"
_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
_REQUEST_TOP_P = "gen_ai.request.top_p"
_REQUEST_STREAM = "gen_ai.request.stream"
_CONVERSATION_ID = "gen_ai.conversation.id"
_INPUT_MESSAGES = "gen_ai.input.messages"
_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
_OUTPUT_MESSAGES = "gen_ai.output.messages"
_RESPONSE_MODEL = "gen_ai.response.model"
_RESPONSE_ID = "gen_ai.response.id"
_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
_RETRIEVAL_DOCUMENTS = "gen_ai.retrieval.documents"

# General attributes (OpenTelemetry semantic conventions). `user.id` replaces the deprecated
# `enduser.id`.
_USER_ID = "user.id"
_SERVER_ADDRESS = "server.address"
_SERVER_PORT = "server.port"
_ERROR_TYPE = "error.type"

# llmtap's own attributes, for what the conventions do not (yet) define. The registry has
# `gen_ai.prompt.name` but nothing for a template version, so the pair lives here together.
_PROMPT_TEMPLATE_ID = "llmtap.prompt.template.id"
_PROMPT_TEMPLATE_VERSION = "llmtap.prompt.template.version"
_INPUT_MESSAGE_COUNT = "llmtap.input.message.count"
_OUTPUT_MESSAGE_COUNT = "llmtap.output.message.count"
_OUTPUT_TOOL_CALL_COUNT = "llmtap.output.tool_call.count"

MessageInput: TypeAlias = str | tuple[str, str] | Mapping[str, Any]
"""One chat message, in any of the forms :func:`record_llm_call` normalises.

* ``"text"``: a message from the default role (``user`` for input, ``assistant`` for output);
* ``(role, text)``: e.g. ``("system", "Be brief.")``;
* ``{"role": ..., "content": "text"}``: the common chat-API shape, one text part;
* ``{"role": ..., "parts": [{"type": "text", "content": "..."}, ...]}``: already in the
  conventions' structured form, recorded as given (extra keys such as ``name`` are kept).
"""


@dataclass(frozen=True, slots=True)
class RetrievedDocument:
    """A document (chunk) retrieved as context for the call, e.g. from a vector store."""

    id: str | None = None
    content: str | None = None
    score: float | None = None


def configure(
    endpoint: str | None = None,
    *,
    service_name: str,
    api_key: str | None = None,
    environment: str | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    batch: bool = True,
    set_global: bool = True,
) -> SdkTracerProvider:
    """Build a TracerProvider that sends spans to llmtap over OTLP/HTTP (protobuf) and return it.

    Args:
        endpoint: Base URL of the llmtap collector, ``http://`` or ``https://``; ``/v1/traces``
            is appended unless the URL already ends with it. When not given, the standard
            ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (a complete URL, used as is) and then
            ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL) are read, then :data:`DEFAULT_ENDPOINT`.
        service_name: ``service.name`` of the resource; wins over ``OTEL_SERVICE_NAME``.
        api_key: Sent as ``Authorization: Bearer <api_key>`` with every export.
        environment: ``deployment.environment.name`` of the resource, e.g. ``"production"``.
        resource_attributes: More resource attributes. ``service_name`` and ``environment``
            win over the same keys here; these win over ``OTEL_RESOURCE_ATTRIBUTES``.
        batch: Export from a background thread in batches (``BatchSpanProcessor``). ``False``
            exports each span when it ends, blocking the caller (``SimpleSpanProcessor``): for
            tests and debugging.
        set_global: Install the provider as OpenTelemetry's global one, so that
            :func:`record_llm_call` and instrumentation libraries use it without being passed it.
            OpenTelemetry allows this once per process: if a global provider is already set
            (an earlier ``configure()`` included), a warning is logged, the global stays as it
            is, and the new provider is still returned, working, for explicit use.

    The exporter still reads the other standard variables (``OTEL_EXPORTER_OTLP_HEADERS``,
    ``..._TIMEOUT``, ``..._COMPRESSION``, ``..._CERTIFICATE``); an ``Authorization`` header from
    ``api_key`` wins over one from ``OTEL_EXPORTER_OTLP_HEADERS``. The exporter speaks protobuf
    only: the Python OTLP/HTTP exporter has no JSON encoding.

    The provider flushes and shuts down at normal interpreter exit. Call ``provider.shutdown()``
    (or ``provider.force_flush()``) yourself where that may not happen or comes too late: short
    scripts that end with ``os._exit``, forked workers, serverless handlers.

    Raises:
        ValueError: the endpoint (argument or environment variable) is not an http(s) URL, or
            ``service_name`` or ``api_key`` is empty.
    """
    # Imported here so that `import llmtap.sdk` stays as cheap as the OpenTelemetry API for
    # applications that only use record_llm_call with a provider of their own.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if not service_name.strip():
        raise ValueError("service_name must not be empty: it is how llmtap tells services apart")
    if api_key is not None and not api_key.strip():
        raise ValueError("api_key is empty; pass None to send no Authorization header")
    traces_url = _resolve_traces_url(endpoint)

    attributes: dict[str, AttributeValue] = dict(resource_attributes or {})
    attributes[_SERVICE_NAME] = service_name
    if environment is not None:
        attributes[_DEPLOYMENT_ENVIRONMENT_NAME] = environment
    provider = TracerProvider(resource=Resource.create(attributes))

    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else None
    exporter = OTLPSpanExporter(endpoint=traces_url, headers=headers)
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)

    if set_global:
        _install_global(provider, service_name)
    return provider


def _resolve_traces_url(endpoint: str | None) -> str:
    """The full OTLP/HTTP traces URL: the argument, else the environment, else the default."""
    if endpoint is not None:
        return _traces_url_from_base(endpoint.strip(), source="endpoint")
    if traces_endpoint := os.environ.get(_ENV_TRACES_ENDPOINT, "").strip():
        _validate_http_url(traces_endpoint, source=_ENV_TRACES_ENDPOINT)
        return traces_endpoint
    if base_endpoint := os.environ.get(_ENV_ENDPOINT, "").strip():
        return _traces_url_from_base(base_endpoint, source=_ENV_ENDPOINT)
    return DEFAULT_ENDPOINT + _TRACES_PATH


def _traces_url_from_base(base_url: str, *, source: str) -> str:
    _validate_http_url(base_url, source=source)
    base_url = base_url.rstrip("/")
    if base_url.endswith(_TRACES_PATH):
        return base_url
    return base_url + _TRACES_PATH


def _validate_http_url(url: str, *, source: str) -> None:
    problem = None
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as error:
        problem = str(error)
    else:
        if parts.scheme not in ("http", "https"):
            problem = "the scheme must be http or https"
        elif not parts.hostname:
            problem = "there is no host"
    if problem is not None:
        raise ValueError(
            f"{source} must be an http:// or https:// URL such as {DEFAULT_ENDPOINT!r}, "
            f"got {url!r} ({problem})"
        )


def _install_global(provider: SdkTracerProvider, service_name: str) -> None:
    # OpenTelemetry keeps the first global provider and only logs on later attempts; say here
    # what that means for the caller rather than leave them with a generic warning.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
        return
    _logger.warning(
        "configure(service_name=%r): a global OpenTelemetry TracerProvider is already set and "
        "OpenTelemetry allows only one per process; it stays in place. The new provider is "
        "returned but is used only where passed explicitly (tracer_provider=...). Call "
        "configure() once per process, or pass set_global=False.",
        service_name,
    )


@contextmanager
def record_llm_call(
    *,
    provider: str,
    model: str,
    operation: str = "chat",
    messages: Sequence[MessageInput] | None = None,
    system_instructions: str | Sequence[str] | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    top_p: float | None = None,
    stream: bool | None = None,
    conversation_id: str | None = None,
    user_id: str | None = None,
    server_address: str | None = None,
    server_port: int | None = None,
    prompt_template_id: str | None = None,
    prompt_template_version: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    capture_content: bool = True,
    tracer_provider: trace.TracerProvider | None = None,
) -> Iterator[LlmCallRecorder]:
    """Record one LLM call as a CLIENT span named ``"{operation} {model}"``.

    Use the yielded :class:`LlmCallRecorder` to add the response, tool calls, retrieved
    documents and time to first token. An exception raised in the block marks the span as an
    error (status ERROR, an exception event, ``error.type`` set to the exception class's
    qualified name) and propagates unchanged.

    Args:
        provider: ``gen_ai.provider.name``: ``"openai"``, ``"anthropic"``, ``"aws.bedrock"``,
            ``"azure.ai.openai"``, ``"gcp.vertex_ai"``, ...
        model: ``gen_ai.request.model``, the model asked for.
        operation: ``gen_ai.operation.name``: ``"chat"``, ``"text_completion"``,
            ``"generate_content"``, ``"embeddings"``, ``"execute_tool"``, ...
        messages: The chat history sent, in order (``gen_ai.input.messages``); each one a
            :data:`MessageInput`. Plain strings are user messages.
        system_instructions: Instructions sent apart from the history
            (``gen_ai.system_instructions``); a system message inside the history belongs in
            ``messages`` instead.
        temperature, max_tokens, top_p, stream: Request parameters
            (``gen_ai.request.temperature`` / ``.max_tokens`` / ``.top_p`` / ``.stream``).
        conversation_id: Session or thread id (``gen_ai.conversation.id``).
        user_id: The end user on whose behalf the call is made (``user.id``).
        server_address, server_port: The model endpoint's host and port.
        prompt_template_id, prompt_template_version: The prompt template the messages came
            from. The conventions define no template attributes, so these are llmtap's own:
            ``llmtap.prompt.template.id`` and ``llmtap.prompt.template.version``.
        attributes: Further span attributes, set first (the named arguments win).
        capture_content: ``False`` records no message, instruction, tool-argument or document
            text; counts (``llmtap.input.message.count``, ``llmtap.output.message.count``,
            ``llmtap.output.tool_call.count``) and document ids and scores are still recorded.
        tracer_provider: Where the span goes; OpenTelemetry's global provider when not given.

    Raises:
        TypeError, ValueError: a message or parameter is malformed (before any span starts).
    """
    input_messages = [_normalise_message(message, "user") for message in messages or ()]
    span_attributes: dict[str, AttributeValue] = dict(attributes or {})
    span_attributes.update(
        _without_none(
            {
                _OPERATION_NAME: operation,
                _PROVIDER_NAME: provider,
                _REQUEST_MODEL: model,
                _REQUEST_TEMPERATURE: temperature,
                _REQUEST_MAX_TOKENS: max_tokens,
                _REQUEST_TOP_P: top_p,
                _REQUEST_STREAM: stream,
                _CONVERSATION_ID: conversation_id,
                _USER_ID: user_id,
                _SERVER_ADDRESS: server_address,
                _SERVER_PORT: server_port,
                _PROMPT_TEMPLATE_ID: prompt_template_id,
                _PROMPT_TEMPLATE_VERSION: prompt_template_version,
            }
        )
    )
    if messages is not None:
        span_attributes[_INPUT_MESSAGE_COUNT] = len(input_messages)
        if capture_content:
            span_attributes[_INPUT_MESSAGES] = _to_json(input_messages)
    if system_instructions is not None and capture_content:
        span_attributes[_SYSTEM_INSTRUCTIONS] = _to_json(
            _system_instruction_parts(system_instructions)
        )

    tracer = trace.get_tracer(
        _INSTRUMENTATION_NAME, _sdk_version(), tracer_provider=tracer_provider
    )
    span_name = f"{operation} {model}" if model else operation
    # The tracer's own exception handling is off: it would set no error.type, and it would
    # record the exception a second time.
    with tracer.start_as_current_span(
        span_name,
        kind=SpanKind.CLIENT,
        attributes=span_attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        recorder = LlmCallRecorder(span, capture_content=capture_content)
        try:
            yield recorder
        except BaseException as error:
            if not isinstance(error, GeneratorExit):
                error_type = type(error).__qualname__
                span.set_attribute(_ERROR_TYPE, error_type)
                span.record_exception(error, escaped=True)
                span.set_status(Status(StatusCode.ERROR, f"{error_type}: {error}"))
            raise
        finally:
            try:
                recorder._finish()
            except Exception:
                # Telemetry must not replace the application's own result or exception.
                _logger.exception("llmtap.sdk: could not record the response of %r", span_name)


class LlmCallRecorder:
    """Adds what is learnt during the call to the span that :func:`record_llm_call` opened.

    Scalar attributes are set at once; messages and documents are written as JSON when the span
    ends, so the methods may be called in any order and more than once.
    """

    def __init__(self, span: trace.Span, *, capture_content: bool) -> None:
        self._span = span
        self._capture_content = capture_content
        self._started_at = time.monotonic()
        self._finish_reasons: list[str] | None = None
        self._output_messages: list[dict[str, Any]] | None = None
        self._tool_call_parts: list[dict[str, Any]] = []
        self._documents: list[dict[str, Any]] | None = None

    @property
    def span(self) -> trace.Span:
        """The span itself, for attributes or events this class has no method for."""
        return self._span

    def set_response(
        self,
        *,
        model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        output_messages: Sequence[MessageInput] | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_input_tokens: int | None = None,
        cache_creation_input_tokens: int | None = None,
        reasoning_output_tokens: int | None = None,
    ) -> None:
        """Record the response; only the arguments given are set, so usage can come later.

        ``output_messages`` are the choices (candidates), one message each; plain strings are
        assistant text. A message without a ``finish_reason`` gets the one at its index in
        ``finish_reasons``; without ``finish_reasons``, ``gen_ai.response.finish_reasons`` is
        taken from the messages. Token counts follow the conventions: ``input_tokens``
        includes cached tokens and ``output_tokens`` includes reasoning tokens.
        """
        counts = {
            _USAGE_INPUT_TOKENS: input_tokens,
            _USAGE_OUTPUT_TOKENS: output_tokens,
            _USAGE_CACHE_READ_INPUT_TOKENS: cache_read_input_tokens,
            _USAGE_CACHE_CREATION_INPUT_TOKENS: cache_creation_input_tokens,
            _USAGE_REASONING_OUTPUT_TOKENS: reasoning_output_tokens,
        }
        for key, count in counts.items():
            if count is not None and (
                isinstance(count, bool) or not isinstance(count, int) or count < 0
            ):
                raise ValueError(f"{key} must be a non-negative int, got {count!r}")
        if output_messages is not None:
            self._output_messages = [
                _normalise_message(message, "assistant") for message in output_messages
            ]
        if finish_reasons is not None:
            if isinstance(finish_reasons, str):
                raise TypeError("finish_reasons must be a sequence of strings, not one string")
            self._finish_reasons = list(finish_reasons)
        self._span.set_attributes(
            _without_none({_RESPONSE_MODEL: model, _RESPONSE_ID: response_id, **counts})
        )

    def add_tool_call(
        self,
        name: str,
        call_id: str | None = None,
        arguments: Mapping[str, Any] | str | None = None,
    ) -> None:
        """Add a tool call the model asked for, as a ``tool_call`` part of the first output
        message (an assistant message is created if there is none).

        ``arguments`` may be the JSON string a provider returns; it is recorded as an object
        when it parses as one.
        """
        part: dict[str, Any] = {"type": "tool_call", "name": name}
        if call_id is not None:
            part["id"] = call_id
        if arguments is not None:
            part["arguments"] = _parse_json_object(arguments)
        self._tool_call_parts.append(part)

    def add_retrieved_documents(
        self, documents: Sequence[RetrievedDocument | Mapping[str, Any] | str]
    ) -> None:
        """Add documents retrieved as context (``gen_ai.retrieval.documents``); plain strings
        are document contents. Further calls append."""
        if isinstance(documents, str):
            raise TypeError("documents must be a sequence; wrap a single document in a list")
        normalised = [_normalise_document(document) for document in documents]
        if self._documents is None:
            self._documents = []
        self._documents.extend(normalised)

    def set_time_to_first_token(self, seconds: float) -> None:
        """Record the time from the request to the first streamed chunk, in seconds, as
        ``gen_ai.response.time_to_first_chunk``."""
        if seconds < 0:
            raise ValueError(f"time to first token must not be negative, got {seconds!r}")
        self._span.set_attribute(_RESPONSE_TIME_TO_FIRST_CHUNK, float(seconds))

    def mark_first_token(self) -> float:
        """Record the time to first token as the time since the ``with`` block began; call it
        when the first chunk arrives. Returns the seconds recorded."""
        seconds = time.monotonic() - self._started_at
        self.set_time_to_first_token(seconds)
        return seconds

    def _finish(self) -> None:
        """Write the attributes collected over the call; runs as the span ends."""
        output_messages = self._output_messages
        if self._tool_call_parts:
            if not output_messages:
                output_messages = [{"role": "assistant", "parts": []}]
            first = output_messages[0]
            output_messages[0] = {**first, "parts": [*first["parts"], *self._tool_call_parts]}

        finish_reasons = self._finish_reasons
        if output_messages is not None:
            # Choice i finished for reason i; zip stops at the shorter of the two lists.
            for message, reason in zip(output_messages, finish_reasons or (), strict=False):
                message.setdefault("finish_reason", reason)
            if finish_reasons is None:
                derived = [m["finish_reason"] for m in output_messages if "finish_reason" in m]
                finish_reasons = derived or None

        attributes: dict[str, AttributeValue] = {}
        if finish_reasons is not None:
            attributes[_RESPONSE_FINISH_REASONS] = [str(reason) for reason in finish_reasons]
        if output_messages is not None:
            attributes[_OUTPUT_MESSAGE_COUNT] = len(output_messages)
            attributes[_OUTPUT_TOOL_CALL_COUNT] = sum(
                1
                for message in output_messages
                for part in message["parts"]
                if part.get("type") == "tool_call"
            )
            if self._capture_content:
                attributes[_OUTPUT_MESSAGES] = _to_json(output_messages)
        if self._documents is not None:
            documents = self._documents
            if not self._capture_content:
                documents = [_document_without_content(document) for document in documents]
            attributes[_RETRIEVAL_DOCUMENTS] = _to_json(documents)
        if attributes:
            self._span.set_attributes(attributes)


def _normalise_message(message: MessageInput, default_role: str) -> dict[str, Any]:
    """One message in the conventions' structured form ``{"role", "parts": [...]}``."""
    if isinstance(message, str):
        return {"role": default_role, "parts": [_text_part(message)]}
    if isinstance(message, tuple):
        if len(message) != 2 or not all(isinstance(item, str) for item in message):
            raise TypeError(f"a message tuple must be (role, text), got {message!r}")
        role, text = message
        return {"role": role, "parts": [_text_part(text)]}
    if isinstance(message, Mapping):
        if not isinstance(message.get("role"), str):
            raise ValueError(f"a message needs a 'role' string, got {message!r}")
        if "parts" in message:
            parts = message["parts"]
            if isinstance(parts, str | bytes) or not isinstance(parts, Sequence):
                raise TypeError(f"a message's 'parts' must be a list, got {message!r}")
            for part in parts:
                if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                    raise ValueError(f"each message part needs a 'type' string, got {part!r}")
            return {**message, "parts": [dict(part) for part in parts]}
        content = message.get("content")
        if isinstance(content, str):
            rest = {key: value for key, value in message.items() if key != "content"}
            return {**rest, "parts": [_text_part(content)]}
        raise ValueError(
            "a message mapping needs 'parts' (the structured form) or a 'content' string, "
            f"got {message!r}"
        )
    raise TypeError(
        f"a message must be a string, a (role, text) tuple or a mapping, got {type(message)!r}"
    )


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def _system_instruction_parts(instructions: str | Sequence[str]) -> list[dict[str, Any]]:
    if isinstance(instructions, str):
        return [_text_part(instructions)]
    for instruction in instructions:
        if not isinstance(instruction, str):
            raise TypeError(f"system instructions must be strings, got {instruction!r}")
    return [_text_part(instruction) for instruction in instructions]


def _normalise_document(document: RetrievedDocument | Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(document, str):
        return {"content": document}
    if isinstance(document, RetrievedDocument):
        return _without_none(
            {"id": document.id, "content": document.content, "score": document.score}
        )
    if isinstance(document, Mapping):
        return dict(document)
    raise TypeError(
        "a retrieved document must be a RetrievedDocument, a mapping or a string, "
        f"got {type(document)!r}"
    )


def _document_without_content(document: Mapping[str, Any]) -> dict[str, Any]:
    # Only the fields the conventions require are known to be free of content; a mapping's
    # other keys (metadata, titles, urls) may not be.
    return {key: document[key] for key in ("id", "score") if key in document}


def _parse_json_object(arguments: Mapping[str, Any] | str) -> Any:
    if not isinstance(arguments, str):
        return dict(arguments)
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    return parsed if isinstance(parsed, dict) else arguments


def _to_json(value: Any) -> str:
    # default=str: an odd value in a caller's metadata (a datetime, a UUID) must not make
    # telemetry raise inside the application.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


@functools.cache
def _sdk_version() -> str | None:
    # Read from the installed distribution rather than imported from the llmtap package, so
    # that this module depends on nothing else in llmtap.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmtap")
    except PackageNotFoundError:
        return None
