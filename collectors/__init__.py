"""Data in: receivers that accept telemetry (OTLP over HTTP and gRPC) and hand it to Kafka.

Installed as ``llmtap.collectors``. Each collector accepts a request only once Kafka has
acknowledged it, so an accepted span is never lost.
"""
