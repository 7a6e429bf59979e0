"""Unit tests for llmtap.sdk: the span record_llm_call writes and the provider configure builds.

Spans go to an InMemorySpanExporter on a local TracerProvider; OpenTelemetry's global provider is
never touched (the tests of set_global replace the two global accessors with a dictionary).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llmtap import sdk
from llmtap.sdk import RetrievedDocument, configure, record_llm_call

EXPORTER_PATH = "opentelemetry.exporter.otlp.proto.http.trace_exporter.OTLPSpanExporter"


class QuotaExceededError(Exception):
    """An application error raised inside a recorded call."""


@pytest.fixture(autouse=True)
def _isolated_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's OTEL_* variables (endpoint, headers, compression, resource) and proxy
    settings must not change what the tests see."""
    for name in list(os.environ):
        if name.upper().startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, f"expected one span, got {[span.name for span in spans]}"
    return spans[0]


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def json_attribute(span: ReadableSpan, key: str) -> Any:
    value = attributes_of(span)[key]
    assert isinstance(value, str), f"{key} must be recorded as a JSON string, got {value!r}"
    return json.loads(value)


# record_llm_call: request side


def test_span_name_kind_and_request_attributes(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with record_llm_call(
        provider="openai",
        model="gpt-4o-mini",
        temperature=0.2,
        max_tokens=256,
        top_p=0.9,
        stream=True,
        conversation_id="conv-1",
        user_id="user-7",
        server_address="api.openai.com",
        server_port=443,
        prompt_template_id="support-answer",
        prompt_template_version="v3",
        tracer_provider=provider,
    ):
        pass

    span = only_span(exporter)
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "llmtap.sdk"
    assert attributes_of(span) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.stream": True,
        "gen_ai.conversation.id": "conv-1",
        "user.id": "user-7",
        "server.address": "api.openai.com",
        "server.port": 443,
        "llmtap.prompt.template.id": "support-answer",
        "llmtap.prompt.template.version": "v3",
    }


def test_operation_names_the_span_and_unset_parameters_are_absent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with record_llm_call(
        provider="aws.bedrock",
        model="amazon.titan-embed-text-v2",
        operation="embeddings",
        tracer_provider=provider,
    ):
        pass

    span = only_span(exporter)
    assert span.name == "embeddings amazon.titan-embed-text-v2"
    assert attributes_of(span) == {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.request.model": "amazon.titan-embed-text-v2",
    }


def test_extra_attributes_are_set_and_named_arguments_win(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with record_llm_call(
        provider="anthropic",
        model="claude-sonnet-4",
        attributes={"app.feature": "summaries", "gen_ai.request.model": "overridden"},
        tracer_provider=provider,
    ):
        pass

    attributes = attributes_of(only_span(exporter))
    assert attributes["app.feature"] == "summaries"
    assert attributes["gen_ai.request.model"] == "claude-sonnet-4"


def test_input_messages_in_every_accepted_form_become_the_structured_form(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tool_call = {"type": "tool_call", "id": "call_1", "name": "track", "arguments": {"id": 42}}
    messages: list[sdk.MessageInput] = [
        "Where is my parcel?",
        ("system", "Be brief."),
        {"role": "user", "content": "Order 42.", "name": "alice"},
        {"role": "assistant", "parts": [tool_call]},
    ]
    with record_llm_call(
        provider="openai", model="gpt-4o", messages=messages, tracer_provider=provider
    ):
        pass

    span = only_span(exporter)
    assert json_attribute(span, "gen_ai.input.messages") == [
        {"role": "user", "parts": [{"type": "text", "content": "Where is my parcel?"}]},
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "name": "alice", "parts": [{"type": "text", "content": "Order 42."}]},
        {"role": "assistant", "parts": [tool_call]},
    ]
    assert attributes_of(span)["llmtap.input.message.count"] == 4


@pytest.mark.parametrize(
    ("instructions", "expected"),
    [
        ("You are terse.", [{"type": "text", "content": "You are terse."}]),
        (
            ["You translate.", "Into French."],
            [
                {"type": "text", "content": "You translate."},
                {"type": "text", "content": "Into French."},
            ],
        ),
    ],
)
def test_system_instructions_are_a_list_of_text_parts(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    instructions: str | list[str],
    expected: list[dict[str, str]],
) -> None:
    with record_llm_call(
        provider="openai",
        model="gpt-4o",
        system_instructions=instructions,
        tracer_provider=provider,
    ):
        pass

    assert json_attribute(only_span(exporter), "gen_ai.system_instructions") == expected


def test_non_ascii_content_survives_the_json_round_trip(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with record_llm_call(
        provider="openai",
        model="gpt-4o",
        messages=["Où est mon colis ? 📦"],
        tracer_provider=provider,
    ):
        pass

    messages = json_attribute(only_span(exporter), "gen_ai.input.messages")
    assert messages[0]["parts"][0]["content"] == "Où est mon colis ? 📦"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (("user",), TypeError),
        (("user", 42), TypeError),
        ({"content": "no role"}, ValueError),
        ({"role": "user"}, ValueError),
        ({"role": "user", "content": None}, ValueError),
        ({"role": "user", "parts": "not a list"}, TypeError),
        ({"role": "user", "parts": [{"content": "no type"}]}, ValueError),
        (42, TypeError),
    ],
)
def test_malformed_message_raises_before_any_span_starts(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    message: Any,
    error: type[Exception],
) -> None:
    with (
        pytest.raises(error),
        record_llm_call(
            provider="openai", model="gpt-4o", messages=[message], tracer_provider=provider
        ),
    ):
        pytest.fail("the block must not run")

    assert exporter.get_finished_spans() == ()


