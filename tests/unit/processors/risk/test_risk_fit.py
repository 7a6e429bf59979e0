"""Reading labeled files and refitting (the parts of `llmtap risk fit` that need no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtap.processors.embeddings.encoder import Encoder
from llmtap.processors.risk.features import FEATURE_NAMES
from llmtap.processors.risk.fit import (
    LabeledDataError,
    feature_matrix,
    fit_weights,
    read_labeled,
)


def write_lines(path: Path, records: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n\n")
    return path


def test_labels_follow_summac_and_the_hallucinated_flag(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "labeled.jsonl",
        [
            {"answer": "a", "context": "ctx", "label": 1},
            {"answer": "b", "context": ["c1", "c2"], "question": "q", "label": 0},
            {"answer": "c", "hallucinated": True},
        ],
    )
    inputs, risky = read_labeled(path)
    assert risky == [0, 1, 1]  # 1 = hallucinated: what the risk should rank high
    assert inputs[1].contexts == ["c1", "c2"]
    assert inputs[1].question == "q"
    assert inputs[2].contexts == []


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"context": "x", "label": 1}, "answer"),
        ({"answer": "a", "label": 2}, "label"),
        ({"answer": "a", "label": True}, "label"),
        ({"answer": "a", "context": 3, "label": 1}, "context"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, record: object, message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [{"answer": "ok", "label": 1}, record])
    with pytest.raises(LabeledDataError, match=rf"bad\.jsonl:2: .*{message}"):
        read_labeled(path)


def test_refit_from_features_end_to_end(fake_encoder: Encoder) -> None:
    from llmtap.processors.risk.features import RiskInput

    context = "The museum opens at nine. Tickets cost twelve euros. It closes on Mondays."
    inputs = [
        RiskInput(answer=answer, contexts=[context])
        for answer in ("The museum opens at nine.", "Tickets cost twelve euros.") * 6
        + ("Dinosaurs sing opera nightly.", "The moon owns a bakery.") * 6
    ]
    risky = [0] * 12 + [1] * 12
    seen: list[int] = []
    features = feature_matrix(fake_encoder, inputs, seen.append)
    assert features.shape == (24, len(FEATURE_NAMES))
    assert sum(seen) == 24
    model = fit_weights(features, risky, version="t", source="unit")
    assert model.training["training_auroc"] == 1.0
    assert model.training["l2"] in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
