"""Kafka client configuration shared by every llmtap component (confluent-kafka / librdkafka).

One place decides where the cluster is (settings, else the local development broker) and the
client defaults that make delivery lossless: idempotent producers with ``acks=all``, and
consumers that never auto-commit (sinks commit offsets after their flush).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtap.errors import LlmtapError, ServiceUnavailableError
from llmtap.schemas.topics import TopicSpec
from llmtap.settings import Settings

if TYPE_CHECKING:
    import threading

    from confluent_kafka import KafkaError

    from llmtap.telemetry import ComponentTelemetry

logger = logging.getLogger(__name__)

_PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "zstd",
    "linger.ms": 5,
    "message.timeout.ms": 120_000,
}
_CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    # A crashed worker's partitions move to the others after 10 s, not librdkafka's 45 s.
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 1_000,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
}


def local_broker_root(settings: Settings) -> Path:
    return settings.data_dir / "kafka"


def resolve_bootstrap_servers(settings: Settings) -> str:
    """The configured cluster, or the running local broker; a clear error when neither exists."""
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    from llmtap.dev.kafka_broker import LocalKafkaBroker

    status = LocalKafkaBroker(settings.local_kafka, local_broker_root(settings)).status()
    if status.running and status.state is not None:
        return status.state.bootstrap_servers
    raise ServiceUnavailableError(
        "No Kafka cluster is configured and the local broker is not running. "
        "Start it with `llmtap dev kafka start`, or set LLMTAP_KAFKA__BOOTSTRAP_SERVERS."
    )


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Base librdkafka config: bootstrap servers, user options, then per-client overrides."""
    config: dict[str, Any] = {
        "bootstrap.servers": resolve_bootstrap_servers(settings),
        "client.id": "llmtap",
        "logger": logging.getLogger("llmtap.librdkafka"),
    }
    config.update(settings.kafka.client_options)
    config.update(overrides)
    return config


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return client_config(settings, **{**_PRODUCER_DEFAULTS, **overrides})


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return client_config(settings, **{**_CONSUMER_DEFAULTS, "group.id": group_id, **overrides})


def broker_ids(
    bootstrap_servers: str, timeout_seconds: float, options: dict[str, Any] | None = None
) -> set[int]:
    """Ask the cluster for its brokers with one metadata request; raises on no answer."""
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "logger": logging.getLogger("llmtap.librdkafka"),
        **(options or {}),
    }
    admin = AdminClient(config)
    metadata = admin.list_topics(timeout=timeout_seconds)
    return set(metadata.brokers)


def check_reachable(settings: Settings, timeout_seconds: float | None = None) -> str:
    """Return the bootstrap servers after one successful metadata request, else explain."""
    servers = resolve_bootstrap_servers(settings)
    timeout = timeout_seconds or settings.kafka.request_timeout_seconds
    try:
        brokers = broker_ids(servers, timeout, settings.kafka.client_options)
    except Exception as error:
        raise ServiceUnavailableError(
            f"Kafka at {servers} did not answer a metadata request within {timeout:g} s "
            f"({_short_reason(error)}). Is the broker running and reachable from here?"
        ) from None
    if not brokers:
        raise ServiceUnavailableError(f"Kafka at {servers} answered but reports no brokers.")
    return servers


def _short_reason(error: BaseException) -> str:
    reason = error.args[0] if error.args else error
    text = getattr(reason, "str", lambda: str(reason))()
    return str(text) or type(error).__name__


def ensure_topics(settings: Settings, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    Existing topics are left as they are (their partition count is the operator's choice).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient(client_config(settings))
    timeout = settings.kafka.request_timeout_seconds
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as error:
        raise ServiceUnavailableError(f"Cannot list Kafka topics: {_short_reason(error)}") from None
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return []
    if not settings.topics.create_missing:
        names = ", ".join(spec.name for spec in missing)
        raise LlmtapError(
            f"Kafka topics {names} do not exist and LLMTAP_TOPICS__CREATE_MISSING is false; "
            "create them, or let llmtap do it."
        )
    new_topics = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=settings.topics.replication_factor,
            config={
                "max.message.bytes": str(settings.topics.max_message_bytes),
                **dict(spec.config),
            },
        )
        for spec in missing
    ]
    created = []
    for name, future in admin.create_topics(new_topics, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout + 5)
            created.append(name)
        except KafkaException as error:
            if error.args and error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another process created it meanwhile
            raise LlmtapError(f"Cannot create Kafka topic {name}: {_short_reason(error)}") from None
    return created


