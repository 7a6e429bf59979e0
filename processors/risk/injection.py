"""Prompt-injection detection: similarity to known attacks plus structural heuristics.

Two independent signals, combined as ``1 - (1 - similarity_signal) * (1 - heuristic_signal)``:

- the highest cosine between the text and the shipped corpus of known injection and jailbreak
  prompts (``injection_corpus.txt``), mapped linearly from ``similarity_floor`` (0) to
  ``similarity_ceiling`` (1);
- heuristics that need no model: instruction-override phrases ("ignore previous
  instructions"), system-prompt extraction, role-play and developer-mode markers, chat-template
  tokens, long base64 blobs, and hidden Unicode (zero-width, bidi controls, tag characters).

A span is checked on its prompt and on each retrieved chunk (indirect injection arrives through
retrieved documents); its score is the highest. ``flag`` is ``score >= threshold``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from llmtap.processors.embeddings.encoder import Encoder

CORPUS_FILE = "injection_corpus.txt"

# (name, pattern, weight): weight is the heuristic signal of a match on its own.
_PATTERNS: tuple[tuple[str, re.Pattern[str], float], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE), weight)
    for name, pattern, weight in (
        (
            "instruction_override",
            r"\b(ignore|disregard|forget|override|bypass|skip)\b[^.\n]{0,40}\b(previous|prior|above|"
            r"earlier|preceding|all|your|the)\b[^.\n]{0,20}\b(instructions?|directions?|rules|"
            r"prompts?|guidelines|polic(y|ies)|programming|context)\b",
            0.8,
        ),
        (
            "prompt_extraction",
            r"\b(reveal|print|show|repeat|output|display|dump|leak)\b[^.\n]{0,40}\b(system|hidden|"
            r"initial|secret|original|developer)\s+(prompt|message|instructions?)\b",
            0.7,
        ),
        (
            "persona_jailbreak",
            r"\b(DAN|do anything now|jailbr(oken|eak)|developer mode|debug mode|god mode|sudo mode|"
            r"no (restrictions|limits|rules|filters)|unfiltered|uncensored)\b",
            0.6,
        ),
        (
            "role_play",
            r"\b(pretend (to be|you are)|act as|roleplay as|role-play as|stay in character|"
            r"you are now)\b",
            0.3,
        ),
        (
            "chat_template_token",
            r"<\|(im_start|im_end|system|endoftext|eot_id|start_header_id)\|>|\[/?INST\]|"
            r"^\s*#{2,3}\s*(system|instruction)\b|\[SYSTEM\]",
            0.6,
        ),
        (
            "new_instructions",
            r"\b(new|real|updated|priority) (instructions?|rules?|task)\s*:",
            0.5,
        ),
        (
            "ai_addressed_note",
            r"\b(note to|if you are) (the|an)? ?(ai|assistant|language model|llm)\b",
            0.5,
        ),
    )
)
_HIDDEN_UNICODE = re.compile(
    "[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]"
)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")


@dataclass(frozen=True)
class InjectionResult:
    score: float
    flag: bool
    similarity: float  # highest cosine to the corpus
    nearest: str  # the corpus prompt it is closest to
    reasons: list[str] = field(default_factory=list)


def load_corpus() -> list[str]:
    text = resources.files(__package__).joinpath(CORPUS_FILE).read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def heuristic_signal(text: str) -> tuple[float, list[str]]:
    """The structural signal in [0, 1] and the names of the heuristics that matched."""
    reasons: list[str] = []
    remaining = 1.0
    for name, pattern, weight in _PATTERNS:
        if pattern.search(text):
            reasons.append(name)
            remaining *= 1.0 - weight
    hidden = len(_HIDDEN_UNICODE.findall(text))
    if hidden:
        reasons.append(f"hidden_unicode:{hidden}")
        remaining *= 0.4 if hidden >= 3 else 0.7
    for run in _BASE64_RUN.findall(text):
        if _decodes_as_text(run):
            reasons.append("base64_blob")
            remaining *= 0.6
            break
    return 1.0 - remaining, reasons


def _decodes_as_text(run: str) -> bool:
    try:
        decoded = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    printable = sum(32 <= byte < 127 or byte in (9, 10, 13) for byte in decoded)
    return len(decoded) > 0 and printable / len(decoded) > 0.9


class InjectionDetector:
    def __init__(
        self,
        encoder: Encoder,
        corpus: Sequence[str] | None = None,
        *,
        similarity_floor: float = 0.45,
        similarity_ceiling: float = 0.8,
        threshold: float = 0.5,
    ) -> None:
        self._encoder = encoder
        self.corpus = list(corpus) if corpus is not None else load_corpus()
        self._corpus_vectors = encoder.encode_uncached(self.corpus)
        self._floor = similarity_floor
        self._ceiling = similarity_ceiling
        self.threshold = threshold

    def check(self, texts_per_item: Sequence[Sequence[str]]) -> list[InjectionResult]:
        """One result per item, each item being the texts of one span (prompt, chunks)."""
        flat = [text for texts in texts_per_item for text in texts if text]
        vectors = self._encoder.encode(flat) if flat else np.zeros((0, 1), dtype=np.float32)
        similarity = vectors @ self._corpus_vectors.T if flat else np.zeros((0, 1))
        results = []
        row = 0
        for texts in texts_per_item:
            best = InjectionResult(0.0, False, 0.0, "")
            for text in texts:
                if not text:
                    continue
                nearest = int(np.argmax(similarity[row]))
                cosine = float(similarity[row, nearest])
                row += 1
                span = self._ceiling - self._floor
                similarity_signal = min(1.0, max(0.0, (cosine - self._floor) / span))
                structural, reasons = heuristic_signal(text)
                score = 1.0 - (1.0 - similarity_signal) * (1.0 - structural)
                if cosine >= self._floor:
                    reasons = [*reasons, f"similar_to_known_attack:{cosine:.2f}"]
                if score > best.score or (score == best.score and cosine > best.similarity):
                    best = InjectionResult(
                        score, score >= self.threshold, cosine, self.corpus[nearest], reasons
                    )
            results.append(best)
        return results
