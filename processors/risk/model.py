"""The calibrated combination of risk features: a small logistic regression, in numpy.

The score is a **risk ranking, not a probability**: higher means the answer is less supported
by its context than lower-scored answers, on the kind of data the weights were fitted on. The
logistic output lies in (0, 1) so thresholds are comparable across refits, but it is not the
chance that an answer is wrong. ``llmtap risk fit`` refits the weights on your own labels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmtap.errors import LlmtapError
from llmtap.processors.risk.features import FEATURE_NAMES

WEIGHTS_FILE = "weights.json"


class RiskModelError(LlmtapError):
    """A weights file that cannot be read or does not match the features."""


@dataclass(frozen=True)
class RiskModel:
    feature_names: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    version: str
    training: dict[str, Any] = field(default_factory=dict)

    def score(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Risk in (0, 1) for each row of ``features`` (columns in ``feature_names`` order)."""
        matrix = np.atleast_2d(np.asarray(features, dtype=np.float64))
        standardized = (matrix - np.asarray(self.means)) / np.asarray(self.scales)
        logits = standardized @ np.asarray(self.coefficients) + self.intercept
        risk: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))
        return risk

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "feature_names": list(self.feature_names),
            "means": list(self.means),
            "scales": list(self.scales),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
            "meaning": "risk ranking (higher = less supported), not a probability",
            "training": self.training,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> RiskModel:
        try:
            model = cls(
                feature_names=tuple(data["feature_names"]),
                means=tuple(float(value) for value in data["means"]),
                scales=tuple(float(value) for value in data["scales"]),
                coefficients=tuple(float(value) for value in data["coefficients"]),
                intercept=float(data["intercept"]),
                version=str(data["version"]),
                training=dict(data.get("training", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise RiskModelError(f"{source}: not a risk weights file ({error!r})") from error
        if model.feature_names != FEATURE_NAMES:
            raise RiskModelError(
                f"{source}: weights are for features {list(model.feature_names)}, "
                f"this llmtap computes {list(FEATURE_NAMES)}; refit with `llmtap risk fit`"
            )
        sizes = {len(model.means), len(model.scales), len(model.coefficients)}
        if sizes != {len(FEATURE_NAMES)}:
            raise RiskModelError(f"{source}: weight vectors do not match the feature count")
        return model

    @classmethod
    def load(cls, path: Path | None = None) -> RiskModel:
        """The weights in ``path``, or the ones shipped with llmtap."""
        if path is None:
            text = resources.files(__package__).joinpath(WEIGHTS_FILE).read_text("utf-8")
            return cls.from_json(json.loads(text), f"shipped {WEIGHTS_FILE}")
        try:
            return cls.from_json(json.loads(path.read_text("utf-8")), str(path))
        except (OSError, json.JSONDecodeError) as error:
            raise RiskModelError(f"cannot read risk weights {path}: {error}") from error


def fit_logistic(
    features: npt.ArrayLike,
    labels: Sequence[int] | npt.ArrayLike,
    *,
    l2: float = 1.0,
    version: str = "custom",
    training: dict[str, Any] | None = None,
    iterations: int = 50,
) -> RiskModel:
    """L2-regularized logistic regression by Newton's method; label 1 = risky (unsupported).

    Classes are weighted to balance (hallucinations are usually the minority), features are
    standardized so ``l2`` means the same for each. Constant features get weight 0.
    """
    matrix = np.asarray(features, dtype=np.float64)
    target = np.asarray(labels, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != target.shape[0]:
        raise RiskModelError("features and labels differ in length")
    positives = float(target.sum())
    if positives == 0 or positives == len(target):
        raise RiskModelError("fitting needs both risky (label 0) and supported (label 1) rows")
    means = matrix.mean(axis=0)
    scales = matrix.std(axis=0)
    constant = scales < 1e-9
    scales[constant] = 1.0
    standardized = (matrix - means) / scales
    standardized[:, constant] = 0.0
    design = np.hstack([standardized, np.ones((len(target), 1))])
    sample_weight = np.where(target == 1, len(target) / (2 * positives), 0.0)
    sample_weight += np.where(target == 0, len(target) / (2 * (len(target) - positives)), 0.0)
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0  # the intercept is not shrunk
    weights = np.zeros(design.shape[1])
    for _ in range(iterations):
        predicted = 1.0 / (1.0 + np.exp(-np.clip(design @ weights, -50, 50)))
        gradient = design.T @ (sample_weight * (predicted - target)) + penalty * weights
        curvature = sample_weight * predicted * (1.0 - predicted)
        hessian = (design * curvature[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    coefficients = np.where(constant, 0.0, weights[:-1])
    return RiskModel(
        feature_names=FEATURE_NAMES,
        means=tuple(float(value) for value in means),
        scales=tuple(float(value) for value in scales),
        coefficients=tuple(float(value) for value in coefficients),
        intercept=float(weights[-1]),
        version=version,
        training=training or {},
    )


def auroc(labels: Sequence[int] | npt.ArrayLike, scores: Sequence[float] | npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count half); label 1 is the positive (risky) class."""
    target = np.asarray(labels) == 1
    values = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(target.sum()), int((~target).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):  # average ranks over ties
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[target].sum() - positives * (positives + 1) / 2) / (positives * negatives))
