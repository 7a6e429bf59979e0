"""The stream worker: a faust-streaming app with the aggregation and alerting agents.

Data path (every topic keyed so that the state a record touches lives on one worker)::

    aggregate inputs ──aggregate──▶ aggregate partials ──merge──▶ aggregates ──evaluate──▶ alerts
    (LLM calls, many   per source     (by window+group)   per      (1 partition)  rules    (1 part.)
     per message)      partition                          window                     │
                                                       (delivery stage) deliver ◀──────┘ webhooks

* ``aggregate`` takes batches (``stream.take_events``) of the messages the normalizer writes
  to the aggregate inputs topic (up to 1,000 LLM calls each: faust's per-message cost is paid
  per message, not per span) and keeps one partial per source partition and window in the
  ``aggregate-windows`` table. Each partial holds the highest source offset it includes, so a
  batch read again after a crash is skipped exactly where it was already counted.
* ``merge`` replaces each partition's partial by its newest version and emits the sum: a
  duplicate or reordered partial changes nothing.
* ``evaluate`` feeds the alert evaluator (state in the ``alert-state`` table) and a timer
  evaluates the rules. Delivery to webhooks is not an agent: it is its own Kafka stage
  (:mod:`llmtap.processors.alerts.delivery_stage`), with commits that never skip an alert.

Several workers share the work by partitions (faust's consumer group ``app_id``); the tables'
changelog topics let a worker take over a partition's state. Processing is at-least-once
underneath; the offset bookkeeping and version replacement above make the results exact.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any, cast

import faust
import msgspec
from faust.transport.drivers import aiokafka as faust_aiokafka

from llmtap.heartbeat import Heartbeat
from llmtap.kafka import (
    dead_letter_position_headers,
    ensure_topics,
    partition_count,
    resolve_bootstrap_servers,
)
from llmtap.processors.aggregates.merge import PartialMerger
from llmtap.processors.aggregates.windows import WindowConfig, WindowedAggregator
from llmtap.processors.stream.table_store import ChangelogWrites, FaustTableStore, partition_prefix
from llmtap.schemas.aggregate_inputs import AggregateSpan, decode_aggregate_inputs
from llmtap.schemas.aggregates import (
    decode_aggregates,
    encode_aggregates,
    encode_alert,
    join_encoded_aggregates,
)
from llmtap.schemas.drift import decode_drift_result
from llmtap.schemas.scores import decode_score
from llmtap.schemas.topics import (
    aggregate_inputs_topic,
    aggregate_partials_topic,
    aggregates_topic,
    alert_signals_topic,
    alerts_topic,
    dead_letter_topic,
    drift_topic,
    scores_topic,
)
from llmtap.settings import Settings
from llmtap.telemetry import ComponentTelemetry, Stage

logger = logging.getLogger(__name__)


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust reads uncommitted records unless it runs Kafka transactions itself.

    The normalizer writes spans in transactions; a worker reading uncommitted data would count
    the spans of an aborted transaction and then their re-sent copies.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """Record the offsets skipped before a message, without the message's own offset.

        faust 0.15 passes the offset of the message that follows the gap as the gap's last
        offset. That message is acked too, so the offset appears twice in the acked list, and
        faust's commit stops at every duplicate: behind a transactional producer (a commit
        marker before nearly every batch) the committed offset then advanced one transaction
        per commit interval, far behind what was processed.
        """
        await super()._add_gap(tp, offset_from, offset_to - 1)

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        """Commit only once the table changes made for these offsets are acknowledged."""
        await cast(_App, self.app).changelog_writes.wait()
        return bool(
            await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)
        )


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    #: Table changes written through :class:`FaustTableStore`, awaited before each commit.
    changelog_writes: ChangelogWrites

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self, loop=self.loop)


class StreamApp:
    """Builds and runs the faust app inside the role's event loop (``start()`` / ``stop()``)."""

    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
        self._settings = settings
        self._config = settings.processor.stream
        self._progress = progress or (lambda message: None)
        self.telemetry = ComponentTelemetry("stream")
        self._heartbeat = Heartbeat(settings.data_dir, "stream")
        # Until start() reads the topic's real partition count (an operator may have made it).
        self._partial_partitions = settings.topics.partitions
        self.app = self._build_app()
        self.evaluations = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self._settings
        topics = settings.topics
        await asyncio.to_thread(
            ensure_topics,
            settings,
            [
                aggregate_inputs_topic(topics.aggregate_inputs, topics.partitions),
                dead_letter_topic(topics.dead_letter, topics.partitions),
                aggregate_partials_topic(topics.aggregate_partials, topics.partitions),
                aggregates_topic(topics.aggregates),
                alerts_topic(topics.alerts),
                alert_signals_topic(topics.alert_signals),
                scores_topic(topics.scores, topics.partitions),
                drift_topic(topics.drift, topics.partitions),
            ],
        )
        self._partial_partitions = await asyncio.to_thread(
            partition_count, settings, topics.aggregate_partials
        )
        await self.app.start()
        self._progress(
            f"stream: {topics.aggregate_inputs} -> {topics.aggregates}, {topics.alerts} "
            f"(windows {', '.join(f'{s}s' for s in self._config.window_seconds)}, "
            f"grace {self._config.grace_seconds}s, "
            f"{len(self._rules.rules) if self._rules else 0} alert rules)"
        )

    async def stop(self) -> None:
        await self.app.stop()

    # -- the app -----------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        settings = self._settings
        config = self._config
        topics = settings.topics
        bootstrap = resolve_bootstrap_servers(settings)
        app = _App(
            config.app_id,
            broker=[f"kafka://{server}" for server in bootstrap.split(",")],
            broker_credentials=_credentials(settings.kafka.client_options),
            store="memory://",
            processing_guarantee="at_least_once",
            topic_partitions=topics.partitions,
            topic_replication_factor=topics.replication_factor,
            topic_allow_declare=True,
            web_enabled=False,
            datadir=str(settings.data_dir / "faust"),
            broker_commit_interval=config.commit_interval_seconds,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_max_request_size=topics.max_message_bytes,
            stream_buffer_maxsize=max(4096, config.batch_max_messages * 2),
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
            table_cleanup_interval=3600.0,
        )
        app.changelog_writes = writes = ChangelogWrites()
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "value_serializer": "raw"}
        inputs = app.topic(topics.aggregate_inputs, **raw)
        dead_letters = app.topic(topics.dead_letter, **raw)
        partials = app.topic(topics.aggregate_partials, **raw)
        aggregates = app.topic(topics.aggregates, **raw)
        alerts = app.topic(topics.alerts, **raw)
        signals = app.topic(topics.alert_signals, **raw)
        # bytes keys and values: faust then uses its "raw" codec for the changelog too.
        table_options: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
        window_table = app.Table("aggregate-windows", partitions=topics.partitions, **table_options)
        merge_table = app.Table("aggregate-merge", partitions=topics.partitions, **table_options)
        alert_table = app.Table("alert-state", partitions=1, **table_options)

        # The aggregation tables change with every batch, their buckets rewritten whole: their
        # changelog records wait for the commit, one per bucket with its last value.
        window_store = FaustTableStore(window_table, partition_prefix, writes, coalesce=True)
        aggregator = WindowedAggregator(
            WindowConfig(
                window_seconds=config.window_seconds,
                grace_seconds=config.grace_seconds,
                retention_seconds=config.retention_seconds,
                per_user=config.per_user_windows,
            ),
            window_store,
        )
        merger = PartialMerger(
            FaustTableStore(merge_table, partition_prefix, writes, coalesce=True),
            config.retention_seconds,
        )
        self._rules, self._evaluator = self._alerting(alert_table, writes)

        # A partition that comes back after another worker had it must be read again from the
        # table (which recovery brought up to date), not from this worker's decoded cache:
        # the cache would write back totals without the other worker's spans.
        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def forget_revoked(_app: Any, revoked: set[Any], **_kwargs: Any) -> None:
            # faust committed before this signal, which sent what the tables held back; any
            # change since must be in Kafka before another worker recovers these partitions.
            await writes.wait()
            aggregator.forget_partitions(
                {tp.partition for tp in revoked if tp.topic == topics.aggregate_inputs}
            )
            if any(tp.topic == topics.aggregate_partials for tp in revoked):
                merger.forget()

        telemetry = self.telemetry
        heartbeat = self._heartbeat
        batch_size, batch_wait = config.batch_max_messages, config.batch_max_wait_seconds
        input_batch_size = config.input_batch_max_messages

        @app.agent(inputs, name="aggregate")
        async def aggregate(stream: Any) -> None:
            async for events in stream.take_events(input_batch_size, within=batch_wait):
                messages: list[tuple[int, int, list[AggregateSpan]]] = []
                seen: set[tuple[int, int]] = set()
                for event in events:
                    message = event.message
                    partition, offset = message.partition, message.offset
                    if (partition, offset) in seen:
                        continue  # fetched again in this batch after a rebalance's seek
                    seen.add((partition, offset))
                    try:
                        spans = decode_aggregate_inputs(event.value or b"")  # None: tombstone
                    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as error:
                        telemetry.error(Stage.RECEIVING, "undecodable_aggregate_inputs")
                        telemetry.discarded(1, "dead_letter")
                        logger.warning(
                            "dead-lettering an undecodable aggregate inputs message at "
                            "%s[%d]@%d: %s",
                            message.topic,
                            partition,
                            offset,
                            error,
                        )
                        await dead_letters.send(
                            key=message.key,
                            value=event.value or b"",
                            headers=dead_letter_position_headers(
                                f"undecodable: {error}", "stream", message.topic, partition, offset
                            ),
                        )
                        continue
                    messages.append((partition, offset, spans))
                telemetry.received(
                    sum(len(spans) for _, _, spans in messages),
                    sum(len(e.value or b"") for e in events),
                )
                result = aggregator.process_messages(messages)
                if result.late_spans:
                    telemetry.discarded(result.late_spans, "late")
                # One message per destination partition and batch, not one per window: the
                # per-message cost of the Python Kafka client is the stream's bottleneck.
                by_destination: dict[int, list[bytes]] = defaultdict(list)
                for partial, encoded in zip(result.changed, result.changed_encoded, strict=True):
                    destination = zlib.crc32(partial.window_key.encode()) % self._partial_partitions
                    by_destination[destination].append(encoded)
                for destination, items in by_destination.items():
                    await partials.send(
                        key=str(destination).encode(),
                        value=join_encoded_aggregates(items),
                        partition=destination,
                    )
                telemetry.sent(len(result.changed))

        @app.agent(partials, name="merge")
        async def merge(stream: Any) -> None:
            async for events in stream.take_events(batch_size, within=batch_wait):
                by_partition: dict[int, list[Any]] = defaultdict(list)
                for event in events:
                    by_partition[event.message.partition].extend(decode_aggregates(event.value))
                merged_batch = []
                for partition, batch in by_partition.items():
                    merged_batch.extend(merger.process(batch, partition=partition))
                if merged_batch:
                    await aggregates.send(key=b"batch", value=encode_aggregates(merged_batch))

        evaluator = self._evaluator

        # Rules over risk scores and drift results: those topics are partitioned by trace or
        # drift key, so each worker forwards what it reads to the one-partition signals topic
        # that the single evaluating worker reads along with the aggregates.
        @app.agent(app.topic(topics.aggregates, topics.alert_signals, **raw), name="evaluate")
        async def evaluate(stream: Any) -> None:
            async for events in stream.take_events(batch_size, within=batch_wait):
                if evaluator is None:
                    continue
                for event in events:
                    if event.message.topic == topics.aggregates:
                        for aggregate in decode_aggregates(event.value):
                            evaluator.observe_aggregate(aggregate)
                    else:
                        _observe_signal(evaluator, event.value)

        @app.agent(app.topic(topics.scores, topics.drift, **raw), name="forward-signals")
        async def forward_signals(stream: Any) -> None:
            async for events in stream.take_events(batch_size, within=batch_wait):
                if evaluator is None:
                    continue  # no rules: nothing reads the signals
                for event in events:
                    prefix = b"R" if event.message.topic == topics.scores else b"D"
                    await signals.send(key=event.key, value=prefix + (event.value or b""))

        if evaluator is not None:
            interval = settings.processor.alerts.evaluation_interval_seconds

            @app.timer(interval, name="evaluate-rules")  # type: ignore[untyped-decorator]
            async def evaluate_rules() -> None:
                if not _owns(app, topics.aggregates):
                    return
                for alert in evaluator.evaluate(int(time.time() * 1000)):
                    self.evaluations += 1
                    logger.info(
                        "alert %s %s %s value=%s",
                        alert.rule_id,
                        alert.state,
                        alert.group_key,
                        alert.value,
                    )
                    await alerts.send(key=alert.fingerprint.encode(), value=encode_alert(alert))

        @app.timer(2.0, name="heartbeat")  # type: ignore[untyped-decorator]
        async def beat() -> None:
            heartbeat.beat()  # the event loop runs: agents and timers are scheduled

        for logger_name in ("faust", "mode", "aiokafka"):
            logging.getLogger(logger_name).setLevel(logging.WARNING)
        return app

    def _alerting(self, alert_table: Any, writes: ChangelogWrites) -> tuple[Any, Any]:
        rules_file = self._settings.processor.alerts.rules_file
        if rules_file is None:
            return None, None
        from llmtap.processors.alerts.evaluator import AlertEvaluator
        from llmtap.processors.alerts.rules import load_rules

        rules = load_rules(rules_file)
        evaluator = AlertEvaluator(
            rules,
            FaustTableStore(alert_table, lambda key: 0, writes),
            base_window_seconds=self._settings.processor.alerts.base_window_seconds,
        )
        return rules, evaluator


