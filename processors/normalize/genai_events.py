"""GenAI event log records joined to their spans: message content that is not on the span.

Several instrumentations put prompts and completions in OpenTelemetry log records (the GenAI
conventions' events) instead of span attributes: ``opentelemetry-instrumentation-openai-v2`` in
``EVENT_ONLY`` mode emits one ``gen_ai.client.inference.operation.details`` record (structured
``gen_ai.input.messages`` / ``gen_ai.output.messages``), older releases and the pre-1.37 default
one record per message (``gen_ai.system.message``, ``gen_ai.user.message``,
``gen_ai.assistant.message``, ``gen_ai.tool.message``, ``gen_ai.choice``; content in the body).
Each record carries the trace and span id of the call it belongs to.

The join key is (tenant, trace id, span id): ids are chosen by the sender, so a tenant who knows
another tenant's ids must not be able to attach content to that tenant's spans. A record's
tenant is found the way a span's is (the collector's ``llmtap.tenant`` header, else the
resource's ``llmtap.tenant`` / ``tenant.id``, else ``default``).

This module is the join, without Kafka: records and spans come in any order, and
:class:`EventJoiner` holds each side for at most ``wait_seconds``. Only LLM spans that lack
message content are held (a span that already has its content, or is not an LLM call, never
waits), and a held span goes out as soon as its records are complete (an operation-details
record, or a ``gen_ai.choice`` with at least one input message). Records whose span does not
come within the wait are returned as unmatched with the reason: the caller stores them, never
drops them. Memory is bounded: past ``max_pending`` the oldest held items are released early.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from llmtap.processors.normalize.attributes import attributes_of, value_of
from llmtap.processors.normalize.messages import first_text, last_text
from llmtap.processors.normalize.normalizer import content_from_events
from llmtap.schemas.llm_span import LlmSpan
from llmtap.schemas.otlp import decode_logs, sniff_encoding

OPERATION_DETAILS = "gen_ai.client.inference.operation.details"
INPUT_MESSAGE_EVENTS = frozenset(
    {
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.content.prompt",
    }
)
OUTPUT_MESSAGE_EVENTS = frozenset({"gen_ai.choice", "gen_ai.content.completion"})
GENAI_EVENT_NAMES = INPUT_MESSAGE_EVENTS | OUTPUT_MESSAGE_EVENTS | {OPERATION_DETAILS}
# Where the per-message events keep their content when it is not in the attributes; the
# normalizer reads span events of the same names from this key.
_BODY_KEY = "gen_ai.event.content"


class SourcePosition(NamedTuple):
    """Where a span or record was read from (Kafka topic, partition, offset)."""

    topic: str
    partition: int
    offset: int


SpanKey = tuple[str, str, str]  # (tenant, trace id hex, span id hex)


@dataclass
class GenAiEventRecord:
    """One GenAI event log record, decoded for the join and kept whole for a dead letter."""

    trace_id: str
    span_id: str
    name: str
    time_unix_nano: int
    attributes: dict[str, Any]
    record: LogRecord
    resource: Resource
    scope: InstrumentationScope
    position: SourcePosition | None = None
    tenant: str = "default"

    @property
    def key(self) -> SpanKey:
        return (self.tenant, self.trace_id, self.span_id)

    def event(self) -> tuple[str, int, dict[str, Any]]:
        """As the normalizer's span event tuple: (name, time, attributes with the body)."""
        return (self.name, self.time_unix_nano, self.attributes)


@dataclass
class DecodedRecords:
    records: list[GenAiEventRecord] = field(default_factory=list)
    ignored: int = 0  # log records that are not GenAI events (application logs, ...)


def event_name(record: LogRecord) -> str:
    """``LogRecord.event_name`` (OTLP 1.5+), else the ``event.name`` attribute (older SDKs)."""
    if record.event_name:
        return record.event_name
    for attribute in record.attributes:
        if attribute.key == "event.name":
            return attribute.value.string_value
    return ""


