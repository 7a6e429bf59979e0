"""OTLP trace and log payloads: decoding protobuf and OTLP/JSON into one message type, safely.

OTLP/JSON is the proto3 JSON mapping with two differences that a generic JSON parser gets wrong:
trace and span ids are hex strings (not base64), and enums are integers. Payloads are hostile
input: decoding errors, over-deep nesting and malformed ids all become :class:`OtlpDecodeError`
with a reason that can be returned to the client.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from llmtap.schemas.topics import Encoding

_MessageType = TypeVar("_MessageType", bound=Message)
_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_ID_LENGTHS = {"traceId": 16, "trace_id": 16}


class OtlpDecodeError(ValueError):
    """The payload is not a valid OTLP message; the text says why (safe to show the sender)."""


def sniff_encoding(value: bytes) -> Encoding:
    """Tell otlp_json from otlp_proto on a topic: a JSON object starts with '{'.

    A serialized ExportTraceServiceRequest starts with field 1's tag (0x0A) or is empty. That
    tag is also a newline, and the length after it may be 123, a '{': such a value is JSON only
    if it is also one as a whole (ends with '}', valid UTF-8), which random trace ids are not.
    """
    stripped = value.strip(b" \t\r\n")
    if stripped[:1] != b"{":
        return Encoding.OTLP_PROTO
    if value[:1] == b"\n":
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return Encoding.OTLP_PROTO
        if stripped[-1:] != b"}":
            return Encoding.OTLP_PROTO
    return Encoding.OTLP_JSON


def decode_traces(body: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    if encoding is Encoding.OTLP_JSON:
        return decode_traces_json(body)
    return decode_traces_proto(body)


def decode_traces_proto(body: bytes) -> ExportTraceServiceRequest:
    try:
        return ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RecursionError) as error:
        raise OtlpDecodeError(f"invalid OTLP protobuf: {error or 'cannot parse'}") from None


def decode_traces_json(body: bytes) -> ExportTraceServiceRequest:
    document = _json_document(body)
    resource_spans = _list_field(document, "resourceSpans", "resource_spans")
    for resource in resource_spans:
        for scope in _list_field(resource, "scopeSpans", "scope_spans"):
            for span in _list_field(scope, "spans"):
                _hex_ids_to_base64(span)
                for link in _list_field(span, "links"):
                    _hex_ids_to_base64(link)
    return _parse(document, ExportTraceServiceRequest())


def decode_logs(body: bytes, encoding: Encoding) -> ExportLogsServiceRequest:
    if encoding is Encoding.OTLP_JSON:
        return decode_logs_json(body)
    return decode_logs_proto(body)


def decode_logs_proto(body: bytes) -> ExportLogsServiceRequest:
    try:
        return ExportLogsServiceRequest.FromString(body)
    except (DecodeError, RecursionError) as error:
        raise OtlpDecodeError(f"invalid OTLP protobuf: {error or 'cannot parse'}") from None


def decode_logs_json(body: bytes) -> ExportLogsServiceRequest:
    """OTLP/JSON logs; a log record's trace and span ids are hex (and may be empty)."""
    document = _json_document(body)
    for resource in _list_field(document, "resourceLogs", "resource_logs"):
        for scope in _list_field(resource, "scopeLogs", "scope_logs"):
            for record in _list_field(scope, "logRecords", "log_records"):
                _hex_ids_to_base64(record)
    return _parse(document, ExportLogsServiceRequest())


def _json_document(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OtlpDecodeError(f"invalid JSON: {error}") from None
    except RecursionError:
        raise OtlpDecodeError("invalid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise OtlpDecodeError("invalid OTLP/JSON: the top level must be an object")
    return document


def _parse(document: dict[str, Any], message: _MessageType) -> _MessageType:
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, TypeError, ValueError) as error:
        raise OtlpDecodeError(f"invalid OTLP/JSON: {error}") from None
    except OverflowError:  # an enum given as 1e400 or Infinity: int(inf) inside json_format
        raise OtlpDecodeError("invalid OTLP/JSON: a number is out of range") from None
    except SystemError:
        # upb's enum-name lookup fails this way on a string it cannot encode: a lone surrogate
        # ("\ud800", which json.loads accepts) where an enum belongs, as in "kind": "\ud800".
        raise OtlpDecodeError("invalid OTLP/JSON: a string is not valid Unicode") from None
    return message


def _list_field(container: Any, *names: str) -> list[Any]:
    if not isinstance(container, dict):
        raise OtlpDecodeError("invalid OTLP/JSON: expected an object")
    for name in names:
        if name in container:
            value = container[name]
            if value is None:
                return []
            if not isinstance(value, list):
                raise OtlpDecodeError(f"invalid OTLP/JSON: '{name}' must be an array")
            return value
    return []


def _hex_ids_to_base64(item: Any) -> None:
    if not isinstance(item, dict):
        raise OtlpDecodeError("invalid OTLP/JSON: expected an object")
    for name in _ID_FIELDS:
        value = item.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise OtlpDecodeError(f"invalid OTLP/JSON: '{name}' must be a hex string")
        try:
            raw = binascii.unhexlify(value)
        except (binascii.Error, ValueError):
            raise OtlpDecodeError(
                f"invalid OTLP/JSON: '{name}' is not hex: {value[:40]!r}"
            ) from None
        expected = _ID_LENGTHS.get(name, 8)
        if len(raw) != expected:
            raise OtlpDecodeError(
                f"invalid OTLP/JSON: '{name}' must be {expected * 2} hex digits, got {len(value)}"
            )
        item[name] = base64.b64encode(raw).decode("ascii")


def encode_json_response(message: Any) -> bytes:
    """OTLP/JSON response body (camelCase keys, default values omitted)."""
    return json_format.MessageToJson(message, indent=None).encode("utf-8")
