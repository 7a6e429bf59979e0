"""The sink on the real broker and the embedded engine: every span stored once, bad rows aside."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer

from llmtap.clickhouse import open_target
from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.dev.kafka_broker import BrokerState
from llmtap.schemas.llm_span import Cost, LlmSpan, TokenUsage, encode_span, span_key
from llmtap.settings import Settings
from llmtap.sinks.clickhouse.migrations import Migrator
from llmtap.sinks.clickhouse.sink import ClickHouseSink
from tests.conftest import JAR_CACHE_DIR
from tests.otlp_support import read_topic

pytestmark = pytest.mark.integration


def make_spans(count: int, seed: int = 0) -> list[LlmSpan]:
    rng = random.Random(seed)
    # Recent times: spans older than the retention (30 days) are dropped by the table's TTL.
    base = (time.time_ns() // 10**9 - 3_600) * 10**9
    spans = []
    for index in range(count):
        start = base + index * 1_000_000
        spans.append(
            LlmSpan(
                trace_id=rng.randbytes(16).hex(),
                span_id=rng.randbytes(8).hex(),
                name="chat gpt-4o-mini",
                kind="client",
                start_time_unix_nano=start,
                end_time_unix_nano=start + 800_000_000,
                service_name=f"svc-{index % 3}",
                span_type="llm",
                provider="openai",
                operation="chat",
                request_model="gpt-4o-mini",
                usage=TokenUsage(input=100 + index % 50, output=20),
                cost=Cost(
                    priced=True,
                    price_version="test",
                    total="0.000027000",
                    input="0.000015000",
                    output="0.000012000",
                ),
                prompt_text=f"question {index}",
                completion_text=f"answer {index}",
                attributes={"k": str(index)},
            )
        )
    return spans


def produce_spans(bootstrap: str, topic: str, spans: list[LlmSpan]) -> None:
    """Produce and check that Kafka acknowledged every span (creating the topic if needed)."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic not in admin.list_topics(timeout=10).topics:
        futures = admin.create_topics([NewTopic(topic, num_partitions=3)])
        with contextlib.suppress(KafkaException):  # created meanwhile by the sink: fine
            futures[topic].result(30)
    failures: list[object] = []
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    for span in spans:
        producer.produce(
            topic,
            value=encode_span(span),
            key=span_key(span),
            on_delivery=lambda error, _: error is not None and failures.append(error),
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == []


def sink_settings(
    bootstrap: str, tmp_path: Path, database: str | None = None, **sink: Any
) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    clickhouse: dict[str, Any] = {"database": database} if database else {}
    return Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        topics={
            "normalized_spans": f"test.normalized.{suffix}",
            "dead_letter": f"test.dead.{suffix}",
            "partitions": 3,
        },  # type: ignore[arg-type]
        sink={
            "consumer_group": f"test-sink-{suffix}",
            "batch_max_rows": 400,
            "flush_interval_seconds": 0.3,
            **sink,
        },  # type: ignore[arg-type]
        clickhouse=clickhouse,  # type: ignore[arg-type]
    )


class RunningSink:
    def __init__(self, settings: Settings, target: ClickHouseTarget) -> None:
        self.sink = ClickHouseSink(settings, client_factory=lambda: open_target(target))
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.sink.run(self._stop)
        except BaseException as error:
            self._errors.append(error)
            self.sink.ready.set()

    def __enter__(self) -> RunningSink:
        self._thread.start()
        assert self.sink.ready.wait(60)
        assert not self._errors, self._errors
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._errors, self._errors


def sending_errors(sink: ClickHouseSink) -> float:
    text = sink.telemetry.render().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llmtap_component_errors_total") and 'stage="sending"' in line
    )


