"""Normalized spans into ``llm_spans`` parsed by ClickHouse itself: the sink's fast path.

The sink's Python path decodes every message, builds a 64-value row and has clickhouse-connect
serialize the columns: about 15 µs of single-threaded Python per span, more than ClickHouse
needs to store it. Here the sink checks each message with msgspec (so what is not a normalized
span is still dead-lettered with msgspec's reason) and hands the messages' own JSON to the
embedded engine, which parses them in C++ (in parallel) and computes the columns with the
``SELECT`` below: the same mapping as ``rows.span_row``, in SQL.

Where ``span_row`` refuses a value (a time outside the column's range, a negative count), the
``SELECT`` fails the insert with ``throwIf``, and the sink inserts that batch through the
Python path instead, which dead-letters exactly the offending spans. A test checks that both
paths store the same rows for generated spans, edge values included.

Each line is the message with the Kafka partition and offset appended as two more fields; a
message that already carries fields of those names makes ClickHouse refuse the batch (duplicate
field), which also falls back to the Python path, so a message cannot choose its stored offset.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from llmtap.schemas.llm_span import LlmSpan
from llmtap.sinks.clickhouse.rows import DATETIME64_9_NANOS, INSERT_SETTINGS, SPAN_COLUMNS

_PARTITION = "__llmtap_kafka_partition"
_OFFSET = "__llmtap_kafka_offset"


def _default(field: str) -> str:
    """The span model's default for a string field, as an SQL literal (omitted from the JSON)."""
    for info in msgspec.structs.fields(LlmSpan):
        if info.name == field:
            value = info.default
            if not isinstance(value, str):
                raise TypeError(f"LlmSpan.{field} has no string default")
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise KeyError(field)


# Fields the JSON may carry; absent ones take these types' defaults (NULL for Nullable, which
# the SELECT turns into the span model's own default). Unknown fields are skipped.
STRUCTURE = ", ".join(
    [
        "trace_id String",
        "span_id String",
        "parent_span_id Nullable(String)",
        "name Nullable(String)",
        "kind Nullable(String)",
        "start_time_unix_nano Nullable(Int64)",
        "end_time_unix_nano Nullable(Int64)",
        "status Nullable(String)",
        "status_message Nullable(String)",
        "service_name Nullable(String)",
        "service_version Nullable(String)",
        "environment Nullable(String)",
        "tenant Nullable(String)",
        "scope_name Nullable(String)",
        "scope_version Nullable(String)",
        "received_at_unix_nano Nullable(Int64)",
        "span_type Nullable(String)",
        "convention Nullable(String)",
        "provider Nullable(String)",
        "operation Nullable(String)",
        "request_model Nullable(String)",
        "response_model Nullable(String)",
        "response_id Nullable(String)",
        "request Tuple(temperature Nullable(Float64), top_p Nullable(Float64), "
        "max_tokens Nullable(Int64), stream Nullable(Bool))",
        "finish_reasons Array(String)",
        # Counts as the columns' own type: a negative one fails the parse (and the batch goes
        # through the row path). Cost stays text: the engine's Decimal parse of text with more
        # digits than the column holds differs from the row path's (the differential test
        # found it), so _money lets only plain decimal text through.
        "usage Tuple(input Nullable(UInt64), output Nullable(UInt64), "
        "cache_read Nullable(UInt64), cache_write Nullable(UInt64), reasoning Nullable(UInt64))",
        "cost Tuple(priced Nullable(Bool), price_version Nullable(String), "
        "currency Nullable(String), total Nullable(String), input Nullable(String), "
        "output Nullable(String), cache_read Nullable(String), cache_write Nullable(String), "
        "reasoning Nullable(String), price_id Nullable(String), unpriced_reason Nullable(String))",
        "time_to_first_token_ms Nullable(Float64)",
        "user_id Nullable(String)",
        "session_id Nullable(String)",
        "system_instructions Nullable(String)",
        "input_messages String",
        "output_messages String",
        "prompt_text Nullable(String)",
        "completion_text Nullable(String)",
        "retrieved_documents String",
        "tool_calls String",
        "prompt_template_id Nullable(String)",
        "prompt_template_version Nullable(String)",
        "error_type Nullable(String)",
        "error_message Nullable(String)",
        "attributes Map(String, String)",
        "resource_attributes Map(String, String)",
        f"{_PARTITION} UInt16",
        f"{_OFFSET} UInt64",
    ]
)

