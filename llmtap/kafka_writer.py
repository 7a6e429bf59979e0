"""An asyncio-facing Kafka producer: ``await send(messages)`` returns once Kafka acknowledged all.

Receivers answer their clients only after this returns, so an acknowledged request is durably in
Kafka (idempotent producer, ``acks=all``). The producer's queue is bounded: when it is full, or a
delivery fails or times out, ``send`` raises and the receiver tells the client to retry later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboundMessage:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


class DeliveryError(Exception):
    """Kafka did not acknowledge every message; the sender may retry the whole request."""

    def __init__(self, message: str, *, queue_full: bool = False) -> None:
        super().__init__(message)
        self.queue_full = queue_full


class AsyncKafkaWriter:
    """Wraps a confluent-kafka Producer with a poll thread and awaitable deliveries."""

    def __init__(self, config: dict[str, Any], name: str = "llmtap-producer") -> None:
        self._config = {**config, "error_cb": self._on_client_error}
        self._name = name
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        self.last_client_error: str | None = None

    def start(self) -> None:
        if self._producer is not None:
            return
        self._producer = Producer(self._config)
        self._stopping.clear()
        self._poller = threading.Thread(target=self._poll_loop, name=self._name, daemon=True)
        self._poller.start()

    def stop(self, timeout_seconds: float = 30.0) -> int:
        """Flush what is queued (so accepted requests finish), then stop; returns messages left."""
        if self._producer is None:
            return 0
        remaining = int(self._producer.flush(timeout_seconds))
        self._stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        self._producer = None
        if remaining:
            logger.error("%d Kafka messages were not delivered before shutdown", remaining)
        return remaining

    @property
    def queued_messages(self) -> int:
        return len(self._producer) if self._producer is not None else 0

    async def send(self, messages: Sequence[OutboundMessage]) -> None:
        """Produce all messages and wait for every acknowledgement; DeliveryError if any fails."""
        if not messages:
            return
        producer = self._producer
        if producer is None:
            raise DeliveryError("the Kafka producer is not running")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        pending = len(messages)
        failures: list[str] = []

        def settle(error: KafkaError | None) -> None:
            nonlocal pending
            pending -= 1
            if error is not None:
                failures.append(error.str())
            if pending == 0 and not done.done():
                done.set_result(None)

        def on_delivery(error: KafkaError | None, _message: object) -> None:
            # RuntimeError: the loop closed during shutdown; nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, error)

        for index, message in enumerate(messages):
            try:
                producer.produce(
                    message.topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers),
                    on_delivery=on_delivery,
                )
            except BufferError:
                # The rest were never queued; wait for the queued ones so none is left dangling.
                pending -= len(messages) - index
                failures.append("the producer queue is full")
                if pending == 0:
                    raise DeliveryError(
                        "the Kafka producer queue is full", queue_full=True
                    ) from None
                break
            except Exception as error:  # KafkaException: unknown topic, message too large
                pending -= len(messages) - index
                failures.append(str(error))
                if pending == 0:
                    raise DeliveryError(f"Kafka refused the message: {error}") from None
                break
        await done
        if failures:
            raise DeliveryError(
                f"{len(failures)} of {len(messages)} Kafka messages failed: {failures[0]}",
                queue_full=any("queue is full" in failure for failure in failures),
            )

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            producer = self._producer
            if producer is None:
                return
            producer.poll(0.1)

    def _on_client_error(self, error: KafkaError) -> None:
        self.last_client_error = error.str()
        logger.warning("Kafka client error: %s", error.str())
