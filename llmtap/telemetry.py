"""The telemetry contract every llmtap component reports (after Vector's component spec).

Each component counts what it received, sent and discarded, and its errors by stage
(receiving / processing / sending), under one set of Prometheus metric names, so a dashboard or
alert written for one component works for all of them.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Stage(StrEnum):
    RECEIVING = "receiving"
    PROCESSING = "processing"
    SENDING = "sending"


class ComponentTelemetry:
    """Counters for one component instance; ``render()`` gives the Prometheus text format."""

    def __init__(self, component: str, registry: CollectorRegistry | None = None) -> None:
        self.component = component
        self.registry = registry or CollectorRegistry()
        labels = ["component"]
        self._received_events = Counter(
            "llmtap_component_received_events",
            "Events (spans, log records, rows) the component accepted for processing.",
            labels,
            registry=self.registry,
        )
        self._received_bytes = Counter(
            "llmtap_component_received_bytes",
            "Bytes received, after decompression.",
            labels,
            registry=self.registry,
        )
        self._sent_events = Counter(
            "llmtap_component_sent_events",
            "Events the component delivered downstream (acknowledged by Kafka or ClickHouse).",
            labels,
            registry=self.registry,
        )
        self._discarded_events = Counter(
            "llmtap_component_discarded_events",
            "Events not delivered downstream (dead-lettered or refused), by reason.",
            [*labels, "reason"],
            registry=self.registry,
        )
        self._errors = Counter(
            "llmtap_component_errors",
            "Errors by stage and type.",
            [*labels, "stage", "error_type"],
            registry=self.registry,
        )
        self._redactions = Counter(
            "llmtap_component_redactions",
            "Values replaced by PII redaction, by kind.",
            [*labels, "kind"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "llmtap_component_in_flight_requests",
            "Requests accepted and waiting for downstream acknowledgement.",
            labels,
            registry=self.registry,
        ).labels(component)
        self.in_flight_bytes = Gauge(
            "llmtap_component_in_flight_bytes",
            "Bytes of requests waiting for downstream acknowledgement.",
            labels,
            registry=self.registry,
        ).labels(component)
        self.latency_seconds = Histogram(
            "llmtap_component_request_duration_seconds",
            "Time from receiving a request to answering it.",
            labels,
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ).labels(component)
        # Bound once: ``labels()`` takes a lock and hashes the label values on every call, and
        # these three are counted per span.
        self._received = self._received_events.labels(component)
        self._received_size = self._received_bytes.labels(component)
        self._sent = self._sent_events.labels(component)

    def received(self, events: int, size_bytes: int = 0) -> None:
        self._received.inc(events)
        if size_bytes:
            self._received_size.inc(size_bytes)

    def sent(self, events: int) -> None:
        self._sent.inc(events)

    def discarded(self, events: int, reason: str) -> None:
        self._discarded_events.labels(self.component, reason).inc(events)

    def error(self, stage: Stage, error_type: str, count: int = 1) -> None:
        self._errors.labels(self.component, stage.value, error_type).inc(count)

    def redacted(self, counts: dict[str, int]) -> None:
        for kind, count in counts.items():
            self._redactions.labels(self.component, kind).inc(count)

    def value(self, name: str, **labels: str) -> float:
        """Current value of one series (for tests and `llmtap status`); 0 when never set."""
        sample = self.registry.get_sample_value(name, {"component": self.component, **labels})
        return sample or 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
