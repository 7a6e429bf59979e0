"""The transport-independent core of the log receivers: check, redact, split, address.

The log twin of ``trace_ingest``: one OTLP logs request becomes one raw-logs-topic message per
trace (value: a serialized ``ExportLogsServiceRequest``, key: the hex trace id), like the OTel
Collector's Kafka exporter with ``partition_logs_by_trace_id``. Because the raw spans topic is
keyed the same way and both topics have the same partition count, a span and its GenAI event
records land on the same partition number, where one normalizer worker joins them. Records
without a trace id cannot be joined to anything: they go in one unkeyed message and are counted.
Records that break the limits are reported in ``partial_success`` and dead-lettered.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from llmtap.collectors.config import CollectorConfig
from llmtap.collectors.redaction import Redactor
from llmtap.collectors.trace_ingest import (
    IngestTopics,
    RequestTooLarge,
    _longest_value,
    _value_size,
)
from llmtap.kafka_writer import OutboundMessage
from llmtap.schemas.otlp import decode_logs
from llmtap.schemas.topics import Encoding, Header, trace_id_key

_ZERO_TRACE_ID = bytes(16)
_NO_TRACE = b""


@dataclass
class LogIngestResult:
    """What to write to Kafka for one logs request, and what to tell the client."""

    messages: list[OutboundMessage]
    accepted_records: int
    rejected_records: int = 0
    rejection_reason: str = ""
    untraced_records: int = 0  # accepted, but without a trace id: no span to join them to
    redactions: Counter[str] = field(default_factory=Counter)

    def response(self) -> ExportLogsServiceResponse:
        response = ExportLogsServiceResponse()
        if self.rejected_records:
            response.partial_success.rejected_log_records = self.rejected_records
            response.partial_success.error_message = self.rejection_reason
        return response


class LogIngest:
    """Turns one OTLP logs request into raw-logs-topic messages, under the traces' limits."""

    def __init__(self, config: CollectorConfig, topics: IngestTopics) -> None:
        self._config = config
        self._topics = topics
        self._redactor = Redactor(config.redaction) if config.redaction.enabled else None
        self._record_size_limit = topics.max_message_bytes - 256 * 1024

    def ingest(
        self, body: bytes, encoding: Encoding, *, tenant: str, source: str
    ) -> LogIngestResult:
        """Raises OtlpDecodeError (400) or RequestTooLarge (413); otherwise loses no record."""
        request = decode_logs(body, encoding)
        record_count = _count(request)
        if record_count > self._config.max_spans_per_request:
            raise RequestTooLarge(
                f"the request holds {record_count} log records; the limit is "
                f"{self._config.max_spans_per_request} (lower the exporter's batch size)"
            )
        check_values = len(body) > min(
            self._config.max_attribute_value_bytes, self._record_size_limit
        )
        headers = [
            (Header.TENANT.value, tenant.encode()),
            (Header.SOURCE.value, source.encode()),
            (Header.RECEIVED_AT_NANOS.value, str(time.time_ns()).encode()),
            (Header.ENCODING.value, Encoding.OTLP_PROTO.value.encode()),
        ]
        rejected, reasons = self._remove_invalid_records(request, check_values)
        redactions: Counter[str] = Counter()
        if self._redactor is not None:
            redactions = self._redactor.redact_logs_request(request)
            if rejected.resource_logs:
                redactions.update(self._redactor.redact_logs_request(rejected))
            headers.append((Header.REDACTED.value, self._redactor.fingerprint.encode()))
            if redactions:
                headers.append((Header.REDACTIONS.value, json.dumps(dict(redactions)).encode()))
        per_trace = _split_by_trace(request)
        messages = [
            OutboundMessage(
                topic=self._topics.raw_logs,
                key=trace_id_key(trace_id) if trace_id else None,
                value=part.SerializeToString(),
                headers=headers,
            )
            for trace_id, request_of_trace in per_trace.items()
            for part in _chunks(request_of_trace, self._record_size_limit)
        ]
        rejected_count = record_count - _count(request)
        result = LogIngestResult(
            messages=messages,
            accepted_records=record_count - rejected_count,
            rejected_records=rejected_count,
            untraced_records=_count(per_trace[_NO_TRACE]) if _NO_TRACE in per_trace else 0,
            redactions=redactions,
        )
        if rejected_count:
            result.rejection_reason = "rejected " + "; ".join(
                f"{count} log record(s): {reason}" for reason, count in reasons.most_common()
            )
            if self._config.dead_letter_rejected_spans:
                result.messages.append(
                    OutboundMessage(
                        topic=self._topics.dead_letter,
                        key=None,
                        value=rejected.SerializeToString(),
                        headers=[
                            *headers,
                            (Header.DEAD_LETTER_REASON.value, result.rejection_reason.encode()),
                            (Header.DEAD_LETTER_STAGE.value, b"collector"),
                            (Header.DEAD_LETTER_SOURCE_TOPIC.value, self._topics.raw_logs.encode()),
                            (Header.DEAD_LETTER_CONTENT_TYPE.value, b"application/x-protobuf"),
                        ],
                    )
                )
        return result

    def _remove_invalid_records(
        self, request: ExportLogsServiceRequest, check_values: bool
    ) -> tuple[ExportLogsServiceRequest, Counter[str]]:
        rejected = ExportLogsServiceRequest()
        reasons: Counter[str] = Counter()
        for resource_logs in request.resource_logs:
            rejected_resource: ResourceLogs | None = None
            for scope_logs in resource_logs.scope_logs:
                keep: list[LogRecord] = []
                bad: list[LogRecord] = []
                for record in scope_logs.log_records:
                    reason = self._record_problem(record, check_values)
                    if reason is None:
                        keep.append(record)
                    else:
                        reasons[reason] += 1
                        bad.append(record)
                if not bad:
                    continue
                if rejected_resource is None:
                    rejected_resource = rejected.resource_logs.add()
                    rejected_resource.resource.CopyFrom(resource_logs.resource)
                    rejected_resource.schema_url = resource_logs.schema_url
                rejected_scope = rejected_resource.scope_logs.add()
                rejected_scope.scope.CopyFrom(scope_logs.scope)
                rejected_scope.schema_url = scope_logs.schema_url
                rejected_scope.log_records.extend(bad)
                del scope_logs.log_records[:]
                scope_logs.log_records.extend(keep)
        return rejected, reasons

    def _record_problem(self, record: LogRecord, check_values: bool) -> str | None:
        # A log record may have no trace context at all; when it has one, it must be valid.
        if record.trace_id and (len(record.trace_id) != 16 or record.trace_id == _ZERO_TRACE_ID):
            return "invalid trace id (must be empty or 16 bytes, not all zero)"
        if record.span_id and len(record.span_id) != 8:
            return "invalid span id (must be empty or 8 bytes)"
        if len(record.attributes) > self._config.max_attributes_per_span:
            return f"more than {self._config.max_attributes_per_span} attributes"
        if check_values:
            if record.ByteSize() > self._record_size_limit:
                return (
                    f"a log record larger than {self._record_size_limit} bytes "
                    "(the Kafka message limit)"
                )
            limit = self._config.max_attribute_value_bytes
            if (
                _longest_value(record.attributes) > limit
                or _value_size(record.body, depth=0) > limit
            ):
                return f"an attribute or body value longer than {limit} bytes"
        return None


