"""CPU time and memory of the pipeline's processes, per process and per thread, from /proc.

The processor role hosts several stages as threads (``llmtap.roles.ThreadedStage`` names them
``llmtap-<stage>``), so per-thread CPU time splits the process's time by stage; the roles run
through ``e2e_role.py``, which passes those names to the OS. librdkafka and ClickHouse name their
own threads (``rdk:*``; ``QueryPipelineEx``, ``MergeMutate`` ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector import CLOCK_TICKS, peak_rss_megabytes, process_cpu_seconds

__all__ = ["peak_rss_megabytes", "process_cpu_seconds", "rss_megabytes", "thread_cpu_seconds"]


def rss_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def thread_label(pid: int, tid: int, name: str) -> str:
    """Stage threads keep their names; library threads are grouped."""
    if tid == pid:
        return "main thread (event loop)"
    if name.startswith("rdk:"):
        return "librdkafka threads"
    if name.startswith(("asyncio_", "ThreadPoolExec", "Thread-")):
        return "asyncio / executor threads"
    if name in ("python", "pt_main_thread", "") or name.startswith("python"):
        return "unnamed native threads"
    return name


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread label; threads that already ended are under "ended threads"."""
    totals: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        label = thread_label(pid, int(task.name), name)
        totals[label] = totals.get(label, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    ended = process_cpu_seconds(pid) - sum(totals.values())
    totals["ended threads"] = max(0.0, ended)
    return totals
