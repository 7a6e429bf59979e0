"""A file a stage touches every few seconds while its loop runs, for container healthchecks.

`docker-compose.yml` checks the file's age (``<data_dir>/heartbeats/<stage>``): a stage whose
loop is stuck or dead stops touching it and the container turns unhealthy.
"""

from __future__ import annotations

import time
from pathlib import Path


class Heartbeat:
    def __init__(self, data_dir: Path, stage: str, every_seconds: float = 5.0) -> None:
        self.path = data_dir / "heartbeats" / stage
        self._every = every_seconds
        self._last = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self.path.write_text(str(time.time()), encoding="utf-8")
            self._last = now