def partition_count(settings: Settings, topic: str) -> int:
    """How many partitions ``topic`` has; waits a little for a topic created a moment ago."""
    import time

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    timeout = settings.kafka.request_timeout_seconds
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = admin.list_topics(topic, timeout=timeout)
        except KafkaException as error:
            raise ServiceUnavailableError(
                f"Cannot read topic {topic}: {_short_reason(error)}"
            ) from None
        found = metadata.topics.get(topic)
        if found is not None and found.error is None and found.partitions:
            return len(found.partitions)
        if time.monotonic() >= deadline:
            raise LlmtapError(f"Kafka topic {topic} does not exist")
        time.sleep(0.2)


def produce_with_backpressure(
    producer: Any,
    topic: str,
    value: bytes,
    key: bytes | None,
    headers: list[tuple[str, Any]] | None = None,
) -> None:
    """``producer.produce``, waiting for deliveries to drain while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers)
            return
        except BufferError:
            producer.poll(0.1)


_RETRY_PAUSE_SECONDS = 0.5


def init_transactions_patiently(
    producer: Any,
    stage: str,
    stop: threading.Event | None = None,
    wait_seconds: float = 300.0,
    attempt_seconds: float = 30.0,
) -> None:
    """``producer.init_transactions``, tried again while Kafka is not ready for it yet.

    A broker that has just started (or a coordinator that moved) answers "coordinator load in
    progress" until its transaction log is loaded; librdkafka then times out and asks to be
    called again ("retry call to resume"). A stage that gave up there would stop the whole role.
    Fatal errors (a fenced or misconfigured producer) raise at once; ``stop`` (an Event) ends
    the wait early. Raises the last error after ``wait_seconds``.
    """
    import time

    from confluent_kafka import KafkaException

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            producer.init_transactions(attempt_seconds)
            return
        except KafkaException as exception:
            error = exception.args[0]
            if error.fatal() or time.monotonic() >= deadline:
                raise
            logger.warning(
                "%s: waiting for Kafka to start a transactional producer: %s", stage, error
            )
            # An error that came back at once must not turn this into a busy loop.
            if stop is None:
                time.sleep(_RETRY_PAUSE_SECONDS)
            elif stop.wait(_RETRY_PAUSE_SECONDS):
                raise


def rewind_to_committed(consumer: Any) -> None:
    """Seek every assigned partition back to its committed offset (after an aborted transaction:
    the batch is read again)."""
    import time

    from confluent_kafka import KafkaException, TopicPartition

    assignment = consumer.assignment()
    if not assignment:
        return
    deadline = time.monotonic() + 300
    while True:  # the broker may be away (that is often why the transaction was aborted)
        try:
            committed = consumer.committed(assignment, timeout=30)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    for partition in committed:
        offset = partition.offset if partition.offset >= 0 else 0  # never committed: start over
        consumer.seek(TopicPartition(partition.topic, partition.partition, offset))
    time.sleep(0.1)


def dead_letter_headers(
    message: Any, reason: str, stage: str, *, keep_source_headers: bool = True
) -> list[tuple[str, Any]]:
    """Headers of a dead letter for a consumed ``message``: why, which stage, where it was read.

    ``keep_source_headers`` keeps the message's own headers first (tenant, encoding, ...).
    """
    return [
        *((message.headers() or []) if keep_source_headers else []),
        *dead_letter_position_headers(
            reason, stage, message.topic(), message.partition(), message.offset()
        ),
    ]


def dead_letter_position_headers(
    reason: str, stage: str, topic: str, partition: int, offset: int
) -> list[tuple[str, Any]]:
    """Why, which stage, where it was read: for a client whose messages are not
    confluent-kafka's (the faust stream worker's)."""
    from llmtap.schemas.topics import Header

    return [
        (Header.DEAD_LETTER_REASON.value, reason[:2000].encode()),
        (Header.DEAD_LETTER_STAGE.value, stage.encode()),
        (Header.DEAD_LETTER_SOURCE_TOPIC.value, str(topic).encode()),
        ("llmtap.dead_letter.source_partition", str(partition).encode()),
        ("llmtap.dead_letter.source_offset", str(offset).encode()),
    ]


def report_consume_error(
    error: KafkaError, telemetry: ComponentTelemetry, log: logging.Logger
) -> None:
    """Count and log an error ``consume`` returned in place of a message; the end of a
    partition (``enable.partition.eof``) is no error."""
    from confluent_kafka import KafkaError

    from llmtap.telemetry import Stage

    if error.code() != KafkaError._PARTITION_EOF:
        telemetry.error(Stage.RECEIVING, "kafka_consume")
        log.warning("consume error: %s", error)
