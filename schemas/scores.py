"""Risk scores and embeddings of LLM spans, as the risk stage writes them to Kafka.

Both are JSON objects (msgspec, typed on both ends), keyed by the hex trace id like the spans
they describe, and land in ClickHouse's ``span_scores`` and ``span_embeddings`` tables
(``schemas/clickhouse/0001_core.sql``, ``0003_risk.sql``); field names are the column names.
"""

from __future__ import annotations

import msgspec

from llmtap.schemas.llm_span import malformed

SCORE_SCHEMA_VERSION = 1


class SpanScore(msgspec.Struct, kw_only=True):
    """The hallucination-risk and prompt-injection scores of one LLM span.

    ``risk_score`` is a ranking (higher = less supported by its context), not a probability.
    ``sampling_weight`` is 1 / the probability that the span was scored, so sums and means
    weighted by it estimate the whole traffic even when the stage sampled under load.
    """

    schema_version: int = SCORE_SCHEMA_VERSION
    timestamp: int  # the scored span's start time, unix nanoseconds
    tenant: str
    trace_id: str
    span_id: str
    service_name: str
    request_model: str = ""
    prompt_template_version: str = ""
    risk_score: float
    support_min: float
    support_mean: float
    answer_context_similarity: float
    answer_question_similarity: float
    has_context: bool
    injection_score: float
    injection_flag: bool
    sampling_weight: float = 1.0
    model_version: str
    details: str = "{}"  # JSON text: features, per-sentence support, injection reasons


class SpanEmbedding(msgspec.Struct, kw_only=True):
    """One embedded text of a span: its prompt, its completion or one retrieved chunk."""

    timestamp: int  # the span's start time, unix nanoseconds
    tenant: str
    trace_id: str
    span_id: str
    kind: str  # prompt | completion | context
    model: str
    content_hash: str
    vector: list[float]


_encoder = msgspec.json.Encoder()
_score_decoder = msgspec.json.Decoder(SpanScore)
_embedding_decoder = msgspec.json.Decoder(SpanEmbedding)


def encode_score(score: SpanScore) -> bytes:
    return _encoder.encode(score)


def decode_score(value: bytes) -> SpanScore:
    """Raises msgspec.ValidationError / DecodeError on a value that is not a SpanScore."""
    try:
        return _score_decoder.decode(value)
    except (UnicodeDecodeError, RecursionError) as error:
        raise malformed(error) from None


def encode_embedding(embedding: SpanEmbedding) -> bytes:
    return _encoder.encode(embedding)


def decode_embedding(value: bytes) -> SpanEmbedding:
    """Raises msgspec.ValidationError / DecodeError on a value that is not a SpanEmbedding."""
    try:
        return _embedding_decoder.decode(value)
    except (UnicodeDecodeError, RecursionError) as error:
        raise malformed(error) from None


def score_key(score: SpanScore | SpanEmbedding) -> bytes:
    return score.trace_id.encode("ascii")
