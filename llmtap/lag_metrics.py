"""Kafka lag of every stage as Prometheus gauges, served by the collector's ``/metrics``.

The stages run in several processes (often on several machines), but their lag is one
question for Kafka: how far each consumer group's committed offsets are behind the end of its
input topic. The collector answers it on scrape, so one scrape target shows where spans wait;
the figures are the ones ``llmtap status`` prints. Kafka is asked at most once per
``min_interval_seconds``; between, the previous answer is served.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from llmtap.settings import Settings

logger = logging.getLogger(__name__)


class LagMetrics:
    def __init__(self, settings: Settings, min_interval_seconds: float = 10.0) -> None:
        self._settings = settings
        self._min_interval = min_interval_seconds
        self._registry = CollectorRegistry()
        labels = ("stage", "topic", "group")
        self._lag = Gauge(
            "llmtap_stage_lag_messages",
            "Messages on the stage's input topic not yet committed by its consumer group.",
            labels,
            registry=self._registry,
        )
        self._end = Gauge(
            "llmtap_stage_input_end_offset",
            "Sum over partitions of the end offset of the stage's input topic.",
            labels,
            registry=self._registry,
        )
        self._errors = Counter(
            "llmtap_stage_lag_scrape_errors",
            "Times Kafka could not be asked for the stages' lag.",
            registry=self._registry,
        )
        self._refreshed_at = 0.0
        self._lock = asyncio.Lock()

    async def render(self) -> bytes:
        async with self._lock:
            if time.monotonic() - self._refreshed_at >= self._min_interval:
                await asyncio.to_thread(self._refresh)
                self._refreshed_at = time.monotonic()
        return generate_latest(self._registry)

    def _refresh(self) -> None:
        from llmtap.status import kafka_lag

        try:
            lags = kafka_lag(self._settings)
        except Exception as problem:  # Kafka away: the scrape still answers
            logger.warning("cannot read the stages' Kafka lag: %s", problem)
            self._errors.inc()
            return
        for lag in lags:
            self._lag.labels(lag.stage, lag.topic, lag.group).set(lag.lag)
            self._end.labels(lag.stage, lag.topic, lag.group).set(lag.end_offsets)