_LOW = DATETIME64_9_NANOS.low


def _time(field: str, default: str = "0") -> str:
    value = f"ifNull({field}, {default})"
    return (
        f"fromUnixTimestamp64Nano({value} + throwIf({value} < {_LOW}, "
        f"'{field} is outside the DateTime64(9) range'))"
    )


# Plain decimal text that Decimal(38, 12) holds exactly; anything else (an exponent, more
# fraction digits, a sign or space the row path would still read) fails over to the row path.
_PLAIN_DECIMAL = r"^-?[0-9]{1,26}(\\.[0-9]{1,12})?$"


def _money(field: str) -> str:
    return (
        f"toDecimal128OrNull({field}, 12) + throwIf(ifNull(NOT match({field}, "
        f"'{_PLAIN_DECIMAL}'), 0), '{field} is not plain decimal text')"
    )


# One expression per SPAN_COLUMNS entry, in its order (checked at import).
_SELECT: dict[str, str] = {
    "timestamp": _time("start_time_unix_nano"),
    "end_timestamp": _time("end_time_unix_nano"),
    "duration_ms": "greatest(0, toInt128(ifNull(end_time_unix_nano, 0)) - "
    "toInt128(ifNull(start_time_unix_nano, 0))) / 1e6",
    "trace_id": "trace_id",
    "span_id": "span_id",
    "parent_span_id": "ifNull(parent_span_id, '')",
    "name": f"ifNull(name, {_default('name')})",
    "kind": f"ifNull(kind, {_default('kind')})",
    "status": f"ifNull(status, {_default('status')})",
    "status_message": "ifNull(status_message, '')",
    "service_name": f"ifNull(service_name, {_default('service_name')})",
    "service_version": "ifNull(service_version, '')",
    "environment": "ifNull(environment, '')",
    "tenant": f"ifNull(tenant, {_default('tenant')})",
    "scope_name": "ifNull(scope_name, '')",
    "scope_version": "ifNull(scope_version, '')",
    "span_type": f"ifNull(span_type, {_default('span_type')})",
    "convention": f"ifNull(convention, {_default('convention')})",
    "provider": "ifNull(provider, '')",
    "operation": "ifNull(operation, '')",
    "request_model": "ifNull(request_model, '')",
    "response_model": "ifNull(response_model, '')",
    "response_id": "ifNull(response_id, '')",
    "temperature": "request.temperature",
    "top_p": "request.top_p",
    "max_tokens": "if(request.max_tokens < 4294967296, "
    "request.max_tokens + throwIf(ifNull(request.max_tokens < 0, 0), 'max_tokens is negative'), "
    "NULL)",
    "stream": "toUInt8(request.stream)",
    "finish_reasons": "finish_reasons",
    "input_tokens": "usage.input",
    "output_tokens": "usage.output",
    "cache_read_tokens": "usage.cache_read",
    "cache_write_tokens": "usage.cache_write",
    "reasoning_tokens": "usage.reasoning",
    "priced": "toUInt8(ifNull(cost.priced, false))",
    "cost_total": _money("cost.total"),
    "cost_input": _money("cost.input"),
    "cost_output": _money("cost.output"),
    "cost_cache_read": _money("cost.cache_read"),
    "cost_cache_write": _money("cost.cache_write"),
    "cost_reasoning": _money("cost.reasoning"),
    # cost.priced is present whenever the span has a cost (it has no default)
    "currency": "if(isNull(cost.priced), '', ifNull(cost.currency, 'USD'))",
    "price_version": "ifNull(cost.price_version, '')",
    "price_id": "ifNull(cost.price_id, '')",
    "unpriced_reason": "ifNull(cost.unpriced_reason, '')",
    "time_to_first_token_ms": "time_to_first_token_ms",
    "user_id": "ifNull(user_id, '')",
    "session_id": "ifNull(session_id, '')",
    "prompt_template_id": "ifNull(prompt_template_id, '')",
    "prompt_template_version": "ifNull(prompt_template_version, '')",
    "system_instructions": "ifNull(system_instructions, '')",
    "prompt_text": "ifNull(prompt_text, '')",
    "completion_text": "ifNull(completion_text, '')",
    "input_messages": "input_messages",
    "output_messages": "output_messages",
    "retrieved_documents": "retrieved_documents",
    "tool_calls": "tool_calls",
    "error_type": "ifNull(error_type, '')",
    "error_message": "ifNull(error_message, '')",
    "attributes": "attributes",
    "resource_attributes": "resource_attributes",
    "received_at": f"if(isNull(received_at_unix_nano), NULL, {_time('received_at_unix_nano')})",
    "kafka_topic": "{topic:String}",
    "kafka_partition": _PARTITION,
    "kafka_offset": _OFFSET,
}
if tuple(_SELECT) != SPAN_COLUMNS:  # pragma: no cover - a programming error, caught at import
    raise RuntimeError("span_json's SELECT does not follow SPAN_COLUMNS")

