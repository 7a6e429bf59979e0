"""Scoring responses and LLM spans: features, the calibrated model, injection, sampling."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmtap.processors.config import RiskConfig
from llmtap.processors.embeddings.cache import content_hash
from llmtap.processors.embeddings.encoder import Encoder, load_encoder
from llmtap.processors.risk.features import RiskFeatures, RiskInput, compute_features
from llmtap.processors.risk.injection import InjectionDetector, InjectionResult, heuristic_signal
from llmtap.processors.risk.model import RiskModel
from llmtap.processors.risk.sampling import PrioritySampler, SamplingCandidate
from llmtap.schemas.llm_span import LlmSpan
from llmtap.schemas.scores import SpanEmbedding, SpanScore


@dataclass(frozen=True)
class RiskResult:
    risk: float
    features: RiskFeatures
    injection: InjectionResult

    def components(self) -> dict[str, Any]:
        """The score and its evidence, as plain JSON values."""
        return {
            "risk": round(self.risk, 6),
            **{name: round(value, 6) for name, value in self.features.values.items()},
            "sentences": [
                {"text": sentence[:300], "support": round(support, 4)}
                for sentence, support in zip(
                    self.features.answer_sentences, self.features.sentence_support, strict=False
                )
            ],
            "injection_score": round(self.injection.score, 4),
            "injection_flag": self.injection.flag,
            "injection_reasons": self.injection.reasons,
        }


def is_scorable(span: LlmSpan) -> bool:
    """An LLM call with an answer: what a hallucination-risk score is about."""
    return span.span_type == "llm" and bool(span.completion_text and span.completion_text.strip())


def span_input(span: LlmSpan) -> RiskInput:
    documents = [document for document in span.retrieved_documents if document.content]
    return RiskInput(
        answer=span.completion_text or "",
        question=span.prompt_text,
        contexts=[document.content or "" for document in documents],
        context_ids=[document.id for document in documents],
    )


class RiskScorer:
    def __init__(
        self,
        encoder: Encoder,
        model: RiskModel | None = None,
        *,
        injection: InjectionDetector | None = None,
        sampler: PrioritySampler | None = None,
    ) -> None:
        self.encoder = encoder
        self.model = model or RiskModel.load()
        self.injection = injection or InjectionDetector(encoder)
        self.sampler = sampler or PrioritySampler(None)
        self.model_version = f"{encoder.model_name}/{encoder.backend.name}+{self.model.version}"
        self.sampled_out = 0

    @classmethod
    def from_config(cls, config: RiskConfig) -> RiskScorer:
        encoder = load_encoder(
            config.model_path,
            backend=config.backend,
            min_agreement=config.min_backend_agreement,
            batch_size=config.batch_size,
            max_tokens=config.max_tokens,
            cache_entries=config.cache_entries,
        )
        detector = InjectionDetector(encoder, threshold=config.injection_threshold)
        return cls(
            encoder,
            RiskModel.load(config.weights_file),
            injection=detector,
            sampler=PrioritySampler(config.sampling_budget_spans_per_second),
        )

    def score_inputs(
        self,
        inputs: Sequence[RiskInput],
        injection_texts: Sequence[Sequence[str]] | None = None,
    ) -> list[RiskResult]:
        """Scores every input; injection is checked on the question and the contexts."""
        features = compute_features(self.encoder, inputs)
        risks: list[float] = (
            self.model.score([item.vector() for item in features]).tolist() if features else []
        )
        texts = injection_texts or [
            [text for text in (item.question, *item.contexts) if text] for item in inputs
        ]
        injections = self.injection.check(texts)
        return [
            RiskResult(float(risk), feature, injection)
            for risk, feature, injection in zip(risks, features, injections, strict=True)
        ]

    def score_spans(self, spans: Sequence[LlmSpan]) -> list[SpanScore]:
        return self.score_and_embed(spans, embeddings=False)[0]

    def score_and_embed(
        self, spans: Sequence[LlmSpan], *, embeddings: bool = True
    ) -> tuple[list[SpanScore], list[SpanEmbedding]]:
        """Scores of the scorable spans the sampler keeps, and their prompt/answer/chunk vectors."""
        scorable = [span for span in spans if is_scorable(span)]
        decisions = self.sampler.decide([self._candidate(span) for span in scorable])
        kept = [
            (span, decision.weight)
            for span, decision in zip(scorable, decisions, strict=True)
            if decision.keep
        ]
        self.sampled_out += len(scorable) - len(kept)
        inputs = [span_input(span) for span, _ in kept]
        results = self.score_inputs(inputs) if inputs else []
        scores = [
            self._span_score(span, weight, result)
            for (span, weight), result in zip(kept, results, strict=True)
        ]
        vectors = self._embeddings([span for span, _ in kept], inputs) if embeddings else []
        return scores, vectors

    def _candidate(self, span: LlmSpan) -> SamplingCandidate:
        template = None
        if span.prompt_template_version is not None:
            template = "/".join(
                (span.service_name, span.prompt_template_id or "", span.prompt_template_version)
            )
        flagged = heuristic_signal(span.prompt_text or "")[0] >= self.injection.threshold
        return SamplingCandidate(
            has_context=any(document.content for document in span.retrieved_documents),
            flagged=flagged,
            prompt_template_key=template,
        )

    def _span_score(self, span: LlmSpan, weight: float, result: RiskResult) -> SpanScore:
        values = result.features.values
        details = result.components()
        details["injection_nearest"] = result.injection.nearest if result.injection.reasons else ""
        return SpanScore(
            timestamp=span.start_time_unix_nano,
            tenant=span.tenant,
            trace_id=span.trace_id,
            span_id=span.span_id,
            service_name=span.service_name,
            request_model=span.request_model or "",
            prompt_template_version=span.prompt_template_version or "",
            risk_score=result.risk,
            support_min=values["support_min"],
            support_mean=values["support_mean"],
            answer_context_similarity=values["answer_context_similarity"],
            answer_question_similarity=values["answer_question_similarity"],
            has_context=values["has_context"] > 0,
            injection_score=result.injection.score,
            injection_flag=result.injection.flag,
            sampling_weight=weight,
            model_version=self.model_version,
            details=json.dumps(details, ensure_ascii=False, separators=(",", ":")),
        )

    def _embeddings(
        self, spans: Sequence[LlmSpan], inputs: Sequence[RiskInput]
    ) -> list[SpanEmbedding]:
        """Vectors of what was just scored: cache hits, so no second model pass."""
        rows: list[tuple[LlmSpan, str, str, str | None]] = []
        for span, item in zip(spans, inputs, strict=True):
            if item.question:
                rows.append((span, "prompt", item.question, None))
            rows.append((span, "completion", item.answer, None))
            ids = [*item.context_ids, *[None] * (len(item.contexts) - len(item.context_ids))]
            for text, chunk_id in zip(item.contexts, ids, strict=False):
                if not text.strip():
                    continue
                rows.append((span, "context", text, f"chunk:{chunk_id}" if chunk_id else None))
        if not rows:
            return []
        vectors = self.encoder.encode([row[2] for row in rows], [row[3] for row in rows])
        return [
            SpanEmbedding(
                timestamp=span.start_time_unix_nano,
                tenant=span.tenant,
                trace_id=span.trace_id,
                span_id=span.span_id,
                kind=kind,
                model=self.encoder.model_name,
                content_hash=content_hash(text),
                vector=[round(float(value), 6) for value in vector],
            )
            for (span, kind, text, _), vector in zip(rows, vectors, strict=True)
        ]
