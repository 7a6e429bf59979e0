"""The evidence behind a risk score: how well each answer sentence is supported by the context.

All texts of a batch (answers, their sentences, questions, context chunks and their sentences)
go to the encoder in one call, so the model runs full batches and the cache sees every chunk.
Per response the features are:

- ``support_min`` / ``support_mean``: for each answer sentence, its best cosine match among the
  context's sentences and chunks; the weakest sentence is what a hallucination usually looks
  like, the mean says how much of the answer is grounded;
- ``answer_context_similarity``: the whole answer against its best-matching chunk;
- ``answer_question_similarity``: does the answer address the question (0 without one);
- ``unsupported_token_fraction``: the answer's content words and numbers that appear nowhere in
  the context (a swapped name or number keeps a high cosine but shows up here);
- ``sentence_novelty_mean``: for each answer sentence, the share of its content words absent
  from the two context sentences it matches best (a fact moved from elsewhere in the document),
  averaged over the sentences;
- ``novel_trigram_mean``: for each answer sentence, the share of its word trigrams that appear
  nowhere in the context (words recombined into a claim the context does not make; a grounded
  answer mostly reuses the context's phrasing), averaged over the sentences. Means rather than
  the worst sentence: a correct abstractive summary often has one freely worded sentence;
- ``log_answer_words``: length, so longer answers are not mistaken for riskier ones by the
  other features, and ``has_context``.

Without context the support features are 0 and ``has_context`` is 0: the model's weight for
``has_context`` carries the difference (no grounding means nothing can be checked).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llmtap.processors.embeddings.encoder import Encoder

FEATURE_NAMES: tuple[str, ...] = (
    "support_min",
    "support_mean",
    "answer_context_similarity",
    "answer_question_similarity",
    "unsupported_token_fraction",
    "sentence_novelty_mean",
    "novel_trigram_mean",
    "log_answer_words",
    "has_context",
)

MAX_ANSWER_SENTENCES = 32
MAX_CONTEXT_SENTENCES = 256

# A sentence ends at . ! or ? (then optional closing quotes) and whitespace, except after a
# single letter or a common title ("U.S. officials", "Dr. Smith"); blank lines and list items
# end one too. Case is not required: tokenized, lowercased text ("... burnley . andros ...")
# is common in logs and datasets.
_SENTENCE_END = re.compile(
    r"(?<![\s.][a-z]\.)(?<!\bmr\.)(?<!\bms\.)(?<!\bdr\.)(?<!\bst\.)(?<!\bvs\.)(?<!\bmrs\.)"
    r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019)\]]))\s+(?=\S)|\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)",
    re.IGNORECASE,
)
_WORD = re.compile("[^\\W_]+(?:['\u2019][^\\W_]+)?", re.UNICODE)
# Trigrams use plain word tokens (apostrophes split) so that tokenized text ("team 's") and
# running text ("team's") give the same trigrams.
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORD_TEXT = """
    a an the and or but if then else of in on at to for from
    by with without about as into onto over under after before between through during is are
    was were be been being am do does did has have had having it its it's
    this that these those there here their they them he him his she her hers we
    us our you your i me my mine not no nor so than too very can
    could will would shall should may might must just also only such which who whom whose
    what when where why how all any both each few more most other some own same
    s t don now said says say one
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class RiskInput:
    """One response to score; ``context_ids`` (optional) name the chunks for the cache."""

    answer: str
    question: str | None = None
    contexts: Sequence[str] = ()
    context_ids: Sequence[str | None] = ()


@dataclass
class RiskFeatures:
    values: dict[str, float]
    answer_sentences: list[str] = field(default_factory=list)
    sentence_support: list[float] = field(default_factory=list)

    def vector(self) -> list[float]:
        return [self.values[name] for name in FEATURE_NAMES]


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (a regex split: good enough for grounding, no model needed)."""
    parts = (part.strip() for part in _SENTENCE_END.split(text))
    return [part for part in parts if part and _WORD.search(part)]


def content_words(text: str) -> set[str]:
    """Lowercase words minus stopwords, cut to 6 characters so inflections still match."""
    words = (word.lower().replace("\u2019", "'") for word in _WORD.findall(text))
    return {
        word[:6] for word in words if word not in _STOPWORDS and (len(word) > 1 or word.isdigit())
    }


def word_trigrams(text: str) -> list[tuple[str, str, str]]:
    tokens = _TOKEN.findall(text.lower())
    return list(zip(tokens, tokens[1:], tokens[2:], strict=False))


class _Batch:
    """Collects the texts of many responses, encodes them once, hands back their vectors."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.keys: list[str | None] = []

    def add(self, texts: Sequence[str], keys: Sequence[str | None] | None = None) -> slice:
        start = len(self.texts)
        self.texts.extend(texts)
        self.keys.extend(keys if keys is not None else [None] * len(texts))
        return slice(start, len(self.texts))


