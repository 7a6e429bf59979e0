"""The collector role: OTLP/HTTP and OTLP/gRPC receivers in front of one Kafka producer.

Lifecycle: ``start()`` makes sure the topics exist, connects the producer and opens the ports;
``stop()`` closes the ports, lets accepted requests finish (they wait for Kafka), and flushes
the producer, so a shutdown never drops a request that is being answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from grpc import aio

from llmtap.collectors.otlp_grpc import build_grpc_server
from llmtap.collectors.otlp_http import build_http_app
from llmtap.collectors.receiver import ReceiverCore
from llmtap.collectors.trace_ingest import IngestTopics
from llmtap.errors import LlmtapError
from llmtap.kafka import ensure_topics, producer_config
from llmtap.kafka_writer import AsyncKafkaWriter
from llmtap.lag_metrics import LagMetrics
from llmtap.schemas.topics import dead_letter_topic, raw_logs_topic, raw_spans_topic
from llmtap.settings import Settings
from llmtap.telemetry import ComponentTelemetry

logger = logging.getLogger(__name__)


class Collector:
    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
        self._settings = settings
        self._config = settings.collector
        self._progress = progress or (lambda message: None)
        self.telemetry = ComponentTelemetry("collector")
        self._writer = AsyncKafkaWriter(self._producer_config(), name="llmtap-collector-producer")
        topics = IngestTopics(
            raw_spans=settings.topics.raw_spans,
            dead_letter=settings.topics.dead_letter,
            max_message_bytes=settings.topics.max_message_bytes,
            raw_logs=settings.topics.raw_logs,
        )
        self._core = ReceiverCore(self._config, topics, self._writer, self.telemetry)
        self._runner: web.AppRunner | None = None
        self._grpc: aio.Server | None = None
        self.http_port: int | None = None
        self.grpc_port: int | None = None

    def _producer_config(self) -> dict[str, object]:
        delivery_ms = int(self._config.delivery_timeout_seconds * 1000)
        return producer_config(
            self._settings,
            **{
                "client.id": "llmtap-collector",
                "message.timeout.ms": delivery_ms,
                "message.max.bytes": self._settings.topics.max_message_bytes + 64 * 1024,
                # Bounded buffer: a full queue answers 503 instead of growing memory.
                "queue.buffering.max.kbytes": max(
                    64 * 1024, self._config.max_in_flight_bytes // 1024
                ),
                "queue.buffering.max.messages": 500_000,
            },
        )

    async def start(self) -> None:
        settings = self._settings
        topics = [
            raw_spans_topic(settings.topics.raw_spans, settings.topics.partitions),
            raw_logs_topic(settings.topics.raw_logs, settings.topics.partitions),
            dead_letter_topic(settings.topics.dead_letter, settings.topics.partitions),
        ]
        created = await asyncio.to_thread(ensure_topics, settings, topics)
        if created:
            self._progress(f"collector: created topics {', '.join(created)}")
        self._writer.start()
        try:
            self._runner = web.AppRunner(
                build_http_app(self._core, LagMetrics(self._settings).render),
                access_log=None,
                shutdown_timeout=self._shutdown_grace(),
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self._config.address, self._config.http_port)
            try:
                await site.start()
            except OSError as error:
                raise _cannot_listen(
                    "OTLP/HTTP", self._config.address, self._config.http_port, error
                ) from None
            self.http_port = _bound_port(self._runner)
            if self._config.grpc_port is not None:
                try:
                    self._grpc, self.grpc_port = build_grpc_server(
                        self._core, self._config.address, self._config.grpc_port
                    )
                except (OSError, RuntimeError) as error:
                    raise _cannot_listen(
                        "OTLP/gRPC", self._config.address, self._config.grpc_port, error
                    ) from None
                await self._grpc.start()
        except BaseException:
            await self.stop()
            raise
        grpc_text = f", OTLP/gRPC {self._config.address}:{self.grpc_port}" if self.grpc_port else ""
        self._progress(
            f"collector: OTLP/HTTP http://{self._config.address}:{self.http_port}/v1/traces"
            f"{grpc_text} -> topic {settings.topics.raw_spans} (logs: /v1/logs -> topic "
            f"{settings.topics.raw_logs})"
        )

    async def stop(self) -> None:
        grace = self._shutdown_grace()
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()  # stops listening, waits for in-flight handlers
            self._runner = None
        left = await asyncio.to_thread(self._writer.stop, grace)
        if left:
            logger.error("collector stopped with %d undelivered Kafka messages", left)

    def _shutdown_grace(self) -> float:
        return self._config.delivery_timeout_seconds + 5


def _cannot_listen(what: str, address: str, port: int, error: BaseException) -> LlmtapError:
    setting = "HTTP_PORT" if what == "OTLP/HTTP" else "GRPC_PORT"
    return LlmtapError(
        f"The collector cannot listen for {what} on {address}:{port} ({error}). Is another "
        f"collector running? Choose another port with LLMTAP_COLLECTOR__{setting}."
    )


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the OTLP/HTTP server has no bound address")