# record_llm_call: response side


def test_response_attributes_and_output_messages(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider) as call:
        call.set_response(
            model="gpt-4o-2024-08-06",
            response_id="chatcmpl-123",
            finish_reasons=["stop", "length"],
            output_messages=["It ships today.", ("assistant", "It ships")],
            input_tokens=120,
            output_tokens=40,
            cache_read_input_tokens=100,
            cache_creation_input_tokens=20,
            reasoning_output_tokens=8,
        )

    span = only_span(exporter)
    attributes = attributes_of(span)
    assert attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert attributes["gen_ai.response.id"] == "chatcmpl-123"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop", "length")
    assert attributes["gen_ai.usage.input_tokens"] == 120
    assert attributes["gen_ai.usage.output_tokens"] == 40
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 100
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 20
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 8
    assert attributes["llmtap.output.message.count"] == 2
    assert attributes["llmtap.output.tool_call.count"] == 0
    assert json_attribute(span, "gen_ai.output.messages") == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "It ships today."}],
            "finish_reason": "stop",
        },
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "It ships"}],
            "finish_reason": "length",
        },
    ]


def test_set_response_merges_calls_so_usage_can_arrive_last(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider) as call:
        call.set_response(response_id="chatcmpl-9", output_messages=["Hi"])
        call.set_response(input_tokens=3, output_tokens=1)

    attributes = attributes_of(only_span(exporter))
    assert attributes["gen_ai.response.id"] == "chatcmpl-9"
    assert attributes["gen_ai.usage.input_tokens"] == 3
    assert "gen_ai.response.model" not in attributes


def test_finish_reasons_are_taken_from_the_messages_when_not_given(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    message = {
        "role": "assistant",
        "parts": [{"type": "text", "content": "Done."}],
        "finish_reason": "stop",
    }
    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider) as call:
        call.set_response(output_messages=[message])

    span = only_span(exporter)
    assert attributes_of(span)["gen_ai.response.finish_reasons"] == ("stop",)
    assert json_attribute(span, "gen_ai.output.messages") == [message]


def test_tool_calls_join_the_first_output_message_whatever_the_order(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider) as call:
        call.add_tool_call("get_weather", call_id="call_1", arguments='{"city": "Paris"}')
        call.set_response(finish_reasons=["tool_call"], output_messages=["Let me check."])
        call.add_tool_call("get_time", call_id="call_2", arguments={"zone": "CET"})
        call.add_tool_call("broken", arguments="not json")

    span = only_span(exporter)
    assert json_attribute(span, "gen_ai.output.messages") == [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Let me check."},
                {
                    "type": "tool_call",
                    "name": "get_weather",
                    "id": "call_1",
                    "arguments": {"city": "Paris"},
                },
                {
                    "type": "tool_call",
                    "name": "get_time",
                    "id": "call_2",
                    "arguments": {"zone": "CET"},
                },
                {"type": "tool_call", "name": "broken", "arguments": "not json"},
            ],
            "finish_reason": "tool_call",
        }
    ]
    assert attributes_of(span)["llmtap.output.tool_call.count"] == 3


