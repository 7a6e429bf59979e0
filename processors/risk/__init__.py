"""Hallucination-risk and prompt-injection scores of LLM responses (issue #7).

``RiskScorer`` (scorer.py) turns responses or normalized spans into scores: grounding features
from embeddings (features.py), a small logistic model with shipped, refittable weights
(model.py, weights.json, fit.py), a prompt-injection detector (injection.py with its corpus)
and a priority sampler for when traffic exceeds the budget (sampling.py). ``RiskStage``
(stage.py) runs it on the normalized spans topic. See docs/risk.md.
"""
