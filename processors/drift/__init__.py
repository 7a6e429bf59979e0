"""Drift detection on live traffic: embedding and scalar drift per key, calibrated, with evidence.

``detector.DriftDetector`` is the pure computation; ``stage.DriftStage`` runs it on Kafka. The
method, thresholds and measured figures are in ``docs/drift.md``.
"""
