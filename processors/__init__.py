"""Stream computations on Kafka topics: normalization, cost, embeddings, risk, drift, alerts.

Installed as ``llmtap.processors``.
"""
