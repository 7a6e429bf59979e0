"""Redaction quality on the labeled PII set (tests/data/pii): recall >= 0.99, precision >= 0.95.

The figures and their definitions come from ``bench/redaction.py``, which prints them per kind.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench.redaction import (
    PRECISION_TARGET,
    RECALL_TARGET,
    evaluate,
    load_cases,
    redacted_regions,
)
from llmtap.collectors.redaction import ALL_DETECTORS, RedactionConfig, Redactor, iban_valid

REDACTOR = Redactor(RedactionConfig(enabled=True))
CASES = load_cases()


def test_the_labeled_set_is_large_and_covers_every_detector() -> None:
    kinds = Counter(span.kind for case in CASES for span in case.pii)
    assert set(kinds) == set(ALL_DETECTORS)
    assert min(kinds.values()) >= 30
    assert sum(1 for case in CASES if not case.pii) >= 150  # look-alikes alone
    for case in CASES:
        for span in case.pii:
            assert span.start < span.end <= len(case.text), case.case_id


def test_recall_and_precision_meet_the_targets() -> None:
    result = evaluate(CASES, REDACTOR)
    failures = "\n".join(result.failures)
    assert result.recall() >= RECALL_TARGET, f"recall {result.recall():.3f}:\n{failures}"
    assert result.precision() >= PRECISION_TARGET, (
        f"precision {result.precision():.3f}:\n{failures}"
    )


@pytest.mark.parametrize("kind", ALL_DETECTORS)
def test_every_kind_is_recalled(kind: str) -> None:
    result = evaluate(CASES, REDACTOR)
    missed = [failure for failure in result.failures if failure.startswith(f"missed {kind} ")]
    assert result.recall(kind) >= RECALL_TARGET, "\n".join(missed)


def test_a_detector_left_out_lowers_recall() -> None:
    """The evaluation can fail: without the IBAN detector, IBANs are missed."""
    without_iban = Redactor(
        RedactionConfig(detectors=[name for name in ALL_DETECTORS if name != "iban"])
    )
    assert evaluate(CASES, without_iban).recall("iban") < 0.5


def test_regions_are_found_in_the_original_text() -> None:
    original = 'to jane@example.com, {"card": 4111111111111111}'
    redacted, _ = REDACTOR.redact_text(original)
    regions = redacted_regions(original, redacted)
    assert [(kind, original[start:end]) for kind, start, end in regions] == [
        ("email", "jane@example.com"),
        ("credit_card", "4111111111111111"),
    ]


@pytest.mark.parametrize(
    ("iban", "valid"),
    [
        ("GB82WEST12345698765432", True),
        ("DE89370400440532013000", True),
        ("DE88370400440532013000", False),
        ("NL91ABNA0417164300", True),
    ],
)
def test_iban_checksum(iban: str, valid: bool) -> None:
    assert iban_valid(iban) is valid


def test_a_number_after_a_json_escape_is_redacted() -> None:
    document = json.dumps({"content": "call:\n+44 20 7946 0958\nkey:\nAKIAIOSFODNN7EXAMPLE"})
    redacted, counts = REDACTOR.redact_text(document)
    assert counts == Counter(phone=1, secret=1)
    assert json.loads(redacted) == {"content": "call:\n[REDACTED:phone]\nkey:\n[REDACTED:secret]"}
