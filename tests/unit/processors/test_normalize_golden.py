"""Golden files: spans that real instrumentation libraries emitted, and what llmtap makes of them.

``tests/golden/<case>/input.json`` holds an OTLP/JSON trace export (and ``logs.json``, where the
library emitted them, its log records, joined to their spans as the stage does); ``expected.jsonl``
the normalized spans, one JSON object per line. ``pytest --update-golden`` rewrites the expected
files from the current code; review the diff before committing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtap.processors.normalize.genai_events import join_file
from llmtap.processors.normalize.normalizer import Normalizer
from llmtap.processors.pricing import PriceTable
from llmtap.schemas.llm_span import decode_span, encode_span
from llmtap.schemas.otlp import decode_traces_json

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
CASES = sorted(path.name for path in GOLDEN.iterdir() if (path / "input.json").is_file())


@pytest.fixture(scope="module")
def normalizer() -> Normalizer:
    return Normalizer(PriceTable.load().price)


def normalized_lines(normalizer: Normalizer, case: str) -> list[str]:
    request = decode_traces_json((GOLDEN / case / "input.json").read_bytes())
    spans = normalizer.normalize_request(request, tenant="golden")
    logs = GOLDEN / case / "logs.json"
    if logs.is_file():
        spans, unmatched = join_file(spans, logs.read_bytes(), tenant="golden")
        assert unmatched == [], f"{case}: log records without their span: {unmatched}"
    spans.sort(key=lambda span: (span.start_time_unix_nano, span.span_id))
    return [
        json.dumps(json.loads(encode_span(span)), sort_keys=True, ensure_ascii=False)
        for span in spans
    ]


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 10, CASES


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, normalizer: Normalizer, request: pytest.FixtureRequest) -> None:
    lines = normalized_lines(normalizer, case)
    expected_path = GOLDEN / case / "expected.jsonl"
    if request.config.getoption("--update-golden"):
        expected_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    assert expected_path.is_file(), f"no {expected_path}; run pytest --update-golden and review it"
    expected = expected_path.read_text(encoding="utf-8").splitlines()
    assert lines == expected
    for line in expected:
        decode_span(line.encode())  # every expected line is a valid LlmSpan


# Content-only fields: what the same calls must yield whether the library put the messages on
# the span or in event log records.
CONTENT_FIELDS = (
    "input_messages",
    "output_messages",
    "prompt_text",
    "completion_text",
    "system_instructions",
    "tool_calls",
    "finish_reasons",
)


@pytest.mark.parametrize(
    ("events_case", "span_case"),
    [
        ("openai_v2_chat_events_latest", "openai_v2_chat_latest"),
        ("openai_v2_tool_calls_events_latest", "openai_v2_tool_calls_latest"),
        ("openai_v2_tool_calls_events", "openai_v2_tool_calls_latest"),
        ("openai_v2_tool_calls_events_2_1", "openai_v2_tool_calls_latest"),
        ("openai_v2_chat", "openai_v2_chat_latest"),
    ],
)
def test_event_records_give_the_span_mode_content(
    events_case: str, span_case: str, normalizer: Normalizer
) -> None:
    def content(case: str) -> list[dict[str, object]]:
        return [
            {name: json.loads(line).get(name) for name in CONTENT_FIELDS}
            for line in normalized_lines(normalizer, case)
        ]

    from_events = content(events_case)
    assert all(span["completion_text"] or span["tool_calls"] for span in from_events)
    assert from_events == content(span_case)
