"""Data out: writers from Kafka topics into ClickHouse tables and alert destinations.

Installed as ``llmtap.sinks``. A sink's flush is its commit point: Kafka offsets advance only
after the rows are durably stored.
"""
