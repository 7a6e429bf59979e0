"""Normalizer rules that the golden files do not pin down on their own, and its robustness."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmtap.processors.normalize.normalizer import Normalizer
from llmtap.processors.pricing import PriceTable
from llmtap.schemas.llm_span import LlmSpan, decode_span, encode_span


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        result = AnyValue()
        result.array_value.values.extend(any_value(item) for item in value)
        return result
    if isinstance(value, dict):
        result = AnyValue()
        for key, item in value.items():
            result.kvlist_value.values.add(key=key, value=any_value(item))
        return result
    return AnyValue(string_value=str(value))


def request_with(
    spans: list[dict[str, Any]], resource: dict[str, Any] | None = None
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in (resource or {"service.name": "svc"}).items():
        resource_spans.resource.attributes.add(key=key, value=any_value(value))
    scope = resource_spans.scope_spans.add()
    trace_id = os.urandom(16)
    for attributes in spans:
        span = scope.spans.add(
            trace_id=attributes.pop("_trace_id", trace_id),
            span_id=attributes.pop("_span_id", os.urandom(8)),
            parent_span_id=attributes.pop("_parent", b""),
            name=attributes.pop("_name", "span"),
            start_time_unix_nano=1_767_225_600_000_000_000,
            end_time_unix_nano=1_767_225_601_000_000_000,
        )
        for key, value in attributes.items():
            span.attributes.add(key=key, value=any_value(value))
    return request


PRICES = PriceTable.load()


def normalize(*spans: dict[str, Any]) -> list[LlmSpan]:
    return Normalizer(PRICES.price).normalize_request(request_with(list(spans)))


def test_usage_reported_without_cache_is_made_inclusive_and_priced_once() -> None:
    # Anthropic's API reports input_tokens without cached ones: 50 + 10,000 read + 2,000 written.
    (span,) = normalize(
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "claude-sonnet-4-20250514",
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.cache_read.input_tokens": 10_000,
            "gen_ai.usage.cache_creation.input_tokens": 2_000,
            "gen_ai.usage.output_tokens": 400,
        }
    )
    assert span.usage.input == 12_050
    assert span.cost is not None
    assert span.cost.priced
    # 50 x 3/M + 10,000 x 0.30/M + 2,000 x 3.75/M + 400 x 15/M
    assert span.cost.total == "0.016650000"


def test_reasoning_reported_apart_from_output_is_added_to_it() -> None:
    (span,) = normalize(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "o4-mini",
            "gen_ai.usage.prompt_tokens": 100,
            "gen_ai.usage.completion_tokens": 20,
            "gen_ai.usage.reasoning_tokens": 300,
        }
    )
    assert (span.usage.output, span.usage.reasoning) == (320, 300)
    assert span.span_type == "llm"
    assert span.convention == "otel_genai_legacy"


def test_unknown_model_is_flagged_never_zero() -> None:
    (span,) = normalize(
        {
            "gen_ai.provider.name": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-imaginary-9",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 10,
        }
    )
    assert span.cost is not None
    assert not span.cost.priced
    assert span.cost.total is None
    assert span.cost.unpriced_reason


def test_retrieval_documents_of_a_sibling_span_are_linked() -> None:
    parent = os.urandom(8)
    documents = [{"id": "kb-1", "content": "Returns within 30 days.", "score": 0.91}]
    retrieval, chat = normalize(
        {
            "_parent": parent,
            "gen_ai.operation.name": "retrieval",
            "gen_ai.retrieval.documents": json.dumps(documents),
        },
        {
            "_parent": parent,
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
        },
    )
    assert retrieval.span_type == "retrieval"
    assert [(d.id, d.source_span_id) for d in chat.retrieved_documents] == [
        ("kb-1", retrieval.span_id)
    ]


def test_non_llm_spans_pass_through_with_their_attributes() -> None:
    (span,) = normalize(
        {"http.request.method": "GET", "url.path": "/orders/1", "_name": "GET /orders"}
    )
    assert span.span_type == "other"
    assert span.cost is None
    assert span.attributes == {"http.request.method": "GET", "url.path": "/orders/1"}


def test_tenant_falls_back_to_the_resource_then_default() -> None:
    request = request_with(
        [{"gen_ai.operation.name": "chat"}], {"service.name": "s", "tenant.id": "acme"}
    )
    (span,) = Normalizer().normalize_request(request)
    assert span.tenant == "acme"
    (span,) = Normalizer().normalize_request(request, tenant="from-header")
    assert span.tenant == "from-header"


def test_bad_values_become_warnings_not_errors() -> None:
    (span,) = normalize(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": "12",
            "gen_ai.usage.output_tokens": -4,
            "gen_ai.input.messages": "[{not json",
        }
    )
    assert span.usage.input == 12
    assert span.usage.output is None
    warnings = span.attributes["llmtap.normalize.warnings"]
    assert "negative" in warnings
    assert "not valid JSON" in warnings


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
known_keys = st.sampled_from(
    [
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.system",
        "gen_ai.request.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.retrieval.documents",
        "gen_ai.prompt.0.content",
        "gen_ai.prompt.0.role",
        "gen_ai.completion.0.content",
        "llm.input_messages.0.message.content",
        "llm.token_count.prompt",
        "llm.invocation_parameters",
        "retrieval.documents.0.document.content",
        "openinference.span.kind",
        "input.value",
        "output.value",
        "langfuse.observation.usage_details",
        "llm.prompt_template.variables",
        "gen_ai.response.finish_reasons",
        "gen_ai.request.stop_sequences",
        "session.id",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(known_keys | st.text(max_size=20), values, max_size=12))
def test_arbitrary_attributes_never_crash_and_always_encode(attributes: dict[str, Any]) -> None:
    clean = {
        key: value
        for key, value in attributes.items()
        if value is not None and not key.startswith("_")
    }
    for span in Normalizer(PRICES.price).normalize_request(request_with([clean])):
        assert decode_span(encode_span(span)) == span


def test_a_span_that_breaks_the_normalizer_is_reported_not_raised(monkeypatch: Any) -> None:
    failures: list[tuple[Span, Exception]] = []
    normalizer = Normalizer()

    def explode(*_: Any) -> LlmSpan:
        raise RuntimeError("boom")

    monkeypatch.setattr(normalizer, "normalize_span", explode)
    spans = normalizer.normalize_request(
        request_with([{"a": 1}, {"b": 2}]), on_error=lambda s, e: failures.append((s, e))
    )
    assert spans == []
    assert len(failures) == 2
