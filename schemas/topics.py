"""Kafka topics, message keys and headers: defined once, imported by every component.

The raw spans topic uses the OpenTelemetry Collector Kafka exporter's format, so an existing
Collector can write into llmtap directly: each message value is one serialized
``ExportTraceServiceRequest`` (``otlp_proto``; ``otlp_json`` is accepted downstream too), keyed
by the lowercase hex trace id (the exporter's ``partition_traces_by_id``), so every span of a
trace lands on one partition. The raw logs topic is the same for ``ExportLogsServiceRequest``
values (the exporter's ``partition_logs_by_trace_id``): a span's GenAI event records land on the
same partition number of their topic as the span.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Header(StrEnum):
    """Kafka header names llmtap sets. Messages from an OTel Collector carry none of them."""

    TENANT = "llmtap.tenant"
    RECEIVED_AT_NANOS = "llmtap.received_at_ns"
    SOURCE = "llmtap.source"  # which receiver accepted it: otlp_http, otlp_grpc
    REDACTIONS = "llmtap.redactions"  # JSON object: kind -> count, when the edge redacted text
    # Set by the collector whenever redaction is on (even when nothing matched): the digest of
    # its redaction settings. The normalizer redacts raw records without it (or with another).
    REDACTED = "llmtap.redacted"
    ENCODING = "llmtap.encoding"  # otlp_proto (llmtap always writes protobuf)
    DEAD_LETTER_REASON = "llmtap.dead_letter.reason"
    DEAD_LETTER_STAGE = "llmtap.dead_letter.stage"
    DEAD_LETTER_SOURCE_TOPIC = "llmtap.dead_letter.source_topic"
    DEAD_LETTER_CONTENT_TYPE = "llmtap.dead_letter.content_type"


class Encoding(StrEnum):
    OTLP_PROTO = "otlp_proto"
    OTLP_JSON = "otlp_json"


@dataclass(frozen=True)
class TopicSpec:
    """A topic llmtap creates (if missing) before using it."""

    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()


def raw_spans_topic(name: str, partitions: int) -> TopicSpec:
    # Compressed by the producer; the broker keeps the producer's codec.
    return TopicSpec(name, partitions, (("compression.type", "producer"),))


def raw_logs_topic(name: str, partitions: int) -> TopicSpec:
    """OTLP log records (``ExportLogsServiceRequest`` per message, keyed like the spans): the
    same partition count as the raw spans topic, so a span and its records share a partition
    number and one normalizer worker sees both."""
    return TopicSpec(name, partitions, (("compression.type", "producer"),))


def normalized_spans_topic(name: str, partitions: int) -> TopicSpec:
    return TopicSpec(name, partitions, (("compression.type", "producer"),))


def scores_topic(name: str, partitions: int) -> TopicSpec:
    return TopicSpec(name, partitions, (("compression.type", "producer"),))


def embeddings_topic(name: str, partitions: int) -> TopicSpec:
    # Vectors are JSON floats: large messages that compress well.
    return TopicSpec(name, partitions, (("compression.type", "producer"),))


def dead_letter_topic(name: str, partitions: int) -> TopicSpec:
    # Dead letters are evidence: kept for 30 days by default, longer than the data topics.
    return TopicSpec(name, partitions, (("retention.ms", str(30 * 24 * 3600 * 1000)),))


def trace_id_key(trace_id: bytes) -> bytes:
    """The message key for a trace: its 32-character lowercase hex id, as the OTel exporter does."""
    return trace_id.hex().encode("ascii")


def aggregate_inputs_topic(name: str, partitions: int) -> TopicSpec:
    return TopicSpec(name, partitions, (("compression.type", "producer"),))


def aggregate_partials_topic(name: str, partitions: int) -> TopicSpec:
    return TopicSpec(name, partitions, (("compression.type", "producer"),))


def aggregates_topic(name: str) -> TopicSpec:
    # One partition: the alert evaluator must see every group's windows (a few records a second).
    return TopicSpec(name, 1, (("compression.type", "producer"),))


def alerts_topic(name: str) -> TopicSpec:
    # One partition keeps each alert's firing, resolution and delivery outcomes in order.
    return TopicSpec(name, 1, (("retention.ms", str(30 * 24 * 3600 * 1000)),))


def drift_topic(name: str, partitions: int) -> TopicSpec:
    # A few records per key and window; kept like the alerts, as the evidence behind them.
    return TopicSpec(
        name,
        partitions,
        (("compression.type", "producer"), ("retention.ms", str(30 * 24 * 3600 * 1000))),
    )


def alert_signals_topic(name: str) -> TopicSpec:
    # One partition, like the aggregates: the one alert evaluator must see every signal.
    return TopicSpec(name, 1, (("compression.type", "producer"),))
