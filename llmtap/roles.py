"""Starting and stopping the pipeline roles inside one asyncio process (``up``, role commands).

Each role is started by name and returns an object with ``async stop()``; blocking Kafka loops
run in their own thread and stop at their next batch boundary.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Protocol

from llmtap.errors import LlmtapError
from llmtap.settings import Settings

ROLES = ("collector", "processor", "sink")


class RunningRole(Protocol):
    async def stop(self) -> None: ...


class ThreadedStage:
    """A blocking ``run(stop_event)`` stage in a daemon thread, stopped cooperatively."""

    def __init__(
        self, name: str, run: Callable[[threading.Event], None], ready: threading.Event
    ) -> None:
        self._name = name
        self._stop = threading.Event()
        self._ready = ready
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, args=(run,), name=f"llmtap-{name}", daemon=True
        )

    def _main(self, run: Callable[[threading.Event], None]) -> None:
        try:
            run(self._stop)
        except BaseException as error:  # reported by start()/stop() in the event loop
            self._error = error
            self._ready.set()

    async def start(self, timeout_seconds: float = 120) -> None:
        self._thread.start()
        ready = await asyncio.to_thread(self._ready.wait, timeout_seconds)
        if self._error is not None:
            raise self._error
        if not ready:
            raise LlmtapError(f"the {self._name} did not start within {timeout_seconds:.0f} s")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 120)
        if self._error is not None and not isinstance(self._error, LlmtapError):
            raise self._error


async def start_role(name: str, settings: Settings, progress: Callable[[str], None]) -> RunningRole:
    if name == "collector":
        from llmtap.collectors.service import Collector

        collector = Collector(settings, progress)
        await collector.start()
        return collector
    if name == "processor":
        from llmtap.processors.normalize.stage import NormalizerStage

        stage = NormalizerStage(settings, progress)
        running = ThreadedStage("normalizer", stage.run, stage.ready)
        await running.start()
        return running
    if name == "sink":
        from llmtap.sinks.clickhouse.sink import ClickHouseSink

        sink = ClickHouseSink(settings, progress)
        running = ThreadedStage("sink", sink.run, sink.ready)
        await running.start()
        return running
    raise LlmtapError(f"unknown role {name!r}; known: {', '.join(ROLES)}")