def test_a_tool_call_alone_makes_an_assistant_message(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with record_llm_call(provider="anthropic", model="claude", tracer_provider=provider) as call:
        call.add_tool_call("search", call_id="toolu_1", arguments={"q": "llmtap"})

    span = only_span(exporter)
    assert json_attribute(span, "gen_ai.output.messages") == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "name": "search",
                    "id": "toolu_1",
                    "arguments": {"q": "llmtap"},
                }
            ],
        }
    ]
    assert attributes_of(span)["llmtap.output.message.count"] == 1


def test_retrieved_documents_accumulate_in_every_form(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider) as call:
        call.add_retrieved_documents(
            [RetrievedDocument(id="doc-1", content="Parcels ship daily.", score=0.92)]
        )
        call.add_retrieved_documents(
            [
                {"id": "doc-2", "content": "Refunds take 5 days.", "score": 0.5, "source": "faq"},
                "raw chunk",
            ]
        )

    assert json_attribute(only_span(exporter), "gen_ai.retrieval.documents") == [
        {"id": "doc-1", "content": "Parcels ship daily.", "score": 0.92},
        {"id": "doc-2", "content": "Refunds take 5 days.", "score": 0.5, "source": "faq"},
        {"content": "raw chunk"},
    ]


def test_time_to_first_token(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider) as call:
        call.set_time_to_first_token(0.25)

    assert attributes_of(only_span(exporter))["gen_ai.response.time_to_first_chunk"] == 0.25


def test_mark_first_token_measures_from_the_start_of_the_block(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider) as call:
        seconds = call.mark_first_token()

    recorded = attributes_of(only_span(exporter))["gen_ai.response.time_to_first_chunk"]
    assert recorded == seconds
    assert 0 <= seconds < 5


@pytest.mark.parametrize(
    "arguments",
    [{"input_tokens": -1}, {"output_tokens": 1.5}, {"cache_read_input_tokens": True}],
)
def test_invalid_token_counts_are_refused(
    provider: TracerProvider, arguments: dict[str, Any]
) -> None:
    with (
        record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider) as call,
        pytest.raises(ValueError, match="non-negative int"),
    ):
        call.set_response(**arguments)


def test_other_malformed_response_values_are_refused(provider: TracerProvider) -> None:
    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider) as call:
        with pytest.raises(ValueError, match="must not be negative"):
            call.set_time_to_first_token(-0.1)
        with pytest.raises(TypeError, match="sequence of strings"):
            call.set_response(finish_reasons="stop")
        with pytest.raises(TypeError, match="wrap a single document"):
            call.add_retrieved_documents("one document")


# record_llm_call: privacy and errors


