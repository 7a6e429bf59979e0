"""Sink benchmark: normalized spans from Kafka into the embedded ClickHouse, against raw inserts.

Why: the sink must not be what limits the pipeline (targets: at least 0.8x the rows/s of raw
clickhouse-connect inserts of the same rows, and 80,000 spans/s on 2 cores), and dashboards must
stay fast as data grows (cost per model per minute and p95 latency per model over 10M spans in
under 300 ms: the shipped Grafana panels' own queries are timed, and scans of ``llm_spans`` for
reference). Reported as medians over repeats, with the raw-insert baseline measured in the same
run on the same engine.

    .venv/bin/python bench/sink.py [--spans 300000] [--repeats 3] [--dashboard-rows 10000000]
    .venv/bin/python bench/sink.py --dashboard-only      # the dashboard queries alone (~1 min)
"""

from __future__ import annotations

import argparse
import calendar
import gc
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from llmtap.clickhouse import open_target  # noqa: E402
from llmtap.clickhouse_dsn import ClickHouseTarget  # noqa: E402
from llmtap.dev.kafka_broker import LocalKafkaBroker  # noqa: E402
from llmtap.schemas.llm_span import encode_span, span_key  # noqa: E402
from llmtap.settings import LocalKafkaSettings, Settings  # noqa: E402
from llmtap.sinks.clickhouse.migrations import Migrator  # noqa: E402
from llmtap.sinks.clickhouse.rows import INSERT_SETTINGS, SPAN_COLUMNS, span_row  # noqa: E402
from llmtap.sinks.clickhouse.sink import ClickHouseSink  # noqa: E402
from llmtap.sinks.clickhouse.span_json import SpanJsonInserter, span_json_line  # noqa: E402
from tests.integration.sinks.test_clickhouse_sink import make_spans  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"


def raw_insert(client: Any, rows: list[tuple[object, ...]], batch: int) -> float:
    """Baseline: clickhouse-connect column-oriented inserts of the same rows; CPU-free wall s."""
    started = time.perf_counter()
    for index in range(0, len(rows), batch):
        columns = list(zip(*rows[index : index + batch], strict=True))
        client.insert(
            "llm_spans",
            columns,
            column_names=SPAN_COLUMNS,
            column_oriented=True,
            settings=INSERT_SETTINGS,  # the table work the sink's inserts ask for
        )
    return time.perf_counter() - started


def engine_json_insert(client: Any, lines: list[bytes], batch: int, work: Path) -> float:
    """Ceiling: the embedded engine parsing and storing the same span JSON (the sink's insert
    path, without Kafka or the sink around it); wall seconds."""
    inserter = SpanJsonInserter("llm_spans", work)
    started = time.perf_counter()
    for index in range(0, len(lines), batch):
        inserter.insert(client, lines[index : index + batch], "bench", f"bench-{uuid.uuid4()}")
    return time.perf_counter() - started


def sink_run(
    settings: Settings, client: Any, target: ClickHouseTarget, spans: int
) -> tuple[float, float]:
    """Time for the sink to store ``spans`` rows already waiting on the topic; CPU seconds too.

    The sink gets its own client on the same engine path (one engine path per process)."""
    sink = ClickHouseSink(settings, client_factory=lambda: open_target(target))
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    sink.assigned.wait(60)  # steady state: the group join is not part of the figure
    cpu_before = time.process_time()
    started = time.perf_counter()
    while client.query("SELECT count() FROM llm_spans").result_rows[0][0] < spans:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    stop.set()
    thread.join(60)
    return elapsed, cpu


_DAY_START, _DAY_END = "2026-11-20 00:00:00", "2026-11-21 00:00:00"


