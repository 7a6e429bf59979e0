"""Kafka topics, message keys and headers: defined once, imported by every component.

The raw spans topic uses the OpenTelemetry Collector Kafka exporter's format, so an existing
Collector can write into llmtap directly: each message value is one serialized
``ExportTraceServiceRequest`` (``otlp_proto``; ``otlp_json`` is accepted downstream too), keyed
by the lowercase hex trace id (the exporter's ``partition_traces_by_id``), so every span of a
trace lands on one partition.
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


def normalized_spans_topic(name: str, partitions: int) -> TopicSpec:
    return TopicSpec(name, partitions, (("compression.type", "producer"),))


def dead_letter_topic(name: str, partitions: int) -> TopicSpec:
    # Dead letters are evidence: kept for 30 days by default, longer than the data topics.
    return TopicSpec(name, partitions, (("retention.ms", str(30 * 24 * 3600 * 1000)),))


def trace_id_key(trace_id: bytes) -> bytes:
    """The message key for a trace: its 32-character lowercase hex id, as the OTel exporter does."""
    return trace_id.hex().encode("ascii")
