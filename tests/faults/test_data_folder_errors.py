"""A data folder that cannot be written (full disk, no permission, not a folder) fails clearly.

Each case runs the real ``llmtap`` CLI in a child process and expects a one-line error naming
the problem, exit status 1, and no Python traceback.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def run_llmtap(
    data_dir: Path, *arguments: str, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LLMTAP_")}
    env["LLMTAP_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "llmtap", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        preexec_fn=preexec,
    )


def assert_clear_failure(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for text in expected:
        assert text in output, output[-3000:]


def test_a_data_folder_that_is_a_file_is_named_in_the_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("not a folder")
    result = run_llmtap(data_dir, "migrate")
    assert_clear_failure(result, str(data_dir), "Not a directory")


@pytest.fixture
def unwritable_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write: chmod for a normal user, the immutable flag for
    root (root ignores permission bits; ``chattr +i`` binds it too)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root without chattr: no way to make a folder unwritable")
    locked = subprocess.run([chattr, "+i", str(folder)], capture_output=True, text=True)
    if locked.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {locked.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_a_folder_without_write_permission_is_named_in_the_error(unwritable_folder: Path) -> None:
    result = run_llmtap(unwritable_folder, "migrate")
    assert_clear_failure(result, str(unwritable_folder / "clickhouse"))


def test_a_full_disk_is_reported_as_such(tmp_path: Path) -> None:
    """Every write fails as on a full disk (a file size limit of 0: EFBIG instead of ENOSPC)."""

    def no_file_may_grow() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

    result = run_llmtap(tmp_path / "data", "migrate", preexec=no_file_may_grow)
    assert_clear_failure(result, "cannot write to disk", "full or read-only")
