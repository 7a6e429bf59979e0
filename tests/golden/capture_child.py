"""One golden capture, in a process of its own: ``capture.py`` runs this file once per case.

The instrumentation libraries monkeypatch ``openai`` for the whole process, so each case gets a
fresh interpreter (and, for an old library release, a ``PYTHONPATH`` of its own). This program
instruments ``openai`` with one library, runs one scenario against the fake server, and writes
what an OTLP exporter would have sent: ``traces.pb`` (an ExportTraceServiceRequest) and, when the
library emitted log records, ``logs.pb`` (an ExportLogsServiceRequest). It prints one report
line (library versions, what the client read back) for the parent.

Only the standard library is imported at the top: ``capture.py`` imports this module to quote the
scenarios in each case's SOURCE.md, without the instrumentation libraries.

Usage: capture_child.py INSTRUMENTOR_MODULE SCENARIO BASE_URL SERVICE_NAME SEED OUTPUT_DIR
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import random
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPORT_PREFIX = "GOLDEN-CAPTURE-REPORT "
EXTEND_PACKAGES_VARIABLE = "GOLDEN_EXTEND_PACKAGE_PATHS"
# The distribution that provides each instrumentor module, for the versions in SOURCE.md.
DISTRIBUTIONS = {
    "opentelemetry.instrumentation.openai_v2": [
        "opentelemetry-instrumentation-openai-v2",
        "opentelemetry-util-genai",
    ],
    "openinference.instrumentation.openai": [
        "openinference-instrumentation-openai",
        "openinference-instrumentation",
        "openinference-semantic-conventions",
    ],
    "opentelemetry.instrumentation.openai": [
        "opentelemetry-instrumentation-openai",
        "opentelemetry-semantic-conventions-ai",
    ],
}
COMMON_DISTRIBUTIONS = ["openai", "opentelemetry-api", "opentelemetry-sdk"]

SUPPORT_INSTRUCTIONS = (
    "You are the customer support assistant of Folio & Co, an online bookshop. Answer in at most "
    "three sentences, only from the context passages, and cite them as [doc-id]. If the context "
    "does not answer the question, say so and offer to open a ticket."
)
RETRIEVED_CONTEXT = (
    "Context:\n"
    "[kb-returns-01] Books, including opened ones, can be returned within 30 days of delivery if "
    "they are undamaged. Start a return from Orders > Return an item; the label is prepaid.\n"
    "[kb-refunds-02] Refunds are issued to the original payment method 3 to 5 business days "
    "after the returned parcel reaches our warehouse.\n"
    "[kb-ebooks-07] E-books cannot be returned once downloaded."
)
ORDER_STATUS_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order_status",
        "description": "Look up the shipping status of a customer's order.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "description": "Order number, like A-10482."}
            },
            "required": ["order_id"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
DELIVERY_OPTIONS_TOOL = {
    "type": "function",
    "function": {
        "name": "list_delivery_options",
        "description": "List the ways a parcel in transit can still be delivered.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "postcode": {"type": "string", "description": "French postcode, 5 digits."},
            },
            "required": ["order_id", "postcode"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
KNOWLEDGE_BASE = [
    "Books, including opened ones, can be returned within 30 days of delivery if undamaged.",
    "Refunds are issued to the original payment method 3 to 5 business days after receipt.",
    "We ship to Switzerland in 4 to 6 business days for CHF 9.90, free above CHF 60.",
]


def chat(client: Any) -> dict[str, Any]:
    """Two chat completions: a RAG answer (retrieved passages in the system message, sampling
    parameters set) and the second turn of a conversation on another model."""
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": SUPPORT_INSTRUCTIONS + "\n\n" + RETRIEVED_CONTEXT},
            {
                "role": "user",
                "content": "Can I return a novel I bought three weeks ago? I already opened it.",
            },
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=300,
        presence_penalty=0.0,
        frequency_penalty=0.1,
        stop=["\nCustomer:"],
        seed=7,
        user="customer-8812",
    )
    client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": SUPPORT_INSTRUCTIONS},
            {"role": "user", "content": "Where is my order A-10482?"},
            {
                "role": "assistant",
                "content": "Your order A-10482 left our Lyon warehouse on Tuesday and should "
                "arrive within two business days.",
            },
            {"role": "user", "content": "Could it be delivered to my office in Villeurbanne?"},
        ],
        temperature=0.7,
    )
    return {}


def tool_calls(client: Any) -> dict[str, Any]:
    """A question the model answers with two parallel tool calls, the follow-up request that
    carries both tool results, and a streamed request forced to call one tool."""
    question = (
        "Where is my order A-10482, and can it still be delivered to 69100 Villeurbanne instead?"
    )
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SUPPORT_INSTRUCTIONS},
        {"role": "user", "content": question},
    ]
    tools = [ORDER_STATUS_TOOL, DELIVERY_OPTIONS_TOOL]
    first = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=tools, tool_choice="auto", temperature=0
    )
    calls = first.choices[0].message.tool_calls or []
    results = {
        "get_order_status": {
            "order_id": "A-10482",
            "status": "in_transit",
            "carrier": "Colissimo",
            "estimated_delivery": "2026-01-08",
        },
        "list_delivery_options": {
            "options": [
                {"id": "office", "label": "Office delivery", "price_eur": 0},
                {"id": "pickup", "label": "Pick-up point", "price_eur": 0},
            ]
        },
    }
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    for call in calls:
        messages.append(
            {
                "role": "tool",
                "tool_call_id": call.id,
                "content": json.dumps(results[call.function.name]),
            }
        )
    client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=tools, temperature=0
    )
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Has order B-20991 shipped yet?"}],
        tools=[ORDER_STATUS_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_order_status"}},
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed_arguments = "".join(
        call.function.arguments or ""
        for chunk in stream
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
        if call.function
    )
    return {
        "tool_calls": [call.function.name for call in calls],
        "streamed_tool_arguments": streamed_arguments,
    }


def streaming(client: Any) -> dict[str, Any]:
    """Two streamed chat completions: a reasoning model with usage in the last chunk, and a
    plain model whose client did not ask for usage (so no token counts exist anywhere)."""
    with_usage = client.chat.completions.create(
        model="o4-mini",
        reasoning_effort="low",
        max_completion_tokens=400,
        messages=[
            {"role": "developer", "content": SUPPORT_INSTRUCTIONS},
            {"role": "user", "content": "When will order A-10482 arrive in Lyon?"},
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    first_text = "".join(
        chunk.choices[0].delta.content or "" for chunk in with_usage if chunk.choices
    )
    without_usage = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": SUPPORT_INSTRUCTIONS},
            {"role": "user", "content": "Do you ship to Switzerland, and what does it cost?"},
        ],
        temperature=0.3,
        stream=True,
    )
    second_text = "".join(
        chunk.choices[0].delta.content or "" for chunk in without_usage if chunk.choices
    )
    return {"streamed_texts": [first_text, second_text]}


def embeddings(client: Any) -> dict[str, Any]:
    """Indexing three knowledge-base passages in one call (the client's default base64
    encoding), then embedding a search query as floats with reduced dimensions."""
    client.embeddings.create(model="text-embedding-3-small", input=KNOWLEDGE_BASE)
    client.embeddings.create(
        model="text-embedding-3-small",
        input="can I send back a book I opened",
        dimensions=8,
        encoding_format="float",
    )
    return {}


def errors(client: Any) -> dict[str, Any]:
    """Two chat completions the provider rejects (the server is told to fail them): a rate
    limit (429) and a conversation too long for the model's context (400). No retries."""
    import openai

    rejected = []
    try:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": SUPPORT_INSTRUCTIONS + "\n\n" + RETRIEVED_CONTEXT},
                {"role": "user", "content": "How long do refunds take after I send a book back?"},
            ],
            temperature=0.2,
        )
    except openai.APIStatusError as error:
        rejected.append(f"{error.status_code} {type(error).__name__}")
    try:
        client.chat.completions.create(
            model="gpt-4o",
            messages=[
                {"role": "system", "content": "Summarise support ticket threads for agents."},
                {"role": "user", "content": "Summarise ticket T-55120 (thread attached below)."},
            ],
            max_tokens=500,
        )
    except openai.APIStatusError as error:
        rejected.append(f"{error.status_code} {type(error).__name__}")
    return {"rejected": rejected}


