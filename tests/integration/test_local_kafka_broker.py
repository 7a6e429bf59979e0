"""`llmtap dev kafka` drives a real broker: start, status, stop, twice, and clear refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from llmtap.dev.kafka_broker import LocalKafkaBroker
from llmtap.errors import LocalKafkaError
from tests.conftest import JAR_CACHE_DIR, local_kafka_settings

pytestmark = pytest.mark.integration


def run_cli(data_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LLMTAP_")}
    environment["LLMTAP_DATA_DIR"] = str(data_dir)
    environment["LLMTAP_LOCAL_KAFKA__JAR_CACHE_DIR"] = str(JAR_CACHE_DIR)
    return subprocess.run(
        [sys.executable, "-m", "llmtap", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=180,
        check=False,
    )


def test_start_status_stop_twice_in_a_row(tmp_path: Path) -> None:
    try:
        for _ in range(2):
            started = run_cli(tmp_path, "dev", "kafka", "start")
            assert started.returncode == 0, started.stderr
            assert "bootstrap 127.0.0.1:" in started.stdout

            status = run_cli(tmp_path, "dev", "kafka", "status")
            assert status.returncode == 0, status.stderr
            assert status.stdout.startswith("running")

            again = run_cli(tmp_path, "dev", "kafka", "start")
            assert again.returncode == 1
            assert "already running" in again.stderr
            assert "Traceback" not in again.stderr

            stopped = run_cli(tmp_path, "dev", "kafka", "stop")
            assert stopped.returncode == 0, stopped.stderr
            assert stopped.stdout.strip() == "stopped"

            status = run_cli(tmp_path, "dev", "kafka", "status")
            assert status.returncode == 3
            assert status.stdout.strip() == "not running"
    finally:
        run_cli(tmp_path, "dev", "kafka", "stop")


def test_topics_survive_a_restart(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(local_kafka_settings(), tmp_path)
    state = broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": state.bootstrap_servers})
        admin.create_topics([NewTopic("kept", num_partitions=2)])["kept"].result(timeout=30)
        broker.stop()
        restarted = broker.start()
        assert restarted.port == state.port, "a restart keeps the port clients know"
        admin = AdminClient({"bootstrap.servers": restarted.bootstrap_servers})
        assert "kept" in admin.list_topics(timeout=10).topics
    finally:
        broker.stop()


def test_reset_refuses_while_running_and_deletes_data_when_stopped(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(local_kafka_settings(), tmp_path)
    broker.start()
    try:
        with pytest.raises(LocalKafkaError, match="Stop the local Kafka broker"):
            broker.reset()
    finally:
        broker.stop()
    broker.reset()
    assert not broker.broker_dir.exists()
    assert broker.is_fetched(), "reset keeps the cached jars"


def test_a_dead_broker_is_reported_as_stale_and_can_start_again(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(local_kafka_settings(), tmp_path)
    state = broker.start()
    try:
        os.kill(state.pid, 9)
        os.waitpid(state.pid, 0)
        status = broker.status()
        assert not status.running
        assert "stale" in status.detail
        assert broker.start().pid != state.pid
    finally:
        broker.stop()
