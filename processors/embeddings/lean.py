"""The encoder without sentence-transformers: transformers' model, pooled the same way.

Why: sentence-transformers imports scikit-learn at import time (its similarity helpers), and
scikit-learn brings pandas; transformers imports scikit-learn too, only for assisted text
generation, which an encoder never runs. Together about 110 MB of resident memory in every
process that embeds (measured: 896 -> 777 MB with the model loaded, 1,041 -> 935 MB after a
batch), for code these stages never call.

``LeanSentenceModel`` covers the layouts most sentence-transformers models use, the shipped
all-MiniLM-L6-v2 among them: a Transformer module, then Pooling by mean, CLS token or max, then
optionally Normalize. It reads the same files and computes what those modules compute (a test
compares it with sentence-transformers' own ``encode`` on the same texts); ``lean_layout`` says
whether a folder is such a model, and any other layout loads through sentence-transformers.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}


@dataclass(frozen=True)
class LeanLayout:
    """What a model folder asks for, when it is a layout ``LeanSentenceModel`` computes."""

    pooling: str  # mean | cls | max
    normalize: bool
    max_seq_length: int | None


def lean_layout(folder: Path) -> LeanLayout | None:
    """The folder's layout if it is Transformer, Pooling (one mode), optional Normalize with
    default settings; ``None`` for anything else (it loads through sentence-transformers)."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        types = [module["type"] for module in modules]
        if types not in ([_TRANSFORMER, _POOLING], [_TRANSFORMER, _POOLING, _NORMALIZE]):
            return None
        if modules[0].get("path", "") not in ("", "."):
            return None
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
        bert_config_file = folder / "sentence_bert_config.json"
        bert_config = json.loads(bert_config_file.read_text()) if bert_config_file.is_file() else {}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    if set(bert_config) - {"max_seq_length", "do_lower_case"} or bert_config.get("do_lower_case"):
        return None
    modes = [mode for key, mode in _POOLING_MODES.items() if pooling.get(key)]
    others = {
        key
        for key, value in pooling.items()
        if key.startswith("pooling_mode") and value and key not in _POOLING_MODES
    }
    if len(modes) != 1 or others or pooling.get("include_prompt") is False:
        return None
    max_seq_length = bert_config.get("max_seq_length")
    return LeanLayout(modes[0], len(types) == 3, int(max_seq_length) if max_seq_length else None)


@contextlib.contextmanager
def _scikit_learn_hidden() -> Iterator[None]:
    """While transformers is imported, scikit-learn looks absent (transformers then skips the
    import, which it only needs for assisted generation). Undone afterwards: other code in the
    process can still import it."""
    if "sklearn" in sys.modules:  # already loaded: nothing to save
        yield
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # find_spec answers None
    try:
        yield
    finally:
        if sys.modules.get("sklearn", 0) is None:
            del sys.modules["sklearn"]


class LeanSentenceModel:
    """The ``encode`` sentence-transformers offers, for the layouts ``lean_layout`` accepts."""

    def __init__(self, folder: Path, layout: LeanLayout, device: str = "cpu") -> None:
        with _scikit_learn_hidden():
            from transformers import AutoModel, AutoTokenizer
        import torch

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        self.model.to(device).eval()
        self._device = device
        self._layout = layout
        limit = layout.max_seq_length
        if limit is None:  # as sentence-transformers: the tokenizer's and the model's limits
            limit = min(
                int(getattr(self.tokenizer, "model_max_length", 10**6)),
                int(getattr(self.model.config, "max_position_embeddings", 10**6)),
            )
        self.max_seq_length = limit
        self._dimension = int(self.model.config.hidden_size)

    def get_sentence_embedding_dimension(self) -> int:
        return self._dimension

    def encode(
        self,
        sentences: Sequence[str],
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """Vectors in the order of ``sentences``; batches of similar lengths (longest first,
        as sentence-transformers does) so that little of each batch is padding."""
        del convert_to_numpy, show_progress_bar  # always numpy, never a progress bar
        torch = self._torch
        texts = list(sentences)
        order = np.argsort([-len(text) for text in texts], kind="stable")
        output = np.empty((len(texts), self._dimension), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chosen = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[index] for index in chosen],
                    padding=True,
                    truncation="longest_first",
                    max_length=self.max_seq_length,
                    return_tensors="pt",
                ).to(self._device)
                tokens = self.model(**batch).last_hidden_state
                vectors = self._pool(tokens, batch["attention_mask"])
                if self._layout.normalize or normalize_embeddings:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                output[chosen] = vectors.float().cpu().numpy()
        return output

    def _pool(self, tokens: Any, attention_mask: Any) -> Any:
        pooling = self._layout.pooling
        if pooling == "cls":
            return tokens[:, 0]
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        if pooling == "max":
            return tokens.masked_fill(mask == 0, -1e9).max(dim=1).values
        return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