SCENARIOS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "chat": chat,
    "tool_calls": tool_calls,
    "streaming": streaming,
    "embeddings": embeddings,
    "errors": errors,
}


def installed_versions(instrumentor_module: str) -> dict[str, str]:
    versions = {}
    for name in [*DISTRIBUTIONS.get(instrumentor_module, []), *COMMON_DISTRIBUTIONS]:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def extend_package_paths(setting: str) -> None:
    """Add folders to regular packages' ``__path__`` (``package=folder;...``).

    An old release may install a subpackage into a package that the venv provides as a regular
    package (semconv-ai < 0.2 ships ``opentelemetry/semconv/ai`` while
    opentelemetry-semantic-conventions owns ``opentelemetry/semconv/__init__.py``); a PYTHONPATH
    entry alone cannot add it there.
    """
    for entry in filter(None, setting.split(";")):
        package_name, folder = entry.split("=", 1)
        package = importlib.import_module(package_name)
        package.__path__.append(folder)


def main() -> None:
    instrumentor_module, scenario, base_url, service_name, seed, output = sys.argv[1:7]
    output_dir = Path(output)
    extend_package_paths(os.environ.get(EXTEND_PACKAGES_VARIABLE, ""))

    from opentelemetry import _logs, trace
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    try:
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
    except ImportError:  # SDK < 1.39 (an old release's pinned SDK): the same class, older name
        from opentelemetry.sdk._logs.export import (  # type: ignore[attr-defined,no-redef]
            InMemoryLogExporter as InMemoryLogRecordExporter,
        )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID

    class SeededIdGenerator(IdGenerator):
        """The same trace and span ids on every capture of a case."""

        def __init__(self, seed: str) -> None:
            self._random = random.Random(seed)

        def generate_span_id(self) -> int:
            span_id = INVALID_SPAN_ID
            while span_id == INVALID_SPAN_ID:
                span_id = self._random.getrandbits(64)
            return span_id

        def generate_trace_id(self) -> int:
            trace_id = INVALID_TRACE_ID
            while trace_id == INVALID_TRACE_ID:
                trace_id = self._random.getrandbits(128)
            return trace_id

    # The SDK would add a random service.instance.id; a fixed one keeps re-captures identical.
    instance_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://llmtap.invalid/golden/{seed}"))
    resource = Resource.create({"service.name": service_name, "service.instance.id": instance_id})
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource, id_generator=SeededIdGenerator(seed))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    log_records = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_records))
    trace.set_tracer_provider(tracer_provider)
    _logs.set_logger_provider(logger_provider)

    providers: dict[str, Any] = {"tracer_provider": tracer_provider}
    providers["logger_provider"] = logger_provider
    try:  # releases of the Events API era (SDK < 1.39) emit through an EventLoggerProvider
        from opentelemetry.sdk._events import EventLoggerProvider
    except ImportError:
        pass
    else:
        providers["event_logger_provider"] = EventLoggerProvider(logger_provider)
    instrumentor = importlib.import_module(instrumentor_module).OpenAIInstrumentor()
    instrumentor.instrument(**providers)

    import openai

    client = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0, timeout=20)
    outcome = SCENARIOS[scenario](client)

    tracer_provider.force_flush()
    logger_provider.force_flush()
    finished_spans = spans.get_finished_spans()
    finished_logs = log_records.get_finished_logs()
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "traces.pb").write_bytes(encode_spans(finished_spans).SerializeToString())
    if finished_logs:
        (output_dir / "logs.pb").write_bytes(encode_logs(finished_logs).SerializeToString())
    report = {
        "spans": len(finished_spans),
        "log_records": len(finished_logs),
        "versions": installed_versions(instrumentor_module),
        **outcome,
    }
    tracer_provider.shutdown()
    logger_provider.shutdown()
    print(REPORT_PREFIX + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
