"""The sink's JSON path (ClickHouse parses the spans) stores what the row path stores.

Both paths run on the real embedded engine: generated spans, edge values included, go through
``span_row`` + clickhouse-connect into one table and through ``span_json`` into another; the
tables must hold identical rows. Values the row path refuses must make the JSON insert fail
(the sink then inserts that batch through the row path, which dead-letters the bad spans).
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llmtap.schemas.llm_span import (
    Cost,
    LlmSpan,
    Message,
    RequestParameters,
    RetrievedDocument,
    TokenUsage,
    ToolCall,
    encode_span,
)
from llmtap.sinks.clickhouse.migrations import Migrator
from llmtap.sinks.clickhouse.rows import SPAN_COLUMNS, span_row
from llmtap.sinks.clickhouse.sink import _marks_bad_json, looks_like_bad_data
from llmtap.sinks.clickhouse.span_json import SpanJsonInserter, span_json_line

pytestmark = pytest.mark.integration

_NOW = time.time_ns()  # recent times: older rows fall under the table's 30-day TTL
_text = st.text(max_size=24)
_optional_text = st.none() | _text
_count = st.none() | st.integers(0, 2**63 - 1)
_float = st.none() | st.floats(allow_nan=False, allow_infinity=False)
_plain_money = st.none() | st.decimals(
    min_value=Decimal(0), max_value=Decimal(10**12), places=12
).map(lambda amount: f"{amount:f}")
# with forms the JSON path leaves to the row path: more digits, exponents, signs, odd text
_any_money = (
    _plain_money
    | st.decimals(min_value=-(10**30), max_value=10**30, places=15, allow_nan=False).map(str)
    | st.sampled_from(["1e3", "+1", " 1", "1.", ".5", "abc", "", "1" * 27])
)


def _pick(*values: object) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


def _costs(money: st.SearchStrategy[str | None]) -> st.SearchStrategy[Cost | None]:
    return st.none() | st.builds(
        Cost,
        priced=st.booleans(),
        price_version=_text,
        currency=_pick("USD", "EUR"),
        total=money,
        input=money,
        output=money,
        cache_read=money,
        cache_write=money,
        reasoning=money,
        price_id=_optional_text,
        tier=_optional_text,
        unpriced_reason=_optional_text,
    )


_messages = st.lists(
    st.builds(
        Message,
        role=_pick("user", "assistant", "system", "tool"),
        content=_optional_text,
        tool_calls=st.lists(
            st.builds(ToolCall, name=_text, id=_optional_text, arguments=_optional_text),
            max_size=2,
        ),
        finish_reason=_optional_text,
    ),
    max_size=3,
)


@st.composite
def spans(draw: st.DrawFn, index: int, odd_money: bool) -> LlmSpan:
    start = _NOW - draw(st.integers(0, 86_400 * 10**9))
    return LlmSpan(
        trace_id=draw(_text),
        span_id=f"{index:016x}",  # unique: both tables are ReplacingMergeTree on the span id
        parent_span_id=draw(_optional_text),
        name=draw(_text),
        kind=draw(_pick("internal", "client", "server")),
        start_time_unix_nano=start,
        end_time_unix_nano=start + draw(st.integers(-(10**12), 10**13)),
        status=draw(_pick("unset", "ok", "error", "")),
        status_message=draw(_optional_text),
        service_name=draw(_pick("unknown_service", "checkout", "")),
        service_version=draw(_optional_text),
        environment=draw(_optional_text),
        tenant=draw(_pick("default", "acme", "")),
        scope_name=draw(_optional_text),
        received_at_unix_nano=draw(st.none() | st.just(start + 10**9)),
        span_type=draw(_pick("other", "llm", "embedding")),
        convention=draw(_pick("none", "otel_genai", "openinference")),
        provider=draw(_optional_text),
        operation=draw(_optional_text),
        request_model=draw(_optional_text),
        response_model=draw(_optional_text),
        response_id=draw(_optional_text),
        request=RequestParameters(
            temperature=draw(_float),
            top_p=draw(_float),
            top_k=draw(_float),
            max_tokens=draw(st.none() | st.integers(0, 2**40)),
            stream=draw(st.none() | st.booleans()),
            stop_sequences=draw(st.lists(_text, max_size=2)),
        ),
        finish_reasons=draw(st.lists(_text, max_size=3)),
        usage=TokenUsage(
            input=draw(_count),
            output=draw(_count),
            cache_read=draw(_count),
            cache_write=draw(_count),
            reasoning=draw(_count),
        ),
        cost=draw(_costs(_any_money if odd_money else _plain_money)),
        time_to_first_token_ms=draw(_float),
        user_id=draw(_optional_text),
        session_id=draw(_optional_text),
        system_instructions=draw(_optional_text),
        input_messages=draw(_messages),
        output_messages=draw(_messages),
        prompt_text=draw(_optional_text),
        completion_text=draw(_optional_text),
        retrieved_documents=draw(
            st.lists(
                st.builds(
                    RetrievedDocument, id=_optional_text, content=_optional_text, score=_float
                ),
                max_size=2,
            )
        ),
        tool_calls=draw(st.lists(st.builds(ToolCall, name=_text), max_size=2)),
        prompt_template_id=draw(_optional_text),
        prompt_template_version=draw(_optional_text),
        prompt_template_variables=draw(st.dictionaries(_text, _text, max_size=2)),
        error_type=draw(_optional_text),
        error_message=draw(_optional_text),
        attributes=draw(st.dictionaries(_text, _text, max_size=4)),
        resource_attributes=draw(st.dictionaries(_text, _text, max_size=2)),
    )


@pytest.fixture
def tables(clickhouse_client: Any, clickhouse_target: Any, tmp_path: Path) -> Any:
    Migrator(clickhouse_client, clickhouse_target.database).apply()
    clickhouse_client.command("CREATE TABLE llm_spans_rows AS llm_spans")
    return clickhouse_client, SpanJsonInserter("llm_spans", tmp_path / "batches")


def _stored(client: Any, table: str) -> list[tuple[object, ...]]:
    columns = [column for column in SPAN_COLUMNS if column != "kafka_topic"]
    return [
        tuple(row)
        for row in client.query(
            f"SELECT {', '.join(columns)} FROM {table} ORDER BY kafka_offset"  # noqa: S608
        ).result_rows
    ]


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_json_path_stores_the_same_rows_as_the_row_path(tables: Any, data: st.DataObject) -> None:
    """Where the JSON path stores a batch, the row path stores the same rows; where it refuses
    one, the sink falls back to the row path, so refusing more is allowed, storing more not."""
    client, inserter = tables
    odd_money = data.draw(st.booleans())
    batch = [data.draw(spans(index, odd_money)) for index in range(data.draw(st.integers(1, 8)))]
    client.command("TRUNCATE TABLE llm_spans")
    client.command("TRUNCATE TABLE llm_spans_rows")
    refused_as_rows = _row_path_refuses(client, batch, partition=1)
    lines = [span_json_line(encode_span(span), 1, offset) for offset, span in enumerate(batch)]
    try:
        inserter.insert(client, lines, "topic", f"token-{time.monotonic_ns()}")
    except DatabaseError as refused:
        assert looks_like_bad_data(refused) or _marks_bad_json(refused), refused  # noqa: PT017
        event("JSON path refused: the sink inserts the batch as rows")
        return
    assert not refused_as_rows
    assert _stored(client, "llm_spans") == _stored(client, "llm_spans_rows")
    assert client.query("SELECT DISTINCT kafka_topic FROM llm_spans").result_rows == [("topic",)]
    event("JSON path stored the batch")


def _spans_with(**changes: Any) -> list[LlmSpan]:
    good = LlmSpan(
        trace_id="ab" * 16, span_id="cd" * 8, start_time_unix_nano=_NOW, end_time_unix_nano=_NOW
    )
    bad = LlmSpan(**{**{f: getattr(good, f) for f in good.__struct_fields__}, **changes})
    return [good, bad]


def _row_path_refuses(client: Any, batch: list[LlmSpan], partition: int = 0) -> bool:
    try:
        rows = [span_row(span, "topic", partition, offset) for offset, span in enumerate(batch)]
        client.insert(
            "llm_spans_rows", list(zip(*rows, strict=True)), SPAN_COLUMNS, column_oriented=True
        )
    except Exception as problem:
        return looks_like_bad_data(problem)
    return False


def _json_lines(batch: list[LlmSpan]) -> list[bytes]:
    return [span_json_line(encode_span(span), 0, offset) for offset, span in enumerate(batch)]


@pytest.mark.parametrize(
    "changes",
    [
        {"start_time_unix_nano": -3_000_000_000 * 10**9},  # before 1900
        {"end_time_unix_nano": -3_000_000_000 * 10**9},
        {"received_at_unix_nano": -3_000_000_000 * 10**9},
        {"usage": TokenUsage(input=-1)},
        {"usage": TokenUsage(reasoning=-5)},
        {"request": RequestParameters(max_tokens=-1)},
        {"cost": Cost(priced=True, price_version="v", total="not a number")},
    ],
    ids=["start", "end", "received", "input", "reasoning", "max_tokens", "cost"],
)
def test_what_the_row_path_refuses_fails_the_json_insert(
    tables: Any, changes: dict[str, Any]
) -> None:
    client, inserter = tables
    batch = _spans_with(**changes)
    assert _row_path_refuses(client, batch)
    with pytest.raises(DatabaseError) as refused:
        inserter.insert(client, _json_lines(batch), "topic", "token")
    assert looks_like_bad_data(refused.value) or _marks_bad_json(refused.value), refused.value
    assert client.query("SELECT count() FROM llm_spans").result_rows[0][0] == 0  # atomic


def test_a_message_cannot_choose_its_stored_offset(tables: Any) -> None:
    client, inserter = tables
    (span, _) = _spans_with()
    forged = encode_span(span)[:-1] + b',"__llmtap_kafka_offset":0}'
    with pytest.raises(DatabaseError, match="Duplicate field") as refused:
        inserter.insert(client, [span_json_line(forged, 0, 77)], "topic", "token")
    assert _marks_bad_json(refused.value), refused.value