def dashboard_latency(client: Any, rows: int, repeats: int) -> dict[str, float]:
    """The dashboards' queries over ``rows`` stored spans (about a day of them).

    The shipped Grafana panels are run as Grafana sends them (macros expanded as the plugin
    does, every variable on "All", 24 h, 60-s interval). Cost panels read the stream's
    ``llm_aggregates``; here they hold what the stream writes for the same spans (1-minute and
    1-hour windows, each window stored in two versions as the stream re-emits it, the newer
    one current), made in SQL from the stored spans: running the processors over 10M spans
    takes longer than the rest of the bench. Their totals are checked against the spans.
    """
    client.command("TRUNCATE TABLE llm_spans")
    client.command("TRUNCATE TABLE llm_aggregates")
    print(f"generating {rows:,} spans in ClickHouse for the dashboard queries ...")
    client.command(
        f"""INSERT INTO llm_spans (timestamp, end_timestamp, duration_ms, trace_id, span_id, service_name,
            span_type, provider, request_model, input_tokens, output_tokens, priced, cost_total, tenant,
            kafka_topic, kafka_partition, kafka_offset)
        SELECT toDateTime64('{_DAY_START}', 9) + toIntervalMillisecond(number * 8),
               toDateTime64('{_DAY_START}', 9) + toIntervalMillisecond(number * 8 + 900),
               200 + (cityHash64(number) % 3000), hex(cityHash64(number, 1)), hex(cityHash64(number, 2)),
               ['support-bot', 'search', 'agent'][number % 3 + 1], 'llm', 'openai',
               ['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4', 'gemini-2.5-flash'][number % 4 + 1],
               100 + number % 900, 10 + number % 300, 1, toDecimal128((100 + number % 900) * 0.0000025, 12),
               'default', 'bench', 0, number
        FROM numbers({rows})"""
    )
    for version, share in ((1, "intDiv(count(), 2)"), (2, "count()")):
        for window in (60, 3600):
            client.command(
                f"""INSERT INTO llm_aggregates (window_start, window_seconds, tenant, service_name,
                    environment, provider, request_model, operation, prompt_template_version,
                    requests, input_tokens, output_tokens, cost_total, version)
                SELECT toStartOfInterval(toDateTime(timestamp), toIntervalSecond({window})), {window},
                    tenant, service_name, '', provider, request_model, '', '',
                    {share}, sum(input_tokens), sum(output_tokens),
                    {"sum(cost_total)" if version == 2 else "0"}, {version}
                FROM llm_spans GROUP BY 1, tenant, service_name, provider, request_model"""
            )
    # Measure settled data, as a dashboard sees it in steady state: background merges done.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not client.query("SELECT count() FROM system.merges").result_rows[0][0]:
            break
        time.sleep(0.5)
    in_day = f"timestamp >= toDateTime64('{_DAY_START}', 9) AND timestamp < toDateTime64('{_DAY_END}', 9)"
    queries = {
        "Grafana cost: cost per minute by model": grafana_panel("cost", "Cost per minute by model"),
        "Grafana cost: total cost": grafana_panel("cost", "Total cost"),
        "Grafana quality: p95 latency": grafana_panel("quality-risk", "p95 latency"),
        "Grafana quality: latency p50 / p95 over time": grafana_panel(
            "quality-risk", "LLM latency p50 / p95"
        ),
        "spans scan: cost per model per minute": f"""SELECT toStartOfMinute(timestamp) AS minute,
            request_model, sum(cost_total) FROM llm_spans WHERE {in_day}
            GROUP BY minute, request_model ORDER BY minute""",
        "spans scan: p95 latency per model": """SELECT request_model, quantile(0.95)(duration_ms)
            FROM llm_spans GROUP BY request_model""",
    }
    from_spans = client.query(f"SELECT sum(cost_total) FROM llm_spans WHERE {in_day}")
    from_aggregates = client.query(
        "SELECT sum(cost_total) FROM llm_aggregates FINAL WHERE window_seconds = 60"
    )
    if from_spans.result_rows != from_aggregates.result_rows:
        raise SystemExit(
            f"llm_aggregates ({from_aggregates.result_rows}) do not add up to the spans "
            f"({from_spans.result_rows})"
        )
    results = {}
    for name, sql in queries.items():
        timings = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            client.query(sql)
            timings.append((time.perf_counter() - started) * 1000)
        results[name] = statistics.median(timings[1:])  # the first run warms the caches
        print(
            f"{name:<48}{results[name]:>8.0f} ms  (runs: {', '.join(f'{t:.0f}' for t in timings[1:])})"
        )
    return results


