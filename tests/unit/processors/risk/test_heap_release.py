"""Freed heap memory goes back to the OS after a model call (glibc's malloc_trim)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A child process: the allocator settings below must not leak into the test session.
_SCRIPT = textwrap.dedent(
    """
    import ctypes, ctypes.util
    from llmtap.processors.embeddings.heap import release_freed_memory

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # Keep 1 MB blocks on the heap (M_MMAP_THRESHOLD), as glibc does once its threshold has
    # grown on freed activations, and never give memory back by itself (M_TRIM_THRESHOLD).
    libc.mallopt(-3, 1 << 30)
    libc.mallopt(-1, 1 << 30)
    blocks = [libc.malloc(1 << 20) for _ in range(300)]
    for block in blocks:
        ctypes.memset(block, 1, 1 << 20)
    for block in blocks:
        libc.free(block)
    before = rss_mb()
    released = release_freed_memory()
    print(released, before, rss_mb())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_pages_are_returned_after_a_model_call() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True
    )
    released, before, after = result.stdout.split()
    assert released == "True"
    assert int(before) - int(after) > 200, result.stdout  # of the 300 MB freed
