"""Real OpenAI instrumentation libraries, calling a local fake OpenAI, export through the collector.

Each library monkeypatches the ``openai`` package, so each runs in a child process of its own. The
child makes one chat completion, one streamed chat completion (with usage) and one embeddings call
against ``tests.fake_openai``, exports over OTLP/HTTP to a running collector, and the test reads
the spans back from the raw-spans topic. The expectations below are what the pinned versions
actually emit; they are the reference for the normalizer, including the gaps (noted where a
library leaves out something the provider returned).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from llmtap.dev.kafka_broker import BrokerState
from tests.fake_openai import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    REPLY,
    Exchange,
    FakeOpenAI,
    Usage,
    embedding,
)
from tests.otlp_support import (
    ConsumedMessage,
    RunningCollector,
    collector_settings,
    read_topic,
    spans_of,
)

pytestmark = pytest.mark.integration

CHILD_TIMEOUT_SECONDS = 60
REPORT_PREFIX = "INTEROP-REPORT "
# opentelemetry-instrumentation-openai-v2 2.4b0 imports opentelemetry.util.genai.instruments,
# which opentelemetry-util-genai 1.2b0 renamed; 1.0b0 and 1.1b0 import but no longer accept the
# legacy OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true. 0.4b0 is the matching release.
GENAI_UTIL_HINT = (
    "hint: opentelemetry-instrumentation-openai-v2 2.4b0 needs opentelemetry-util-genai<1.0 "
    "(the lock must pin it)"
)

# The child: instrument openai with one library, make three calls, flush, report. It reads only
# its arguments and the environment the test gives it.
CHILD_PROGRAM = r"""
import importlib
import json
import sys

instrumentor_module, base_url, traces_url, service_name = sys.argv[1:5]

from opentelemetry import _logs, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult


class CheckedExporter(OTLPSpanExporter):
    # The SDK only logs a failed export; counting them lets the test fail fast and say why.
    exported = 0
    failed = 0

    def export(self, spans):
        result = super().export(spans)
        if result is SpanExportResult.SUCCESS:
            CheckedExporter.exported += len(spans)
        else:
            CheckedExporter.failed += len(spans)
        return result


resource = Resource.create({"service.name": service_name})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(
    BatchSpanProcessor(CheckedExporter(endpoint=traces_url, timeout=10))
)
# llmtap receives traces only. Log records, where some libraries put message content, are kept
# here and reported so the test can say where the content went.
log_records = InMemoryLogRecordExporter()
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_records))
trace.set_tracer_provider(tracer_provider)
_logs.set_logger_provider(logger_provider)

instrumentor = importlib.import_module(instrumentor_module).OpenAIInstrumentor()
instrumentor.instrument(tracer_provider=tracer_provider, logger_provider=logger_provider)

import openai

client = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0, timeout=20)
client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[
        {
            "role": "system",
            "content": "You are the support assistant of an online bookshop. Answer briefly.",
        },
        {"role": "user", "content": "Where is my order A-10482?"},
    ],
    temperature=0.2,
    max_tokens=200,
)
stream = client.chat.completions.create(
    model="o4-mini",
    reasoning_effort="low",
    messages=[{"role": "user", "content": "When will order A-10482 arrive in Lyon?"}],
    stream=True,
    stream_options={"include_usage": True},
)
streamed_text = "".join(
    chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
)
client.embeddings.create(model="text-embedding-3-small", input=["Where is my order A-10482?"])

tracer_provider.shutdown()
logger_provider.shutdown()


def plain(value):
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