def grafana_panel(dashboard: str, title: str) -> str:
    """A shipped panel's first query as Grafana sends it: every variable on "All", 24 h."""
    from tests.integration.test_grafana_dashboards import ALL, DASHBOARDS, expand

    board = json.loads((DASHBOARDS / f"{dashboard}.json").read_text(encoding="utf-8"))
    (panel,) = [panel for panel in board["panels"] if panel["title"] == title]
    start = calendar.timegm(time.strptime(_DAY_START, "%Y-%m-%d %H:%M:%S"))
    variables = {"service": ALL, "tenant": ALL, "model": ALL}
    return expand(panel["targets"][0]["rawSql"], variables, start, start + 86_400 - 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # several batches of the larger size, so that consuming one overlaps inserting the last
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dashboard-rows", type=int, default=10_000_000)
    parser.add_argument(
        "--dashboard-only", action="store_true", help="only the dashboard queries (no Kafka)"
    )
    args = parser.parse_args()
    if args.dashboard_only:
        with tempfile.TemporaryDirectory(prefix="llmtap-bench-dashboard-") as temporary:
            target = ClickHouseTarget(kind="chdb", path=temporary, database="bench")
            client = open_target(target)
            try:
                Migrator(client, "bench").apply()
                dashboard_latency(client, args.dashboard_rows, args.repeats)
            finally:
                client.close()
        return

    spans = make_spans(args.spans, seed=5)
    # The bench's own objects are not the sink's: a sink process holds none of them, so the
    # collector must not scan them while the sink runs here (the rows built for the baseline
    # are 300,000 tracked tuples).
    gc.collect()
    gc.freeze()
    figures: dict[str, Any] = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="llmtap-bench-sink-") as temporary:
        root = Path(temporary)
        broker = LocalKafkaBroker(
            LocalKafkaSettings(jar_cache_dir=REPO_ROOT / ".llmtap" / "kafka" / "dist"),
            root / "kafka",
            print,
        )
        state = broker.start()
        target = ClickHouseTarget(kind="chdb", path=str(root / "clickhouse"), database="bench")
        client = open_target(target)
        try:
            Migrator(client, "bench").apply()
            for batch in (10_000, 100_000):
                sink_rates, raw_rates, engine_rates, cpu_per_row = [], [], [], []
                for repeat in range(args.repeats):
                    topic = f"bench.normalized.{uuid.uuid4().hex[:8]}"
                    producer = Producer(
                        {
                            "bootstrap.servers": state.bootstrap_servers,
                            "linger.ms": 20,
                            "queue.buffering.max.messages": 1_000_000,
                        }
                    )
                    settings = Settings(
                        data_dir=root,
                        kafka={"bootstrap_servers": state.bootstrap_servers},  # type: ignore[arg-type]
                        topics={
                            "normalized_spans": topic,
                            "dead_letter": topic + ".dead",
                            "partitions": 2,
                        },  # type: ignore[arg-type]
                        sink={
                            "consumer_group": topic,
                            "batch_max_rows": batch,
                            "flush_interval_seconds": 2.0,
                        },  # type: ignore[arg-type]
                    )
                    from llmtap.kafka import ensure_topics
                    from llmtap.schemas.topics import normalized_spans_topic

                    ensure_topics(settings, [normalized_spans_topic(topic, 2)])
                    for span in spans:
                        producer.produce(topic, encode_span(span), span_key(span))
                        producer.poll(0)
                    producer.flush(120)
                    client.command("TRUNCATE TABLE llm_spans")
                    elapsed, cpu = sink_run(settings, client, target, len(spans))
                    sink_rates.append(len(spans) / elapsed)
                    cpu_per_row.append(cpu / len(spans) * 1e6)
                    rows = [span_row(span, topic, 0, index) for index, span in enumerate(spans)]
                    client.command("TRUNCATE TABLE llm_spans")
                    raw_rates.append(len(rows) / raw_insert(client, rows, batch))
                    del rows
                    lines = [
                        span_json_line(encode_span(span), 0, index)
                        for index, span in enumerate(spans)
                    ]
                    client.command("TRUNCATE TABLE llm_spans")
                    engine_rates.append(
                        len(lines) / engine_json_insert(client, lines, batch, root / "batches")
                    )
                    del lines
                    print(
                        f"batch {batch:,} repeat {repeat + 1}: sink {sink_rates[-1]:,.0f} rows/s "
                        f"({cpu_per_row[-1]:.1f} CPU-µs/row), raw insert {raw_rates[-1]:,.0f} "
                        f"rows/s, engine JSON insert alone {engine_rates[-1]:,.0f} rows/s"
                    )
                figures[f"batch_{batch}"] = {
                    "sink_rows_per_second": statistics.median(sink_rates),
                    "raw_insert_rows_per_second": statistics.median(raw_rates),
                    "engine_json_insert_rows_per_second": statistics.median(engine_rates),
                    "sink_cpu_microseconds_per_row": statistics.median(cpu_per_row),
                    "ratio": statistics.median(
                        s / r for s, r in zip(sink_rates, raw_rates, strict=True)
                    ),
                }
            figures["dashboard_ms"] = dashboard_latency(client, args.dashboard_rows, args.repeats)
        finally:
            client.close()
            broker.stop()

    print()
    print(
        f"{'batch':<10}{'sink rows/s':>14}{'raw rows/s':>14}{'sink/raw':>10}{'CPU-µs/row':>12}"
        f"{'engine JSON rows/s':>20}"
    )
    for batch in (10_000, 100_000):
        row = figures[f"batch_{batch}"]
        print(
            f"{batch:<10,}{row['sink_rows_per_second']:>14,.0f}"
            f"{row['raw_insert_rows_per_second']:>14,.0f}"
            f"{row['ratio']:>10.2f}{row['sink_cpu_microseconds_per_row']:>12.1f}"
            f"{row['engine_json_insert_rows_per_second']:>20,.0f}"
        )
    print()
    for name, milliseconds in figures["dashboard_ms"].items():
        print(f"{name:<45}{milliseconds:>8.0f} ms over {args.dashboard_rows:,} spans")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = RESULTS_DIR / f"sink-{time.strftime('%Y%m%dT%H%M%S')}.json"
    output.write_text(json.dumps(figures, indent=2))
    print(f"\nwritten {output}")


if __name__ == "__main__":
    main()
