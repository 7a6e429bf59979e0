"""`llmtap ui`: the web dashboard on its own, for a ClickHouse server or a free embedded path.

On the embedded default the store belongs to the process that opened it, so while `llmtap up`
runs, its own dashboard (the `web` settings) is the one to use; `llmtap ui` then reports the
process holding the store instead of starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

import click

from llmtap.settings import Settings, load_settings

if TYPE_CHECKING:
    from llmtap.cli import CliState


@click.command("ui")
@click.option("--address", help="Interface to listen on (default: web.address, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port (default: web.port; 0 picks a free one)."
)
@click.option(
    "--duration-seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop by itself after this long (default: run until Ctrl-C).",
)
@click.pass_obj
def ui(
    state: CliState, address: str | None, port: int | None, duration_seconds: float | None
) -> None:
    """Serve the web dashboard (read-only) over the configured ClickHouse store.

    Pages: overview, cost, drift, risk, alerts and trace search, at http://127.0.0.1:8080/ by
    default. A non-loopback address needs LLMTAP_WEB__AUTH_TOKEN.
    """
    overrides: dict[str, object] = {}
    if address is not None:
        overrides["address"] = address
    if port is not None:
        overrides["port"] = port
    settings = state.settings
    if overrides:
        # Re-validate through the settings loader so a remote address without a token is
        # refused with the same message as in the config file.
        web = settings.web.model_dump() | overrides
        settings = load_settings(state.config_file, **state.overrides, web=web)
    asyncio.run(_serve(settings, duration_seconds))


async def _serve(settings: Settings, duration_seconds: float | None) -> None:
    from llmtap.cli import progress
    from llmtap.web.server import WebDashboard

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    dashboard = WebDashboard(settings, progress)
    await dashboard.start()
    try:
        progress("ready  ui")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration_seconds)
    finally:
        await dashboard.stop()
