"""The caching, batching encoder (processors/embeddings) on a stand-in model."""

from __future__ import annotations

import numpy as np

from llmtap.processors.embeddings.cache import EmbeddingCache, content_hash
from llmtap.processors.embeddings.encoder import Encoder


def test_each_distinct_text_is_encoded_once(fake_encoder: Encoder, bag_model: object) -> None:
    vectors = fake_encoder.encode(["alpha beta", "gamma", "alpha beta"])
    assert np.allclose(vectors[0], vectors[2])
    again = fake_encoder.encode(["gamma", "alpha beta"])
    assert np.allclose(again[0], vectors[1])
    assert fake_encoder.texts_encoded == 2
    assert fake_encoder.cache.hits == 2


def test_chunk_ids_key_the_cache_instead_of_content(fake_encoder: Encoder) -> None:
    first = fake_encoder.encode(["some chunk text"], ["doc-1#0"])
    second = fake_encoder.encode(["the same chunk, reformatted"], ["doc-1#0"])
    assert np.allclose(first, second)  # same id: the cached vector
    assert fake_encoder.texts_encoded == 1


def test_vectors_are_unit_length_float32(fake_encoder: Encoder) -> None:
    vectors = fake_encoder.encode(["one two three", "four"])
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_token_cap_never_exceeds_the_models_limit(bag_model: object) -> None:
    encoder = Encoder(bag_model, model_name="m", max_tokens=4096)
    assert encoder.max_tokens == 128
    assert Encoder(bag_model, model_name="m", max_tokens=64).max_tokens == 64


def test_lru_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = EmbeddingCache(2)
    vector = np.zeros(2, dtype=np.float32)
    cache.put("a", vector)
    cache.put("b", vector)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", vector)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is not None


def test_a_zero_size_cache_stores_nothing() -> None:
    cache = EmbeddingCache(0)
    cache.put("a", np.zeros(2, dtype=np.float32))
    assert len(cache) == 0


def test_content_hash_is_stable_and_distinguishes_texts() -> None:
    assert content_hash("x") == content_hash("x")
    assert content_hash("x") != content_hash("x ")
    assert len(content_hash("x")) == 32
