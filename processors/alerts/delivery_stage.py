"""Alert delivery as a Kafka stage: pending alerts from the alerts topic to the webhooks.

Delivery runs beside the faust worker, not inside it, on a plain consumer with manual commits:
faust can drop records it prefetched when its group rebalances (a restarted worker rejoins and
the dead member's session expires), and for aggregates the offset bookkeeping makes that
harmless, but a pending alert that is skipped is an alert never sent. Here offsets are
committed only after every alert of the batch has an outcome written back to the topic, so:

- a crash before the commit re-reads the batch: an alert whose outcome already follows it in
  the topic is not sent again, the others are (receivers deduplicate on the event id, which
  is the same on every attempt; see :mod:`llmtap.processors.alerts.delivery`);
- an alert is never skipped: nothing is committed past an alert without an outcome.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from llmtap.heartbeat import Heartbeat
from llmtap.kafka import consumer_config, dead_letter_headers, producer_config
from llmtap.processors.alerts.config import delivery_group
from llmtap.processors.alerts.delivery import AlertDeliverer
from llmtap.schemas.aggregates import AlertEvent, decode_alert, encode_alert
from llmtap.settings import Settings
from llmtap.sinks.clickhouse.sink import close_quietly

logger = logging.getLogger(__name__)

_BATCH_MAX_MESSAGES = 200
# Event ids with an outcome, remembered so a batch read again after a rebalance is not resent.
_REMEMBERED_OUTCOMES = 100_000


class AlertDeliveryStage:
    """Runs in its own thread: ``run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
        self._settings = settings
        self._topic = settings.topics.alerts
        self._progress = progress or (lambda message: None)
        self.group_id = delivery_group(settings)
        self.ready = threading.Event()
        self.delivered = 0
        self._finished: OrderedDict[str, None] = OrderedDict()

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        consumer = Consumer(
            consumer_config(
                settings,
                self.group_id,
                **{
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                },
            )
        )
        producer = Producer(producer_config(settings, **{"enable.idempotence": True}))
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # this thread's loop: the deliverer's session lives on it
        deliverer = AlertDeliverer(settings.processor.alerts)
        heartbeat = Heartbeat(settings.data_dir, "alert_delivery")
        try:
            consumer.subscribe([self._topic])
            self._progress(
                f"alert delivery: {self._topic} -> "
                f"{len(settings.processor.alerts.webhooks)} webhook(s)"
            )
            self.ready.set()
            while not stop.is_set():
                heartbeat.beat()
                batch = self._poll_batch(consumer)
                if batch:
                    self._handle(batch, consumer, producer, loop, deliverer)
        finally:
            loop.run_until_complete(deliverer.stop())
            loop.close()
            producer.flush(30)
            close_quietly(consumer)

    def _poll_batch(self, consumer: Consumer) -> list[Message]:
        messages = consumer.consume(_BATCH_MAX_MESSAGES, timeout=0.5)
        batch = []
        for message in messages:
            error = message.error()
            if error is None:
                batch.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                logger.warning("alert delivery: consumer error %s", error)
        return batch

    def _handle(
        self,
        batch: list[Message],
        consumer: Consumer,
        producer: Producer,
        loop: asyncio.AbstractEventLoop,
        deliverer: AlertDeliverer,
    ) -> None:
        pending: dict[str, tuple[AlertEvent, Message]] = {}
        for message in batch:
            try:
                alert = decode_alert(message.value() or b"")
            except (msgspec.DecodeError, msgspec.ValidationError) as problem:
                reason = f"not an alert event: {problem}"
                producer.produce(
                    self._settings.topics.dead_letter,
                    value=message.value(),
                    key=message.key(),
                    headers=dead_letter_headers(message, reason, "alert-delivery"),
                )
                continue
            if alert.delivery_status == "pending":
                if alert.event_id not in self._finished:
                    pending.setdefault(alert.event_id, (alert, message))
            else:  # an outcome: whoever wrote it, this alert is done
                pending.pop(alert.event_id, None)
                self._remember(alert.event_id)
        if pending:

            async def deliver_and_record(alert: AlertEvent) -> None:
                outcome = await deliverer.deliver(alert)
                # Written as soon as this alert is done, not after the whole batch: a crash
                # after a webhook's 2xx resends only what had no outcome in Kafka yet.
                producer.produce(
                    self._topic, value=encode_alert(outcome), key=outcome.fingerprint.encode()
                )
                producer.flush(30)
                self._remember(outcome.event_id)
                self.delivered += outcome.delivery_status == "delivered"

            loop.run_until_complete(
                asyncio.gather(*(deliver_and_record(alert) for alert, _ in pending.values()))
            )
        remaining = producer.flush(60)
        if remaining:
            # Not written: do not commit, the batch is read again after a restart.
            raise RuntimeError(f"alert delivery: {remaining} outcomes not acknowledged by Kafka")
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as problem:  # a rebalance: the batch is read again, not resent
            logger.warning("alert delivery: offset commit failed (%s)", problem)

    def _remember(self, event_id: str) -> None:
        self._finished[event_id] = None
        self._finished.move_to_end(event_id)
        while len(self._finished) > _REMEMBERED_OUTCOMES:
            self._finished.popitem(last=False)
