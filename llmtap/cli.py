"""The ``llmtap`` command line.

User errors (bad settings, a broker that does not answer, a missing tool) print one message and
exit non-zero without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from llmtap import __version__
from llmtap.cli_risk import risk
from llmtap.errors import LlmtapError
from llmtap.settings import Settings, load_settings


@dataclass
class CliState:
    """Global options, turned into validated settings only when a command needs them."""

    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file, **self.overrides)
            _configure_logging(self._settings.log_level)
        return self._settings


pass_state = click.make_pass_decorator(CliState)


def progress(message: str) -> None:
    """Progress goes to stderr so that stdout stays parseable."""
    click.echo(f"llmtap: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="llmtap")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    envvar="LLMTAP_CONFIG_FILE",
    help="YAML or TOML config file (also LLMTAP_CONFIG_FILE).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for local state (default .llmtap; also LLMTAP_DATA_DIR).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level (also LLMTAP_LOG_LEVEL).",
)
@click.pass_context
def cli(
    context: click.Context, config_file: Path | None, data_dir: Path | None, log_level: str | None
) -> None:
    """llmtap: streaming monitoring for LLM telemetry (OTLP in, Kafka, ClickHouse)."""
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if log_level is not None:
        overrides["log_level"] = log_level
    context.obj = CliState(config_file=config_file, overrides=overrides)


# -- up ------------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--duration-seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop by itself after this long (default: run until Ctrl-C).",
)
@click.option("--demo", is_flag=True, help="Also send demo traffic (see `llmtap demo traffic`).")
@click.option(
    "--demo-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="Spans per second of the demo traffic.",
)
@pass_state
def up(state: CliState, duration_seconds: float | None, demo: bool, demo_rate: float) -> None:
    """Run the whole pipeline on this machine: Kafka, ClickHouse, collector, processor, sink.

    Starts the local Kafka broker when LLMTAP_KAFKA__BOOTSTRAP_SERVERS is unset, opens the
    ClickHouse store (embedded by default) and applies its migrations, starts the OTLP
    collector, the processor and the ClickHouse sink, reports each component when ready, and
    runs until Ctrl-C or SIGTERM; then stops what it started, letting accepted requests finish.
    """
    from llmtap import clickhouse, kafka
    from llmtap.dev.kafka_broker import LocalKafkaBroker

    settings = state.settings
    started_broker: LocalKafkaBroker | None = None
    store = None
    try:
        if settings.kafka.bootstrap_servers is None:
            broker = LocalKafkaBroker(
                settings.local_kafka, kafka.local_broker_root(settings), progress
            )
            if not broker.status().running:
                broker.start()
                started_broker = broker
        servers = kafka.check_reachable(settings)
        progress(f"ready  kafka       {servers}")
        store = clickhouse.open_client(settings)
        version = store.query("SELECT version()").result_rows[0][0]
        _migrate(settings, store)
        progress(f"ready  clickhouse  {settings.clickhouse_target().describe()}, v{version}")
        roles = ["collector", "processor", "sink"] + (["web"] if settings.web.enabled else [])
        if demo and settings.processor.alerts.rules_file is None:
            settings = _with_demo_alert_rules(settings)
        if demo and not settings.processor.drift.model_fields_set:
            settings = _with_demo_drift_windows(settings)
        asyncio.run(_serve_roles(settings, roles, duration_seconds, demo_rate if demo else None))
    finally:
        progress("stopping")
        if store is not None:
            store.close()
        if started_broker is not None:
            started_broker.stop()
        progress("stopped")


def _with_demo_alert_rules(settings: Settings) -> Settings:
    """The shipped demo rules (drift, risk, budget, errors), when the user configured none."""
    from importlib.resources import files

    rules_file = Path(str(files("llmtap.demo") / "alert_rules.yaml"))
    alerts = settings.processor.alerts.model_copy(update={"rules_file": rules_file})
    processor = settings.processor.model_copy(update={"alerts": alerts})
    progress(f"demo   alert rules {rules_file}")
    return settings.model_copy(update={"processor": processor})


def _with_demo_drift_windows(settings: Settings) -> Settings:
    """Small drift windows, so the demo's scheduled drift shows within a minute or two.

    Production defaults (1,000 reference events, 200-event windows per service, model and
    prompt version) need far more traffic than a demo sends. Only when the user set no drift
    setting at all.
    """
    drift = type(settings.processor.drift).model_validate(
        {
            **settings.processor.drift.model_dump(),
            "key_dimensions": ("tenant", "service_name"),
            "reference_policy": "fixed",
            "reference_events": 60,
            "reservoir_size": 60,
            "window_events": 30,
            "min_window_events": 20,
            "window_seconds": 60.0,
            "consecutive_windows": 2,
        }
    )
    processor = settings.processor.model_copy(update={"drift": drift})
    progress("demo   drift windows: 60 reference events, 30-event windows per service")
    return settings.model_copy(update={"processor": processor})


def _role_command(role: str, summary: str) -> None:
    """Register `llmtap <role>`: one pipeline role in this process, until Ctrl-C or SIGTERM."""

    @cli.command(name=role, help=summary)
    @click.option(
        "--duration-seconds",
        type=click.FloatRange(min=0, min_open=True),
        help="Stop by itself after this long (default: run until Ctrl-C).",
    )
    @pass_state
    def run_role(state: CliState, duration_seconds: float | None) -> None:
        asyncio.run(_serve_roles(state.settings, [role], duration_seconds))


_role_command(
    "collector", "Run the OTLP collector role: OTLP/HTTP and gRPC in, raw spans topic out."
)
PROCESSOR_STAGES = ("normalize", "stream", "risk", "drift")


@cli.command(name="processor")
@click.option(
    "--duration-seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop by itself after this long (default: run until Ctrl-C).",
)
@click.option(
    "--stages",
    metavar="LIST",
    help=(
        f"Comma-separated stages to run in this process, of {', '.join(PROCESSOR_STAGES)}; "
        "a stage turned off in the settings stays off (default: every stage enabled in the "
        "settings). Run `--stages normalize,risk` and `--stages stream,drift` as two "
        "processes to use two cores."
    ),
)
@pass_state
def processor(state: CliState, duration_seconds: float | None, stages: str | None) -> None:
    """Run the processor role: raw spans in; normalized spans, aggregates, alerts, scores out."""
    settings = state.settings
    if stages is not None:
        settings = _with_processor_stages(settings, stages)
    asyncio.run(_serve_roles(settings, ["processor"], duration_seconds))


def _with_processor_stages(settings: Settings, stages: str) -> Settings:
    chosen = {name.strip() for name in stages.split(",") if name.strip()}
    unknown = sorted(chosen - set(PROCESSOR_STAGES))
    if unknown or not chosen:
        raise click.BadParameter(
            f"unknown stage(s) {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(PROCESSOR_STAGES)}",
            param_hint="--stages",
        )
    current = settings.processor
    # The split into processes is a deployment's choice, turning a stage on or off is the
    # settings': docker-compose.yml names every stage, and must still honour
    # LLMTAP_PROCESSOR__RISK__ENABLED=false.
    enabled = {
        "normalize": (current.normalizer_enabled, "processor.normalizer_enabled"),
        "stream": (current.stream.enabled, "processor.stream.enabled"),
        "risk": (current.risk.enabled, "processor.risk.enabled"),
        "drift": (current.drift.enabled, "processor.drift.enabled"),
    }
    for name in PROCESSOR_STAGES:
        if name in chosen and not enabled[name][0]:
            progress(f"--stages: {name} not run, it is off in the settings ({enabled[name][1]})")
    run = {name for name in chosen if enabled[name][0]}
    processor = current.model_copy(
        update={
            "normalizer_enabled": "normalize" in run,
            "stream": current.stream.model_copy(update={"enabled": "stream" in run}),
            "risk": current.risk.model_copy(update={"enabled": "risk" in run}),
            "drift": current.drift.model_copy(update={"enabled": "drift" in run}),
        }
    )
    return settings.model_copy(update={"processor": processor})


_role_command(
    "sink",
    "Run the sink role: normalized spans topic into ClickHouse (run `llmtap migrate` first).",
)


def _migrate(settings: Settings, client: Any) -> None:
    from llmtap.sinks.clickhouse.migrations import Migrator

    migrator = Migrator(
        client,
        settings.clickhouse_target().database,
        settings.clickhouse.cluster,
        retention_days=settings.clickhouse.retention_days,
    )
    migrator.apply(lambda line: progress(f"clickhouse: {line}"))


async def _serve_roles(
    settings: Settings,
    roles: list[str],
    duration_seconds: float | None,
    demo_rate: float | None = None,
) -> None:
    """Start the roles, run until a signal (or the duration), then stop them in reverse order."""
    from llmtap import heartbeat
    from llmtap.roles import failure_of, start_role

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    started = []
    demo = None
    interrupted = False
    try:
        for role in roles:
            started.append(await start_role(role, settings, progress))
            progress(f"ready  {role}")
        if demo_rate is not None:  # after the collector is ready; stopped first, flushing to it
            from llmtap.cli_demo import start_demo

            collector = started[roles.index("collector")] if "collector" in roles else None
            port = getattr(collector, "http_port", None)
            demo = start_demo(
                settings, rate_spans_per_second=demo_rate, http_port=port, progress=progress
            )
        progress("running; press Ctrl-C to stop")
        deadline = None if duration_seconds is None else loop.time() + duration_seconds
        while not stop.is_set() and (deadline is None or loop.time() < deadline):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            failures = [failure for failure in map(failure_of, started) if failure]
            failures += heartbeat.stalled()
            if failures:
                # A stage that died would leave a process that looks alive and does nothing:
                # exit non-zero instead, so that a supervisor restarts it (docker-compose.yml
                # restarts llmtap's services; systemd: Restart=on-failure).
                raise LlmtapError(f"{'; '.join(failures)}; exiting so that it can be restarted")
    except BaseException:
        interrupted = True
        raise
    finally:
        if demo is not None:
            from llmtap.cli_demo import stop_demo

            await asyncio.to_thread(stop_demo, demo, progress)
        errors: list[Exception] = []
        for component in reversed(started):
            try:
                await component.stop()
            except Exception as error:  # the others must stop too; the first is raised after
                errors.append(error)
        if errors and not interrupted:
            raise errors[0]


# -- check ---------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--wait-seconds",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Keep retrying until both answer or this much time has passed.",
)
@pass_state
def check(state: CliState, wait_seconds: float) -> None:
    """Validate the settings and check that Kafka and ClickHouse answer."""
    from llmtap import clickhouse, kafka

    settings = state.settings
    click.echo("settings    ok")
    deadline = time.monotonic() + wait_seconds
    probes: list[tuple[str, Callable[[], str]]] = [
        ("kafka", lambda: kafka.check_reachable(settings)),
        ("clickhouse", lambda: clickhouse.check_reachable(settings)),
    ]
    for name, probe in probes:
        while True:
            try:
                click.echo(f"{name:<11} ok  {probe()}")
                break
            except LlmtapError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(2)


# -- migrate -------------------------------------------------------------------------------------


@cli.command()
@click.option("--dry-run", is_flag=True, help="Print the SQL that would run; change nothing.")
@click.option(
    "--render-cluster",
    metavar="NAME",
    help="Print every migration rendered for cluster NAME, without connecting (for review).",
)
@pass_state
def migrate(state: CliState, dry_run: bool, render_cluster: str | None) -> None:
    """Create or upgrade llmtap's ClickHouse tables, then set their retention TTL.

    Applies the pending files of schemas/clickhouse in order and prints one line per change,
    or "up to date". Safe to run again, and concurrently.
    """
    from llmtap import clickhouse
    from llmtap.sinks.clickhouse.migrations import Migrator, Topology, render_schema

    settings = state.settings
    database = settings.clickhouse_target().database
    retention_days = settings.clickhouse.retention_days
    if render_cluster is not None:
        click.echo(render_schema(Topology(database, render_cluster), retention_days), nl=False)
        return
    client = clickhouse.open_client(settings, create_database=not dry_run)
    try:
        migrator = Migrator(
            client, database, settings.clickhouse.cluster, retention_days=retention_days
        )
        if dry_run:
            click.echo(migrator.dry_run() or "up to date\n", nl=False)
        elif not migrator.apply(click.echo).changed:
            click.echo("up to date")
    finally:
        client.close()


@cli.command()
@pass_state
def status(state: CliState) -> None:
    """Where the spans are: Kafka lag per stage and spans stored in ClickHouse."""
    from llmtap import clickhouse
    from llmtap.status import clickhouse_health, kafka_lag, stored_recently, stored_spans

    settings = state.settings
    click.echo(
        f"{'stage':<12}{'topic':<28}{'group':<22}{'messages':>10}{'committed':>11}{'lag':>8}"
    )
    lags = kafka_lag(settings)
    for lag in lags:
        click.echo(
            f"{lag.stage:<12}{lag.topic:<28}{lag.group:<22}{lag.end_offsets:>10}"
            f"{lag.committed:>11}{lag.lag:>8}"
        )
    if any(lag.unreadable for lag in lags):
        click.echo(
            "(lag leaves out offsets after the committed ones that hold only transaction "
            "markers or aborted records)"
        )
    where = settings.clickhouse_target().describe()
    try:
        client = clickhouse.open_client(settings, create_database=False)
        try:
            health = clickhouse_health(client)
            counts = stored_spans(client)
            last_hour = stored_recently(client)
        finally:
            client.close()
    except Exception as error:  # the store's own message says why; no traceback for it
        click.echo(f"clickhouse  unavailable: {where}: {str(error).strip().splitlines()[0]}")
        sys.exit(3)
    click.echo(f"clickhouse  ok  {where}, {health}")
    by_type = ", ".join(
        f"{name} {count}"
        for name, count in sorted(counts.items())
        if name not in ("total", "distinct")
    )
    detail = f": {by_type}" if by_type else ""
    click.echo(f"stored spans {counts['total']} ({counts['distinct']} distinct){detail}")
    click.echo(f"stored spans that started in the last hour: {last_hour}")


@cli.command()
@click.option(
    "--since", type=click.DateTime(formats=["%Y-%m-%d"]), help="Only spans from this day on."
)
@click.option("--dry-run", is_flag=True, help="Compute and report, write nothing.")
@pass_state
def reprice(state: CliState, since: Any, dry_run: bool) -> None:
    """Price stored spans again with the current price table (after a price fix)."""
    from llmtap import clickhouse
    from llmtap.processors.pricing import PriceTable
    from llmtap.sinks.clickhouse.reprice import reprice as reprice_spans

    settings = state.settings
    prices = PriceTable.load(settings.processor.price_overrides_file)
    client = clickhouse.open_client(settings, create_database=False)
    try:
        report = reprice_spans(
            client,
            prices,
            since=since.date() if since else None,
            dry_run=dry_run,
            progress=progress,
        )
    finally:
        client.close()
    click.echo(
        f"{report.spans} spans over {report.days} days re-priced to {prices.version}: "
        f"total cost {report.cost_before} -> {report.cost_after} "
        f"({report.newly_priced} newly priced, {report.newly_unpriced} newly unpriced)"
        + (
            " [dry run: nothing written]"
            if dry_run
            else f"; {report.windows} aggregate windows corrected"
        )
    )


# -- normalize and cost ------------------------------------------------------------------------


@cli.command()
@click.argument("file", type=click.File("rb"))
@click.option("--no-price", is_flag=True, help="Skip pricing (cost stays empty).")
@click.option(
    "--logs",
    "logs_file",
    type=click.File("rb"),
    help="OTLP logs file whose GenAI event records are joined to their spans.",
)
@pass_state
def normalize(state: CliState, file: Any, no_price: bool, logs_file: Any) -> None:
    """Normalize an OTLP trace file (JSON or protobuf; - for stdin) into JSON lines."""
    from llmtap.processors.normalize.genai_events import join_file
    from llmtap.processors.normalize.normalizer import Normalizer
    from llmtap.processors.pricing import PriceTable
    from llmtap.schemas.llm_span import encode_span
    from llmtap.schemas.otlp import OtlpDecodeError, decode_traces, sniff_encoding

    body = file.read()
    try:
        request = decode_traces(body, sniff_encoding(body))
    except OtlpDecodeError as error:
        raise LlmtapError(f"{file.name}: {error}") from None
    pricer = (
        None if no_price else PriceTable.load(state.settings.processor.price_overrides_file).price
    )
    failures: list[str] = []
    spans = Normalizer(pricer).normalize_request(
        request,
        on_error=lambda span, error: failures.append(f"span {span.span_id.hex()}: {error!r}"),
    )
    if logs_file is not None:
        try:
            spans, unmatched = join_file(spans, logs_file.read())
        except OtlpDecodeError as error:
            raise LlmtapError(f"{logs_file.name}: {error}") from None
        for item in unmatched:  # reported, but the spans are still right: not a failure
            click.echo(
                f"warning: log record of span {item.record.span_id}: {item.reason}", err=True
            )
    for span in spans:
        click.echo(encode_span(span).decode())
    for failure in failures:
        click.echo(f"error: {failure}", err=True)
    if failures:
        sys.exit(1)


@cli.command()
@click.option("--model", required=True, help="Model name as the provider reports it.")
@click.option(
    "--provider", help="Provider (openai, anthropic, aws.bedrock, ...); inferred when unique."
)
@click.option(
    "--input-tokens",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="All input tokens, cached ones included.",
)
@click.option(
    "--output-tokens",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="All output tokens, reasoning included.",
)
@click.option(
    "--cache-read-tokens", type=click.IntRange(min=0), help="Input tokens read from the cache."
)
@click.option(
    "--cache-write-tokens", type=click.IntRange(min=0), help="Input tokens written to the cache."
)
@click.option(
    "--reasoning-tokens", type=click.IntRange(min=0), help="Output tokens spent on reasoning."
)
@click.option(
    "--at",
    "at_date",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Price as of this date (default: now).",
)
@pass_state
def cost(
    state: CliState,
    model: str,
    provider: str | None,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int | None,
    cache_write_tokens: int | None,
    reasoning_tokens: int | None,
    at_date: Any,
) -> None:
    """Price one call and print the breakdown with the price version used."""
    from llmtap.processors.pricing import PriceTable
    from llmtap.schemas.llm_span import TokenUsage

    table = PriceTable.load(state.settings.processor.price_overrides_file)
    usage = TokenUsage(
        input=input_tokens,
        output=output_tokens,
        cache_read=cache_read_tokens,
        cache_write=cache_write_tokens,
        reasoning=reasoning_tokens,
    )
    at = int((at_date.timestamp() if at_date is not None else time.time()) * 1e9)
    priced = table.price(provider, model, usage, at)
    click.echo(table.explain(provider, model, usage, at))
    if not priced.priced:
        sys.exit(3)


# -- config --------------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Inspect settings."""


