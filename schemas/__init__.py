"""The contracts between components: the span model, Kafka topics and ClickHouse DDL.

Installed as ``llmtap.schemas``. Names of topics, message formats and headers are defined here
once and imported everywhere else.
"""
