"""The real embedding model, loaded once per test session for the risk tests."""

from __future__ import annotations

import pytest

from llmtap.processors.embeddings.encoder import Encoder, load_encoder
from llmtap.processors.risk.scorer import RiskScorer


@pytest.fixture(scope="session")
def real_encoder() -> Encoder:
    return load_encoder()  # the shipped all-MiniLM-L6-v2, offline, backend chosen on the probe


@pytest.fixture(scope="session")
def risk_scorer(real_encoder: Encoder) -> RiskScorer:
    return RiskScorer(real_encoder)
