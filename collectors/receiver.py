"""What the HTTP and gRPC receivers share: authentication, admission, ingest and delivery.

Admission is bounded (requests and bytes in flight), so overload is answered with "retry later"
instead of growing a queue; a request is answered 200 only after Kafka acknowledged all of it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from llmtap.collectors.config import CollectorConfig
from llmtap.collectors.log_ingest import LogIngest, LogIngestResult
from llmtap.collectors.trace_ingest import IngestResult, IngestTopics, RequestTooLarge, TraceIngest
from llmtap.kafka_writer import AsyncKafkaWriter, DeliveryError
from llmtap.schemas.topics import Encoding
from llmtap.telemetry import ComponentTelemetry, Stage

logger = logging.getLogger(__name__)


class Refusal(Enum):
    """Why an export was refused, with its OTLP/HTTP status and gRPC status code name."""

    TOO_LARGE = (413, "INVALID_ARGUMENT")
    OVERLOADED = (429, "RESOURCE_EXHAUSTED")
    UNAVAILABLE = (503, "UNAVAILABLE")

    @property
    def http_status(self) -> int:
        return self.value[0]

    @property
    def grpc_code_name(self) -> str:
        return self.value[1]


class ExportRefused(Exception):
    def __init__(
        self, refusal: Refusal, message: str, retry_after_seconds: int | None = None
    ) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True)
class _Key:
    secret: bytes
    tenant: str


class ReceiverCore:
    def __init__(
        self,
        config: CollectorConfig,
        topics: IngestTopics,
        writer: AsyncKafkaWriter,
        telemetry: ComponentTelemetry,
    ) -> None:
        self.config = config
        self.telemetry = telemetry
        self._ingest = TraceIngest(config, topics)
        self._log_ingest = LogIngest(config, topics)
        self._writer = writer
        self._keys = [_Key(k.key.get_secret_value().encode(), k.tenant) for k in config.api_keys]
        self.in_flight_requests = 0
        self._in_flight_bytes = 0

    def authenticate(self, token: str | None) -> str | None:
        """The tenant of a valid key; the default tenant when keys are off; None when refused."""
        if not self._keys:
            return self.config.default_tenant
        if token is None:
            return None
        candidate = token.encode()
        tenant = None
        for key in self._keys:  # compare with every key, in constant time per key
            if hmac.compare_digest(key.secret, candidate):
                tenant = key.tenant
        return tenant

    async def export(
        self, body: bytes, encoding: Encoding, *, tenant: str, source: str
    ) -> ExportTraceServiceResponse:
        """Ingest and deliver one trace request. Raises OtlpDecodeError or ExportRefused."""
        response: ExportTraceServiceResponse = await self._deliver(
            body, self._ingest.ingest, encoding, tenant, source, "spans"
        )
        return response

    async def export_logs(
        self, body: bytes, encoding: Encoding, *, tenant: str, source: str
    ) -> ExportLogsServiceResponse:
        """Ingest and deliver one logs request, under the same admission, limits and Kafka
        acknowledgement as traces. Raises OtlpDecodeError or ExportRefused."""
        response: ExportLogsServiceResponse = await self._deliver(
            body, self._log_ingest.ingest, encoding, tenant, source, "logs"
        )
        return response

    async def _deliver(
        self,
        body: bytes,
        ingest: Callable[..., _AnyIngestResult],
        encoding: Encoding,
        tenant: str,
        source: str,
        what: str,
    ) -> Any:
        self._admit(len(body))
        self.in_flight_requests += 1
        self._in_flight_bytes += len(body)
        self.telemetry.in_flight.set(self.in_flight_requests)
        self.telemetry.in_flight_bytes.set(self._in_flight_bytes)
        try:
            try:
                result = ingest(body, encoding, tenant=tenant, source=source)
            except RequestTooLarge as error:
                self.telemetry.error(Stage.RECEIVING, f"too_many_{what}")
                raise ExportRefused(Refusal.TOO_LARGE, str(error)) from None
            accepted, rejected = _counts(result)
            self.telemetry.received(accepted + rejected, len(body))
            try:
                # librdkafka's message.timeout.ms equals the delivery timeout, so a failure here
                # means Kafka gave up on the messages; this wait only guards against a stuck client.
                await asyncio.wait_for(
                    self._writer.send(result.messages), self.config.delivery_timeout_seconds + 5
                )
            except (DeliveryError, TimeoutError) as error:
                reason = str(error) or "Kafka did not acknowledge in time"
                self.telemetry.error(Stage.SENDING, "kafka_delivery")
                logger.warning("export refused, Kafka did not acknowledge: %s", reason)
                raise ExportRefused(
                    Refusal.UNAVAILABLE,
                    f"Kafka did not acknowledge the {what} ({reason}); retry later",
                    self.config.retry_after_seconds,
                ) from None
            self.telemetry.sent(accepted)
            if rejected:
                self.telemetry.discarded(rejected, "limits")
            if isinstance(result, LogIngestResult) and result.untraced_records:
                # Accepted and written, but no span can ever be joined to them.
                self.telemetry.error(
                    Stage.RECEIVING, "log_record_without_trace_id", result.untraced_records
                )
            if result.redactions:
                self.telemetry.redacted(dict(result.redactions))
            return result.response()
        finally:
            self.in_flight_requests -= 1
            self._in_flight_bytes -= len(body)
            self.telemetry.in_flight.set(self.in_flight_requests)
            self.telemetry.in_flight_bytes.set(self._in_flight_bytes)

    def _admit(self, size: int) -> None:
        config = self.config
        if (
            self.in_flight_requests >= config.max_in_flight_requests
            or self._in_flight_bytes + size > config.max_in_flight_bytes
        ):
            self.telemetry.error(Stage.RECEIVING, "overloaded")
            raise ExportRefused(
                Refusal.OVERLOADED,
                f"too much in flight ({self.in_flight_requests} requests, "
                f"{self._in_flight_bytes} bytes); retry later",
                config.retry_after_seconds,
            )


_AnyIngestResult = IngestResult | LogIngestResult


def _counts(result: _AnyIngestResult) -> tuple[int, int]:
    if isinstance(result, LogIngestResult):
        return result.accepted_records, result.rejected_records
    return result.accepted_spans, result.rejected_spans