def _count(request: ExportLogsServiceRequest) -> int:
    return sum(
        len(scope.log_records)
        for resource in request.resource_logs
        for scope in resource.scope_logs
    )


def _split_by_trace(request: ExportLogsServiceRequest) -> dict[bytes, ExportLogsServiceRequest]:
    """One request per trace id (b"" for records without one), keeping resource and scope."""
    per_trace: dict[bytes, ExportLogsServiceRequest] = {}
    scopes: dict[tuple[bytes, int, int], ScopeLogs] = {}
    resources: dict[tuple[bytes, int], ResourceLogs] = {}
    for resource_index, resource_logs in enumerate(request.resource_logs):
        for scope_index, scope_logs in enumerate(resource_logs.scope_logs):
            for record in scope_logs.log_records:
                trace_id = record.trace_id
                target = scopes.get((trace_id, resource_index, scope_index))
                if target is None:
                    resource_target = resources.get((trace_id, resource_index))
                    if resource_target is None:
                        trace_request = per_trace.setdefault(trace_id, ExportLogsServiceRequest())
                        resource_target = trace_request.resource_logs.add()
                        resource_target.resource.CopyFrom(resource_logs.resource)
                        resource_target.schema_url = resource_logs.schema_url
                        resources[(trace_id, resource_index)] = resource_target
                    target = resource_target.scope_logs.add()
                    target.scope.CopyFrom(scope_logs.scope)
                    target.schema_url = scope_logs.schema_url
                    scopes[(trace_id, resource_index, scope_index)] = target
                target.log_records.append(record)
    return per_trace


def _chunks(request: ExportLogsServiceRequest, limit: int) -> list[ExportLogsServiceRequest]:
    """Parts of at most ``limit`` bytes (records are never cut; each is below the limit)."""
    if request.ByteSize() <= limit:
        return [request]
    parts: list[ExportLogsServiceRequest] = []
    current, current_size = ExportLogsServiceRequest(), 0
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            target: ScopeLogs | None = None
            for record in scope_logs.log_records:
                size = record.ByteSize() + 16
                if current_size and current_size + size > limit:
                    parts.append(current)
                    current, current_size, target = ExportLogsServiceRequest(), 0, None
                if target is None:
                    resource_target = current.resource_logs.add()
                    resource_target.resource.CopyFrom(resource_logs.resource)
                    resource_target.schema_url = resource_logs.schema_url
                    target = resource_target.scope_logs.add()
                    target.scope.CopyFrom(scope_logs.scope)
                    target.schema_url = scope_logs.schema_url
                    current_size += resource_logs.resource.ByteSize() + 32
                target.log_records.append(record)
                current_size += size
    if current_size:
        parts.append(current)
    return parts