def record_tenant(tenant: str | None, resource: Resource) -> str:
    """The tenant of a resource's records: the same rule as the normalizer's for spans, so a
    record and its span agree on it (the header's tenant, set by the collector from the API
    key, wins over anything the sender put in its resource)."""
    if tenant:
        return tenant
    attributes = attributes_of(resource.attributes)
    for key in ("llmtap.tenant", "tenant.id"):
        value = attributes.get(key)
        if value not in (None, ""):
            return str(value)
    return "default"


def decode_genai_records(
    request: ExportLogsServiceRequest,
    position: SourcePosition | None = None,
    tenant: str | None = None,
) -> DecodedRecords:
    """The GenAI event records of a logs request; every other record is only counted.
    ``tenant`` is the message's ``llmtap.tenant`` header (None: the message had none)."""
    decoded = DecodedRecords()
    for resource_logs in request.resource_logs:
        resource_tenant = record_tenant(tenant, resource_logs.resource)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                name = event_name(record)
                if name not in GENAI_EVENT_NAMES:
                    decoded.ignored += 1
                    continue
                attributes = attributes_of(record.attributes)
                if record.HasField("body"):
                    body = value_of(record.body)
                    if body is not None and body != "":
                        attributes.setdefault(_BODY_KEY, body)
                decoded.records.append(
                    GenAiEventRecord(
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                        name=name,
                        time_unix_nano=record.time_unix_nano or record.observed_time_unix_nano,
                        attributes=attributes,
                        record=record,
                        resource=resource_logs.resource,
                        scope=scope_logs.scope,
                        position=position,
                        tenant=resource_tenant,
                    )
                )
    return decoded


def records_request(records: list[GenAiEventRecord]) -> ExportLogsServiceRequest:
    """The records as one OTLP logs request (each with its resource and scope), for storage."""
    request = ExportLogsServiceRequest()
    for record in records:
        scope_logs = request.resource_logs.add()
        scope_logs.resource.CopyFrom(record.resource)
        scope = scope_logs.scope_logs.add()
        scope.scope.CopyFrom(record.scope)
        scope.log_records.append(record.record)
    return request


def attach_content(span: LlmSpan, records: list[GenAiEventRecord]) -> LlmSpan:
    """Fill the span's messages, prompt, completion, system instructions and tool calls from
    its records. What the span itself carries wins; records only fill what is missing."""
    if not records:
        return span
    ordered = sorted(records, key=lambda record: record.time_unix_nano)  # stable: arrival order
    inputs, outputs, instructions, warnings = content_from_events(
        [record.event() for record in ordered]
    )
    if not span.input_messages and inputs:
        span.input_messages = inputs
        span.prompt_text = span.prompt_text or last_text(inputs, "user") or first_text(inputs)
    if not span.output_messages and outputs:
        span.output_messages = outputs
        span.completion_text = span.completion_text or (
            last_text(outputs, "assistant") or first_text(outputs)
        )
        if not span.tool_calls:
            span.tool_calls = [call for message in outputs for call in message.tool_calls]
        if not span.finish_reasons:
            span.finish_reasons = [m.finish_reason for m in outputs if m.finish_reason]
    if span.system_instructions is None and instructions:
        span.system_instructions = instructions
    if warnings:
        existing = span.attributes.get("llmtap.normalize.warnings")
        text = "; ".join(warnings[:20])
        span.attributes["llmtap.normalize.warnings"] = f"{existing}; {text}" if existing else text
    span.attributes["llmtap.genai_event_records"] = str(len(records))
    return span


def records_complete(records: list[GenAiEventRecord]) -> bool:
    """Whether a call's records hold all its content: an operation-details record, or a
    choice after at least one input message (per-message events end with the choice)."""
    names = {record.name for record in records}
    if OPERATION_DETAILS in names:
        return True
    return not names.isdisjoint(OUTPUT_MESSAGE_EVENTS) and not names.isdisjoint(
        INPUT_MESSAGE_EVENTS
    )