@config.command("show")
@pass_state
def config_show(state: CliState) -> None:
    """Print the effective settings as YAML, secrets masked."""
    data = state.settings.model_dump(mode="json")
    click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@config.command("reference")
def config_reference() -> None:
    """Print the settings reference (Markdown) generated from the settings model."""
    from llmtap.settings_reference import render_reference

    click.echo(render_reference(), nl=False)


# -- dev -----------------------------------------------------------------------------------------


@cli.group()
def dev() -> None:
    """Local development infrastructure."""


@dev.group("kafka")
def dev_kafka() -> None:
    """The local single-node Apache Kafka broker (KRaft) on 127.0.0.1."""


def _local_broker(state: CliState) -> Any:
    from llmtap.dev.kafka_broker import LocalKafkaBroker
    from llmtap.kafka import local_broker_root

    settings = state.settings
    return LocalKafkaBroker(settings.local_kafka, local_broker_root(settings), progress)


@dev_kafka.command("fetch")
@pass_state
def dev_kafka_fetch(state: CliState) -> None:
    """Resolve and cache the broker's jars from Maven Central."""
    broker = _local_broker(state)
    click.echo(f"jars cached in {broker.fetch()}")


@dev_kafka.command("start")
@pass_state
def dev_kafka_start(state: CliState) -> None:
    """Start the broker (fetching jars on first use) and wait until it answers."""
    broker_state = _local_broker(state).start()
    click.echo(f"running  pid {broker_state.pid}  bootstrap {broker_state.bootstrap_servers}")