def test_capture_content_false_records_counts_and_ids_but_no_text(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    secrets = ["SECRET-PROMPT", "SECRET-SYSTEM", "SECRET-ANSWER", "SECRET-ARG", "SECRET-DOC"]
    with record_llm_call(
        provider="openai",
        model="gpt-4o",
        messages=["SECRET-PROMPT", ("user", "more")],
        system_instructions="SECRET-SYSTEM",
        capture_content=False,
        tracer_provider=provider,
    ) as call:
        call.set_response(finish_reasons=["tool_call"], output_messages=["SECRET-ANSWER"])
        call.add_tool_call("lookup", call_id="call_1", arguments={"q": "SECRET-ARG"})
        call.add_retrieved_documents(
            [
                RetrievedDocument(id="doc-1", content="SECRET-DOC", score=0.9),
                {"id": "doc-2", "content": "SECRET-DOC", "title": "SECRET-DOC"},
                "SECRET-DOC",
            ]
        )

    span = only_span(exporter)
    attributes = attributes_of(span)
    flattened = json.dumps({key: str(value) for key, value in attributes.items()})
    for secret in secrets:
        assert secret not in flattened
    assert "gen_ai.input.messages" not in attributes
    assert "gen_ai.system_instructions" not in attributes
    assert "gen_ai.output.messages" not in attributes
    assert attributes["llmtap.input.message.count"] == 2
    assert attributes["llmtap.output.message.count"] == 1
    assert attributes["llmtap.output.tool_call.count"] == 1
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_call",)
    assert json_attribute(span, "gen_ai.retrieval.documents") == [
        {"id": "doc-1", "score": 0.9},
        {"id": "doc-2"},
        {},
    ]


def test_an_exception_marks_the_span_and_propagates(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    error = QuotaExceededError("monthly quota exhausted")

    def failing_call() -> None:
        with record_llm_call(
            provider="openai", model="gpt-4o", messages=["hi"], tracer_provider=provider
        ) as call:
            call.set_response(output_messages=["partial"])
            raise error

    with pytest.raises(QuotaExceededError) as raised:
        failing_call()

    assert raised.value is error
    span = only_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "QuotaExceededError: monthly quota exhausted"
    attributes = attributes_of(span)
    assert attributes["error.type"] == "QuotaExceededError"
    # What was learnt before the failure is kept.
    assert json_attribute(span, "gen_ai.output.messages")[0]["parts"][0]["content"] == "partial"
    exception_events = [event for event in span.events if event.name == "exception"]
    assert len(exception_events) == 1, "the exception must be recorded exactly once"
    event_attributes: dict[str, Any] = dict(exception_events[0].attributes or {})
    assert event_attributes["exception.type"].endswith("QuotaExceededError")
    assert event_attributes["exception.message"] == "monthly quota exhausted"


def test_error_type_is_the_qualified_class_name(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    class Client:
        class RateLimitError(Exception):
            pass

    with (
        pytest.raises(Client.RateLimitError),
        record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider),
    ):
        raise Client.RateLimitError

    error_type = attributes_of(only_span(exporter))["error.type"]
    assert error_type == Client.RateLimitError.__qualname__
    assert error_type.endswith("Client.RateLimitError")


def test_the_span_is_current_inside_the_block(provider: TracerProvider) -> None:
    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=provider) as call:
        assert trace.get_current_span() is call.span


# configure


@dataclass
class FakeExporter(SpanExporter):
    """Stands in for OTLPSpanExporter: remembers how it was built and what it was given."""

    endpoint: str | None = None
    headers: Mapping[str, str] | None = None
    exported: list[str] = field(default_factory=list)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported.extend(span.name for span in spans)
        return SpanExportResult.SUCCESS


@pytest.fixture
def fake_exporters(monkeypatch: pytest.MonkeyPatch) -> list[FakeExporter]:
    built: list[FakeExporter] = []

    def build(
        endpoint: str | None = None, headers: Mapping[str, str] | None = None
    ) -> FakeExporter:
        exporter = FakeExporter(endpoint=endpoint, headers=headers)
        built.append(exporter)
        return exporter

    monkeypatch.setattr(EXPORTER_PATH, build)
    return built


@pytest.fixture
def configured() -> Iterator[list[TracerProvider]]:
    """Providers a test made with configure(), shut down afterwards (batch threads included)."""
    providers: list[TracerProvider] = []
    yield providers
    for tracer_provider in providers:
        tracer_provider.shutdown()


@pytest.fixture
def global_provider(monkeypatch: pytest.MonkeyPatch) -> dict[str, trace.TracerProvider]:
    """OpenTelemetry's global provider accessors, backed by a dictionary for this test only."""
    state: dict[str, trace.TracerProvider] = {}
    proxy = trace.ProxyTracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: state.get("provider", proxy))
    monkeypatch.setattr(trace, "set_tracer_provider", lambda new: state.setdefault("provider", new))
    return state


