"""Golden files: spans that real instrumentation libraries emitted, and what llmtap makes of them.

``tests/golden/<case>/input.json`` holds an OTLP/JSON trace export; ``expected.jsonl`` the
normalized spans, one JSON object per line. ``pytest --update-golden`` rewrites the expected
files from the current code; review the diff before committing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