def needs_records(span: LlmSpan) -> bool:
    """Hold only LLM calls that carry no message content: those whose instrumentation may have
    sent it as event records. Everything else never waits."""
    return span.span_type == "llm" and not span.input_messages and not span.output_messages


@dataclass
class _HeldSpan:
    span: LlmSpan
    deadline: float
    position: SourcePosition | None
    records: list[GenAiEventRecord] = field(default_factory=list)


@dataclass
class _PendingRecords:
    deadline: float
    records: list[GenAiEventRecord] = field(default_factory=list)


@dataclass
class Unmatched:
    record: GenAiEventRecord
    reason: str


class EventJoiner:
    """Joins GenAI event records to their spans by (tenant, trace id, span id), within a wait.
    A record of another tenant never reaches a span: it waits, then comes back unmatched."""

    def __init__(
        self, wait_seconds: float, max_pending: int = 100_000, recent_emitted: int = 100_000
    ) -> None:
        self.wait_seconds = wait_seconds
        self.max_pending = max_pending
        self._spans: dict[SpanKey, _HeldSpan] = {}  # insertion order is arrival order
        self._records: dict[SpanKey, _PendingRecords] = {}
        # Spans already emitted (True: with content of their own), so a record that comes after
        # its span is reported as late, or counted as redundant when the span needed none.
        self._emitted: OrderedDict[SpanKey, bool] = OrderedDict()
        self._recent_emitted = recent_emitted
        self.redundant_records = 0  # records of spans that had their content; read and reset

    @property
    def held_spans(self) -> int:
        return len(self._spans)

    @property
    def pending_records(self) -> int:
        return sum(len(pending.records) for pending in self._records.values())

    def add_span(
        self, span: LlmSpan, now: float, position: SourcePosition | None = None
    ) -> LlmSpan | None:
        """The span to emit now, or None when it is held for its records."""
        key = (span.tenant, span.trace_id, span.span_id)
        pending = self._records.pop(key, None)
        records = pending.records if pending else []
        held = self._spans.pop(key, None)  # the same span again (a replay): merge
        if held is not None:
            records = held.records + records
        if not needs_records(span) or records_complete(records) or self.wait_seconds <= 0:
            return self._emit(span, records)
        deadline = held.deadline if held else now + self.wait_seconds
        self._spans[key] = _HeldSpan(span, deadline, position, records)
        return None

    def add_records(
        self, records: list[GenAiEventRecord], now: float
    ) -> tuple[list[LlmSpan], list[Unmatched]]:
        """Spans completed by these records, and records that can never be joined."""
        ready: list[LlmSpan] = []
        unmatched: list[Unmatched] = []
        for record in records:
            if not record.trace_id or not record.span_id:
                unmatched.append(Unmatched(record, "genai event record without trace or span id"))
                continue
            key = record.key
            held = self._spans.get(key)
            if held is not None:
                held.records.append(record)
                if records_complete(held.records):
                    del self._spans[key]
                    ready.append(self._emit(held.span, held.records))
            elif self._emitted.get(key):
                self.redundant_records += 1  # span_and_event mode: the span had it all
            elif key in self._emitted:
                unmatched.append(
                    Unmatched(record, "genai event record arrived after its span was emitted")
                )
            else:
                pending = self._records.get(key)
                if pending is None:
                    pending = self._records[key] = _PendingRecords(now + self.wait_seconds)
                pending.records.append(record)
        return ready, unmatched

    def expire(self, now: float) -> tuple[list[LlmSpan], list[Unmatched]]:
        """Held spans whose wait is over (with what records came), and records whose span did
        not come in time; also the oldest items beyond ``max_pending``."""
        spans: list[LlmSpan] = []
        for key, held in list(self._spans.items()):
            if held.deadline > now and len(self._spans) <= self.max_pending:
                break  # arrival order is deadline order: the rest are younger
            del self._spans[key]
            spans.append(self._emit(held.span, held.records))
        unmatched: list[Unmatched] = []
        reason = f"unmatched genai event record (span not seen within {self.wait_seconds:g}s)"
        for key, pending in list(self._records.items()):
            if pending.deadline > now and len(self._records) <= self.max_pending:
                break
            del self._records[key]
            unmatched.extend(Unmatched(record, reason) for record in pending.records)
        return spans, unmatched

    def flush(self) -> tuple[list[LlmSpan], list[Unmatched]]:
        """Everything still held, as if the wait were over (end of a file, shutdown)."""
        return self.expire(float("inf"))

    def held_positions(self) -> list[tuple[SourcePosition, str]]:
        """Where every held span and record was read from, with its span id: what a consumer
        must not commit past."""
        positions = []
        for held in self._spans.values():
            if held.position is not None:
                positions.append((held.position, held.span.span_id))
            positions.extend(
                (record.position, record.span_id)
                for record in held.records
                if record.position is not None
            )
        for pending in self._records.values():
            positions.extend(
                (record.position, record.span_id)
                for record in pending.records
                if record.position is not None
            )
        return positions

    def next_deadline(self) -> float | None:
        """When the earliest held item's wait ends (None: nothing held)."""
        deadlines = [held.deadline for held in list(self._spans.values())[:1]]
        deadlines += [pending.deadline for pending in list(self._records.values())[:1]]
        return min(deadlines, default=None)

    def drop(self, partitions: set[tuple[str, int]]) -> int:
        """Forget what was read from these (topic, partition)s: they moved to another worker,
        which reads them again from the committed offsets. Returns how many items went."""

        def gone(position: SourcePosition | None) -> bool:
            return position is not None and (position.topic, position.partition) in partitions

        dropped = 0
        for key, held in list(self._spans.items()):
            if gone(held.position) or any(gone(record.position) for record in held.records):
                del self._spans[key]
                dropped += 1
        for key, pending in list(self._records.items()):
            if any(gone(record.position) for record in pending.records):
                del self._records[key]
                dropped += 1
        return dropped

    def clear(self) -> None:
        """Forget everything held (an aborted transaction: it will all be read again)."""
        self._spans.clear()
        self._records.clear()
        self._emitted.clear()

    def _emit(self, span: LlmSpan, records: list[GenAiEventRecord]) -> LlmSpan:
        key = (span.tenant, span.trace_id, span.span_id)
        self._emitted[key] = not needs_records(span)
        self._emitted.move_to_end(key)
        while len(self._emitted) > self._recent_emitted:
            self._emitted.popitem(last=False)
        return attach_content(span, records)


def join_file(
    spans: list[LlmSpan], logs_body: bytes, tenant: str | None = None
) -> tuple[list[LlmSpan], list[Unmatched]]:
    """The join for a traces file plus a logs file (``llmtap normalize --logs``, golden tests):
    every record is there from the start, so nothing waits. ``tenant``: the one the spans were
    normalized with (None: none was given, both sides read it from their resource).
    Raises OtlpDecodeError."""
    decoded = decode_genai_records(decode_logs(logs_body, sniff_encoding(logs_body)), tenant=tenant)
    joiner = EventJoiner(wait_seconds=float("inf"), max_pending=len(spans) + len(decoded.records))
    _, unmatched = joiner.add_records(decoded.records, 0.0)
    joined = []
    for span in spans:
        ready = joiner.add_span(span, 0.0)
        joined.append(ready if ready is not None else span)
    _, left = joiner.flush()  # held spans are the objects already in ``joined``, filled in place
    reason = "genai event record whose span is not in the traces file"
    return joined, unmatched + [Unmatched(item.record, reason) for item in left]
