"""The embedded ClickHouse engine through clickhouse-connect: tables, rows, persistence, limits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmtap.clickhouse import open_target
from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.errors import EmbeddedClickHouseError

pytestmark = pytest.mark.integration


def test_create_insert_query_and_reopen(
    clickhouse_client: object, clickhouse_target: ClickHouseTarget
) -> None:
    client = clickhouse_client
    client.command(  # type: ignore[attr-defined]
        "CREATE TABLE IF NOT EXISTS spans (span_id String, cost Float64) "
        "ENGINE = MergeTree ORDER BY span_id"
    )
    client.insert("spans", [["a", 0.5], ["b", 1.25]], column_names=["span_id", "cost"])  # type: ignore[attr-defined]
    result = client.query(  # type: ignore[attr-defined]
        "SELECT span_id, cost FROM spans WHERE cost > {minimum:Float64} ORDER BY span_id",
        parameters={"minimum": 1.0},
    )
    assert result.result_rows == [("b", 1.25)]

    client.close()  # type: ignore[attr-defined]
    reopened = open_target(clickhouse_target)
    try:
        rows = reopened.query("SELECT count(), sum(cost) FROM spans").result_rows
        assert rows == [(2, 1.75)]
    finally:
        reopened.close()


WRITER = """
import sys
from llmtap.clickhouse import open_target
from llmtap.clickhouse_dsn import ClickHouseTarget
client = open_target(ClickHouseTarget(kind="chdb", path=sys.argv[1], database="kept"))
client.command("CREATE TABLE IF NOT EXISTS t (n UInt32) ENGINE = MergeTree ORDER BY n")
client.insert("t", [[1], [2], [3]], column_names=["n"])
client.close()
"""

READER = """
import sys
from llmtap.clickhouse import open_target
from llmtap.clickhouse_dsn import ClickHouseTarget
client = open_target(ClickHouseTarget(kind="chdb", path=sys.argv[1], database="kept"))
print(client.query("SELECT sum(n) FROM t").result_rows[0][0])
client.close()
"""


def test_rows_persist_on_disk_across_processes(tmp_path: Path) -> None:
    """A new process with a new engine reads what an earlier process wrote."""
    path = str(tmp_path / "store")
    subprocess.run([sys.executable, "-c", WRITER, path], check=True, timeout=120)
    reader = subprocess.run(
        [sys.executable, "-c", READER, path],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reader.stdout.strip() == "6"


def test_second_engine_path_in_one_process_is_refused_clearly(
    clickhouse_client: object, tmp_path: Path
) -> None:
    with pytest.raises(EmbeddedClickHouseError, match="one data path per process"):
        open_target(ClickHouseTarget(kind="chdb", path=str(tmp_path / "other"), database="x"))


def test_path_held_by_another_process_is_refused_clearly(
    clickhouse_client: object, clickhouse_target: ClickHouseTarget
) -> None:
    probe = textwrap.dedent(
        """
        import sys
        from llmtap.clickhouse import open_target
        from llmtap.clickhouse_dsn import ClickHouseTarget
        from llmtap.errors import EmbeddedClickHouseError
        try:
            open_target(ClickHouseTarget(kind="chdb", path=sys.argv[1], database="x"))
        except EmbeddedClickHouseError as error:
            print(error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, clickhouse_target.path],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "in use by another process" in result.stdout
