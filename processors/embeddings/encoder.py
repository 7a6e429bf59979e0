"""The batching, caching encoder every stage uses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmtap.processors.embeddings.backend import BackendChoice, choose_backend, precision
from llmtap.processors.embeddings.cache import EmbeddingCache, content_hash
from llmtap.processors.embeddings.heap import release_freed_memory
from llmtap.processors.embeddings.model import load_encoder_model

logger = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]


class Encoder:
    """Unit-length float32 vectors for texts, computed in batches, each distinct text once.

    ``keys`` (optional, one per text) name a text by something stabler than its content, such as
    a retrieved chunk's id; texts without a key are cached by content hash. Texts longer than
    ``max_tokens`` tokens are truncated by the tokenizer.
    """

    def __init__(
        self,
        model: Any,
        *,
        model_name: str,
        backend: BackendChoice | None = None,
        batch_size: int = 32,
        max_tokens: int = 256,
        cache_entries: int = 50_000,
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.backend = backend or BackendChoice("fp32", 1.0, 0.0, 0.0, "not measured")
        self.batch_size = batch_size
        self.max_tokens = min(max_tokens, int(getattr(model, "max_seq_length", max_tokens)))
        model.max_seq_length = self.max_tokens
        # sentence-transformers 5 renamed get_sentence_embedding_dimension.
        dimension = getattr(model, "get_embedding_dimension", None)
        if dimension is None:
            dimension = model.get_sentence_embedding_dimension
        self.dimension = int(dimension())
        self.cache = EmbeddingCache(cache_entries)
        self.texts_encoded = 0

    def encode(self, texts: Sequence[str], keys: Sequence[str | None] | None = None) -> Matrix:
        output = np.empty((len(texts), self.dimension), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        missing_texts: dict[str, str] = {}
        for index, text in enumerate(texts):
            key = keys[index] if keys is not None and keys[index] else None
            cache_key = f"id:{key}" if key else content_hash(text)
            pending = missing.get(cache_key)
            if pending is not None:
                pending.append(index)
                continue
            vector = self.cache.get(cache_key)
            if vector is None:
                missing[cache_key] = [index]
                missing_texts[cache_key] = text
            else:
                output[index] = vector
        if missing:
            vectors = self.encode_uncached(list(missing_texts.values()))
            for (cache_key, indexes), vector in zip(missing.items(), vectors, strict=True):
                self.cache.put(cache_key, vector)
                output[indexes] = vector
        return output

    def encode_uncached(self, texts: Sequence[str]) -> Matrix:
        self.texts_encoded += len(texts)
        with precision(self.backend.name):
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        release_freed_memory()  # the batch's activations, else kept by the allocator
        return np.asarray(vectors, dtype=np.float32)


def load_encoder(
    model_path: Path | None = None,
    *,
    backend: str = "auto",
    min_agreement: float = 0.99,
    batch_size: int = 32,
    max_tokens: int = 256,
    cache_entries: int = 50_000,
) -> Encoder:
    """Load the model (offline), choose its backend on the probe set, wrap it in an Encoder."""
    model = load_encoder_model(model_path)
    choice = choose_backend(model, backend, min_agreement)
    logger.info("embedding backend: %s (%s)", choice.name, choice.reason)
    name = Path(model_path).name if model_path is not None else "all-MiniLM-L6-v2"
    return Encoder(
        model,
        model_name=name,
        backend=choice,
        batch_size=batch_size,
        max_tokens=max_tokens,
        cache_entries=cache_entries,
    )
