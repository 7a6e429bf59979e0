"""Raw-topic values in both Kafka exporter encodings decode to the same request."""

from __future__ import annotations

import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from llmtap.schemas.otlp import decode_traces, sniff_encoding
from llmtap.schemas.topics import Encoding, trace_id_key
from tests.otlp_support import to_otlp_json


def sample_request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    span = resource_spans.scope_spans.add().spans.add(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        parent_span_id=os.urandom(8),
        name="chat",
        kind=3,
        start_time_unix_nano=1_700_000_000_000_000_001,
        end_time_unix_nano=1_700_000_000_900_000_000,
    )
    span.attributes.add(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=2**40))
    span.links.add(trace_id=os.urandom(16), span_id=os.urandom(8))
    span.status.code = 2
    return request


def test_otlp_json_and_otlp_proto_values_decode_identically() -> None:
    request = sample_request()
    proto_value = request.SerializeToString()
    json_value = to_otlp_json(request)
    assert sniff_encoding(proto_value) is Encoding.OTLP_PROTO
    assert sniff_encoding(b"  \n" + json_value) is Encoding.OTLP_JSON
    assert decode_traces(proto_value, sniff_encoding(proto_value)) == request
    assert decode_traces(json_value, sniff_encoding(json_value)) == request


def test_an_empty_value_is_an_empty_protobuf_request() -> None:
    assert sniff_encoding(b"") is Encoding.OTLP_PROTO
    assert decode_traces(b"", Encoding.OTLP_PROTO) == ExportTraceServiceRequest()


def test_trace_keys_are_the_exporters_hex_form() -> None:
    assert (
        trace_id_key(bytes.fromhex("0af7651916cd43dd8448eb211c80319c"))
        == b"0af7651916cd43dd8448eb211c80319c"
    )
