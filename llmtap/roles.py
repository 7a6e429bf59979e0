"""Starting and stopping the pipeline roles inside one asyncio process (``up``, role commands).

Each role is started by name and returns an object with ``async stop()``; blocking Kafka loops
run in their own thread and stop at their next batch boundary.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from llmtap.errors import LlmtapError
from llmtap.settings import Settings

ROLES = ("collector", "processor", "sink", "web")

logger = logging.getLogger(__name__)


class RunningRole(Protocol):
    async def stop(self) -> None: ...


def failure_of(component: object) -> str | None:
    """Why a running component stopped by itself (None while it runs or for kinds that do not
    report it): the process then exits non-zero so that a supervisor restarts it."""
    failure = getattr(component, "failure", None)
    return failure() if callable(failure) else None


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
        except BaseException as error:  # reported by start()/stop()/failure()
            logger.exception("the %s stopped with an error", self._name)
            self._error = error
            self._ready.set()

    def failure(self) -> str | None:
        if self._thread.is_alive() or self._stop.is_set() or not self._thread.ident:
            return None
        if self._error is None:
            return f"the {self._name} stopped by itself"
        return f"the {self._name} stopped: {type(self._error).__name__}: {self._error}"

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


class _Together:
    """Roles made of several components: stopped in the given order."""

    def __init__(self, components: list[RunningRole]) -> None:
        self._components = components

    async def stop(self) -> None:
        for component in self._components:
            await component.stop()

    def failure(self) -> str | None:
        return next(filter(None, map(failure_of, self._components)), None)


async def _start_processor(settings: Settings, progress: Callable[[str], None]) -> RunningRole:
    """The normalizer, then the stream worker, the risk stage and the drift stage, if enabled.

    Each stage has its own consumer group on the normalized spans, so a slow one (the
    embedding model on a busy CPU) never holds the others back, and any subset can run in a
    process of its own (``llmtap processor --stages``): threads of one process share one
    core's worth of Python (the GIL).
    """
    from llmtap.processors.normalize.stage import NormalizerStage

    processor = settings.processor
    if not any(
        (
            processor.normalizer_enabled,
            processor.stream.enabled,
            processor.risk.enabled,
            processor.drift.enabled,
        )
    ):
        raise LlmtapError(
            "the processor has no stage to run: normalizer, stream, risk and drift are all off"
        )
    started: list[RunningRole] = []
    try:
        if processor.normalizer_enabled:
            stage = NormalizerStage(settings, progress)
            normalizer = ThreadedStage("normalizer", stage.run, stage.ready)
            await normalizer.start()
            started.append(normalizer)
        if settings.processor.stream.enabled:
            from llmtap.processors.stream.app import StreamApp

            stream = StreamApp(settings, progress)
            await stream.start()
            started.append(stream)
            if settings.processor.alerts.webhooks:
                from llmtap.processors.alerts.delivery_stage import AlertDeliveryStage

                delivery = AlertDeliveryStage(settings, progress)
                running_delivery = ThreadedStage("alert delivery", delivery.run, delivery.ready)
                await running_delivery.start()
                started.append(running_delivery)
        if settings.processor.risk.enabled:
            from llmtap.processors.risk.stage import RiskStage

            risk = RiskStage(settings, progress)
            running_risk = ThreadedStage("risk stage", risk.run, risk.ready)
            await running_risk.start(timeout_seconds=300)  # loads the embedding model
            started.append(running_risk)
        if settings.processor.drift.enabled:
            from llmtap.processors.drift.stage import DriftStage

            drift = DriftStage(settings, progress)
            running_drift = ThreadedStage("drift stage", drift.run, drift.ready)
            await running_drift.start()
            started.append(running_drift)
    except BaseException:
        for component in reversed(started):
            await component.stop()
        raise
    # What exists now (imports, the embedding model, faust's app) lives as long as the process:
    # out of the collector's sight, full collections scan only what the stages allocate while
    # they run, not the millions of objects PyTorch and transformers leave behind.
    gc.freeze()
    # Downstream stages stop first, the normalizer last.
    return _Together(list(reversed(started)))


async def start_role(name: str, settings: Settings, progress: Callable[[str], None]) -> RunningRole:
    if name == "collector":
        from llmtap.collectors.service import Collector

        collector = Collector(settings, progress)
        await collector.start()
        return collector
    if name == "processor":
        return await _start_processor(settings, progress)
    if name == "sink":
        from llmtap.sinks.clickhouse.derived import DerivedSink
        from llmtap.sinks.clickhouse.sink import ClickHouseSink

        sink = ClickHouseSink(settings, progress)
        running = ThreadedStage("sink", sink.run, sink.ready)
        await running.start()
        derived = DerivedSink(settings, progress)
        derived_running = ThreadedStage("derived sink", derived.run, derived.ready)
        try:
            await derived_running.start()
        except BaseException:
            await running.stop()
            raise
        return _Together([running, derived_running])
    if name == "web":
        from llmtap.web.server import WebDashboard

        dashboard = WebDashboard(settings, progress)
        await dashboard.start()
        return dashboard
    raise LlmtapError(f"unknown role {name!r}; known: {', '.join(ROLES)}")
