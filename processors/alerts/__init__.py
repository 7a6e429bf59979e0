"""Alerting: rules over the stream's aggregates, risk scores and drift results, and delivery.

Installed as ``llmtap.processors.alerts``. The pieces are Kafka-free so the stream app, tests and
``llmtap alerts test`` (backtest) share them: :mod:`.rules` (the rules file),
:mod:`.evaluator` (state in a bytes mapping, transitions out), :mod:`.delivery` (webhooks) and
:mod:`.backtest`. Delivery is not imported here, to keep aiohttp out of settings loading.
"""

from llmtap.processors.alerts.config import AlertsConfig, WebhookConfig
from llmtap.processors.alerts.evaluator import AlertEvaluator, fingerprint
from llmtap.processors.alerts.rules import RuleSet, RulesFileError, load_rules, parse_rules

__all__ = [
    "AlertEvaluator",
    "AlertsConfig",
    "RuleSet",
    "RulesFileError",
    "WebhookConfig",
    "fingerprint",
    "load_rules",
    "parse_rules",
]