report = {
    "exported_spans": CheckedExporter.exported,
    "failed_spans": CheckedExporter.failed,
    "streamed_text": streamed_text,
    "log_records": [
        {
            "event_name": getattr(record.log_record, "event_name", None),
            "attributes": dict(record.log_record.attributes or {}),
            "body": record.log_record.body,
            "trace_id": format(record.log_record.trace_id or 0, "032x"),
            "span_id": format(record.log_record.span_id or 0, "016x"),
        }
        for record in log_records.get_finished_logs()
    ],
}
print("INTEROP-REPORT " + json.dumps(report, default=plain), flush=True)
sys.exit(1 if CheckedExporter.failed else 0)
"""


class Absent(Enum):
    """Expect the attribute not to be there (a gap the normalizer has to live with)."""

    ABSENT = "absent"


ABSENT = Absent.ABSENT


@dataclass(frozen=True)
class JsonOf:
    """Expect a string attribute holding this JSON document (spacing and key order may differ)."""

    document: object


@dataclass(frozen=True)
class ExpectedSpan:
    name: str
    kind: Span.SpanKind.ValueType
    attributes: dict[str, object]
    # Span events by name and count. None of these libraries puts content in span events, so
    # every event is also expected to carry no attributes.
    events: dict[str, int] = field(default_factory=dict)
    # Success is UNSET for some libraries and OK for others: a normalizer must treat both alike.
    status: Status.StatusCode.ValueType = Status.StatusCode.STATUS_CODE_UNSET


@dataclass(frozen=True)
class Library:
    id: str
    instrumentor_module: str
    environment: dict[str, str]
    chat: Callable[[Exchange], ExpectedSpan]
    embeddings: Callable[[Exchange], ExpectedSpan]
    # Legacy OTel GenAI conventions put prompts and completions in log records, not on spans.
    content_in_log_records: bool = False
    expected_spans: int = 3  # one per call: no HTTP instrumentation is installed


def parts_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The GenAI semantic conventions' ``gen_ai.input.messages`` form of chat messages."""
    return [
        {"role": message["role"], "parts": [{"type": "text", "content": message["content"]}]}
        for message in messages
    ]


OUTPUT_MESSAGES = [
    {"role": "assistant", "parts": [{"type": "text", "content": REPLY}], "finish_reason": "stop"}
]


def usage_of(exchange: Exchange) -> Usage:
    assert exchange.usage is not None, f"the fake sent no usage for {exchange.request}"
    return exchange.usage


def request_parameters(exchange: Exchange, **names: str) -> dict[str, object]:
    """Request parameters the span should repeat, for those the request actually set."""
    return {
        attribute: exchange.request[parameter]
        for attribute, parameter in names.items()
        if parameter in exchange.request
    }


def openai_v2_chat(latest_conventions: bool) -> Callable[[Exchange], ExpectedSpan]:
    def expected(exchange: Exchange) -> ExpectedSpan:
        usage = usage_of(exchange)
        attributes: dict[str, object] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": exchange.request["model"],
            "gen_ai.response.model": exchange.response_model,
            "gen_ai.response.id": exchange.response_id,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            # Gaps: neither cached nor reasoning tokens are reported, in either convention.
            "gen_ai.usage.cache_read.input_tokens": ABSENT,
            "gen_ai.usage.reasoning_tokens": ABSENT,
            # Gap: a streamed response's finish reason is not put on the span.
            "gen_ai.response.finish_reasons": ABSENT if exchange.streamed else ["stop"],
            **request_parameters(
                exchange,
                **{
                    "gen_ai.request.temperature": "temperature",
                    "gen_ai.request.max_tokens": "max_tokens",
                },
            ),
        }
        if latest_conventions:
            attributes |= {
                "gen_ai.provider.name": "openai",
                "gen_ai.input.messages": JsonOf(parts_messages(exchange.request["messages"])),
                "gen_ai.output.messages": JsonOf(OUTPUT_MESSAGES),
            }
        else:
            attributes |= {
                "gen_ai.system": "openai",
                "gen_ai.input.messages": ABSENT,
                "gen_ai.output.messages": ABSENT,
            }
        return ExpectedSpan(
            f"chat {exchange.request['model']}", Span.SpanKind.SPAN_KIND_CLIENT, attributes
        )

    return expected


def openai_v2_embeddings(latest_conventions: bool) -> Callable[[Exchange], ExpectedSpan]:
    def expected(exchange: Exchange) -> ExpectedSpan:
        provider = "gen_ai.provider.name" if latest_conventions else "gen_ai.system"
        return ExpectedSpan(
            f"embeddings {exchange.request['model']}",
            Span.SpanKind.SPAN_KIND_CLIENT,
            {
                "gen_ai.operation.name": "embeddings",
                provider: "openai",
                "gen_ai.request.model": exchange.request["model"],
                "gen_ai.response.model": exchange.response_model,
                "gen_ai.embeddings.dimension.count": DEFAULT_EMBEDDING_DIMENSIONS,
                "gen_ai.usage.input_tokens": usage_of(exchange).prompt_tokens,
            },
        )

    return expected


