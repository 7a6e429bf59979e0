"""The end-to-end benchmark's workload and load generator (see ``e2e.py``).

Workload: interactions planned by the demo traffic planner (``llmtap.demo.traffic``: RAG answers
with their retrieved documents on the chat span, tool calls, a reasoning model, failed calls,
prompt and completion content), packed per service into OTLP/HTTP protobuf requests of about
100 spans, as an SDK's batch exporter sends them. Requests are built once; every send gives each
trace and span fresh ids (the normalizer drops repeated ids), moves the timestamps so that
each trace's root span ends at the moment of sending, and makes every sentence of the chat
messages distinct (a per-send tag before each sentence's end): real questions and answers rarely
repeat, and the risk stage's embedding cache must not make the small demo corpus look cheap.
Retrieved documents are kept as planned: a knowledge base's chunks do repeat.

Load generator: a separate process (so its CPU time is measured on its own), several sender
threads on keep-alive connections. ``rate`` > 0 follows a fixed schedule (open loop: a slow
answer does not delay later sends while a sender thread is free); ``rate`` = 0 sends back to
back (the most the collector accepts). 429/503 answers are retried after Retry-After, as an
OpenTelemetry exporter does, and counted.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

_KINDS = {"server": Span.SPAN_KIND_SERVER, "client": Span.SPAN_KIND_CLIENT}
_DISTINCT_ATTRIBUTES = frozenset({"gen_ai.input.messages", "gen_ai.output.messages"})
_SENTENCE_ENDS = (". ", "? ", "! ", '."', '?"', '!"')


@dataclass
class Workload:
    """Serialized template requests and what they hold (for the coverage denominators)."""

    bodies: list[bytes]
    spans: int
    interactions: Counter[str]
    # LLM responses with a completion (what the risk stage scores), with / without context
    responses_with_context: int
    responses_without_context: int

    @property
    def spans_per_request(self) -> float:
        return self.spans / len(self.bodies)

    @property
    def share_with_context(self) -> float:
        """LLM responses with retrieved context per span."""
        return self.responses_with_context / self.spans


def _value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        result = AnyValue()
        result.array_value.values.extend(_value(item) for item in value)
        return result
    return AnyValue(string_value=str(value))


def build_workload(interactions: int, seed: int = 7, spans_per_request: int = 100) -> Workload:
    from llmtap.demo.traffic import TrafficConfig, TrafficPlanner

    planner = TrafficPlanner(TrafficConfig(seed=seed))
    by_service: dict[str, list[Any]] = {}
    kinds: Counter[str] = Counter()
    with_context = without_context = 0
    for _ in range(interactions):
        interaction = planner.next_interaction()
        by_service.setdefault(interaction.service.name, []).append(interaction)
        kinds[interaction.kind] += 1
        for planned in interaction.spans:
            attributes = planned.attributes
            if attributes.get("gen_ai.operation.name") != "chat" or planned.error is not None:
                continue
            output = json.loads(str(attributes.get("gen_ai.output.messages", "[]")))
            if not any(part.get("type") == "text" for m in output for part in m["parts"]):
                continue  # a tool call without text: nothing to score
            if "gen_ai.retrieval.documents" in attributes:
                with_context += 1
            else:
                without_context += 1
    bodies: list[bytes] = []
    spans = 0
    for group in by_service.values():
        request: ExportTraceServiceRequest | None = None
        in_request = 0
        for interaction in group:
            if request is None:
                request = _new_request(interaction)
                in_request = 0
            _add_interaction(request, interaction)
            in_request += len(interaction.spans)
            spans += len(interaction.spans)
            if in_request >= spans_per_request:
                bodies.append(request.SerializeToString())
                request = None
        if request is not None:
            bodies.append(request.SerializeToString())
    # Services interleaved: a step that sends only part of the pool still gets the whole mix.
    random.Random(seed).shuffle(bodies)
    return Workload(bodies, spans, kinds, with_context, without_context)


def _new_request(interaction: Any) -> ExportTraceServiceRequest:
    service = interaction.service
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    for key, value in (
        ("service.name", service.name),
        ("service.version", service.version),
        ("deployment.environment.name", "bench"),
        ("telemetry.sdk.language", "python"),
        ("telemetry.sdk.name", "opentelemetry"),
    ):
        resource.resource.attributes.append(KeyValue(key=key, value=_value(value)))
    scope = resource.scope_spans.add()
    scope.scope.name = "opentelemetry.instrumentation.openai_v2"
    scope.scope.version = "2.1b0"
    return request


def _add_interaction(request: ExportTraceServiceRequest, interaction: Any) -> None:
    """Spans with placeholder ids; ``start``/``end`` are ns offsets from the root span's end."""
    scope = request.resource_spans[0].scope_spans[0]
    total = interaction.duration_seconds
    for index, planned in enumerate(interaction.spans):
        span = scope.spans.add(
            name=planned.name,
            kind=_KINDS.get(planned.kind, Span.SPAN_KIND_INTERNAL),
            # negative offsets as unsigned: rewritten before every send (``Template.stamp``)
            start_time_unix_nano=max(0, int((total - planned.start_seconds) * 1e9)),
            end_time_unix_nano=max(
                0, int((total - planned.start_seconds - planned.duration_seconds) * 1e9)
            ),
            # parent: the index of the parent span in the trace, + 1 (0: a root span)
            parent_span_id=(planned.parent + 1 if planned.parent is not None else 0).to_bytes(8),
            span_id=index.to_bytes(8),
        )
        for key, value in planned.attributes.items():
            span.attributes.append(KeyValue(key=key, value=_value(value)))
        if planned.error is not None:
            error_type, message = planned.error
            event = span.events.add(name="exception", time_unix_nano=span.end_time_unix_nano)
            event.attributes.append(KeyValue(key="exception.type", value=_value(error_type)))
            event.attributes.append(KeyValue(key="exception.message", value=_value(message)))
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=message))


