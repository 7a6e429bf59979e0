"""Fuzz: the JSON and msgpack messages between stages, and the sinks' row building (issue #10).

Contract: ``decode_*`` either returns the typed record or raises ``msgspec.DecodeError``
(``ValidationError`` is a subclass), whatever the bytes. Both ClickHouse sinks wrap decoding
*and* row building in ``except Exception`` and dead-letter the message with the problem as the
reason (``"not a normalized span: ..."``, ``"undecodable record: ..."``). That would also hide a
bug in the row code behind "undecodable", so the fuzz is stricter: a decodable record may be
refused only for its values (``ValueError``, such as a time outside its column's range, or
``ArithmeticError`` such as ``decimal``'s ``InvalidOperation``), with a non-empty reason; never
a ``KeyError``, ``TypeError``, ``AttributeError``, ``RecursionError`` or the ``OSError`` of
``datetime.fromtimestamp`` beyond the platform's range (times are checked first).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import msgspec
from hypothesis import example, given

from llmtap.schemas.aggregates import (
    Aggregate,
    AlertEvent,
    decode_aggregates,
    decode_alert,
    encode_aggregates,
    encode_alert,
)
from llmtap.schemas.drift import DriftResult, decode_drift_result, encode_drift_result
from llmtap.schemas.llm_span import (
    Cost,
    LlmSpan,
    Message,
    RetrievedDocument,
    TokenUsage,
    decode_span,
    encode_span,
)
from llmtap.schemas.scores import (
    SpanEmbedding,
    SpanScore,
    decode_embedding,
    decode_score,
    encode_embedding,
    encode_score,
)
from llmtap.sinks.clickhouse.derived import (
    aggregate_rows,
    alert_rows,
    embedding_rows,
    score_rows,
)
from llmtap.sinks.clickhouse.drift_rows import drift_rows
from llmtap.sinks.clickhouse.rows import SPAN_COLUMNS, span_row
from tests.unit.fuzz.hostile import (
    FUZZ_SETTINGS,
    json_value,
    mutate,
    nested_json,
    random_bytes,
    seeded,
)

SPAN = LlmSpan(
    trace_id="01" * 16,
    span_id="02" * 8,
    start_time_unix_nano=1_767_225_600_000_000_000,
    end_time_unix_nano=1_767_225_601_000_000_000,
    usage=TokenUsage(input=10, output=5),
    cost=Cost(priced=True, price_version="v1", total="0.000123"),
    input_messages=[Message(role="user", content="hi")],
    retrieved_documents=[RetrievedDocument(content="doc", score=0.5)],
    attributes={"a": "b"},
)
AGGREGATE = Aggregate(
    window_start=1_767_225_600, window_seconds=60, tenant="acme", requests=3, cost_total="0.1"
)
ALERT = AlertEvent(
    event_id="e", fingerprint="f", rule_id="r", severity="warning", state="firing", fired_at_ms=1
)
SCORE = SpanScore(
    timestamp=1,
    tenant="t",
    trace_id="01" * 16,
    span_id="02" * 8,
    service_name="s",
    risk_score=0.5,
    support_min=0.1,
    support_mean=0.2,
    answer_context_similarity=0.3,
    answer_question_similarity=0.4,
    has_context=True,
    injection_score=0.0,
    injection_flag=False,
    model_version="m",
)
EMBEDDING = SpanEmbedding(
    timestamp=1,
    tenant="t",
    trace_id="01" * 16,
    span_id="02" * 8,
    kind="prompt",
    model="m",
    content_hash="h",
    vector=[0.1, 0.2],
)
DRIFT = DriftResult(
    window_start=1_767_225_600,
    window_end=1_767_225_660,
    feature="input_tokens",
    detector="psi",
    statistic=0.3,
    threshold=0.2,
    drifted=True,
    reference_size=10,
    current_size=10,
    version=1,
)


def _span_rows(value: bytes) -> list[tuple[str, tuple[object, ...]]]:
    """What the span sink does per message (decode, then one row)."""
    row = span_row(decode_span(value), "normalized", 0, 0)
    assert len(row) == len(SPAN_COLUMNS)
    return [("llm_spans", row)]


# (decoder, row builder, a valid record, its encoder, msgpack?) per message type
TARGETS: dict[
    str, tuple[Callable[[bytes], Any], Callable[[bytes], Any], Any, Callable[[Any], bytes]]
] = {
    "span": (decode_span, _span_rows, SPAN, encode_span),
    "aggregates": (decode_aggregates, aggregate_rows, [AGGREGATE], encode_aggregates),
    "alert": (decode_alert, alert_rows, ALERT, encode_alert),
    "score": (decode_score, score_rows, SCORE, encode_score),
    "embedding": (decode_embedding, embedding_rows, EMBEDDING, encode_embedding),
    "drift": (decode_drift_result, drift_rows, DRIFT, encode_drift_result),
}
# Raw JSON values to put in a field: wrong types, out-of-range numbers, non-JSON numbers, depth.
_FIELD_TEXTS = (
    "NaN",
    "Infinity",
    "-1",
    "1e400",
    "1e308",
    "-1e308",
    "18446744073709551616",
    "-9223372036854775809",
    "1" + "0" * 5_000,
    "99999999999999999999",
    "9223372036854775807",
    '"NaN"',
    '"Infinity"',
    '"-0"',
    '"1e999999999"',
    '"sNaN"',
    '"not a number"',
    '"\\ud800"',
    "true",
    "null",
    "[]",
    "{}",
    '{"a": 1}',
    '"' + "x" * 70_000 + '"',
    nested_json(10_000),
    nested_json(10_000, "{"),
)


def hostile_fields(rng: random.Random, name: str) -> bytes:
    """A valid record of ``name`` as JSON, with hostile values in some of its fields (msgpack
    targets get the same document as msgpack when it is valid JSON)."""
    _, _, record, _ = TARGETS[name]
    document = msgspec.to_builtins(record)
    item = document[0] if isinstance(document, list) else document
    fields = _fields_of(record)
    marked = dict(item)
    replacements = {}
    for field in rng.sample(fields, rng.randrange(1, 4)):
        if rng.random() < 0.6:
            replacements[field] = rng.choice(_FIELD_TEXTS)
        else:
            replacements[field] = json.dumps(json_value(rng), allow_nan=True)
        marked[field] = f"@@{field}@@"
    text = json.dumps(marked)
    for field, raw in replacements.items():
        text = text.replace(f'"@@{field}@@"', raw)
    if isinstance(document, list):
        text = f"[{text}]"
    if name == "aggregates":
        try:
            return msgspec.msgpack.encode(msgspec.json.decode(text))
        except (msgspec.DecodeError, OverflowError, RecursionError):
            return text.encode()
    return text.encode()


def _fields_of(record: Any) -> list[str]:
    record = record[0] if isinstance(record, list) else record
    return list(type(record).__struct_fields__)


def hostile_message(rng: random.Random) -> tuple[str, bytes]:
    name = rng.choice(sorted(TARGETS))
    _, _, record, encoder = TARGETS[name]
    roll = rng.random()
    if roll < 0.15:
        value = random_bytes(rng)
    elif roll < 0.4:
        value = mutate(rng, encoder(record))
    elif roll < 0.97:
        value = hostile_fields(rng, name)
    else:
        value = nested_json(rng.choice((100, 10_000, 100_000))).encode()
    return name, value


@FUZZ_SETTINGS
@given(seeded(hostile_message))
@example(("aggregates", msgspec.msgpack.encode([{"window_start": 10**18, "window_seconds": 60}])))
@example(
    (
        "aggregates",
        msgspec.msgpack.encode([{"window_start": 0, "window_seconds": 60, "cost_total": "NaN"}]),
    )
)
@example(
    (
        "aggregates",
        msgspec.msgpack.encode([{"window_start": 0, "window_seconds": 60, "cost_total": "x"}]),
    )
)
@example(
    (
        "alert",
        b'{"event_id":"e","fingerprint":"f","rule_id":"r","severity":"s","state":"firing","fired_at_ms":9223372036854775807}',
    )
)
@example(("drift", json.dumps({**msgspec.to_builtins(DRIFT), "window_start": -(2**63)}).encode()))
@example(
    (
        "span",
        b'{"trace_id":"a","span_id":"b","attributes":' + nested_json(10_000, "{").encode() + b"}",
    )
)
# unknown fields are skipped recursively: RecursionError escaped decode_span (consumers crashed)
@example(
    ("span", b'{"trace_id":"a","span_id":"b","request":' + nested_json(10_000, "{").encode() + b"}")
)
@example(("drift", b'{"x":' + nested_json(100_000).encode() + b"}"))
# invalid UTF-8 in a string: UnicodeDecodeError escaped the decoders (consumers crashed)
@example(
    (
        "alert",
        b'{"event_id":"\xff\xfe","fingerprint":"f","rule_id":"r","severity":"s","state":"s","fired_at_ms":1}',
    )
)
@example(("span", encode_span(SPAN).replace(b"doc", b"\xc3\x28")))
@example(("aggregates", encode_aggregates([AGGREGATE]).replace(b"acme", b"\xed\xa0\x80a")))
def test_messages_decode_or_dead_letter_with_a_reason(case: tuple[str, bytes]) -> None:
    name, value = case
    decoder, rows, _, _ = TARGETS[name]
    refusal = _raised(lambda: decoder(value), msgspec.DecodeError)
    if refusal is not None:
        assert str(refusal)
        return
    built: list[tuple[str, tuple[object, ...]]] = []
    # Refused for its values: dead-lettered with the reason.
    problem = _raised(lambda: built.extend(rows(value)), (ValueError, ArithmeticError))
    if problem is not None:
        assert str(problem)
        assert not isinstance(problem, RecursionError | UnicodeError)
        return
    assert built
    assert all(len(row) for _, row in built)


def _raised(
    call: Callable[[], object], errors: type[Exception] | tuple[type[Exception], ...]
) -> Exception | None:
    """The error ``call`` raised among ``errors`` (others propagate), or None."""
    try:
        call()
    except errors as error:
        return error
    return None