def openinference_chat(exchange: Exchange) -> ExpectedSpan:
    usage = usage_of(exchange)
    messages = exchange.request["messages"]
    attributes: dict[str, object] = {
        "openinference.span.kind": "LLM",
        "llm.system": "openai",
        "llm.model_name": exchange.response_model,  # the response's model, not the request's
        "llm.token_count.prompt": usage.prompt_tokens,
        "llm.token_count.completion": usage.completion_tokens,
        "llm.token_count.total": usage.total_tokens,
        "llm.token_count.prompt_details.cache_read": usage.cached_tokens,
        "llm.token_count.completion_details.reasoning": usage.reasoning_tokens,
        "llm.finish_reason": "stop",
        "input.mime_type": "application/json",
        "input.value": JsonOf(exchange.request),  # the whole request body, as sent
        "output.mime_type": "application/json",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": REPLY,
        f"llm.input_messages.{len(messages)}.message.role": ABSENT,
    }
    for index, message in enumerate(messages):
        attributes[f"llm.input_messages.{index}.message.role"] = message["role"]
        attributes[f"llm.input_messages.{index}.message.content"] = message["content"]
    return ExpectedSpan(
        "ChatCompletion",
        Span.SpanKind.SPAN_KIND_INTERNAL,
        attributes,
        events={"First Token Stream Event": 1} if exchange.streamed else {},
        status=Status.StatusCode.STATUS_CODE_OK,
    )


def openinference_embeddings(exchange: Exchange) -> ExpectedSpan:
    usage = usage_of(exchange)
    [text] = exchange.request["input"]
    return ExpectedSpan(
        "CreateEmbeddings",
        Span.SpanKind.SPAN_KIND_INTERNAL,
        {
            "openinference.span.kind": "EMBEDDING",
            "llm.system": "openai",
            "embedding.model_name": exchange.request["model"],
            "llm.token_count.prompt": usage.prompt_tokens,
            "llm.token_count.total": usage.total_tokens,
            "input.value": JsonOf(exchange.request),
            "embedding.embeddings.0.embedding.text": text,
            # Decoded from the base64 answer the client asked for, float32 precision.
            "embedding.embeddings.0.embedding.vector": pytest.approx(
                embedding(text, DEFAULT_EMBEDDING_DIMENSIONS)
            ),
        },
        status=Status.StatusCode.STATUS_CODE_OK,
    )


def traceloop_chat(exchange: Exchange) -> ExpectedSpan:
    usage = usage_of(exchange)
    return ExpectedSpan(
        "openai.chat",
        Span.SpanKind.SPAN_KIND_CLIENT,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": exchange.request["model"],
            "gen_ai.response.model": exchange.response_model,
            "gen_ai.response.id": exchange.response_id,
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.is_streaming": exchange.streamed,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.usage.total_tokens": usage.total_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cached_tokens,
            # Gap: reasoning tokens are reported for plain responses only, not for streams.
            "gen_ai.usage.reasoning_tokens": (
                ABSENT if exchange.streamed else usage.reasoning_tokens
            ),
            "gen_ai.input.messages": JsonOf(parts_messages(exchange.request["messages"])),
            "gen_ai.output.messages": JsonOf(OUTPUT_MESSAGES),
            **request_parameters(
                exchange,
                **{
                    "gen_ai.request.temperature": "temperature",
                    "gen_ai.request.max_tokens": "max_tokens",
                    "gen_ai.request.reasoning_effort": "reasoning_effort",
                },
            ),
        },
        # One attribute-less event per chunk received, the final usage chunk included.
        events={"gen_ai.content.completion.chunk": exchange.chunks} if exchange.streamed else {},
        # OK for a finished stream, UNSET for a plain response.
        status=(
            Status.StatusCode.STATUS_CODE_OK
            if exchange.streamed
            else Status.StatusCode.STATUS_CODE_UNSET
        ),
    )


