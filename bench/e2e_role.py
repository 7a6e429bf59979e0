"""Runs ``llmtap <role>`` with each Python thread's name passed to the OS (for ``e2e_proc``).

Python 3.11 does not name OS threads; /proc shows every thread as ``python``. Here each thread
sets its OS name (15 bytes, ``llmtap-`` dropped) from its ``threading`` name as it starts, so
per-thread CPU time can be split by stage. Nothing else changes: ``llmtap.cli.main`` runs as
``python -m llmtap`` runs it.

    .venv/bin/python bench/e2e_role.py processor
"""

from __future__ import annotations

import ctypes
import sys
import threading

_PR_SET_NAME = 15


def name_os_threads() -> None:
    libc = ctypes.CDLL(None)
    original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap_inner(self: threading.Thread) -> None:
        name = self.name.removeprefix("llmtap-").replace(" ", "-")[:15]
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()), 0, 0, 0)
        original(self)

    threading.Thread._bootstrap_inner = bootstrap_inner  # type: ignore[attr-defined]


if __name__ == "__main__":
    name_os_threads()
    from llmtap.cli import main

    sys.argv = ["llmtap", *sys.argv[1:]]
    main()
