"""A deterministic stand-in for the sentence-transformers model: hashed bag of words.

Unit tests exercise the real Encoder, features and detector code on it without loading torch;
the integration tests use the real model.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from llmtap.processors.embeddings.encoder import Encoder

DIMENSION = 256


class BagOfWordsModel:
    max_seq_length = 128

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def get_embedding_dimension(self) -> int:
        return DIMENSION

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        self.calls.append(list(texts))
        vectors = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
                vectors[row, int.from_bytes(digest, "little") % DIMENSION] += 1.0
            vectors[row, 0] += 0.01  # never the zero vector
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def bag_model() -> BagOfWordsModel:
    return BagOfWordsModel()


@pytest.fixture
def fake_encoder(bag_model: BagOfWordsModel) -> Encoder:
    return Encoder(bag_model, model_name="bag-of-words", batch_size=8, cache_entries=100)
