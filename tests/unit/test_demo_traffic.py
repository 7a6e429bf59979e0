"""The demo traffic generator: corpus variety, the documented mix, seeds, scheduled events."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from llmtap.demo.traffic import (
    SERVICES,
    TrafficConfig,
    TrafficGenerator,
    TrafficPlanner,
    load_corpus,
)
from llmtap.processors.normalize.normalizer import Normalizer
from llmtap.schemas.llm_span import LlmSpan

FIXED_NOW_NS = 1_790_000_000_000_000_000


def generate(interactions: int, **config: object) -> tuple[TrafficGenerator, list[ReadableSpan]]:
    exporter = InMemorySpanExporter()
    generator = TrafficGenerator(
        TrafficConfig(**{"seed": 7, **config}),  # type: ignore[arg-type]
        exporter_factory=lambda: exporter,
        batch=False,
        clock=lambda: FIXED_NOW_NS,
    )
    generator.emit_interactions(interactions)
    return generator, list(exporter.get_finished_spans())


def normalize(spans: Sequence[ReadableSpan]) -> list[LlmSpan]:
    return Normalizer().normalize_request(encode_spans(spans))


def attribute(span: ReadableSpan, key: str) -> object:
    return (span.attributes or {}).get(key)


def user_prompt(span: ReadableSpan) -> str | None:
    messages = attribute(span, "gen_ai.input.messages")
    if not isinstance(messages, str):
        return None
    return str(json.loads(messages)[0]["parts"][0]["content"])


def test_the_corpus_has_many_topics_questions_and_answers() -> None:
    corpus = load_corpus()
    assert len(corpus.rag_items) >= 6
    for topic, items in corpus.rag_items.items():
        assert len(items) >= 3, topic
        assert corpus.ungrounded[topic], topic
        for item in items:
            assert len(item.passages) >= 2
            assert item.answer not in corpus.ungrounded[topic]
    assert len(corpus.analytics) >= 8
    assert len(corpus.tools) >= 5
    assert len(corpus.injections) >= 8
    # Every service's system prompt is in the corpus.
    assert {service.name for service in SERVICES} <= set(corpus.system_prompts)


def test_prompts_are_varied_not_one_template() -> None:
    _, spans = generate(300)
    prompts = [user_prompt(span) for span in spans if attribute(span, "gen_ai.input.messages")]
    distinct = {prompt for prompt in prompts if prompt}
    assert len(distinct) >= 150
    assert Counter(prompts).most_common(1)[0][1] <= 10
    answers = {
        attribute(span, "gen_ai.output.messages")
        for span in spans
        if attribute(span, "gen_ai.output.messages")
    }
    assert len(answers) >= 150


def test_the_documented_mix_is_sent() -> None:
    generator, spans = generate(400)
    services = {span.resource.attributes["service.name"] for span in spans}
    assert services == {service.name for service in SERVICES}
    assert {attribute(span, "gen_ai.provider.name") for span in spans} >= {
        "openai",
        "anthropic",
        "gcp.gemini",
        "vllm",
    }
    assert len({attribute(span, "gen_ai.request.model") for span in spans} - {None}) >= 6
    versions = {
        (
            span.resource.attributes["service.name"],
            attribute(span, "llmtap.prompt.template.version"),
        )
        for span in spans
        if attribute(span, "llmtap.prompt.template.version")
    }
    assert len(versions) >= 7
    operations = Counter(attribute(span, "gen_ai.operation.name") for span in spans)
    assert operations["chat"] > operations["retrieval"] > operations["execute_tool"] > 0
    assert operations["invoke_agent"] >= operations["execute_tool"]  # a failed call ends it
    chats = [span for span in spans if attribute(span, "gen_ai.operation.name") == "chat"]
    assert any(attribute(span, "gen_ai.response.time_to_first_chunk") for span in chats)
    assert any(attribute(span, "gen_ai.usage.cache_read.input_tokens") for span in chats)
    assert any(attribute(span, "gen_ai.usage.cache_creation.input_tokens") for span in chats)
    assert any(attribute(span, "gen_ai.usage.reasoning.output_tokens") for span in chats)
    failed = [span for span in chats if span.status.status_code == StatusCode.ERROR]
    assert 0.01 < len(failed) / len(chats) < 0.1
    assert all(attribute(span, "error.type") for span in failed)
    assert all(attribute(span, "gen_ai.usage.input_tokens") is None for span in failed)
    assert generator.report.spans == len(spans)
    # Every span of a trace comes from one service and hangs under the trace's root span.
    roots = {span.context.trace_id: span for span in spans if span.parent is None}
    assert len(roots) == generator.report.interactions
    for span in spans:
        if span.parent is not None:
            assert span.parent.span_id == roots[span.context.trace_id].context.span_id


def test_the_normalizer_reads_everything_the_generator_sends() -> None:
    _, spans = generate(200)
    normalized = normalize(spans)
    llm = [span for span in normalized if span.span_type == "llm" and span.status != "error"]
    assert all(span.prompt_text and span.user_id and span.session_id for span in llm)
    assert all(span.prompt_template_version for span in llm)
    assert all(span.completion_text or span.tool_calls for span in llm)
    rag = [span for span in llm if span.service_name in ("support-bot", "docs-assistant")]
    assert rag
    assert all(len(span.retrieved_documents) == 3 for span in rag)
    assert all(span.retrieved_documents[0].content for span in rag)
    assert any(span.usage.cache_read for span in llm)
    assert any(span.usage.reasoning for span in llm)
    assert any(span.time_to_first_token_ms for span in llm)
    assert any(span.tool_calls for span in llm)
    types = Counter(span.span_type for span in normalized)
    assert types["retrieval"] > 0
    assert types["tool"] > 0
    assert {span.tenant for span in normalized} == {"harbor-pine", "fernway", "wayfarer"}


def test_the_same_seed_sends_the_same_traffic() -> None:
    def fingerprint(spans: list[ReadableSpan]) -> list[tuple[object, ...]]:
        return [
            (
                span.name,
                span.context.trace_id,
                span.context.span_id,
                span.start_time,
                span.end_time,
                dict(span.attributes or {}),
            )
            for span in spans
        ]

    first = fingerprint(generate(60, seed=11)[1])
    assert first == fingerprint(generate(60, seed=11)[1])
    assert first != fingerprint(generate(60, seed=12)[1])


def test_the_support_bot_drifts_to_other_topics_on_schedule() -> None:
    planner = TrafficPlanner(TrafficConfig(seed=3, drift_after_spans=300))
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    while planner.spans_planned < 900:
        drift_active = planner.drift_active
        interaction = planner.next_interaction()
        if interaction.service.name == "support-bot" and interaction.kind == "rag":
            (after if drift_active else before)[interaction.topic] += 1
            assert interaction.drifted == drift_active
    assert set(before) == {"shipping", "returns"}
    assert set(after) == {"billing", "account"}
    # Same prompt versions on both sides: the drift is not explained by a release.
    assert sum(before.values()) > 20
    assert sum(after.values()) > 20


def test_one_batch_of_ungrounded_answers_and_some_injections() -> None:
    config = TrafficConfig(
        seed=5,
        ungrounded_after_spans=150,
        ungrounded_batch_size=12,
        injection_every_interactions=20,
    )
    planner = TrafficPlanner(config)
    corpus = load_corpus()
    ungrounded_at: list[int] = []
    injections = []
    for _ in range(400):
        spans_before = planner.spans_planned
        interaction = planner.next_interaction()
        if interaction.ungrounded:
            ungrounded_at.append(spans_before)
            chat = interaction.spans[-1]
            if chat.error is None:
                answer = json.loads(str(chat.attributes["gen_ai.output.messages"]))[0]
                text = answer["parts"][0]["content"]
                known = [a.split("{")[0] for a in corpus.ungrounded[interaction.topic]]
                assert any(text.startswith(prefix) for prefix in known)
        if interaction.kind == "injection":
            injections.append(interaction)
    assert len(ungrounded_at) == 12
    assert min(ungrounded_at) >= 150
    assert len(injections) == 400 // 20
    for interaction in injections:
        prompt = json.loads(str(interaction.spans[-1].attributes["gen_ai.input.messages"]))
        text = prompt[0]["parts"][0]["content"]
        assert any(text.startswith(attack.split("{")[0][:30]) for attack in corpus.injections)


def test_run_stops_after_the_duration_and_flushes() -> None:
    exporter = InMemorySpanExporter()
    generator = TrafficGenerator(
        TrafficConfig(seed=1, rate_spans_per_second=200, duration_seconds=0.3),
        exporter_factory=lambda: exporter,
    )
    report = generator.run()
    generator.shutdown()
    assert report.spans > 0
    assert len(exporter.get_finished_spans()) == report.spans


def test_the_background_thread_stops_on_request() -> None:
    exporter = InMemorySpanExporter()
    generator = TrafficGenerator(
        TrafficConfig(seed=1, rate_spans_per_second=500), exporter_factory=lambda: exporter
    )
    generator.start()
    report = generator.stop()
    assert len(exporter.get_finished_spans()) == report.spans


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces/"])
def test_the_traces_url(endpoint: str) -> None:
    generator = TrafficGenerator(TrafficConfig(endpoint=endpoint))
    assert generator.traces_url == "http://127.0.0.1:4318/v1/traces"
