"""Demo traffic: realistic LLM spans sent through the OpenTelemetry SDK to the collector.

Four made-up applications, each with its own ``TracerProvider`` (its own ``service.name``), emit
what instrumented apps emit: RAG answers (a retrieval span and a chat span that carries the
retrieved context), tool calls (chat, ``execute_tool``, chat), a reasoning model, streaming with
time to first token, cached and reasoning tokens, failed calls, several providers, models and
prompt versions. Texts come from the shipped corpus (``corpus.yaml``), with slots filled per call.

Three scheduled events give the stream processors something to find:

* prompt drift: after ``drift_after_spans`` spans, the support bot's questions switch from
  shipping and returns to billing and account security (same prompt version: unexplained drift);
* an ungrounded batch: after ``ungrounded_after_spans`` spans, the next ``ungrounded_batch_size``
  RAG answers contradict or ignore their retrieved context;
* prompt injection: every ``injection_every_interactions``-th interaction is an attack prompt.

Planning (what to send, from a seeded ``random.Random``) is separate from emitting (turning a plan
into SDK spans at the current time), so a seed gives the same traffic every time.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.util.types import AttributeValue

_SLOT = re.compile(r"\{([a-z_]+)\}")
_SCOPE_NAME = "llmtap.demo"


class TrafficConfig(BaseModel):
    """What ``llmtap demo traffic`` sends, how fast, and when the scheduled events happen."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(
        default="http://127.0.0.1:4318",
        description="Base URL of the collector's OTLP/HTTP listener (/v1/traces is appended).",
    )
    api_key: SecretStr | None = Field(
        default=None, description="Sent as 'Authorization: Bearer ...' when the collector has keys."
    )
    rate_spans_per_second: float = Field(default=5.0, gt=0, description="Average spans per second.")
    duration_seconds: float | None = Field(
        default=None, gt=0, description="Stop after this long; None: until stopped."
    )
    seed: int | None = Field(default=None, description="Seed for reproducible traffic.")
    environment: str = Field(default="demo", description="deployment.environment.name")
    drift_after_spans: int = Field(
        default=600, ge=0, description="Spans before the support bot's topic mix changes."
    )
    ungrounded_after_spans: int = Field(
        default=300, ge=0, description="Spans before the batch of ungrounded answers."
    )
    ungrounded_batch_size: int = Field(
        default=25, ge=0, description="RAG answers in the ungrounded batch."
    )
    injection_every_interactions: int = Field(
        default=40, ge=0, description="Every n-th interaction is a prompt injection; 0: none."
    )
    error_ratio: float = Field(default=0.04, ge=0, le=1, description="Share of failed calls.")


# -- the demo applications -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    provider: str
    request_model: str
    response_model: str
    weight: float
    seconds_per_output_token: float
    server_address: str
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Service:
    name: str
    version: str
    tenant: str
    kind: str  # rag, analytics or tools
    models: tuple[ModelChoice, ...]
    template_id: str
    template_versions: tuple[tuple[str, float], ...]
    topics: tuple[str, ...] = ()
    drift_topics: tuple[str, ...] = ()
    data_source: str = ""
    route: str = "/api/chat"
    weight: float = 1.0
    stream_ratio: float = 0.5


_OPENAI = "api.openai.com"
_ANTHROPIC = "api.anthropic.com"
_GEMINI = "generativelanguage.googleapis.com"