# Settings ride in the statement: passed apart, the embedded backend runs a SET and a restore
# per setting around the insert (about 7 ms an insert, a tenth of a 10,000-span one).
_SETTINGS_CLAUSE = ", ".join(
    [
        "input_format_json_read_arrays_as_strings = 1",  # messages, documents: kept JSON text
        "input_format_skip_unknown_fields = 1",
        "input_format_json_read_numbers_as_strings = 0",  # a number is not a string: refuse it
        "input_format_allow_errors_num = 0",
        # A batch is parsed on the insert's own thread: parallel parsing's segmenting and
        # worker threads made a 10,000-span insert ~17 % slower on 2 cores, where the sink's
        # consuming thread and the merges want the other core (no change at 100,000 spans).
        "input_format_parallel_parsing = 0",
        *(f"{name} = {int(value)}" for name, value in INSERT_SETTINGS.items()),
        "insert_deduplication_token = {token:String}",
        # one block, so one part per insert: atomic, and deduplicated as a whole
        "max_insert_block_size = {block:UInt64}",
        "min_insert_block_size_rows = {block:UInt64}",
        "min_insert_block_size_bytes = 0",
    ]
)

_POSITION = b',"' + _PARTITION.encode() + b'":'
_OFFSET_KEY = b',"' + _OFFSET.encode() + b'":'


def span_json_line(value: bytes, partition: int, offset: int) -> bytes:
    """The message (one JSON object, already checked by msgspec) with its Kafka position."""
    return b"%s%s%d%s%d}" % (value.rstrip()[:-1], _POSITION, partition, _OFFSET_KEY, offset)


def split_span_json_line(line: bytes) -> tuple[bytes, int, int]:
    """The message, partition and offset a ``span_json_line`` was made of."""
    cut = line.rindex(_POSITION)
    partition, offset = line[cut + len(_POSITION) : -1].split(_OFFSET_KEY)
    return line[:cut] + b"}", int(partition), int(offset)


_STALE_SECONDS = 600  # a batch file lives as long as its insert: seconds


class SpanJsonInserter:
    """Inserts span JSON lines into ``llm_spans`` through a file the embedded engine reads."""

    def __init__(self, table: str, work_dir: Path) -> None:
        self._insert = (
            f"INSERT INTO {table} ({', '.join(SPAN_COLUMNS)}) "  # noqa: S608 (constants)
            f"SELECT {', '.join(_SELECT.values())} "
            "FROM file({path:String}, 'JSONEachRow', {structure:String}) "
            f"SETTINGS {_SETTINGS_CLAUSE}"
        )
        self._work_dir = work_dir
        self._remove_stale_files()

    def _remove_stale_files(self) -> None:
        """Files a killed sink left behind (it was stopped between writing and removing)."""
        now = time.time()
        with contextlib.suppress(OSError):
            for stale in self._work_dir.glob("spans-*.jsonl"):
                with contextlib.suppress(OSError):
                    if now - stale.stat().st_mtime > _STALE_SECONDS:
                        stale.unlink()

    def insert(self, client: Any, lines: list[bytes], topic: str, token: str) -> None:
        try:
            self._work_dir.mkdir(parents=True, exist_ok=True)
            handle, path = tempfile.mkstemp(prefix="spans-", suffix=".jsonl", dir=self._work_dir)
        except OSError as problem:
            raise OSError(
                problem.errno, f"cannot write a batch file in {self._work_dir}: {problem.strerror}"
            ) from problem
        try:
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(b"\n".join(lines))
            except OSError as problem:
                raise OSError(
                    problem.errno, f"cannot write the batch file {path}: {problem.strerror}"
                ) from problem
            client.command(
                self._insert,
                parameters={
                    "topic": topic,
                    "path": path,
                    "structure": STRUCTURE,
                    "token": token,
                    "block": len(lines) + 1,
                },
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
