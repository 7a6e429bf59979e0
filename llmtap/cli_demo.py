"""``llmtap demo traffic``: send realistic LLM spans to a running collector (also `up --demo`)."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable
from typing import Any

import click

from llmtap.demo.traffic import TrafficConfig, TrafficGenerator, TrafficReport
from llmtap.settings import Settings


def collector_endpoint(settings: Settings, port: int | None = None) -> str:
    """The collector's OTLP/HTTP base URL from the settings (a wildcard address means local)."""
    address = settings.collector.address
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(address).is_unspecified:  # listening everywhere: use loopback
            address = "127.0.0.1"
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port or settings.collector.http_port}"


def collector_api_key(settings: Settings) -> str | None:
    """The first configured API key, so demo traffic passes a collector that requires keys."""
    keys = settings.collector.api_keys
    return keys[0].key.get_secret_value() if keys else None


def start_demo(
    settings: Settings,
    *,
    rate_spans_per_second: float,
    http_port: int | None,
    progress: Callable[[str], None],
    seed: int | None = None,
) -> TrafficGenerator:
    """Start the generator in a background thread against the collector (``llmtap up --demo``)."""
    config = TrafficConfig(
        endpoint=collector_endpoint(settings, http_port),
        api_key=collector_api_key(settings),
        rate_spans_per_second=rate_spans_per_second,
        seed=seed,
    )
    generator = TrafficGenerator(config)
    generator.start()
    progress(
        f"demo   traffic     {rate_spans_per_second:g} spans/s to {generator.traces_url} "
        f"(drift after {config.drift_after_spans} spans, ungrounded batch after "
        f"{config.ungrounded_after_spans})"
    )
    return generator


def stop_demo(generator: TrafficGenerator, progress: Callable[[str], None]) -> None:
    """Stop the generator and flush its queued spans to the collector (which still runs)."""
    report = generator.stop()
    progress(f"demo   traffic     stopped: {describe(report)}")


def describe(report: TrafficReport) -> str:
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report.kinds.items()))
    drift = (
        f"; drift from span {report.drift_started_at_span}"
        if report.drift_started_at_span is not None
        else ""
    )
    return (
        f"sent {report.spans} spans in {report.interactions} interactions ({kinds}); "
        f"{report.ungrounded} ungrounded answers{drift}"
    )


@click.group()
def demo() -> None:
    """Demo data for trying llmtap out."""


@demo.command("traffic")
@click.option(
    "--endpoint",
    help="Collector OTLP/HTTP base URL (default: the collector's address and http_port).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Average spans per second.",
)
@click.option(
    "--duration-seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after this long (default: until Ctrl-C).",
)
@click.option("--seed", type=int, help="Seed: the same seed sends the same traffic.")
@click.option(
    "--drift-after-spans",
    type=click.IntRange(min=0),
    default=600,
    show_default=True,
    help="Spans before the support bot's prompts switch topic mix.",
)
@click.option(
    "--ungrounded-after-spans",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    help="Spans before a batch of answers unsupported by their context.",
)
@click.option(
    "--ungrounded-batch-size",
    type=click.IntRange(min=0),
    default=25,
    show_default=True,
    help="RAG answers in the ungrounded batch.",
)
@click.option(
    "--injection-every",
    type=click.IntRange(min=0),
    default=40,
    show_default=True,
    help="Every n-th interaction is a prompt-injection attempt (0: none).",
)
@click.option(
    "--api-key",
    envvar="LLMTAP_DEMO_API_KEY",
    show_envvar=True,
    help="Bearer key for a collector with API keys (default: the first configured key).",
)
@click.pass_obj
def traffic(
    obj: Any,
    endpoint: str | None,
    rate: float,
    duration_seconds: float | None,
    seed: int | None,
    drift_after_spans: int,
    ungrounded_after_spans: int,
    ungrounded_batch_size: int,
    injection_every: int,
    api_key: str | None,
) -> None:
    """Send realistic LLM spans (RAG, tools, streaming, errors, drift, injections) over OTLP.

    Four demo services (support-bot, docs-assistant, analytics-copilot, travel-agent) send
    through the OpenTelemetry SDK and OTLP/HTTP exporter, as instrumented apps do. Runs until
    Ctrl-C or --duration-seconds, then flushes what is queued.
    """
    import threading

    settings: Settings = obj.settings
    config = TrafficConfig(
        endpoint=endpoint or collector_endpoint(settings),
        api_key=api_key or collector_api_key(settings),
        rate_spans_per_second=rate,
        duration_seconds=duration_seconds,
        seed=seed,
        drift_after_spans=drift_after_spans,
        ungrounded_after_spans=ungrounded_after_spans,
        ungrounded_batch_size=ungrounded_batch_size,
        injection_every_interactions=injection_every,
    )
    generator = TrafficGenerator(config)
    click.echo(f"llmtap: demo traffic {rate:g} spans/s to {generator.traces_url}", err=True)
    stop = threading.Event()
    try:
        generator.run(stop)
    except KeyboardInterrupt:
        stop.set()
        generator.flush()
    finally:
        generator.shutdown()
    click.echo(describe(generator.report))