SERVICES: tuple[Service, ...] = (
    Service(
        name="support-bot",
        version="2.14.0",
        tenant="harbor-pine",
        kind="rag",
        models=(
            ModelChoice("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.8, 0.011, _OPENAI),
            ModelChoice("openai", "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", 0.2, 0.013, _OPENAI),
        ),
        template_id="support-answer",
        template_versions=(("v3", 0.6), ("v4", 0.4)),
        topics=("shipping", "returns"),
        drift_topics=("billing", "account"),
        data_source="kb-help-centre",
        route="/api/support/ask",
        weight=0.4,
        stream_ratio=0.7,
    ),
    Service(
        name="docs-assistant",
        version="0.9.3",
        tenant="fernway",
        kind="rag",
        models=(
            ModelChoice(
                "anthropic",
                "claude-3-5-haiku-20241022",
                "claude-3-5-haiku-20241022",
                0.65,
                0.014,
                _ANTHROPIC,
                "end_turn",
            ),
            ModelChoice(
                "anthropic",
                "claude-sonnet-4-20250514",
                "claude-sonnet-4-20250514",
                0.25,
                0.028,
                _ANTHROPIC,
                "end_turn",
            ),
            # Self-hosted and not in the price table: shows up as unpriced.
            ModelChoice(
                "vllm",
                "llama-3.1-8b-instruct",
                "meta-llama/Llama-3.1-8B-Instruct",
                0.1,
                0.009,
                "llm-gateway.internal",
            ),
        ),
        template_id="docs-qa",
        template_versions=(("2024-11", 0.5), ("2025-02", 0.5)),
        topics=("api_auth", "rate_limits", "webhooks"),
        data_source="fernway-docs",
        route="/v1/docs/answer",
        weight=0.25,
        stream_ratio=0.8,
    ),
    Service(
        name="analytics-copilot",
        version="1.2.1",
        tenant="harbor-pine",
        kind="analytics",
        models=(ModelChoice("openai", "o4-mini", "o4-mini-2025-04-16", 1.0, 0.009, _OPENAI),),
        template_id="sql-writer",
        template_versions=(("v7", 1.0),),
        route="/copilot/sql",
        weight=0.15,
        stream_ratio=0.0,
    ),
    Service(
        name="travel-agent",
        version="3.0.0",
        tenant="wayfarer",
        kind="tools",
        models=(
            ModelChoice("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash", 1.0, 0.006, _GEMINI),
        ),
        template_id="trip-planner",
        template_versions=(("v2", 0.7), ("v3", 0.3)),
        route="/plan",
        weight=0.2,
        stream_ratio=0.5,
    ),
)

_ERRORS = (
    ("RateLimitError", "Error code: 429 - Rate limit reached for requests", 0.4),
    ("APITimeoutError", "Request timed out.", 0.3),
    (
        "InternalServerError",
        "Error code: 500 - The server had an error processing your request",
        0.2,
    ),
    ("BadRequestError", "Error code: 400 - context_length_exceeded", 0.1),
)


# -- the corpus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RagItem:
    topic: str
    questions: tuple[str, ...]
    passages: tuple[tuple[str, str], ...]  # (id, text)
    answer: str


@dataclass(frozen=True)
class Corpus:
    slots: Mapping[str, tuple[str, ...]]
    openers: tuple[str, ...]
    closers: tuple[str, ...]
    system_prompts: Mapping[str, str]
    rag_items: Mapping[str, tuple[RagItem, ...]]
    ungrounded: Mapping[str, tuple[str, ...]]
    analytics: tuple[tuple[str, str], ...]
    tools: tuple[Mapping[str, Any], ...]
    injections: tuple[str, ...]


@cache
def load_corpus() -> Corpus:
    """The shipped corpus (``llmtap/demo/corpus.yaml``)."""
    text = resources.files("llmtap.demo").joinpath("corpus.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    rag_items: dict[str, tuple[RagItem, ...]] = {}
    ungrounded: dict[str, tuple[str, ...]] = {}
    for topic, body in data["rag_topics"].items():
        prefix = "kb-" + topic.replace("_", "-")
        rag_items[topic] = tuple(
            RagItem(
                topic=topic,
                questions=tuple(item["questions"]),
                passages=tuple(
                    (f"{prefix}-{index:02d}{chr(ord('a') + number)}", passage)
                    for number, passage in enumerate(item["passages"])
                ),
                answer=item["answer"],
            )
            for index, item in enumerate(body["items"], start=1)
        )
        ungrounded[topic] = tuple(body["ungrounded"])
    return Corpus(
        slots={name: tuple(values) for name, values in data["slots"].items()},
        openers=tuple(data["openers"]),
        closers=tuple(data["closers"]),
        system_prompts=dict(data["system_prompts"]),
        rag_items=rag_items,
        ungrounded=ungrounded,
        analytics=tuple((item["question"], item["answer"]) for item in data["analytics"]),
        tools=tuple(data["tools"]),
        injections=tuple(data["injections"]),
    )


# -- planning ----------------------------------------------------------------------------------


@dataclass
class PlannedSpan:
    """One span to emit; times are offsets from the interaction's start, in seconds."""

    name: str
    kind: str  # server, client or internal
    start_seconds: float
    duration_seconds: float
    attributes: dict[str, AttributeValue]
    parent: int | None = None  # index of the parent in Interaction.spans
    error: tuple[str, str] | None = None  # (type, message)


@dataclass
class Interaction:
    """One user request to one service: a trace of a few spans."""

    service: Service
    kind: str  # rag, analytics, tools, injection
    topic: str
    spans: list[PlannedSpan] = field(default_factory=list)
    ungrounded: bool = False
    drifted: bool = False
    failed: bool = False

    @property
    def duration_seconds(self) -> float:
        return max(span.start_seconds + span.duration_seconds for span in self.spans)


class TrafficPlanner:
    """Decides, from a seed, what each successive interaction sends."""

    def __init__(self, config: TrafficConfig, corpus: Corpus | None = None) -> None:
        self.config = config
        self.corpus = corpus or load_corpus()
        self._random = random.Random(config.seed)
        self.interactions_planned = 0
        self.spans_planned = 0
        self._ungrounded_left = config.ungrounded_batch_size
        self._users = {
            service.name: [f"u-{self._random.randrange(10_000):04d}" for _ in range(40)]
            for service in SERVICES
        }

    @property
    def drift_active(self) -> bool:
        return self.spans_planned >= self.config.drift_after_spans

    def next_interaction(self) -> Interaction:
        rng = self._random
        config = self.config
        self.interactions_planned += 1
        every = config.injection_every_interactions
        rag_services = [service for service in SERVICES if service.kind == "rag"]
        if every and self.interactions_planned % every == 0:
            interaction = self._rag(rng.choice(rag_services), injection=True)
        else:
            service = rng.choices(SERVICES, weights=[s.weight for s in SERVICES])[0]
            if service.kind == "rag":
                interaction = self._rag(service, injection=False)
            elif service.kind == "analytics":
                interaction = self._analytics(service)
            else:
                interaction = self._tools(service)
        self.spans_planned += len(interaction.spans)
        return interaction

    # Texts ---------------------------------------------------------------------------------

    def _fill(self, text: str, values: dict[str, str]) -> str:
        """Replace {slot}s; the same slot gets the same value within one interaction."""

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                if name == "order":
                    values[name] = f"HP-{self._random.randrange(100_000, 999_999)}"
                elif name == "amount":
                    values[name] = (
                        f"{self._random.randrange(9, 240)}.{self._random.randrange(100):02d}"
                    )
                elif name in self.corpus.slots:
                    values[name] = self._random.choice(self.corpus.slots[name])
                else:
                    return match.group(0)
            return values[name]

        return _SLOT.sub(value, text)

    def _question(self, text: str, values: dict[str, str]) -> str:
        question = self._fill(text, values)
        opener = self._random.choice(self.corpus.openers)
        closer = self._random.choice(self.corpus.closers)
        if opener.endswith(", ") or opener.endswith("but "):
            question = question[0].lower() + question[1:] if question[:2] != "I " else question
        return f"{opener}{question}{closer}"

    # Interactions ----------------------------------------------------------------------------

    def _rag(self, service: Service, *, injection: bool) -> Interaction:
        rng = self._random
        corpus = self.corpus
        drifted = bool(service.drift_topics) and self.drift_active
        topic = rng.choice(service.drift_topics if drifted else service.topics)
        item = rng.choice(corpus.rag_items[topic])
        values: dict[str, str] = {}
        if injection:
            question = self._fill(rng.choice(corpus.injections), values)
        else:
            question = self._question(rng.choice(item.questions), values)
        # Top-3 retrieval: the item's passages first, then one from another item of the topic.
        others = [other for other in corpus.rag_items[topic] if other is not item]
        passages = list(item.passages)
        if others:
            passages.append(rng.choice(rng.choice(others).passages))
        documents = [
            {
                "id": passage_id,
                "content": self._fill(text, values),
                "score": round(0.91 - rank * 0.07 - rng.random() * 0.05, 3),
            }
            for rank, (passage_id, text) in enumerate(passages)
        ]
        ungrounded = False
        if injection:
            answer = rng.choice(
                [
                    "I can't share my instructions or internal data, but I'm happy to help "
                    "with a question about your order or account.",
                    "Sorry, I can only answer questions covered by the help centre articles.",
                    "I'm not able to do that. Is there something about your order I can help with?",
                ]
            )
        elif self.spans_planned >= self.config.ungrounded_after_spans and self._ungrounded_left:
            self._ungrounded_left -= 1
            ungrounded = True
            answer = self._fill(rng.choice(corpus.ungrounded[topic]), values)
        else:
            answer = self._fill(item.answer, values)

        interaction = Interaction(
            service=service,
            kind="injection" if injection else "rag",
            topic=topic,
            ungrounded=ungrounded,
            drifted=drifted,
        )
        retrieval_seconds = 0.03 + rng.random() * 0.12
        retrieval = PlannedSpan(
            name=f"retrieval {service.data_source}",
            kind="client",
            start_seconds=0.004,
            duration_seconds=retrieval_seconds,
            parent=0,
            attributes={
                "gen_ai.operation.name": "retrieval",
                "gen_ai.data_source.id": service.data_source,
                "gen_ai.retrieval.query.text": question,
                "gen_ai.retrieval.top_k": len(documents),
                "gen_ai.retrieval.documents": _json(documents),
                "db.system.name": "qdrant",
                "server.address": "qdrant.internal",
                "server.port": 6333,
            },
        )
        chat = self._chat(
            interaction,
            start_seconds=0.01 + retrieval_seconds,
            messages=[{"role": "user", "parts": [_text(question)]}],
            answer=answer,
            context_tokens=sum(_tokens(str(d["content"])) for d in documents),
            documents=documents,
            values=values,
        )
        self._wrap(interaction, [retrieval, chat])
        return interaction

    def _analytics(self, service: Service) -> Interaction:
        rng = self._random
        question_text, answer_text = rng.choice(self.corpus.analytics)
        values: dict[str, str] = {}
        interaction = Interaction(service=service, kind="analytics", topic="sql")
        chat = self._chat(
            interaction,
            start_seconds=0.002,
            messages=[{"role": "user", "parts": [_text(self._question(question_text, values))]}],
            answer=self._fill(answer_text, values),
            context_tokens=0,
            reasoning=True,
        )
        self._wrap(interaction, [chat])
        return interaction

    def _tools(self, service: Service) -> Interaction:
        rng = self._random
        item = rng.choice(self.corpus.tools)
        values: dict[str, str] = {}
        question = self._question(item["question"], values)
        arguments = {
            key: self._fill(value, values) if isinstance(value, str) else value
            for key, value in item["arguments"].items()
        }
        result = self._fill(item["result"], values)
        answer = self._fill(item["answer"], values)
        call_id = f"call_{rng.getrandbits(96):024x}"
        interaction = Interaction(service=service, kind="tools", topic=str(item["tool"]))
        user_message = {"role": "user", "parts": [_text(question)]}
        first = self._chat(
            interaction,
            start_seconds=0.003,
            messages=[user_message],
            answer="",
            context_tokens=0,
            tool_call={
                "type": "tool_call",
                "id": call_id,
                "name": item["tool"],
                "arguments": arguments,
            },
            stream=False,
        )
        spans = [first]
        if first.error is None:
            tool_start = first.start_seconds + first.duration_seconds + 0.002
            tool_seconds = 0.08 + rng.random() * 0.4
            spans.append(
                PlannedSpan(
                    name=f"execute_tool {item['tool']}",
                    kind="internal",
                    start_seconds=tool_start,
                    duration_seconds=tool_seconds,
                    parent=0,
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": str(item["tool"]),
                        "gen_ai.tool.call.id": call_id,
                        "gen_ai.tool.type": "function",
                        "gen_ai.tool.call.arguments": _json(arguments),
                        "gen_ai.tool.call.result": result,
                    },
                )
            )
            spans.append(
                self._chat(
                    interaction,
                    start_seconds=tool_start + tool_seconds + 0.002,
                    messages=[
                        user_message,
                        {
                            "role": "assistant",
                            "parts": [
                                {
                                    "type": "tool_call",
                                    "id": call_id,
                                    "name": item["tool"],
                                    "arguments": arguments,
                                }
                            ],
                        },
                        {
                            "role": "tool",
                            "parts": [
                                {"type": "tool_call_response", "id": call_id, "response": result}
                            ],
                        },
                    ],
                    answer=answer,
                    context_tokens=_tokens(result),
                )
            )
        root_name = "invoke_agent trip-planner"
        self._wrap(
            interaction,
            spans,
            root_name=root_name,
            root_attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "trip-planner",
                "gen_ai.provider.name": spans[0].attributes["gen_ai.provider.name"],
            },
        )
        return interaction

    # Spans ---------------------------------------------------------------------------------

    def _chat(
        self,
        interaction: Interaction,
        *,
        start_seconds: float,
        messages: list[dict[str, Any]],
        answer: str,
        context_tokens: int,
        documents: Sequence[Mapping[str, Any]] | None = None,
        values: dict[str, str] | None = None,
        reasoning: bool = False,
        tool_call: dict[str, Any] | None = None,
        stream: bool | None = None,
    ) -> PlannedSpan:
        rng = self._random
        service = interaction.service
        model = rng.choices(service.models, weights=[m.weight for m in service.models])[0]
        version = rng.choices(
            [v for v, _ in service.template_versions],
            weights=[w for _, w in service.template_versions],
        )[0]
        user_id = rng.choice(self._users[service.name])
        streaming = rng.random() < service.stream_ratio if stream is None else stream
        system_prompt = self.corpus.system_prompts[service.name]
        prompt_text = " ".join(
            str(part.get("content", part.get("response", "")))
            for message in messages
            for part in message["parts"]
        )
        # Real prompts carry long instructions and few-shot examples: most input tokens.
        input_tokens = (
            _tokens(system_prompt)
            + rng.randrange(600, 1800)
            + _tokens(prompt_text)
            + context_tokens
        )
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": model.provider,
            "gen_ai.request.model": model.request_model,
            "gen_ai.request.temperature": 0.2 if service.kind != "tools" else 0.7,
            "gen_ai.request.max_tokens": 1024,
            "gen_ai.conversation.id": f"conv_{rng.getrandbits(40):010x}",
            "user.id": user_id,
            "server.address": model.server_address,
            "server.port": 443,
            "llmtap.prompt.template.id": service.template_id,
            "llmtap.prompt.template.version": version,
            "gen_ai.system_instructions": _json([_text(system_prompt)]),
            "gen_ai.input.messages": _json(messages),
        }
        if streaming:
            attributes["gen_ai.request.stream"] = True
        if documents is not None:
            attributes["gen_ai.retrieval.documents"] = _json(list(documents))
        # What the demo planted, so a reader can check what llmtap flags against the truth.
        if interaction.ungrounded:
            attributes["llmtap.demo.case"] = "ungrounded"
        elif interaction.kind == "injection":
            attributes["llmtap.demo.case"] = "injection"
        elif interaction.drifted:
            attributes["llmtap.demo.case"] = "drifted"

        if rng.random() < self.config.error_ratio:
            error_type, message = rng.choices(
                [(t, m) for t, m, _ in _ERRORS], weights=[w for _, _, w in _ERRORS]
            )[0]
            interaction.failed = True
            duration = (
                30.0 + rng.random() * 30 if error_type == "APITimeoutError" else 0.2 + rng.random()
            )
            attributes["error.type"] = error_type
            return PlannedSpan(
                name=f"chat {model.request_model}",
                kind="client",
                start_seconds=start_seconds,
                duration_seconds=duration,
                parent=0,
                attributes=attributes,
                error=(error_type, message),
            )

        output_tokens = max(8, int(_tokens(answer) * (0.9 + rng.random() * 0.3)))
        if tool_call is not None:
            output_tokens = 18 + rng.randrange(30)
        reasoning_tokens = 0
        if reasoning:
            reasoning_tokens = 64 * rng.randrange(2, 24)
            output_tokens += reasoning_tokens
        cache_read = 0
        cache_write = 0
        if model.provider == "openai" and input_tokens >= 1024 and rng.random() < 0.55:
            # OpenAI serves the cached prefix in 128-token blocks after the first 1024.
            cache_read = 1024 + 128 * rng.randrange(0, max(1, (input_tokens - 1024) // 128))
        elif model.provider == "anthropic":
            cached_prefix = _tokens(system_prompt) + 1200
            if rng.random() < 0.15:
                cache_write = cached_prefix
            elif rng.random() < 0.7:
                cache_read = min(cached_prefix, input_tokens)
        time_to_first_token = 0.18 + rng.lognormvariate(-1.0, 0.5)
        if reasoning:
            time_to_first_token += reasoning_tokens * model.seconds_per_output_token
        # Reasoning happens before the first visible token; the visible rest streams after it.
        visible_tokens = output_tokens - reasoning_tokens
        duration = time_to_first_token + visible_tokens * model.seconds_per_output_token
        finish_reason = "tool_calls" if tool_call is not None else model.finish_reason
        output_parts: list[dict[str, Any]] = [_text(answer)] if answer else []
        if tool_call is not None:
            output_parts.append(tool_call)
        attributes.update(
            {
                "gen_ai.response.model": model.response_model,
                "gen_ai.response.finish_reasons": [finish_reason],
                "gen_ai.output.messages": _json(
                    [{"role": "assistant", "parts": output_parts, "finish_reason": finish_reason}]
                ),
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output_tokens,
            }
        )
        if model.provider == "openai":
            attributes["gen_ai.response.id"] = f"chatcmpl-{rng.getrandbits(120):030x}"
        elif model.provider == "anthropic":
            attributes["gen_ai.response.id"] = f"msg_{rng.getrandbits(96):024x}"
        if cache_read:
            attributes["gen_ai.usage.cache_read.input_tokens"] = cache_read
        if cache_write:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = cache_write
        if reasoning_tokens:
            attributes["gen_ai.usage.reasoning.output_tokens"] = reasoning_tokens
        if streaming:
            attributes["gen_ai.response.time_to_first_chunk"] = round(time_to_first_token, 4)
        return PlannedSpan(
            name=f"chat {model.request_model}",
            kind="client",
            start_seconds=start_seconds,
            duration_seconds=duration,
            parent=0,
            attributes=attributes,
        )

    def _wrap(
        self,
        interaction: Interaction,
        children: list[PlannedSpan],
        *,
        root_name: str | None = None,
        root_attributes: dict[str, AttributeValue] | None = None,
    ) -> None:
        """Put the spans under one server span for the request, as a web framework would."""
        service = interaction.service
        end = max(child.start_seconds + child.duration_seconds for child in children) + 0.004
        failed = any(child.error is not None for child in children)
        attributes: dict[str, AttributeValue] = dict(root_attributes or {})
        attributes.update(
            {
                "http.request.method": "POST",
                "http.route": service.route,
                "http.response.status_code": 502 if failed else 200,
            }
        )
        root = PlannedSpan(
            name=root_name or f"POST {service.route}",
            kind="server",
            start_seconds=0.0,
            duration_seconds=end,
            attributes=attributes,
            error=("UpstreamError", "the model call failed") if failed else None,
        )
        interaction.spans = [root, *children]


# -- emitting ----------------------------------------------------------------------------------


def _seeded_ids(seed: int | None) -> Any:
    """Trace and span ids from the seed, so a seeded run is reproducible end to end."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class SeededIds(IdGenerator):
        def __init__(self) -> None:
            self._random = random.Random(None if seed is None else seed + 1)

        def generate_span_id(self) -> int:
            return self._random.getrandbits(64) or 1

        def generate_trace_id(self) -> int:
            return self._random.getrandbits(128) or 1

    return SeededIds()


@dataclass
class TrafficReport:
    interactions: int = 0
    spans: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    ungrounded: int = 0
    drift_started_at_span: int | None = None


class TrafficGenerator:
    """Sends planned interactions through one OpenTelemetry TracerProvider per demo service.

    ``exporter_factory`` makes each provider's exporter (default: OTLP/HTTP protobuf to
    ``config.endpoint``); ``batch`` picks the BatchSpanProcessor (default) or the
    SimpleSpanProcessor (tests). ``clock`` returns the current time in ns.
    """

    def __init__(
        self,
        config: TrafficConfig,
        *,
        exporter_factory: Callable[[], SpanExporter] | None = None,
        batch: bool = True,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.planner = TrafficPlanner(config)
        self.report = TrafficReport()
        self._clock = clock
        self._exporter_factory = exporter_factory or self._otlp_exporter
        self._ids = _seeded_ids(config.seed)
        self._providers: dict[str, TracerProvider] = {}
        self._batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def traces_url(self) -> str:
        base = self.config.endpoint.rstrip("/")
        return base if base.endswith("/v1/traces") else base + "/v1/traces"

    def _otlp_exporter(self) -> SpanExporter:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        headers = None
        if self.config.api_key is not None:
            headers = {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}
        return OTLPSpanExporter(endpoint=self.traces_url, headers=headers, timeout=10)

    def _provider(self, service: Service) -> TracerProvider:
        provider = self._providers.get(service.name)
        if provider is None:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

            resource = Resource.create(
                {
                    "service.name": service.name,
                    "service.version": service.version,
                    "deployment.environment.name": self.config.environment,
                    "llmtap.tenant": service.tenant,
                }
            )
            provider = TracerProvider(resource=resource, id_generator=self._ids)
            exporter = self._exporter_factory()
            processor = (
                BatchSpanProcessor(exporter) if self._batch else SimpleSpanProcessor(exporter)
            )
            provider.add_span_processor(processor)
            self._providers[service.name] = provider
        return provider

    def emit(self, interaction: Interaction) -> int:
        """Emit one interaction's spans, ending now; returns the number of spans."""
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        kinds = {
            "server": SpanKind.SERVER,
            "client": SpanKind.CLIENT,
            "internal": SpanKind.INTERNAL,
        }
        tracer = self._provider(interaction.service).get_tracer(_SCOPE_NAME, "1.0.0")
        start_ns = self._clock() - int(interaction.duration_seconds * 1e9)
        opened: list[trace.Span] = []
        for planned in interaction.spans:
            context = None
            if planned.parent is not None:
                context = trace.set_span_in_context(opened[planned.parent])
            span = tracer.start_span(
                planned.name,
                context=context,
                kind=kinds[planned.kind],
                attributes=planned.attributes,
                start_time=start_ns + int(planned.start_seconds * 1e9),
            )
            opened.append(span)
        # End children before parents, as an instrumented app would.
        for planned, span in reversed(list(zip(interaction.spans, opened, strict=True))):
            if planned.error is not None:
                error_type, message = planned.error
                span.add_event(
                    "exception",
                    {"exception.type": error_type, "exception.message": message},
                    timestamp=start_ns
                    + int((planned.start_seconds + planned.duration_seconds) * 1e9),
                )
                span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"))
            span.end(start_ns + int((planned.start_seconds + planned.duration_seconds) * 1e9))
        self._record(interaction)
        return len(interaction.spans)

    def _record(self, interaction: Interaction) -> None:
        report = self.report
        report.interactions += 1
        report.spans += len(interaction.spans)
        report.kinds[interaction.kind] += 1
        report.ungrounded += interaction.ungrounded
        if interaction.drifted and report.drift_started_at_span is None:
            report.drift_started_at_span = report.spans - len(interaction.spans)

    def emit_interactions(self, count: int) -> TrafficReport:
        """Emit ``count`` interactions at once, without pacing (tests, back-filling)."""
        for _ in range(count):
            self.emit(self.planner.next_interaction())
        return self.report

    def run(self, stop: threading.Event | None = None) -> TrafficReport:
        """Emit at ``rate_spans_per_second`` until ``stop`` is set or the duration has passed."""
        stop = stop or self._stop
        rate = self.config.rate_spans_per_second
        started = time.monotonic()
        deadline = started + self.config.duration_seconds if self.config.duration_seconds else None
        try:
            while not stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                # Pace on the spans already sent, so a slow export does not cause a burst.
                due = started + self.report.spans / rate
                if due > now:
                    wait = due - now if deadline is None else min(due - now, deadline - now)
                    if stop.wait(wait):
                        break
                    continue
                self.emit(self.planner.next_interaction())
        finally:
            self.flush()
        return self.report

    def flush(self) -> None:
        for provider in self._providers.values():
            provider.force_flush(timeout_millis=10_000)

    def shutdown(self) -> None:
        for provider in self._providers.values():
            provider.shutdown()
        self._providers.clear()

    # Background thread (llmtap up --demo) --------------------------------------------------

    def start(self) -> None:
        def main() -> None:
            try:
                self.run(self._stop)
            except BaseException as error:
                self._error = error

        self._thread = threading.Thread(target=main, name="llmtap-demo-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> TrafficReport:
        """Stop sending, flush what is queued to the collector, and shut the exporters down."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.shutdown()
        if self._error is not None:
            raise self._error
        return self.report


def _text(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _tokens(text: str) -> int:
    """About four characters per token, as tokenizers average on English text."""
    return max(1, (len(text) + 3) // 4)