def wait_for_rows(client: Any, expected: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = client.query("SELECT count() FROM llm_spans").result_rows[0][0]
        if count >= expected:
            time.sleep(1.0)  # let any duplicate arrive before judging
            return int(client.query("SELECT count() FROM llm_spans").result_rows[0][0])
        time.sleep(0.2)
    return int(count)


@pytest.fixture
def migrated(clickhouse_client: Any, clickhouse_target: ClickHouseTarget) -> Any:
    Migrator(clickhouse_client, clickhouse_target.database).apply()
    return clickhouse_client


def test_every_span_is_stored_exactly_once(
    migrated: Any, clickhouse_target: ClickHouseTarget, kafka_broker: BrokerState, tmp_path: Path
) -> None:
    settings = sink_settings(kafka_broker.bootstrap_servers, tmp_path)
    spans = make_spans(2_000)
    with RunningSink(settings, clickhouse_target):
        produce_spans(kafka_broker.bootstrap_servers, settings.topics.normalized_spans, spans)
        assert wait_for_rows(migrated, len(spans)) == len(spans)
    rows = migrated.query(
        "SELECT uniqExact(span_id), sum(input_tokens), sum(cost_total), countIf(prompt_text != '') "
        "FROM llm_spans"
    ).result_rows[0]
    assert rows[0] == len(spans)
    assert rows[1] == sum(span.usage.input or 0 for span in spans)
    assert str(rows[2]) == "0.054000000000"  # 2,000 x 0.000027
    assert rows[3] == len(spans)


def test_offsets_of_markers_and_aborted_records_are_committed_once_idle(
    migrated: Any, clickhouse_target: ClickHouseTarget, kafka_broker: BrokerState, tmp_path: Path
) -> None:
    """A normalizer killed mid-transaction leaves aborted records (and markers) that no
    consumer receives; the caught-up sink still commits past them, so it shows no lag."""
    settings = sink_settings(kafka_broker.bootstrap_servers, tmp_path)
    topic = settings.topics.normalized_spans
    spans = make_spans(300, seed=7)
    produce_spans(kafka_broker.bootstrap_servers, topic, [])  # creates the topic
    producer = Producer(
        {"bootstrap.servers": kafka_broker.bootstrap_servers, "transactional.id": uuid.uuid4().hex}
    )
    producer.init_transactions(30)

    def transaction(part: list[LlmSpan], commit: bool) -> None:
        producer.begin_transaction()
        for span in part:
            producer.produce(topic, encode_span(span), key=span_key(span))
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)
            producer.abort_transaction(30)

    with RunningSink(settings, clickhouse_target):
        transaction(spans[:200], commit=True)
        assert wait_for_rows(migrated, 200) == 200
        transaction(spans[200:], commit=False)  # after the sink's last insert and commit
        deadline = time.monotonic() + 30
        while (lag := sink_lag(settings))[0] != lag[1] and time.monotonic() < deadline:
            time.sleep(0.2)
    end_offsets, committed = sink_lag(settings)
    assert end_offsets > 300  # the records and the transactions' markers
    assert committed == end_offsets
    assert migrated.query("SELECT count() FROM llm_spans").result_rows[0][0] == 200


def test_a_restarted_sink_resumes_after_what_clickhouse_holds(
    migrated: Any, clickhouse_target: ClickHouseTarget, kafka_broker: BrokerState, tmp_path: Path
) -> None:
    settings = sink_settings(kafka_broker.bootstrap_servers, tmp_path)
    spans = make_spans(600, seed=1)
    produce_spans(kafka_broker.bootstrap_servers, settings.topics.normalized_spans, spans[:300])
    with RunningSink(settings, clickhouse_target):
        assert wait_for_rows(migrated, 300) == 300
    # Simulate a crash between insert and commit: rewind the group's committed offsets to 0.
    from confluent_kafka import Consumer, TopicPartition

    rewind = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap_servers,
            "group.id": settings.sink.consumer_group,
        }
    )
    rewind.commit(
        offsets=[TopicPartition(settings.topics.normalized_spans, p, 0) for p in range(3)],
        asynchronous=False,
    )
    rewind.close()
    produce_spans(kafka_broker.bootstrap_servers, settings.topics.normalized_spans, spans[300:])
    with RunningSink(settings, clickhouse_target):
        assert wait_for_rows(migrated, 600) == 600
    assert migrated.query("SELECT count(), uniqExact(span_id) FROM llm_spans").result_rows[0] == (
        600,
        600,
    )


