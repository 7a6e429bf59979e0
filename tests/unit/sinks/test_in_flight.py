"""One write in flight: in order, ``then`` on the caller's thread, errors raised to the caller."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from llmtap.sinks.clickhouse.in_flight import OneInFlight
from llmtap.sinks.clickhouse.span_json import (
    SpanJsonInserter,
    span_json_line,
    split_span_json_line,
)


def test_writes_run_one_at_a_time_in_order_and_then_runs_on_the_callers_thread() -> None:
    writes: OneInFlight[int] = OneInFlight("test")
    running = threading.Lock()
    order: list[int] = []
    then_threads: set[int] = set()

    def write(number: int) -> int:
        assert running.acquire(blocking=False), "two writes in flight"
        time.sleep(0.01)
        order.append(number)
        running.release()
        return number

    results: list[int] = []

    def then(result: int) -> None:
        then_threads.add(threading.get_ident())
        results.append(result)

    for number in range(5):
        writes.start(lambda number=number: write(number), then)  # type: ignore[misc]
    writes.finish()
    writes.close()
    assert order == results == [0, 1, 2, 3, 4]
    assert then_threads == {threading.get_ident()}


def test_a_failed_write_is_raised_by_finish_and_its_then_never_runs() -> None:
    writes: OneInFlight[None] = OneInFlight("test")
    called: list[None] = []

    def fail() -> None:
        raise ConnectionError("ClickHouse away")

    writes.start(fail, called.append)
    with pytest.raises(ConnectionError, match="away"):
        writes.finish()
    assert called == []
    assert writes.done()
    writes.finish()  # nothing in flight any more: returns at once
    writes.close()


def test_done_tells_whether_finish_would_wait() -> None:
    writes: OneInFlight[None] = OneInFlight("test")
    release = threading.Event()
    writes.start(lambda: release.wait(5) and None, lambda _: None)
    assert not writes.done()
    release.set()
    writes.finish()
    assert writes.done()
    writes.close()


@pytest.mark.parametrize("value", [b'{"a":1}', b'{"a":"}"}  \n', b'{"x":{"y":[1,2]}}'])
def test_a_span_line_carries_the_kafka_position_and_gives_the_message_back(value: bytes) -> None:
    line = span_json_line(value, 7, 123_456)
    assert line.startswith(b"{")
    assert line.endswith(b"}")
    assert split_span_json_line(line) == (value.rstrip(), 7, 123_456)


def test_batch_files_a_killed_sink_left_behind_are_removed_when_old(tmp_path: Path) -> None:
    old = tmp_path / "spans-old.jsonl"
    recent = tmp_path / "spans-recent.jsonl"
    other = tmp_path / "notes.txt"
    for path in (old, recent, other):
        path.write_bytes(b"{}")
    an_hour_ago = time.time() - 3_600
    os.utime(old, (an_hour_ago, an_hour_ago))
    os.utime(other, (an_hour_ago, an_hour_ago))
    SpanJsonInserter("llm_spans", tmp_path)
    assert not old.exists()
    assert recent.exists()  # maybe another insert's, in flight
    assert other.exists()
