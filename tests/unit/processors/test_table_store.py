"""FaustTableStore: which changelog records a table change sends, and when.

The faust table is an in-memory double (its local data and the changelog records it was asked
to send); the real table runs in the stream worker's integration tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmtap.processors.aggregates.merge import PartialMerger, merge_bucket_of
from llmtap.processors.aggregates.windows import WindowConfig, WindowedAggregator, bucket_of
from llmtap.processors.stream.table_store import (
    ChangelogWrites,
    FaustTableStore,
    partition_prefix,
)
from llmtap.schemas.aggregate_inputs import AggregateSpan
from llmtap.schemas.aggregates import Aggregate
from llmtap.schemas.llm_span import TokenUsage


class TableDouble:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog: list[tuple[int, bytes, bytes | None]] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes | None) -> Any:
        self.changelog.append((partition, key, value))
        future = asyncio.get_event_loop_policy().get_event_loop().create_future()
        future.set_result(None)
        return future


@pytest.fixture
def loop() -> Any:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


def test_a_plain_store_sends_every_change_at_once(loop: Any) -> None:
    table, writes = TableDouble(), ChangelogWrites()
    store = FaustTableStore(table, lambda key: int(key[0]), writes)
    store["1|a"] = b"x"
    store["1|a"] = b"y"
    del store["1|a"]
    assert table.changelog == [(1, b"1|a", b"x"), (1, b"1|a", b"y"), (1, b"1|a", None)]
    assert len(writes) == 3


def test_a_coalescing_store_sends_each_key_once_with_its_last_value_when_writes_are_awaited(
    loop: Any,
) -> None:
    table, writes = TableDouble(), ChangelogWrites()
    store = FaustTableStore(table, lambda key: int(key[0]), writes, coalesce=True)
    store["1|a"] = b"x"
    store["2|b"] = b"first"
    store["1|a"] = b"y"
    store["2|b"] = b"second"
    store["3|c"] = b"gone soon"
    del store["3|c"]
    # The local store changes at once; the changelog waits for the commit.
    assert store["1|a"] == b"y"
    assert "3|c" not in store
    assert table.changelog == []
    loop.run_until_complete(writes.wait())
    assert table.changelog == [(1, b"1|a", b"y"), (2, b"2|b", b"second"), (3, b"3|c", None)]
    loop.run_until_complete(writes.wait())
    assert len(table.changelog) == 3  # nothing held back twice


def test_a_coalescing_store_keeps_the_partition_a_key_had_when_it_changed(loop: Any) -> None:
    """The merge store's partition is the one being processed when the key changes."""
    table, writes = TableDouble(), ChangelogWrites()
    current = {"partition": 4}
    store = FaustTableStore(table, lambda key: current["partition"], writes, coalesce=True)
    store["k"] = b"v"
    current["partition"] = 0
    loop.run_until_complete(writes.wait())
    assert table.changelog == [(4, b"k", b"v")]


def test_a_coalescing_store_needs_the_writes_that_flush_it() -> None:
    with pytest.raises(ValueError, match="ChangelogWrites"):
        FaustTableStore(TableDouble(), lambda key: 0, coalesce=True)


def test_batches_between_two_commits_write_each_aggregation_bucket_once(loop: Any) -> None:
    """The point of coalescing: ten batches into the same windows, one record per bucket."""
    table, writes = TableDouble(), ChangelogWrites()
    store = FaustTableStore(table, lambda key: int(key.split("|", 1)[0]), writes, coalesce=True)
    aggregator = WindowedAggregator(WindowConfig(), store)
    start = 1_800_000_000 * 10**9
    for batch in range(10):
        span = AggregateSpan(
            start_time_unix_nano=start + batch,
            end_time_unix_nano=start + batch + 10**9,
            span_type="llm",
            request_model="gpt-4o-mini",
            user_id="user-1",
            usage=TokenUsage(input=10, output=5),
        )
        aggregator.process_messages([(0, batch, [span])], now_seconds=start / 1e9)
    loop.run_until_complete(writes.wait())
    keys = [key for _, key, _ in table.changelog]
    assert len(keys) == len(set(keys))
    # Recovery from those records alone gives the state after the tenth batch.
    recovered = WindowedAggregator(WindowConfig(), {k.decode(): v for _, k, v in table.changelog})
    again = recovered.process_messages([(0, 9, [span])], now_seconds=start / 1e9)
    assert again.skipped_replayed > 0
    assert not again.changed


def test_every_aggregation_store_key_names_its_changelog_partition() -> None:
    assert partition_prefix(bucket_of("4|user|60|1800000000|t|user-1")) == 4
    assert partition_prefix(merge_bucket_of(2, "model|3600|1800000000|t|svc|prod|openai|m||")) == 2
    assert partition_prefix("5|clock") == 5


def test_an_evicted_merge_bucket_is_deleted_on_its_own_partition(loop: Any) -> None:
    """Eviction scans every bucket while one partition's batch is merged: each tombstone must
    still go to the deleted bucket's partition, or recovery would bring the bucket back."""
    table, writes = TableDouble(), ChangelogWrites()
    merger = PartialMerger(
        FaustTableStore(table, partition_prefix, writes, coalesce=True), retention_seconds=7200
    )
    old = Aggregate(window_start=0, window_seconds=60, requests=1, version=1, source_partition=0)
    new = Aggregate(
        window_start=100_000, window_seconds=60, requests=1, version=1, source_partition=0
    )
    merger.process([old], now_seconds=1_000, partition=3)
    merger.process([new], now_seconds=2_000, partition=1)  # evicts the old window's bucket
    loop.run_until_complete(writes.wait())
    deletes = [(partition, key) for partition, key, value in table.changelog if value is None]
    assert deletes
    assert all(partition == 3 and key.startswith(b"3|") for partition, key in deletes)