class Template:
    """One request, parsed, with what ``stamp`` rewrites: ids and times, per send."""

    def __init__(self, body: bytes) -> None:
        self.request = ExportTraceServiceRequest.FromString(body)
        self.spans = [
            span
            for resource in self.request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        # (start offset, end offset, parent index within the trace or -1, first span of trace)
        self.plan: list[tuple[int, int, int, int]] = []
        # chat message attributes (their value, as planned): made distinct on every send
        self.messages: list[tuple[AnyValue, str]] = [
            (attribute.value, attribute.value.string_value)
            for span in self.spans
            for attribute in span.attributes
            if attribute.key in _DISTINCT_ATTRIBUTES
        ]
        first = 0
        for position, span in enumerate(self.spans):
            index = int.from_bytes(span.span_id)
            if index == 0:
                first = position
            parent = int.from_bytes(span.parent_span_id) - 1
            self.plan.append((span.start_time_unix_nano, span.end_time_unix_nano, parent, first))

    def stamp(self, now_ns: int) -> bytes:
        random_bytes = os.urandom(24 * len(self.spans))
        trace_id = b""
        for position, (span, (start, end, parent, first)) in enumerate(
            zip(self.spans, self.plan, strict=True)
        ):
            if first == position:
                trace_id = random_bytes[position * 24 : position * 24 + 16]
            span.trace_id = trace_id
            span.span_id = random_bytes[position * 24 + 16 : position * 24 + 24]
            span.parent_span_id = self.spans[first + parent].span_id if parent >= 0 else b""
            span.start_time_unix_nano = now_ns - start
            span.end_time_unix_nano = now_ns - end
            for event in span.events:
                event.time_unix_nano = now_ns - end
        tag = f" #{now_ns // 1000 % 10**11:x}"
        for value, text in self.messages:
            for mark in _SENTENCE_ENDS:
                text = text.replace(mark, tag + mark)
            value.string_value = text
        return self.request.SerializeToString()


@dataclass
class LoadReport:
    requests_ok: int = 0
    spans_ok: int = 0
    refusals: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    unexpected: Counter[str] = field(default_factory=Counter)
    late_sends: int = 0  # sends that started more than 100 ms after their scheduled time
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def generate(
    port: int,
    bodies: list[bytes],
    rate_spans_per_second: float,
    seconds: float,
    senders: int,
    results: Any,
) -> None:
    """Process entry point: send for ``seconds``; puts a LoadReport (as a dict) on ``results``."""
    templates = [Template(body) for body in bodies]
    report = LoadReport()
    lock = threading.Lock()
    counter = iter(range(10**12))
    first = random.randrange(len(templates))  # each step starts somewhere else in the pool
    spans_per_request = sum(len(t.spans) for t in templates) / len(templates)
    interval = spans_per_request / rate_spans_per_second if rate_spans_per_second > 0 else 0.0
    cpu_started = time.process_time()
    started = time.monotonic()
    deadline = started + seconds

    def slots() -> Iterator[tuple[int, float]]:
        while True:
            with lock:
                number = next(counter)
            due = started + number * interval
            if due >= deadline or time.monotonic() >= deadline:
                return
            yield number, due

    def sender() -> None:
        connection: http.client.HTTPConnection | None = None
        for number, due in slots():
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.1:
                with lock:
                    report.late_sends += 1
            template = templates[(first + number) % len(templates)]
            with lock:  # a template is shared by the threads; stamping is quick
                body = template.stamp(time.time_ns())
            connection = _deliver(connection, port, body, len(template.spans), report, lock)
        if connection is not None:
            connection.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - started
    report.cpu_seconds = time.process_time() - cpu_started
    results.put(
        {
            "requests_ok": report.requests_ok,
            "spans_ok": report.spans_ok,
            "refusals": dict(report.refusals),
            "connection_errors": report.connection_errors,
            "unexpected": dict(report.unexpected),
            "late_sends": report.late_sends,
            "seconds": report.seconds,
            "cpu_seconds": report.cpu_seconds,
        }
    )


def _deliver(
    connection: http.client.HTTPConnection | None,
    port: int,
    body: bytes,
    spans: int,
    report: LoadReport,
    lock: threading.Lock,
) -> http.client.HTTPConnection | None:
    for _ in range(60):
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request(
                "POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"}
            )
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            with lock:
                report.connection_errors += 1
            if connection is not None:
                connection.close()
            connection = None
            time.sleep(0.2)
            continue
        if response.status == 200:
            with lock:
                report.requests_ok += 1
                report.spans_ok += spans
            return connection
        with lock:
            if response.status in (429, 503):
                report.refusals[response.status] += 1
            else:
                report.unexpected[f"{response.status} {response.reason}"] += 1
        if response.status not in (429, 503):
            return connection
        time.sleep(min(float(response.getheader("Retry-After") or 1), 2.0))
    return connection
