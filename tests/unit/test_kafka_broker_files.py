"""What the local broker writes before it starts: Maven project, broker config, state handling."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from llmtap.dev.kafka_broker import (
    LocalKafkaBroker,
    _maven_size_bytes,
    _pom_xml,
    _server_properties,
)
from llmtap.errors import LocalKafkaError
from llmtap.settings import LocalKafkaSettings

NAMESPACE = {"m": "http://maven.apache.org/POM/4.0.0"}


def test_pom_pins_the_configured_kafka_release() -> None:
    root = ElementTree.fromstring(_pom_xml("4.3.1"))  # noqa: S314 (our own generated text)
    coordinates = {
        (
            d.findtext("m:artifactId", namespaces=NAMESPACE),
            d.findtext("m:version", namespaces=NAMESPACE),
        )
        for d in root.iterfind("m:dependencies/m:dependency", NAMESPACE)
    }
    assert ("kafka_2.13", "4.3.1") in coordinates


def test_broker_listens_on_loopback_only_and_never_auto_creates_topics(tmp_path: Path) -> None:
    properties = dict(
        line.split("=", 1) for line in _server_properties(tmp_path, 9092, 9093).splitlines()
    )
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert properties["process.roles"] == "broker,controller"
    assert properties["auto.create.topics.enable"] == "false"
    assert properties["log.dirs"] == str(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.6 MB at 2.0 MB/s", 1.6e6), ("25 kB", 25e3), ("512 B at 1 kB/s", 512.0), ("?", 0.0)],
)
def test_maven_sizes_are_parsed(text: str, expected: float) -> None:
    assert _maven_size_bytes(text) == pytest.approx(expected)


def test_a_state_file_of_a_dead_process_is_stale(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(LocalKafkaSettings(), tmp_path)
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    broker.broker_dir.mkdir(parents=True)
    broker.state_file.write_text(
        json.dumps(
            {
                "pid": int(finished.stdout),
                "port": 1,
                "controller_port": 2,
                "version": "4.3.1",
                "cluster_id": "x",
                "started_at": 0.0,
            }
        )
    )
    status = broker.status()
    assert not status.running
    assert "stale" in status.detail
    assert broker.stop() is False
    assert not broker.state_file.exists(), "stop clears a stale state file"


def test_a_corrupt_state_file_gives_a_clear_error(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(LocalKafkaSettings(), tmp_path)
    broker.broker_dir.mkdir(parents=True)
    broker.state_file.write_text("{not json")
    with pytest.raises(LocalKafkaError, match="delete it if no broker is running"):
        broker.status()


def test_missing_maven_is_explained(tmp_path: Path) -> None:
    from llmtap.errors import DependencyMissingError

    broker = LocalKafkaBroker(LocalKafkaSettings(maven_command="no-such-mvn"), tmp_path)
    with pytest.raises(DependencyMissingError, match="LLMTAP_KAFKA__BOOTSTRAP_SERVERS"):
        broker.fetch()


def test_cluster_ids_never_look_like_options() -> None:
    from llmtap.dev.kafka_broker import _random_cluster_id

    ids = {_random_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(text) == 22 and not text.startswith("-") for text in ids)
