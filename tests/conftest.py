"""Shared fixtures: a real Kafka broker per session, an embedded ClickHouse database per test.

Integration tests (marked ``integration``) use the real parts. Nothing here skips: if the broker
cannot be fetched or started, the tests that need it fail with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmtap.clickhouse import open_target
from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.dev.kafka_broker import BrokerState, LocalKafkaBroker
from llmtap.settings import LocalKafkaSettings, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
# Jars are cached in the repo's git-ignored state folder so every test session reuses them.
JAR_CACHE_DIR = REPO_ROOT / ".llmtap" / "kafka" / "dist"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite tests/golden/*/expected.jsonl from the current normalizer (review the diff).",
    )


@pytest.fixture(autouse=True)
def _isolated_llmtap_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own LLMTAP_* variables must not change what the tests see."""
    for name in list(os.environ):
        if name.upper().startswith("LLMTAP_"):
            monkeypatch.delenv(name)


def local_kafka_settings(**overrides: object) -> LocalKafkaSettings:
    return LocalKafkaSettings(jar_cache_dir=JAR_CACHE_DIR, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerState]:
    """A real single-node Kafka broker for the whole test session, on free ports."""
    root = tmp_path_factory.mktemp("kafka")
    broker = LocalKafkaBroker(local_kafka_settings(), root, progress=print)
    state = broker.start()
    try:
        yield state
    finally:
        broker.stop()


@pytest.fixture
def kafka_settings(kafka_broker: BrokerState, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": kafka_broker.bootstrap_servers},  # type: ignore[arg-type]
    )


@pytest.fixture
def kafka_topic(kafka_broker: BrokerState) -> str:
    """A fresh topic with three partitions, created through the admin API."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"test.{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    futures = admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    futures[name].result(timeout=30)
    return name


@pytest.fixture(scope="session")
def clickhouse_engine_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one embedded engine path this test process uses (chdb allows one per process)."""
    return tmp_path_factory.mktemp("clickhouse")


@pytest.fixture
def clickhouse_target(clickhouse_engine_path: Path) -> ClickHouseTarget:
    return ClickHouseTarget(
        kind="chdb", path=str(clickhouse_engine_path), database=f"test_{uuid.uuid4().hex[:12]}"
    )


@pytest.fixture
def clickhouse_client(clickhouse_target: ClickHouseTarget) -> Iterator[object]:
    """A client on a database of its own in the embedded engine, dropped after the test."""
    client = open_target(clickhouse_target)
    try:
        yield client
    finally:
        client.close()  # the test may have closed it already; closing twice is harmless
        cleanup = open_target(clickhouse_target, create_database=False)
        try:
            cleanup.command(f"DROP DATABASE IF EXISTS `{clickhouse_target.database}`")
        finally:
            cleanup.close()