def test_configure_builds_the_exporter_and_resource(
    fake_exporters: list[FakeExporter], configured: list[TracerProvider]
) -> None:
    tracer_provider = configure(
        "https://llmtap.example.com:4318",
        service_name="support-bot",
        api_key="k-123",
        environment="production",
        resource_attributes={"service.version": "1.4.0", "service.name": "ignored"},
        set_global=False,
    )
    configured.append(tracer_provider)

    [exporter] = fake_exporters
    assert exporter.endpoint == "https://llmtap.example.com:4318/v1/traces"
    assert exporter.headers == {"Authorization": "Bearer k-123"}
    resource = dict(tracer_provider.resource.attributes)
    assert resource["service.name"] == "support-bot"
    assert resource["deployment.environment.name"] == "production"
    assert resource["service.version"] == "1.4.0"
    assert resource["telemetry.sdk.language"] == "python"


def test_configure_defaults(
    fake_exporters: list[FakeExporter], configured: list[TracerProvider]
) -> None:
    configured.append(configure(service_name="svc", set_global=False))

    [exporter] = fake_exporters
    assert exporter.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert exporter.headers is None
    assert "deployment.environment.name" not in configured[0].resource.attributes


def test_explicit_resource_attributes_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    fake_exporters: list[FakeExporter],
    configured: list[TracerProvider],
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=payments,service.version=0.1")
    configured.append(
        configure(
            service_name="svc", resource_attributes={"service.version": "2.0"}, set_global=False
        )
    )

    resource = dict(configured[0].resource.attributes)
    assert resource["service.name"] == "svc"
    assert resource["service.version"] == "2.0"
    assert resource["team"] == "payments"


@pytest.mark.parametrize(
    ("endpoint", "traces_url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("http://collector:4318/v1/traces", "http://collector:4318/v1/traces"),
        ("https://gateway.example.com/otlp", "https://gateway.example.com/otlp/v1/traces"),
        ("  http://[::1]:4318  ", "http://[::1]:4318/v1/traces"),
    ],
)
def test_endpoint_is_a_base_url(
    endpoint: str,
    traces_url: str,
    fake_exporters: list[FakeExporter],
    configured: list[TracerProvider],
) -> None:
    configured.append(configure(endpoint, service_name="svc", set_global=False))

    assert fake_exporters[0].endpoint == traces_url


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("", "scheme"),
        ("127.0.0.1:4318", "scheme"),
        ("localhost", "scheme"),
        ("grpc://collector:4317", "scheme"),
        ("http://", "no host"),
        ("http://collector:99999", "Port out of range"),
        ("http://collector:port", "Port could not be cast"),
    ],
)
def test_an_endpoint_that_is_not_an_http_url_is_refused(
    endpoint: str, problem: str, fake_exporters: list[FakeExporter]
) -> None:
    with pytest.raises(ValueError, match="endpoint must be an http:// or https:// URL") as raised:
        configure(endpoint, service_name="svc", set_global=False)

    assert repr(endpoint.strip()) in str(raised.value)
    assert problem in str(raised.value)
    assert fake_exporters == []


def test_the_traces_endpoint_variable_is_a_complete_url(
    monkeypatch: pytest.MonkeyPatch,
    fake_exporters: list[FakeExporter],
    configured: list[TracerProvider],
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example.com/ingest")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://ignored.example.com")
    configured.append(configure(service_name="svc", set_global=False))

    assert fake_exporters[0].endpoint == "https://traces.example.com/ingest"


def test_the_generic_endpoint_variable_is_a_base_url(
    monkeypatch: pytest.MonkeyPatch,
    fake_exporters: list[FakeExporter],
    configured: list[TracerProvider],
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    configured.append(configure(service_name="svc", set_global=False))

    assert fake_exporters[0].endpoint == "http://collector:4318/v1/traces"


def test_the_endpoint_argument_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    fake_exporters: list[FakeExporter],
    configured: list[TracerProvider],
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example.com/ingest")
    configured.append(configure("http://127.0.0.1:9999", service_name="svc", set_global=False))

    assert fake_exporters[0].endpoint == "http://127.0.0.1:9999/v1/traces"


def test_a_bad_endpoint_variable_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, fake_exporters: list[FakeExporter]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")

    with pytest.raises(ValueError, match=r"^OTEL_EXPORTER_OTLP_ENDPOINT must be an http"):
        configure(service_name="svc", set_global=False)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"service_name": " "}, "service_name"), ({"service_name": "svc", "api_key": ""}, "api_key")],
)
def test_empty_service_name_or_api_key_is_refused(
    arguments: dict[str, Any], message: str, fake_exporters: list[FakeExporter]
) -> None:
    with pytest.raises(ValueError, match=message):
        configure(set_global=False, **arguments)


