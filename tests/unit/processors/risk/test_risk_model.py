"""The logistic risk model: fitting, scoring, the weights file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmtap.processors.risk.features import FEATURE_NAMES
from llmtap.processors.risk.model import RiskModel, RiskModelError, auroc, fit_logistic


def synthetic(rows: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risky = rng.integers(0, 2, rows)
    features = rng.normal(size=(rows, len(FEATURE_NAMES)))
    features[:, 0] -= 1.5 * risky  # risky answers have weaker support
    features[:, 7] = 1.0  # a constant column (has_context)
    return features, risky


def test_auroc_matches_known_values() -> None:
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert np.isnan(auroc([1, 1], [0.1, 0.2]))


def test_fit_learns_the_signal_and_ignores_constant_columns() -> None:
    features, risky = synthetic()
    model = fit_logistic(features, risky, l2=1.0)
    assert model.coefficients[0] < -0.5  # less support, more risk
    assert model.coefficients[7] == 0.0
    held_features, held_risky = synthetic(seed=2)
    assert auroc(held_risky, model.score(held_features)) > 0.8
    scores = model.score(features)
    assert ((scores > 0) & (scores < 1)).all()


def test_fit_balances_classes() -> None:
    features, risky = synthetic()
    keep = (risky == 0) | (np.arange(len(risky)) % 5 == 0)  # few risky rows
    model = fit_logistic(features[keep], risky[keep])
    assert 0.2 < float(np.mean(model.score(features[keep]))) < 0.8


def test_fit_needs_both_classes() -> None:
    features, _ = synthetic(rows=10)
    with pytest.raises(RiskModelError, match="both"):
        fit_logistic(features, np.zeros(10))


def test_weights_round_trip_through_json(tmp_path: Path) -> None:
    features, risky = synthetic()
    model = fit_logistic(features, risky, version="t1", training={"rows": 400})
    path = tmp_path / "weights.json"
    model.save(path)
    loaded = RiskModel.load(path)
    assert loaded == model
    assert "not a probability" in json.loads(path.read_text())["meaning"]


def test_shipped_weights_load_and_match_the_features() -> None:
    model = RiskModel.load()
    assert model.feature_names == FEATURE_NAMES
    assert model.training["rows"] > 100
    # Support lowers the risk in the shipped fit: the score ranks unsupported answers higher.
    assert model.coefficients[FEATURE_NAMES.index("support_mean")] < 0


def test_weights_for_other_features_are_refused(tmp_path: Path) -> None:
    data = fit_logistic(*synthetic()).to_json()
    data["feature_names"] = ["something_else", *FEATURE_NAMES[1:]]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RiskModelError, match="refit"):
        RiskModel.load(path)
    path.write_text("{")
    with pytest.raises(RiskModelError, match="cannot read"):
        RiskModel.load(path)
