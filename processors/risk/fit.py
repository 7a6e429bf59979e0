"""Refitting the risk model on labeled responses (``llmtap risk fit``).

Input is JSON lines with ``answer``, optional ``question`` and ``context`` (a string or a list
of strings), and ``label``: 1 when the answer is supported by its context (consistent), 0 when
it is not (a hallucination), as in SummaC. ``hallucinated: true/false`` is accepted instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmtap.errors import LlmtapError
from llmtap.processors.embeddings.encoder import Encoder
from llmtap.processors.risk.features import RiskInput, compute_features
from llmtap.processors.risk.model import RiskModel, auroc, fit_logistic

DEFAULT_L2 = 10.0
L2_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
FEATURE_BATCH = 64


class LabeledDataError(LlmtapError):
    """A line of a labeled file that cannot be used."""


def risk_input(record: dict[str, Any], where: str) -> RiskInput:
    answer = record.get("answer")
    if not isinstance(answer, str):
        raise LabeledDataError(f"{where}: needs an 'answer' string")
    context = record.get("context")
    if context is None:
        contexts: list[str] = []
    elif isinstance(context, str):
        contexts = [context]
    elif isinstance(context, list) and all(isinstance(part, str) for part in context):
        contexts = list(context)
    else:
        raise LabeledDataError(f"{where}: 'context' must be a string or a list of strings")
    question = record.get("question")
    if question is not None and not isinstance(question, str):
        raise LabeledDataError(f"{where}: 'question' must be a string")
    return RiskInput(answer=answer, question=question, contexts=contexts)


def read_json_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise LabeledDataError(f"{where}: not JSON ({error})") from error
            if not isinstance(record, dict):
                raise LabeledDataError(f"{where}: expected a JSON object")
            yield where, record


def risky_label(record: dict[str, Any], where: str) -> int:
    """1 when the answer is a hallucination (what the risk score should rank high)."""
    if isinstance(record.get("hallucinated"), bool):
        return int(record["hallucinated"])
    label = record.get("label")
    if label in (0, 1) and not isinstance(label, bool):
        return 1 - int(label)
    raise LabeledDataError(f"{where}: needs 'label' 0/1 (1 = supported) or 'hallucinated'")


def read_labeled(path: Path) -> tuple[list[RiskInput], list[int]]:
    inputs, labels = [], []
    for where, record in read_json_lines(path):
        inputs.append(risk_input(record, where))
        labels.append(risky_label(record, where))
    return inputs, labels


def feature_matrix(
    encoder: Encoder,
    inputs: Sequence[RiskInput],
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Feature rows of ``inputs``; ``on_batch(n)`` after each batch of n (for progress bars)."""
    rows: list[list[float]] = []
    for start in range(0, len(inputs), FEATURE_BATCH):
        batch = inputs[start : start + FEATURE_BATCH]
        rows.extend(features.vector() for features in compute_features(encoder, batch))
        if on_batch is not None:
            on_batch(len(batch))
    return np.asarray(rows, dtype=np.float64)


def choose_l2(
    features: np.ndarray,
    risky: Sequence[int],
    grid: Sequence[float] = L2_GRID,
    folds: int = 5,
    seed: int = 0,
) -> float:
    """The regularization with the best mean AUROC over stratified folds of the training rows.

    Labeled sets are small (tens of hallucinations), so a fixed ``l2`` either overfits or
    underfits depending on the set; choosing it inside the training data keeps any held-out
    evaluation honest.
    """
    labels = np.asarray(risky)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=int)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        fold_of[members] = np.arange(len(members)) % folds
    best, best_auroc = DEFAULT_L2, -1.0
    for l2 in grid:
        scores = []
        for fold in range(folds):
            train, test = fold_of != fold, fold_of == fold
            if len(set(labels[train])) < 2 or len(set(labels[test])) < 2:
                continue
            model = fit_logistic(features[train], labels[train], l2=l2)
            scores.append(auroc(labels[test], model.score(features[test])))
        if scores and float(np.mean(scores)) > best_auroc:
            best, best_auroc = l2, float(np.mean(scores))
    return best


def fit_weights(
    features: np.ndarray,
    risky: Sequence[int],
    *,
    version: str,
    l2: float | None = None,
    source: str = "",
) -> RiskModel:
    """Fit on all rows; ``l2=None`` chooses it by cross-validation (``choose_l2``)."""
    if l2 is None:
        l2 = choose_l2(features, risky)
    model = fit_logistic(
        features,
        risky,
        l2=l2,
        version=version,
        training={"source": source, "rows": len(risky), "risky_rows": int(sum(risky)), "l2": l2},
    )
    training = dict(model.training)
    training["training_auroc"] = round(auroc(risky, model.score(features)), 4)
    return RiskModel(
        model.feature_names,
        model.means,
        model.scales,
        model.coefficients,
        model.intercept,
        model.version,
        training,
    )
