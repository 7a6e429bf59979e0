"""A file a stage touches every few seconds while its loop runs, for container healthchecks.

`docker-compose.yml` checks the file's age (``<data_dir>/heartbeats/<stage>``): a stage whose
loop is stuck or dead stops touching it and the container turns unhealthy.

A heartbeat made with ``stall_seconds`` is also watched inside the process: :func:`stalled`
names it once its loop has not turned for that long, and the role runner then exits non-zero
so that a supervisor restarts the process (a liveness check, for a call into a client library
that never returns, such as a Kafka transaction stuck after a broker restart).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)


_watched: dict[str, tuple[float, float]] = {}  # stage -> (last beat, allowed silence)
_watched_lock = threading.Lock()


def stalled() -> list[str]:
    """Watched stages whose loop has not turned within their ``stall_seconds``."""
    now = time.monotonic()
    with _watched_lock:
        return [
            f"the {stage} has not made progress for {now - last:.0f} s"
            for stage, (last, allowed) in _watched.items()
            if now - last > allowed
        ]


class Heartbeat:
    def __init__(
        self,
        data_dir: Path,
        stage: str,
        every_seconds: float = 5.0,
        stall_seconds: float | None = None,
    ) -> None:
        self.path = data_dir / "heartbeats" / stage
        self._stage = stage
        self._every = every_seconds
        self._stall_seconds = stall_seconds
        self._last = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._watch(time.monotonic())

    def _watch(self, now: float) -> None:
        if self._stall_seconds is not None:
            with _watched_lock:
                _watched[self._stage] = (now, self._stall_seconds)

    def close(self) -> None:
        """The loop ended on purpose: stop watching it."""
        with _watched_lock:
            _watched.pop(self._stage, None)

    def beat(self) -> None:
        now = time.monotonic()
        self._watch(now)
        if now - self._last >= self._every:
            self._last = now
            try:
                self.path.write_text(str(time.time()), encoding="utf-8")
            except OSError as problem:  # a full disk must not stop the stage it reports on
                logger.warning("cannot write the heartbeat %s: %s", self.path, problem)