@dev_kafka.command("status")
@pass_state
def dev_kafka_status(state: CliState) -> None:
    """Say whether the broker runs; exit 0 if it does, 3 if not."""
    status = _local_broker(state).status()
    click.echo(status.detail)
    if not status.running:
        sys.exit(3)


@dev_kafka.command("stop")
@pass_state
def dev_kafka_stop(state: CliState) -> None:
    """Stop the broker with a controlled shutdown (its data is kept)."""
    if _local_broker(state).stop():
        click.echo("stopped")
    else:
        click.echo("not running")


@dev_kafka.command("reset")
@pass_state
def dev_kafka_reset(state: CliState) -> None:
    """Delete the stopped broker's data (topics and offsets); cached jars are kept."""
    _local_broker(state).reset()
    click.echo("broker data deleted")


from llmtap.cli_alerts import alerts  # noqa: E402 (registered after the core commands)

cli.add_command(alerts)


cli.add_command(risk)

from llmtap.cli_web import ui  # noqa: E402 (needs CliState from above)

cli.add_command(ui)

from llmtap.cli_demo import demo as demo_group  # noqa: E402
from llmtap.cli_query import query  # noqa: E402

cli.add_command(demo_group)
cli.add_command(query)


# -- entry point ---------------------------------------------------------------------------------


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # librdkafka reports every refused connection; the caller turns failures into one message.
    librdkafka_level = logging.DEBUG if level == "debug" else logging.CRITICAL
    logging.getLogger("llmtap.librdkafka").setLevel(librdkafka_level)
    # Client libraries log each retry; llmtap reports the final failure once, with context.
    quiet_level = logging.DEBUG if level == "debug" else logging.ERROR
    for name in ("urllib3", "clickhouse_connect"):
        logging.getLogger(name).setLevel(quiet_level)


# A full disk, an exceeded quota or file size limit, a read-only or forbidden folder.
_STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
)


def main() -> None:
    try:
        cli.main(prog_name="llmtap", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except LlmtapError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as error:
        # tempfile reports a full /tmp as "No usable temporary directory" (ENOENT)
        if error.errno not in _STORAGE_ERRNOS and "No usable temporary" not in str(error):
            raise
        # A full or read-only disk is the operator's to fix: say so instead of a traceback.
        click.echo(f"error: cannot write to disk: {error}; is it full or read-only?", err=True)
        sys.exit(1)
