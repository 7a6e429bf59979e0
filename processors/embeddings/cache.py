"""A bounded LRU of embedding vectors, keyed by content hash (or a retrieved chunk's id)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


def content_hash(text: str) -> str:
    """The cache key of a text and the ``content_hash`` stored beside its embedding."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class EmbeddingCache:
    """Least recently used vectors, at most ``max_entries`` (0 disables the cache)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._vectors: OrderedDict[str, Vector] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, key: str) -> Vector | None:
        vector = self._vectors.get(key)
        if vector is None:
            self.misses += 1
            return None
        self._vectors.move_to_end(key)
        self.hits += 1
        return vector

    def put(self, key: str, vector: Vector) -> None:
        if self.max_entries == 0:
            return
        self._vectors[key] = vector
        self._vectors.move_to_end(key)
        while len(self._vectors) > self.max_entries:
            self._vectors.popitem(last=False)
