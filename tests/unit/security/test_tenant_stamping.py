"""A client cannot choose its tenant: the collector stamps the one of its API key.

Spans that name another tenant in their resource (``llmtap.tenant``, ``tenant.id``) still end up
as the key's tenant, from the collector's message header through the normalizer.
"""

from __future__ import annotations

import os
from typing import Any, cast

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from llmtap.collectors.config import CollectorConfig
from llmtap.collectors.receiver import ReceiverCore
from llmtap.collectors.trace_ingest import IngestTopics, TraceIngest
from llmtap.processors.normalize.normalizer import Normalizer
from llmtap.schemas.otlp import decode_traces, sniff_encoding
from llmtap.schemas.topics import Encoding, Header

KEYS = [{"tenant": "alpha", "key": "alpha-key-0123456789"}]


def request_claiming(tenant: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key in ("service.name", "llmtap.tenant", "tenant.id"):
        value = "svc" if key == "service.name" else tenant
        resource_spans.resource.attributes.add(key=key, value=AnyValue(string_value=value))
    scope_spans = resource_spans.scope_spans.add()
    span = scope_spans.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="chat")
    span.attributes.add(key="gen_ai.operation.name", value=AnyValue(string_value="chat"))
    span.attributes.add(key="llmtap.tenant", value=AnyValue(string_value=tenant))
    return request


def test_the_key_decides_the_tenant_not_the_resource() -> None:
    config = CollectorConfig(api_keys=KEYS)  # type: ignore[arg-type]
    topics = IngestTopics(raw_spans="raw", dead_letter="dead")
    receiver = ReceiverCore(config, topics, writer=cast(Any, None), telemetry=cast(Any, None))
    tenant = receiver.authenticate("alpha-key-0123456789")
    assert tenant == "alpha"
    assert receiver.authenticate("bravo") is None
    result = TraceIngest(config, topics).ingest(
        request_claiming("bravo").SerializeToString(),
        Encoding.OTLP_PROTO,
        tenant=tenant,
        source="otlp_http",
    )
    assert result.messages
    for message in result.messages:
        headers = dict(message.headers)
        assert headers[Header.TENANT.value] == b"alpha"
        # what the normalizer stage does with a raw message
        decoded = decode_traces(message.value, sniff_encoding(message.value))
        spans = Normalizer().normalize_request(
            decoded, tenant=headers[Header.TENANT.value].decode()
        )
        assert [span.tenant for span in spans] == ["alpha"]


def test_without_keys_the_default_tenant_wins_over_the_resource() -> None:
    config = CollectorConfig()
    topics = IngestTopics(raw_spans="raw", dead_letter="dead")
    receiver = ReceiverCore(config, topics, writer=cast(Any, None), telemetry=cast(Any, None))
    tenant = receiver.authenticate(None)
    assert tenant == "default"
    result = TraceIngest(config, topics).ingest(
        request_claiming("bravo").SerializeToString(),
        Encoding.OTLP_PROTO,
        tenant=tenant,
        source="otlp_http",
    )
    (message,) = result.messages
    decoded = decode_traces(message.value, sniff_encoding(message.value))
    spans = Normalizer().normalize_request(
        decoded, tenant=dict(message.headers)[Header.TENANT.value].decode()
    )
    assert [span.tenant for span in spans] == ["default"]