def traceloop_embeddings(exchange: Exchange) -> ExpectedSpan:
    usage = usage_of(exchange)
    return ExpectedSpan(
        "openai.embeddings",
        Span.SpanKind.SPAN_KIND_CLIENT,
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": exchange.request["model"],
            "gen_ai.response.model": exchange.response_model,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.total_tokens": usage.total_tokens,
            "gen_ai.usage.cache_read.input_tokens": 0,
            # The embedded texts, as if they were a user message.
            "gen_ai.input.messages": JsonOf(
                [
                    {"role": "user", "parts": [{"type": "text", "content": text}]}
                    for text in exchange.request["input"]
                ]
            ),
        },
    )


LIBRARIES = [
    Library(
        id="openai-v2",
        instrumentor_module="opentelemetry.instrumentation.openai_v2",
        environment={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"},
        chat=openai_v2_chat(latest_conventions=False),
        embeddings=openai_v2_embeddings(latest_conventions=False),
        content_in_log_records=True,
    ),
    Library(
        id="openai-v2-latest-conventions",
        instrumentor_module="opentelemetry.instrumentation.openai_v2",
        environment={
            "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
        },
        chat=openai_v2_chat(latest_conventions=True),
        embeddings=openai_v2_embeddings(latest_conventions=True),
    ),
    Library(
        id="openinference",
        instrumentor_module="openinference.instrumentation.openai",
        environment={},  # captures inputs and outputs unless OPENINFERENCE_HIDE_* say otherwise
        chat=openinference_chat,
        embeddings=openinference_embeddings,
    ),
    Library(
        id="traceloop",
        instrumentor_module="opentelemetry.instrumentation.openai",
        environment={"TRACELOOP_TRACE_CONTENT": "true", "TRACELOOP_METRICS_ENABLED": "false"},
        chat=traceloop_chat,
        embeddings=traceloop_embeddings,
    ),
]


def child_environment(library: Library) -> dict[str, str]:
    """The test's environment without settings that would change what a library emits or where
    the client connects (proxies, real OpenAI keys), plus the library's own settings."""
    dropped_prefixes = ("OTEL_", "TRACELOOP_", "OPENINFERENCE_", "OPENAI_")
    proxies = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(dropped_prefixes) and name.upper() not in proxies
    }
    return {**environment, "NO_PROXY": "127.0.0.1,localhost", **library.environment}


