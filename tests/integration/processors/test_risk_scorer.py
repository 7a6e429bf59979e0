"""The risk score with the real model: on labeled SummaC claims and on span-shaped input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmtap.processors.embeddings.encoder import Encoder
from llmtap.processors.risk.features import RiskInput
from llmtap.processors.risk.model import auroc
from llmtap.processors.risk.scorer import RiskScorer

pytestmark = pytest.mark.integration

SUMMAC = Path("/work/shared/data/summac/factcc.json")


def test_inconsistent_summac_claims_score_riskier_on_average(risk_scorer: RiskScorer) -> None:
    if not SUMMAC.is_file():
        pytest.skip(f"{SUMMAC} is not on this machine")
    records = list(json.loads(SUMMAC.read_text(encoding="utf-8")).values())
    # A small fixed sample: every 4th inconsistent claim and as many consistent ones.
    inconsistent = [r for r in records if r["label"] == 0][::4]
    consistent = [r for r in records if r["label"] == 1][::30][: len(inconsistent)]
    sample = inconsistent + consistent
    results = risk_scorer.score_inputs(
        [RiskInput(answer=r["claim"], contexts=[r["document"]]) for r in sample]
    )
    risks = np.array([result.risk for result in results])
    risky = np.array([1 - r["label"] for r in sample])
    assert risks[risky == 1].mean() > risks[risky == 0].mean()
    assert auroc(risky, risks) > 0.6


def test_bf16_agrees_with_fp32_on_the_probe(real_encoder: Encoder) -> None:
    backend = real_encoder.backend
    assert backend.name in ("fp32", "bf16")
    if backend.name == "bf16":
        assert backend.agreement >= 0.99


def test_a_grounded_answer_outranks_an_invented_one(risk_scorer: RiskScorer) -> None:
    context = (
        "Our premium plan costs 30 euros per month and includes 100 GB of storage. "
        "Refunds are possible within 14 days of purchase."
    )
    grounded, invented = risk_scorer.score_inputs(
        [
            RiskInput(
                answer="The premium plan costs 30 euros per month.",
                question="How much is premium?",
                contexts=[context],
            ),
            RiskInput(
                answer="Premium is free for students and includes a lifetime warranty.",
                question="How much is premium?",
                contexts=[context],
            ),
        ]
    )
    assert grounded.risk < invented.risk
    assert grounded.features.values["support_min"] > invented.features.values["support_min"]