def _observe_signal(evaluator: Any, value: bytes) -> None:
    """A forwarded risk score (``R`` + SpanScore JSON) or drift result (``D`` + DriftResult)."""
    kind, body = value[:1], value[1:]
    try:
        if kind == b"R":
            score = decode_score(body)
            evaluator.observe_risk(
                score.tenant,
                score.service_name,
                score.prompt_template_version,
                score.request_model,
                score.timestamp // 1_000_000,
                score.risk_score,
                score.sampling_weight,
            )
        elif kind == b"D":
            result = decode_drift_result(body)
            evaluator.observe_drift(
                result.tenant,
                result.service_name,
                result.request_model,
                result.prompt_template_version,
                result.feature,
                result.detector,
                result.drifted,
                result.statistic,
                result.p_value,
                result.window_end * 1000,
            )
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        logger.warning("skipping an undecodable alert signal: %s", error)


def _owns(app: faust.App, topic: str) -> bool:
    """Whether this worker is assigned the (single) partition of ``topic``."""
    try:
        assignment = app.consumer.assignment()
    except Exception:  # not started or rebalancing
        return False
    return any(tp.topic == topic for tp in assignment)


def _credentials(options: dict[str, str]) -> Any:
    """faust credentials from the librdkafka options llmtap's other clients use."""
    protocol = options.get("security.protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        mechanism = options.get("sasl.mechanism", options.get("sasl.mechanisms", "PLAIN"))
        ssl_context = None
        if protocol == "SASL_SSL":
            ssl_context = faust.SSLCredentials(cafile=options.get("ssl.ca.location")).context
        return faust.SASLCredentials(
            username=options.get("sasl.username"),
            password=options.get("sasl.password"),
            mechanism=mechanism,
            ssl_context=ssl_context,
        )
    if protocol == "SSL":
        import ssl

        context = ssl.create_default_context(cafile=options.get("ssl.ca.location"))
        certificate = options.get("ssl.certificate.location")
        if certificate:  # mutual TLS
            context.load_cert_chain(certificate, options.get("ssl.key.location"))
        return faust.SSLCredentials(context)
    from llmtap.errors import LlmtapError

    raise LlmtapError(f"kafka.client_options security.protocol {protocol!r} is not supported")