def compute_features(encoder: Encoder, inputs: Sequence[RiskInput]) -> list[RiskFeatures]:
    batch = _Batch()
    plans = []
    for item in inputs:
        answer_sentences = split_sentences(item.answer)[:MAX_ANSWER_SENTENCES] or [item.answer]
        padded_ids = [*item.context_ids, *[None] * (len(item.contexts) - len(item.context_ids))]
        pairs = [
            (text, key)
            for text, key in zip(item.contexts, padded_ids, strict=False)
            if text.strip()
        ]
        contexts = [text for text, _ in pairs]
        ids = [key for _, key in pairs]
        context_sentences: list[str] = []
        for text in contexts:
            context_sentences.extend(split_sentences(text))
        context_sentences = context_sentences[:MAX_CONTEXT_SENTENCES]
        plans.append(
            (
                answer_sentences,
                contexts,
                context_sentences,
                batch.add([item.answer]),
                batch.add(answer_sentences),
                batch.add([item.question]) if item.question else None,
                batch.add(
                    contexts, [f"chunk:{key}" if key else None for key in ids[: len(contexts)]]
                ),
                batch.add(context_sentences),
            )
        )
    vectors = encoder.encode(batch.texts, batch.keys) if batch.texts else np.zeros((0, 1))
    results = []
    for item, plan in zip(inputs, plans, strict=True):
        (answer_sentences, contexts, context_sentences, answer_at, sentences_at, question_at,
         chunks_at, context_sentences_at) = plan  # fmt: skip
        answer_vector = vectors[answer_at][0]
        sentence_vectors = vectors[sentences_at]
        values = dict.fromkeys(FEATURE_NAMES, 0.0)
        values["log_answer_words"] = math.log1p(len(_WORD.findall(item.answer)))
        if question_at is not None:
            values["answer_question_similarity"] = float(vectors[question_at][0] @ answer_vector)
        support: list[float] = []
        if contexts:
            values["has_context"] = 1.0
            units = np.concatenate([vectors[chunks_at], vectors[context_sentences_at]])
            similarity = sentence_vectors @ units.T  # answer sentences x context units
            support = [float(value) for value in similarity.max(axis=1)]
            values["support_min"] = min(support)
            values["support_mean"] = float(np.mean(support))
            values["answer_context_similarity"] = float((vectors[chunks_at] @ answer_vector).max())
            context_words = set().union(*(content_words(text) for text in contexts))
            answer_words = content_words(item.answer)
            if answer_words:
                unsupported = len(answer_words - context_words) / len(answer_words)
                values["unsupported_token_fraction"] = unsupported
            values["sentence_novelty_mean"] = _sentence_novelty(
                answer_sentences,
                context_sentences or contexts,
                similarity[:, len(contexts) :] if context_sentences else similarity,
            )
            values["novel_trigram_mean"] = _novel_trigram_mean(answer_sentences, contexts)
        results.append(RiskFeatures(values, answer_sentences, support))
    return results


def _sentence_novelty(
    answer_sentences: Sequence[str], context_units: Sequence[str], similarity: np.ndarray
) -> float:
    shares = []
    for row, sentence in enumerate(answer_sentences):
        words = content_words(sentence)
        if not words:
            continue
        best = np.argsort(-similarity[row])[:2]
        nearby = set().union(*(content_words(context_units[int(index)]) for index in best))
        shares.append(len(words - nearby) / len(words))
    return float(np.mean(shares)) if shares else 0.0


def _novel_trigram_mean(answer_sentences: Sequence[str], contexts: Sequence[str]) -> float:
    context_trigrams = set().union(*(word_trigrams(text) for text in contexts))
    shares = []
    for sentence in answer_sentences:
        trigrams = word_trigrams(sentence)
        if trigrams:
            shares.append(
                sum(trigram not in context_trigrams for trigram in trigrams) / len(trigrams)
            )
    return float(np.mean(shares)) if shares else 0.0
