"""`llmtap status`: Kafka lag per stage, ClickHouse health and the spans stored lately."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from llmtap.cli import cli
from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.dev.kafka_broker import BrokerState
from llmtap.sinks.clickhouse.migrations import Migrator

pytestmark = pytest.mark.integration


def test_status_shows_store_health_and_recent_spans(
    kafka_broker: BrokerState, clickhouse_client: Any, clickhouse_target: ClickHouseTarget
) -> None:
    Migrator(clickhouse_client, clickhouse_target.database).apply()
    now = datetime.now(UTC).replace(tzinfo=None)
    clickhouse_client.insert(
        "llm_spans",
        [
            [now - timedelta(minutes=5), "a" * 32, "1" * 16, "llm"],
            [now - timedelta(hours=3), "b" * 32, "2" * 16, "llm"],
        ],
        column_names=["timestamp", "trace_id", "span_id", "span_type"],
    )
    clickhouse_client.close()

    result = CliRunner().invoke(
        cli,
        ["status"],
        env={
            "LLMTAP_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
            "LLMTAP_CLICKHOUSE__DSN": f"chdb://{clickhouse_target.path}",
            "LLMTAP_CLICKHOUSE__DATABASE": clickhouse_target.database,
        },
    )

    assert result.exit_code == 0, (result.output, result.exception)
    assert "clickhouse  ok  embedded ClickHouse" in result.stdout
    assert "stored spans 2 (2 distinct): llm 2" in result.stdout
    assert "stored spans that started in the last hour: 1" in result.stdout


def test_status_reports_an_unreachable_store_in_one_line(kafka_broker: BrokerState) -> None:
    result = CliRunner().invoke(
        cli,
        ["status"],
        env={
            "LLMTAP_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
            "LLMTAP_CLICKHOUSE__DSN": "http://default:x@127.0.0.1:9/llmtap",
        },
    )
    assert result.exit_code == 3
    assert "clickhouse  unavailable: " in result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_lag_leaves_out_markers_and_aborted_records(kafka_broker: BrokerState) -> None:
    """A consumer that read every committed record shows lag 0 even though its committed
    offset stops before the transactions' markers and an aborted transaction's records."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from llmtap.settings import Settings
    from llmtap.status import kafka_lag

    bootstrap = kafka_broker.bootstrap_servers
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        topics={"normalized_spans": f"status.normalized.{suffix}"},  # type: ignore[arg-type]
        sink={"consumer_group": f"status-sink-{suffix}"},  # type: ignore[arg-type]
        processor={"risk": {"consumer_group": f"status-risk-{suffix}"}},  # type: ignore[arg-type]
    )
    topic = settings.topics.normalized_spans
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": suffix})
    producer.init_transactions(30)
    for count, commit in ((50, True), (20, False)):
        producer.begin_transaction()
        for index in range(count):
            producer.produce(topic, f"record {index}".encode())
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)
            producer.abort_transaction(30)
    # The sink's group read the 50 committed records; the risk stage's group read 30 of them.
    for group, offset in (
        (settings.sink.consumer_group, 50),
        (settings.processor.risk.consumer_group, 30),
    ):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        consumer.close()

    lags = {lag.stage: lag for lag in kafka_lag(settings)}

    sink, risk = lags["sink"], lags["risk"]
    assert sink.end_offsets == risk.end_offsets == 50 + 20 + 2  # two markers
    assert (sink.committed, sink.unreadable, sink.lag) == (50, 22, 0)
    assert (risk.committed, risk.unreadable, risk.lag) == (30, 0, 42)