def test_batch_false_exports_each_span_as_it_ends(
    fake_exporters: list[FakeExporter], configured: list[TracerProvider]
) -> None:
    tracer_provider = configure(service_name="svc", batch=False, set_global=False)
    configured.append(tracer_provider)

    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=tracer_provider):
        pass

    assert fake_exporters[0].exported == ["chat gpt-4o"]


def test_batch_true_exports_from_the_queue_on_flush(
    fake_exporters: list[FakeExporter], configured: list[TracerProvider]
) -> None:
    tracer_provider = configure(service_name="svc", set_global=False)
    configured.append(tracer_provider)

    with record_llm_call(provider="openai", model="gpt-4o", tracer_provider=tracer_provider):
        pass
    assert fake_exporters[0].exported == [], "a batch exporter must not export on span end"
    assert tracer_provider.force_flush()

    assert fake_exporters[0].exported == ["chat gpt-4o"]


def test_set_global_installs_the_first_provider_only(
    fake_exporters: list[FakeExporter],
    configured: list[TracerProvider],
    global_provider: dict[str, trace.TracerProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = configure(service_name="first")
    configured.append(first)
    assert global_provider["provider"] is first

    with caplog.at_level(logging.WARNING, logger="llmtap.sdk"):
        second = configure(service_name="second")
    configured.append(second)

    assert global_provider["provider"] is first
    assert second is not first
    assert "already set" in caplog.text
    assert "'second'" in caplog.text


def test_set_global_false_leaves_the_global_provider_alone(
    fake_exporters: list[FakeExporter],
    configured: list[TracerProvider],
    global_provider: dict[str, trace.TracerProvider],
) -> None:
    configured.append(configure(service_name="svc", set_global=False))

    assert global_provider == {}


# configure + record_llm_call over real HTTP


@dataclass(frozen=True)
class CapturedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


class CapturingServer(ThreadingHTTPServer):
    """A stand-in OTLP/HTTP receiver that keeps every request it gets."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CapturingHandler)
        self.captured: list[CapturedRequest] = []


class CapturingHandler(BaseHTTPRequestHandler):
    server: CapturingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {key.lower(): value for key, value in self.headers.items()}
        self.server.captured.append(CapturedRequest(self.path, headers, body))
        # An empty ExportTraceServiceResponse serialises to no bytes.
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the captured requests instead."""


@pytest.fixture
def otlp_receiver() -> Iterator[CapturingServer]:
    server = CapturingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def key_values(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {pair.key: any_value(pair.value) for pair in pairs}


def test_a_recorded_call_arrives_at_the_collector_over_otlp_http(
    otlp_receiver: CapturingServer, configured: list[TracerProvider]
) -> None:
    host, port = otlp_receiver.server_address[:2]
    tracer_provider = configure(
        f"http://{host!s}:{port}",
        service_name="support-bot",
        api_key="secret-key",
        environment="test",
        batch=False,
        set_global=False,
    )
    configured.append(tracer_provider)

    with record_llm_call(
        provider="openai",
        model="gpt-4o-mini",
        messages=["Where is my parcel?"],
        tracer_provider=tracer_provider,
    ) as call:
        call.set_response(
            finish_reasons=["stop"], output_messages=["Today."], input_tokens=7, output_tokens=2
        )
    assert tracer_provider.force_flush()

    [request] = otlp_receiver.captured
    assert request.path == "/v1/traces"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["authorization"] == "Bearer secret-key"

    export = ExportTraceServiceRequest.FromString(request.body)
    [resource_spans] = export.resource_spans
    resource = key_values(resource_spans.resource.attributes)
    assert resource["service.name"] == "support-bot"
    assert resource["deployment.environment.name"] == "test"
    [scope_spans] = resource_spans.scope_spans
    assert scope_spans.scope.name == "llmtap.sdk"
    [span] = scope_spans.spans
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == span.SPAN_KIND_CLIENT
    attributes = key_values(span.attributes)
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.usage.input_tokens"] == 7
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert json.loads(attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Where is my parcel?"}]}
    ]
    assert json.loads(attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "Today."
