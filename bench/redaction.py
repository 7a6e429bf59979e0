"""Redaction quality: recall and precision of the built-in detectors on the labeled PII set.

Why: a detector is only as good as what it misses (recall: PII that reaches Kafka) and what it
destroys (precision: order numbers, versions or trace ids that vanish from the prompts). The
set, ``tests/data/pii/labeled.jsonl`` (built by ``generate.py`` beside it), holds emails, phone
numbers in many national formats, card numbers with and without a valid Luhn digit, IBANs with
and without a valid mod-97 checksum, national ids, API keys and tokens, in prose, logs and JSON
strings, plus look-alikes that must survive.

Span-level figures, per kind and overall:

- recall: the share of labeled PII spans of which no character survives (each character lies
  inside a redacted region), whatever kind the detector that removed it reported;
- precision: the share of redactions (each ``[REDACTED:kind]`` in the output, by the kind it
  reports) whose redacted region overlaps a labeled PII span.

    .venv/bin/python bench/redaction.py [--show-failures]

Exits 1 when overall recall is below 0.99 or precision below 0.95 (the targets of issue #10).
The unit test ``tests/unit/collectors/test_redaction_quality.py`` asserts the same figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from llmtap.collectors.redaction import RedactionConfig, Redactor

LABELED_SET = Path(__file__).resolve().parents[1] / "tests" / "data" / "pii" / "labeled.jsonl"
RECALL_TARGET = 0.99
PRECISION_TARGET = 0.95
_MARKER = re.compile(r"\[REDACTED:(\w+)\]")


@dataclass(frozen=True)
class LabeledSpan:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Case:
    case_id: str
    text: str
    pii: tuple[LabeledSpan, ...]
    lookalike: str


@dataclass
class Evaluation:
    """Counts per kind; ``failures`` names each missed span and each false redaction."""

    labeled: Counter[str] = field(default_factory=Counter)
    recalled: Counter[str] = field(default_factory=Counter)
    redactions: Counter[str] = field(default_factory=Counter)
    correct: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def recall(self, kind: str | None = None) -> float:
        labeled = self.labeled[kind] if kind else self.labeled.total()
        recalled = self.recalled[kind] if kind else self.recalled.total()
        return recalled / labeled if labeled else 1.0

    def precision(self, kind: str | None = None) -> float:
        redactions = self.redactions[kind] if kind else self.redactions.total()
        correct = self.correct[kind] if kind else self.correct.total()
        return correct / redactions if redactions else 1.0

    def meets_targets(self) -> bool:
        return self.recall() >= RECALL_TARGET and self.precision() >= PRECISION_TARGET


def load_cases(path: Path = LABELED_SET) -> list[Case]:
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        spans = tuple(LabeledSpan(s["kind"], s["start"], s["end"]) for s in item["pii"])
        cases.append(Case(item["id"], item["text"], spans, item["lookalike"]))
    return cases


def redacted_regions(original: str, redacted: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) in ``original`` of each replacement found in ``redacted``.

    Text between two replacements is copied unchanged, so the original is the output's pieces
    with unknown regions between them; a regex finds where. A bare JSON number is replaced by a
    quoted string: if the text does not align otherwise, quotes right around a replacement are
    taken as part of it.
    """
    for marker_pattern in (_MARKER.pattern, r'"?' + _MARKER.pattern + r'"?'):
        markers = list(re.finditer(marker_pattern, redacted))
        if not markers:
            return []
        pieces = []
        position = 0
        for marker in markers:
            pieces.append(re.escape(redacted[position : marker.start()]))
            position = marker.end()
        pieces.append(re.escape(redacted[position:]))
        alignment = re.fullmatch("(.+?)".join(pieces), original, re.DOTALL)
        if alignment is not None:
            return [
                (marker.group(1), alignment.start(index + 1), alignment.end(index + 1))
                for index, marker in enumerate(markers)
            ]
    raise ValueError(f"cannot align {redacted!r} with {original!r}")


def evaluate(cases: list[Case], redactor: Redactor | None = None) -> Evaluation:
    redactor = redactor or Redactor(RedactionConfig(enabled=True))
    result = Evaluation()
    for case in cases:
        output, _ = redactor.redact_text(case.text)
        regions = redacted_regions(case.text, output)
        covered = set()
        for _, start, end in regions:
            covered.update(range(start, end))
        for span in case.pii:
            result.labeled[span.kind] += 1
            if all(index in covered for index in range(span.start, span.end)):
                result.recalled[span.kind] += 1
            else:
                value = case.text[span.start : span.end]
                result.failures.append(
                    f"missed {span.kind} {value!r} in {case.case_id}: {output!r}"
                )
        for kind, start, end in regions:
            result.redactions[kind] += 1
            if any(span.start < end and start < span.end for span in case.pii):
                result.correct[kind] += 1
            else:
                value = case.text[start:end]
                what = f" ({case.lookalike})" if case.lookalike else ""
                result.failures.append(
                    f"false {kind} {value!r} in {case.case_id}{what}: {case.text!r}"
                )
    return result


def table(result: Evaluation) -> str:
    kinds = sorted(set(result.labeled) | set(result.redactions))
    lines = [
        "| kind | labeled | recalled | recall | redactions | correct | precision |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind in [*kinds, None]:
        name = kind or "**all**"
        labeled = result.labeled[kind] if kind else result.labeled.total()
        recalled = result.recalled[kind] if kind else result.recalled.total()
        redactions = result.redactions[kind] if kind else result.redactions.total()
        correct = result.correct[kind] if kind else result.correct.total()
        lines.append(
            f"| {name} | {labeled} | {recalled} | {result.recall(kind):.3f} | {redactions} "
            f"| {correct} | {result.precision(kind):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--show-failures", action="store_true", help="list every miss")
    args = parser.parse_args()
    cases = load_cases()
    result = evaluate(cases)
    negatives = sum(1 for case in cases if not case.pii)
    print(f"{len(cases)} cases ({negatives} without PII), {LABELED_SET.name}\n")
    print(table(result))
    if args.show_failures and result.failures:
        print("\n" + "\n".join(result.failures))
    if not result.meets_targets():
        print(
            f"\nbelow target: recall {result.recall():.3f} (>= {RECALL_TARGET}), "
            f"precision {result.precision():.3f} (>= {PRECISION_TARGET})"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
