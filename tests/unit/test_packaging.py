"""The installed distribution adds exactly one top-level name, `llmtap`, with every subpackage."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _package_folders() -> dict[str, Path]:
    """Every folder with an __init__.py below a mapped root, as the package name it installs as."""
    found: dict[str, Path] = {}
    for package, folder in SETUPTOOLS["package-dir"].items():
        root = REPO_ROOT / folder
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root).parts
            found[".".join((package, *relative))] = init.parent
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(SETUPTOOLS["packages"])
    on_disk = set(_package_folders())
    assert on_disk - listed == set(), "add these packages to [tool.setuptools] packages"
    assert listed - on_disk == set(), "these listed packages have no folder"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(output),
            str(REPO_ROOT),
        ],
        check=True,
        timeout=300,
    )
    (built,) = output.glob("llmtap-*.whl")
    return built


def test_wheel_has_a_single_top_level_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == {"llmtap"}


def test_wheel_maps_the_top_level_folders_into_llmtap(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("collectors", "processors", "sinks", "schemas"):
        assert f"llmtap/{package}/__init__.py" in names
    assert "llmtap/py.typed" in names
    assert not any(name.startswith("tests/") for name in names)


def test_wheel_declares_the_console_script(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
    assert "llmtap = llmtap.cli:main" in archive.read(entry_points).decode()


def test_the_data_path_folders_are_not_importable_as_top_level_names() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; "
            "print([n for n in ('collectors','processors','sinks','schemas') if u.find_spec(n)])",
        ],
        capture_output=True,
        text=True,
        cwd="/",
        check=True,
    )
    assert result.stdout.strip() == "[]"
