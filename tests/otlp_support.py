"""Test helpers for the OTLP path: a collector running in a thread, topic readers, OTLP/JSON."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, Message
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmtap.collectors.service import Collector
from llmtap.settings import Settings


class RunningCollector:
    """Runs a Collector on its own event loop in a background thread, like a separate process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.collector = Collector(settings)

    def __enter__(self) -> RunningCollector:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.collector.start(), self._loop).result(timeout=60)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.collector.stop(), self._loop).result(timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.collector.http_port}/v1/traces"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.collector.http_port}"


def collector_settings(bootstrap_servers: str, tmp_path: object, **collector: object) -> Settings:
    """Settings with unique topics per test and free ports."""
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        data_dir=tmp_path,  # type: ignore[arg-type]
        kafka={"bootstrap_servers": bootstrap_servers},  # type: ignore[arg-type]
        topics={  # type: ignore[arg-type]
            "raw_spans": f"test.raw.{suffix}",
            "dead_letter": f"test.dead.{suffix}",
            "partitions": 3,
        },
        collector={"http_port": 0, "grpc_port": 0, **collector},  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class ConsumedMessage:
    key: bytes | None
    value: bytes
    partition: int
    headers: dict[str, bytes]


def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    expect_spans: int | None = None,
    expect_messages: int | None = None,
    idle_seconds: float = 3.0,
    timeout_seconds: float = 60.0,
) -> list[ConsumedMessage]:
    """Read a topic from the beginning until ``expect_spans`` OTLP spans (or ``expect_messages``
    messages) arrived, then a short idle period to catch duplicates; without a count, until it
    has been idle for a while."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    messages: list[ConsumedMessage] = []
    deadline = time.monotonic() + timeout_seconds
    last_message_at = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch: list[Message] = consumer.consume(num_messages=500, timeout=0.5)
            for message in batch:
                if message.error() is not None:
                    continue
                messages.append(
                    ConsumedMessage(
                        key=message.key(),
                        value=message.value(),
                        partition=message.partition(),
                        headers={k: v for k, v in (message.headers() or [])},
                    )
                )
                last_message_at = time.monotonic()
            if expect_messages is not None:
                enough = len(messages) >= expect_messages
            elif expect_spans is not None:
                enough = count_spans(messages) >= expect_spans
            else:
                enough = True
            if enough and time.monotonic() - last_message_at > idle_seconds:
                break
    finally:
        consumer.close()
    return messages


def spans_of(messages: list[ConsumedMessage]) -> Iterator[tuple[ConsumedMessage, Span]]:
    for message in messages:
        request = ExportTraceServiceRequest.FromString(message.value)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    yield message, span


def count_spans(messages: list[ConsumedMessage]) -> int:
    return sum(1 for _ in spans_of(messages))


def to_otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """Encode as OTLP/JSON: proto3 JSON mapping, but hex trace/span ids and integer enums."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _base64_ids_to_hex(span)
                for link in span.get("links", []):
                    _base64_ids_to_hex(link)
    import json

    return json.dumps(document).encode()


def _base64_ids_to_hex(item: dict[str, object]) -> None:
    for name in ("traceId", "spanId", "parentSpanId"):
        value = item.get(name)
        if isinstance(value, str) and value:
            item[name] = base64.b64decode(value).hex()
