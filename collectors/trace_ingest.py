"""The transport-independent core of the trace receivers: check, redact, split, address.

HTTP and gRPC both hand a decompressed body here and get back the Kafka messages to write and
the answer for the client. One request becomes one raw-topic message per trace (value: a
serialized ``ExportTraceServiceRequest``, key: the hex trace id), exactly like the OTel
Collector's Kafka exporter with ``partition_traces_by_id``. Spans that break the limits are not
silently dropped: they are reported in ``partial_success`` and written to the dead-letter topic.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from llmtap.collectors.config import CollectorConfig
from llmtap.collectors.redaction import Redactor
from llmtap.kafka_writer import OutboundMessage
from llmtap.schemas.otlp import decode_traces
from llmtap.schemas.topics import Encoding, Header, trace_id_key

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


class RequestTooLarge(ValueError):
    """The request as a whole exceeds a limit (answered 413)."""


@dataclass
class IngestResult:
    """What to write to Kafka for one request, and what to tell the client."""

    messages: list[OutboundMessage]
    accepted_spans: int
    rejected_spans: int = 0
    rejection_reason: str = ""
    redactions: Counter[str] = field(default_factory=Counter)

    def response(self) -> ExportTraceServiceResponse:
        response = ExportTraceServiceResponse()
        if self.rejected_spans:
            response.partial_success.rejected_spans = self.rejected_spans
            response.partial_success.error_message = self.rejection_reason
        return response


@dataclass(frozen=True)
class IngestTopics:
    raw_spans: str
    dead_letter: str
    max_message_bytes: int = 16 * 1024 * 1024
    raw_logs: str = "otlp_logs"


class TraceIngest:
    """Turns one decoded-or-not OTLP trace request into raw-topic messages."""

    def __init__(self, config: CollectorConfig, topics: IngestTopics) -> None:
        self._config = config
        self._topics = topics
        self._redactor = Redactor(config.redaction) if config.redaction.enabled else None
        # Room for the envelope (resource, scope, headers) around the largest span we accept.
        self._span_size_limit = topics.max_message_bytes - 256 * 1024

    def ingest(self, body: bytes, encoding: Encoding, *, tenant: str, source: str) -> IngestResult:
        """Raises OtlpDecodeError (400) or RequestTooLarge (413); otherwise never loses a span."""
        request = decode_traces(body, encoding)
        # A body below the span size limit cannot hold a span above it, nor an oversize value.
        check_values = len(body) > min(
            self._config.max_attribute_value_bytes, self._span_size_limit
        )
        span_count = sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )
        if span_count > self._config.max_spans_per_request:
            raise RequestTooLarge(
                f"the request holds {span_count} spans; the limit is "
                f"{self._config.max_spans_per_request} (lower the exporter's batch size)"
            )
        headers = self._headers(tenant, source)
        rejected, reasons = self._remove_invalid_spans(request, check_values=check_values)
        redactions: Counter[str] = Counter()
        if self._redactor is not None:
            redactions = self._redactor.redact_request(request)
            if rejected.resource_spans:
                redactions.update(self._redactor.redact_request(rejected))
            headers.append((Header.REDACTED.value, self._redactor.fingerprint.encode()))
            if redactions:
                headers.append((Header.REDACTIONS.value, json.dumps(dict(redactions)).encode()))
        messages = self._split_by_trace(
            request,
            headers,
            original_body=body
            if encoding is Encoding.OTLP_PROTO and not reasons and not redactions
            else None,
        )
        rejected_count = span_count - sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )
        result = IngestResult(
            messages=messages,
            accepted_spans=span_count - rejected_count,
            rejected_spans=rejected_count,
            redactions=redactions,
        )
        if rejected_count:
            result.rejection_reason = _summarize(reasons)
            if self._config.dead_letter_rejected_spans:
                result.messages.append(
                    self._dead_letter(rejected, result.rejection_reason, headers)
                )
        return result

    def _headers(self, tenant: str, source: str) -> list[tuple[str, bytes]]:
        return [
            (Header.TENANT.value, tenant.encode()),
            (Header.SOURCE.value, source.encode()),
            (Header.RECEIVED_AT_NANOS.value, str(time.time_ns()).encode()),
            (Header.ENCODING.value, Encoding.OTLP_PROTO.value.encode()),
        ]

    def _remove_invalid_spans(
        self, request: ExportTraceServiceRequest, *, check_values: bool
    ) -> tuple[ExportTraceServiceRequest, Counter[str]]:
        """Move spans that break a limit into a separate request, counting the reasons."""
        rejected = ExportTraceServiceRequest()
        reasons: Counter[str] = Counter()
        for resource_spans in request.resource_spans:
            rejected_resource: ResourceSpans | None = None
            for scope_spans in resource_spans.scope_spans:
                keep: list[Span] = []
                bad: list[Span] = []
                for span in scope_spans.spans:
                    reason = self._span_problem(span, check_values)
                    if reason is None:
                        keep.append(span)
                    else:
                        reasons[reason] += 1
                        bad.append(span)
                if not bad:
                    continue
                if rejected_resource is None:
                    rejected_resource = rejected.resource_spans.add()
                    rejected_resource.resource.CopyFrom(resource_spans.resource)
                    rejected_resource.schema_url = resource_spans.schema_url
                rejected_scope = rejected_resource.scope_spans.add()
                rejected_scope.scope.CopyFrom(scope_spans.scope)
                rejected_scope.schema_url = scope_spans.schema_url
                rejected_scope.spans.extend(bad)
                del scope_spans.spans[:]
                scope_spans.spans.extend(keep)
        return rejected, reasons

    def _span_problem(self, span: Span, check_values: bool) -> str | None:
        if len(span.trace_id) != 16 or span.trace_id == _ZERO_TRACE_ID:
            return "invalid trace id (must be 16 bytes, not all zero)"
        if len(span.span_id) != 8 or span.span_id == _ZERO_SPAN_ID:
            return "invalid span id (must be 8 bytes, not all zero)"
        if len(span.attributes) > self._config.max_attributes_per_span:
            return f"more than {self._config.max_attributes_per_span} attributes"
        if len(span.events) > self._config.max_events_per_span:
            return f"more than {self._config.max_events_per_span} events"
        if check_values:
            if span.ByteSize() > self._span_size_limit:
                return f"a span larger than {self._span_size_limit} bytes (the Kafka message limit)"
            limit = self._config.max_attribute_value_bytes
            if _longest_value(span.attributes) > limit or any(
                _longest_value(event.attributes) > limit for event in span.events
            ):
                return f"an attribute value longer than {limit} bytes"
        return None

    def _split_by_trace(
        self,
        request: ExportTraceServiceRequest,
        headers: list[tuple[str, bytes]],
        original_body: bytes | None,
    ) -> list[OutboundMessage]:
        per_trace: dict[bytes, ExportTraceServiceRequest] = {}
        # (trace id, resource index, scope index) -> the ScopeSpans being filled for that trace
        scopes: dict[tuple[bytes, int, int], ScopeSpans] = {}
        resources: dict[tuple[bytes, int], ResourceSpans] = {}
        trace_ids: set[bytes] = set()
        for scope_list in (rs.scope_spans for rs in request.resource_spans):
            for scope_spans in scope_list:
                trace_ids.update(span.trace_id for span in scope_spans.spans)
        if not trace_ids:
            return []
        if len(trace_ids) == 1 and (
            original_body is None or len(original_body) <= self._span_size_limit
        ):
            (trace_id,) = trace_ids
            if original_body is not None:
                return [self._message(trace_id, original_body, headers)]
            return [
                self._message(trace_id, part.SerializeToString(), headers)
                for part in _chunks(request, self._span_size_limit)
            ]
        for resource_index, resource_spans in enumerate(request.resource_spans):
            for scope_index, scope_spans in enumerate(resource_spans.scope_spans):
                for span in scope_spans.spans:
                    trace_id = span.trace_id
                    target = scopes.get((trace_id, resource_index, scope_index))
                    if target is None:
                        resource_target = resources.get((trace_id, resource_index))
                        if resource_target is None:
                            trace_request = per_trace.get(trace_id)
                            if trace_request is None:
                                trace_request = per_trace[trace_id] = ExportTraceServiceRequest()
                            resource_target = trace_request.resource_spans.add()
                            resource_target.resource.CopyFrom(resource_spans.resource)
                            resource_target.schema_url = resource_spans.schema_url
                            resources[(trace_id, resource_index)] = resource_target
                        target = resource_target.scope_spans.add()
                        target.scope.CopyFrom(scope_spans.scope)
                        target.schema_url = scope_spans.schema_url
                        scopes[(trace_id, resource_index, scope_index)] = target
                    target.spans.append(span)
        messages = []
        for trace_id, trace_request in per_trace.items():
            for part in _chunks(trace_request, self._span_size_limit):
                messages.append(self._message(trace_id, part.SerializeToString(), headers))
        return messages

    def _message(
        self, trace_id: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> OutboundMessage:
        return OutboundMessage(
            topic=self._topics.raw_spans, key=trace_id_key(trace_id), value=value, headers=headers
        )

    def _dead_letter(
        self, rejected: ExportTraceServiceRequest, reason: str, headers: list[tuple[str, bytes]]
    ) -> OutboundMessage:
        return OutboundMessage(
            topic=self._topics.dead_letter,
            value=rejected.SerializeToString(),
            key=None,
            headers=[
                *headers,
                (Header.DEAD_LETTER_REASON.value, reason.encode()),
                (Header.DEAD_LETTER_STAGE.value, b"collector"),
                (Header.DEAD_LETTER_SOURCE_TOPIC.value, self._topics.raw_spans.encode()),
                (Header.DEAD_LETTER_CONTENT_TYPE.value, b"application/x-protobuf"),
            ],
        )


def _chunks(request: ExportTraceServiceRequest, limit: int) -> list[ExportTraceServiceRequest]:
    """Split one trace's request into parts of at most ``limit`` bytes (spans are never cut)."""
    if request.ByteSize() <= limit:
        return [request]
    parts: list[ExportTraceServiceRequest] = []
    current = ExportTraceServiceRequest()
    current_size = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                size = span.ByteSize() + 16
                if current_size and current_size + size > limit:
                    parts.append(current)
                    current, current_size = ExportTraceServiceRequest(), 0
                target_resource = (
                    current.resource_spans[-1]
                    if current.resource_spans
                    and current.resource_spans[-1].resource == resource_spans.resource
                    else None
                )
                if target_resource is None:
                    target_resource = current.resource_spans.add()
                    target_resource.resource.CopyFrom(resource_spans.resource)
                    target_resource.schema_url = resource_spans.schema_url
                    current_size += resource_spans.resource.ByteSize() + 16
                target_scope = (
                    target_resource.scope_spans[-1]
                    if target_resource.scope_spans
                    and target_resource.scope_spans[-1].scope == scope_spans.scope
                    else None
                )
                if target_scope is None:
                    target_scope = target_resource.scope_spans.add()
                    target_scope.scope.CopyFrom(scope_spans.scope)
                    target_scope.schema_url = scope_spans.schema_url
                    current_size += scope_spans.scope.ByteSize() + 16
                target_scope.spans.append(span)
                current_size += size
    if current_size:
        parts.append(current)
    return parts


def _longest_value(attributes: Iterable[KeyValue]) -> int:
    longest = 0
    for attribute in attributes:
        longest = max(longest, _value_size(attribute.value, depth=0))
    return longest


def _value_size(value: AnyValue, depth: int) -> int:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return len(value.string_value.encode("utf-8"))
    if kind == "bytes_value":
        return len(value.bytes_value)
    if depth > 32:
        return 0
    if kind == "array_value":
        return max((_value_size(item, depth + 1) for item in value.array_value.values), default=0)
    if kind == "kvlist_value":
        return max(
            (_value_size(item.value, depth + 1) for item in value.kvlist_value.values), default=0
        )
    return 0


def _summarize(reasons: Counter[str]) -> str:
    parts = [f"{count} span(s): {reason}" for reason, count in reasons.most_common()]
    return "rejected " + "; ".join(parts)