def run_instrumented_client(
    library: Library, base_url: str, traces_url: str, service_name: str, working_directory: Path
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-c",
        CHILD_PROGRAM,
        library.instrumentor_module,
        base_url,
        traces_url,
        service_name,
    ]
    try:
        finished = subprocess.run(
            command,
            env=child_environment(library),
            cwd=working_directory,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(
            f"{library.id}: the instrumented client did not finish in {CHILD_TIMEOUT_SECONDS} s\n"
            f"stdout:\n{error.stdout!r}\nstderr:\n{error.stderr!r}"
        )
    reports = [line for line in finished.stdout.splitlines() if line.startswith(REPORT_PREFIX)]
    if finished.returncode != 0 or not reports:
        hint = GENAI_UTIL_HINT if "opentelemetry.util.genai" in finished.stderr else ""
        pytest.fail(
            f"{library.id}: the instrumented client exited with {finished.returncode}\n"
            f"stdout:\n{finished.stdout}\nstderr:\n{finished.stderr}\n{hint}"
        )
    report: dict[str, Any] = json.loads(reports[-1].removeprefix(REPORT_PREFIX))
    return report


def plain(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [plain(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: plain(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind)


def attributes_of(span: Span) -> dict[str, object]:
    return {attribute.key: plain(attribute.value) for attribute in span.attributes}


def mismatches(span: Span, expected: ExpectedSpan) -> list[str]:
    problems = []
    if span.name != expected.name:
        problems.append(f"name: expected {expected.name!r}, got {span.name!r}")
    if span.kind != expected.kind:
        problems.append(f"kind: expected {expected.kind}, got {span.kind}")
    if span.status.code != expected.status:
        problems.append(f"status: expected {expected.status}, got {span.status.code}")
    events = Counter(event.name for event in span.events)
    if events != Counter(expected.events):
        problems.append(f"events: expected {expected.events}, got {dict(events)}")
    if any(event.attributes for event in span.events):
        problems.append("events: some carry attributes")
    attributes = attributes_of(span)
    for key, wanted in expected.attributes.items():
        found = attributes.get(key, ABSENT)
        if isinstance(wanted, JsonOf):
            matches = isinstance(found, str) and json.loads(found) == wanted.document
        else:
            matches = found == wanted
        if not matches:
            problems.append(f"{key}: expected {wanted!r}, got {found!r}")
    return problems


def assert_one_span_per_exchange(
    library: Library, spans: list[Span], exchanges: list[Exchange]
) -> dict[str, Span]:
    """Each provider answer is described by exactly one span, and every span by one answer.
    Returns the spans by response id."""
    unmatched = list(spans)
    by_response: dict[str, Span] = {}
    for exchange in exchanges:
        expected = (library.embeddings if exchange.path.endswith("/embeddings") else library.chat)(
            exchange
        )
        matching = [span for span in unmatched if not mismatches(span, expected)]
        if len(matching) != 1:
            report = "\n".join(
                f"  span {span.name!r}:\n    " + "\n    ".join(mismatches(span, expected))
                for span in unmatched
            )
            pytest.fail(
                f"{library.id}: {len(matching)} spans match the answer to {exchange.request}; "
                f"differences from each span:\n{report}"
            )
        unmatched.remove(matching[0])
        by_response[exchange.response_id] = matching[0]
    assert unmatched == [], f"{library.id}: spans that describe no call: {unmatched}"
    return by_response


def resource_of(message: ConsumedMessage) -> dict[str, object]:
    request = ExportTraceServiceRequest.FromString(message.value)
    resources: list[ResourceSpans] = list(request.resource_spans)
    assert len(resources) == 1, "one process, one resource"
    return {item.key: plain(item.value) for item in resources[0].resource.attributes}


@pytest.mark.parametrize("library", LIBRARIES, ids=[library.id for library in LIBRARIES])
def test_instrumented_openai_calls_reach_the_topic(
    library: Library, kafka_broker: BrokerState, tmp_path: Path
) -> None:
    settings = collector_settings(kafka_broker.bootstrap_servers, tmp_path)
    service_name = f"bookshop-support-{library.id}"
    with FakeOpenAI() as provider, RunningCollector(settings) as running:
        report = run_instrumented_client(
            library, provider.base_url, running.traces_url, service_name, tmp_path
        )
        messages = read_topic(
            kafka_broker.bootstrap_servers,
            settings.topics.raw_spans,
            expect_spans=library.expected_spans,
            idle_seconds=1.5,
        )
        exchanges = provider.exchanges

    assert [exchange.path for exchange in exchanges] == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/embeddings",
    ]
    assert report["streamed_text"] == REPLY, "the fake's stream reassembles into its answer"
    assert report["exported_spans"] == library.expected_spans
    received = list(spans_of(messages))
    assert len(received) == library.expected_spans, [span.name for _, span in received]

    for message, span in received:
        assert message.key == span.trace_id.hex().encode(), "the key is the span's hex trace id"
        resource = resource_of(message)
        assert resource["service.name"] == service_name
        assert resource["telemetry.sdk.language"] == "python"

    spans_by_response = assert_one_span_per_exchange(
        library, [span for _, span in received], exchanges
    )

    chat_exchanges = [exchange for exchange in exchanges if exchange.path.endswith("/completions")]
    if library.content_in_log_records:
        # Legacy conventions: the content reaches an OTLP logs endpoint, which llmtap does not
        # receive; the log records are tied to the chat spans by trace and span id.
        for exchange in chat_exchanges:
            span = spans_by_response[exchange.response_id]
            records = [
                record
                for record in report["log_records"]
                if record["span_id"] == span.span_id.hex()
                and record["trace_id"] == span.trace_id.hex()
            ]
            messages_sent = exchange.request["messages"]
            assert [record["event_name"] for record in records] == [
                *(f"gen_ai.{message['role']}.message" for message in messages_sent),
                "gen_ai.choice",
            ]
            assert [record["body"] for record in records] == [
                *({"content": message["content"]} for message in messages_sent),
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": REPLY},
                },
            ]
            assert all(record["attributes"] == {"gen_ai.system": "openai"} for record in records)
        assert len(report["log_records"]) == sum(
            len(exchange.request["messages"]) + 1 for exchange in chat_exchanges
        )
    else:
        assert report["log_records"] == [], "content travels on the spans only"