class _CountingClient:
    """The real client, recording each insert's deduplication token (both insert paths)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.tokens: list[str] = []
        self.json_inserts = 0

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # the sink picks its insert path by the client's class
        return type(self._client)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self.tokens.append(kwargs["settings"]["insert_deduplication_token"])
        return self._client.insert(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        # the JSON path passes its token as a query parameter of the statement's SETTINGS
        token = (kwargs.get("parameters") or {}).get("token")
        if token is not None:
            self.tokens.append(token)
            self.json_inserts += 1
        return self._client.command(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.parametrize("days", [1, 2])
def test_one_insert_per_flush_unless_the_rows_span_several_days(
    migrated: Any,
    clickhouse_target: ClickHouseTarget,
    kafka_broker: BrokerState,
    tmp_path: Path,
    days: int,
) -> None:
    settings = sink_settings(kafka_broker.bootstrap_servers, tmp_path, batch_max_rows=100_000)
    spans = make_spans(900, seed=7)
    for index, span in enumerate(spans):  # with two days, alternate: each partition has both
        span.start_time_unix_nano -= (index % days) * 86_400 * 10**9
        span.end_time_unix_nano -= (index % days) * 86_400 * 10**9
    produce_spans(kafka_broker.bootstrap_servers, settings.topics.normalized_spans, spans)
    clients: list[_CountingClient] = []

    def counting_client() -> Any:
        clients.append(_CountingClient(open_target(clickhouse_target)))
        return clients[-1]

    running = RunningSink(settings, clickhouse_target)
    running.sink = ClickHouseSink(settings, client_factory=counting_client)
    with running:
        assert wait_for_rows(migrated, len(spans)) == len(spans)
    assert migrated.query("SELECT uniqExact(span_id) FROM llm_spans").result_rows[0][0] == 900
    tokens = clients[0].tokens
    assert clients[0].json_inserts == len(tokens)  # the embedded engine parsed the JSON
    if days == 1:
        # every flush held several partitions, each was one insert
        assert any(token.count(",") >= 1 for token in tokens), tokens
        assert all(token.count(":") == token.count(",") + 2 for token in tokens), tokens
    else:
        # one insert per partition and day run: never two partitions in one insert
        assert all("," not in token for token in tokens), tokens
        assert len(tokens) > 3 * 2, tokens


def test_a_message_that_is_not_a_span_goes_to_the_dead_letter_topic(
    migrated: Any, clickhouse_target: ClickHouseTarget, kafka_broker: BrokerState, tmp_path: Path
) -> None:
    settings = sink_settings(kafka_broker.bootstrap_servers, tmp_path)
    spans = make_spans(10, seed=2)
    produce_spans(
        kafka_broker.bootstrap_servers, settings.topics.normalized_spans, []
    )  # creates it
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    producer.produce(settings.topics.normalized_spans, value=b'{"not": "a span"}', key=b"k")
    assert producer.flush(30) == 0
    produce_spans(kafka_broker.bootstrap_servers, settings.topics.normalized_spans, spans)
    with RunningSink(settings, clickhouse_target):
        assert wait_for_rows(migrated, 10) == 10
        dead = read_topic(
            kafka_broker.bootstrap_servers,
            settings.topics.dead_letter,
            expect_messages=1,
            idle_seconds=1,
        )
    assert len(dead) == 1
    assert dead[0].headers["llmtap.dead_letter.stage"] == b"sink"
    assert b"not a normalized span" in dead[0].headers["llmtap.dead_letter.reason"]


def test_spans_the_table_cannot_hold_are_dead_lettered_and_the_rest_stored(
    migrated: Any, clickhouse_target: ClickHouseTarget, kafka_broker: BrokerState, tmp_path: Path
) -> None:
    """Valid spans that ClickHouse's own parse (the JSON path) refuses: the batch goes through
    the row path, which stores the others and dead-letters these with the field named."""
    settings = sink_settings(kafka_broker.bootstrap_servers, tmp_path)
    spans = make_spans(40, seed=6)
    spans[7].start_time_unix_nano = -3_000_000_000 * 10**9  # before 1900
    spans[21].usage = TokenUsage(input=-4)
    produce_spans(kafka_broker.bootstrap_servers, settings.topics.normalized_spans, spans)
    with RunningSink(settings, clickhouse_target):
        assert wait_for_rows(migrated, 38) == 38
        dead = read_topic(
            kafka_broker.bootstrap_servers,
            settings.topics.dead_letter,
            expect_messages=2,
            idle_seconds=1,
        )
    stored = {row[0] for row in migrated.query("SELECT span_id FROM llm_spans").result_rows}
    assert stored == {span.span_id for index, span in enumerate(spans) if index not in (7, 21)}
    reasons = sorted(message.headers["llmtap.dead_letter.reason"] for message in dead)
    assert len(reasons) == 2
    assert b"start_time_unix_nano" in reasons[1] or b"start_time_unix_nano" in reasons[0]
    assert all(b"ClickHouse rejected the row" in r or b"not a normalized" in r for r in reasons)


def test_clickhouse_unavailable_is_retried_not_dropped(
    migrated: Any, clickhouse_target: ClickHouseTarget, kafka_broker: BrokerState, tmp_path: Path
) -> None:
    settings = sink_settings(kafka_broker.bootstrap_servers, tmp_path, retry_initial_seconds=0.1)
    spans = make_spans(50, seed=3)
    with RunningSink(settings, clickhouse_target) as running:
        assert running.sink.assigned.wait(60)
        migrated.command("RENAME TABLE llm_spans TO llm_spans_away")  # inserts now fail
        produce_spans(kafka_broker.bootstrap_servers, settings.topics.normalized_spans, spans)
        deadline = time.monotonic() + 30
        while sending_errors(running.sink) < 2:
            assert time.monotonic() < deadline, "the sink did not retry"
            time.sleep(0.2)
        migrated.command("RENAME TABLE llm_spans_away TO llm_spans")  # ClickHouse is back
        assert wait_for_rows(migrated, 50) == 50


def sink_process_environment(settings: Settings) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LLMTAP_")}
    environment.update(
        {
            "LLMTAP_DATA_DIR": str(settings.data_dir),
            "LLMTAP_KAFKA__BOOTSTRAP_SERVERS": str(settings.kafka.bootstrap_servers),
            "LLMTAP_TOPICS__NORMALIZED_SPANS": settings.topics.normalized_spans,
            "LLMTAP_TOPICS__DEAD_LETTER": settings.topics.dead_letter,
            "LLMTAP_TOPICS__PARTITIONS": "3",
            "LLMTAP_SINK__CONSUMER_GROUP": settings.sink.consumer_group,
            "LLMTAP_SINK__BATCH_MAX_ROWS": "300",
            "LLMTAP_SINK__FLUSH_INTERVAL_SECONDS": "0.2",
            "LLMTAP_LOCAL_KAFKA__JAR_CACHE_DIR": str(JAR_CACHE_DIR),
        }
    )
    return environment


def count_rows(data_dir: Path) -> tuple[int, int]:
    """Count in a separate process: the engine path belongs to one process at a time."""
    program = (
        "import sys; from llmtap.clickhouse import open_target; "
        "from llmtap.clickhouse_dsn import ClickHouseTarget; "
        "target = ClickHouseTarget(kind='chdb', path=sys.argv[1], database='llmtap'); "
        "c = open_target(target, create_database=False); "
        "print(*c.query('SELECT count(), uniqExact(span_id) FROM llm_spans').result_rows[0]); "
        "c.close()"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str((data_dir / "clickhouse").resolve())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    total, unique = result.stdout.split()
    return int(total), int(unique)


def sink_lag(settings: Settings) -> tuple[int, int]:
    """(messages on the normalized topic, offsets the sink's group has committed)."""
    from llmtap.status import kafka_lag

    (stage,) = [lag for lag in kafka_lag(settings) if lag.stage == "sink"]
    return stage.end_offsets, stage.committed


def test_sigkill_in_the_middle_of_batches_loses_nothing_and_duplicates_nothing(
    kafka_broker: BrokerState, tmp_path: Path
) -> None:
    settings = sink_settings(kafka_broker.bootstrap_servers, tmp_path)
    environment = sink_process_environment(settings)
    subprocess.run(
        [sys.executable, "-m", "llmtap", "migrate"],
        env=environment,
        check=True,
        timeout=120,
        capture_output=True,
    )
    spans = make_spans(6_000, seed=4)
    rng = random.Random(99)
    # four kills: each start of a sink process costs seconds of CI time
    chunks = [spans[index : index + 1_500] for index in range(0, len(spans), 1_500)]
    kills = 0
    for chunk in chunks:
        log = (tmp_path / f"sink-{kills}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "llmtap", "sink"], env=environment, stdout=log, stderr=log
        )
        try:
            _, committed_before = sink_lag(settings)
            produce_spans(kafka_broker.bootstrap_servers, settings.topics.normalized_spans, chunk)
            deadline = time.monotonic() + 60
            while sink_lag(settings)[1] == committed_before:  # wait until batches are flowing
                assert time.monotonic() < deadline, (tmp_path / f"sink-{kills}.log").read_text()[
                    -2000:
                ]
                time.sleep(0.1)
            time.sleep(rng.uniform(0.0, 0.6))  # then kill it somewhere among the batches
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            kills += 1
    assert kills == len(chunks)
    # A final run drains the rest and stops cleanly once the sink's group has caught up.
    # It is stopped only once it reports itself running: a SIGTERM during interpreter start-up
    # (before the handler is installed) would end it with the default action, and the earlier
    # runs may already have committed everything.
    final_log_path = tmp_path / "sink-final.log"
    with final_log_path.open("w") as final_log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmtap", "sink"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=final_log,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            end, committed = sink_lag(settings)
            if committed >= end and "running" in final_log_path.read_text():
                break
            assert process.poll() is None, final_log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, f"sink did not catch up: {committed}/{end}"
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:  # the test failed: leave no sink running behind it
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == 0, final_log_path.read_text()[-2000:]
    assert count_rows(tmp_path) == (len(spans), len(spans))


def test_reprice_corrects_the_cost_of_stored_spans(
    migrated: Any, clickhouse_target: ClickHouseTarget, kafka_broker: BrokerState, tmp_path: Path
) -> None:
    from llmtap.processors.pricing import PriceTable
    from llmtap.sinks.clickhouse.reprice import reprice

    settings = sink_settings(kafka_broker.bootstrap_servers, tmp_path)
    spans = make_spans(40, seed=6)  # priced as "test" with a made-up cost
    for index, span in enumerate(spans):
        span.user_id = f"user-{index % 4}" if index % 5 else None
    with RunningSink(settings, clickhouse_target):
        produce_spans(kafka_broker.bootstrap_servers, settings.topics.normalized_spans, spans)
        assert wait_for_rows(migrated, 40) == 40
    store_aggregates_as_the_stream_does(migrated, spans)
    prices = PriceTable.load()
    report = reprice(migrated, prices)
    assert report.spans == 40
    rows = migrated.query(
        "SELECT count(), uniqExact(span_id), groupUniqArray(price_version), sum(cost_total) "
        "FROM llm_spans"
    ).result_rows[0]
    assert rows[0] == 40, "the re-priced rows replaced the old ones"
    assert rows[1] == 40
    assert rows[2] == [prices.version]
    # gpt-4o-mini: input 0.15 / output 0.60 per 1M tokens
    expected = sum((span.usage.input or 0) * 15 + (span.usage.output or 0) * 60 for span in spans)
    assert str(rows[3]) == f"{expected / 10**8:.12f}"
    # The stream's windows, which the cost dashboards read, now hold the new cost too.
    assert report.windows > 0
    for table, group in (
        ("llm_aggregates", "service_name"),
        ("llm_user_aggregates", "user_id"),
    ):
        for window_seconds in (60, 3600) if table == "llm_aggregates" else (60,):
            windows = migrated.query(
                f"SELECT toUnixTimestamp(window_start), toString({group}), cost_total, "  # noqa: S608
                f"unpriced_requests FROM {table} FINAL WHERE window_seconds = {window_seconds} "
                "ORDER BY 1, 2"
            ).result_rows
            from_spans = migrated.query(
                f"SELECT toUnixTimestamp(toStartOfInterval(timestamp, "  # noqa: S608
                f"toIntervalSecond({window_seconds}))) AS w, toString({group}) AS g, "
                "sum(cost_total), countIf(priced = 0) FROM llm_spans FINAL "
                f"WHERE g != '' GROUP BY w, g ORDER BY w, g"
            ).result_rows
            assert windows == from_spans, (table, window_seconds)
    assert reprice(migrated, prices).spans == 0, "nothing left to re-price"


def store_aggregates_as_the_stream_does(client: Any, spans: list[LlmSpan]) -> None:
    """The stream's windows of ``spans`` (its own aggregation code), stored as the derived
    sink stores them."""
    from llmtap.processors.aggregates.merge import PartialMerger
    from llmtap.processors.aggregates.windows import WindowConfig, WindowedAggregator
    from llmtap.schemas.aggregates import encode_aggregates
    from llmtap.sinks.clickhouse.derived import TABLES, aggregate_rows

    aggregator = WindowedAggregator(WindowConfig(grace_seconds=86_400), {})
    now = time.time()
    changed = aggregator.process(
        [(0, offset, span) for offset, span in enumerate(spans)], now
    ).changed
    merged = PartialMerger({}).process(changed, now)
    by_table: dict[str, list[Any]] = {}
    for table, row in aggregate_rows(encode_aggregates(merged)):
        by_table.setdefault(table, []).append(row)
    for table, rows in by_table.items():
        client.insert(table, rows, column_names=list(TABLES[table].columns))
