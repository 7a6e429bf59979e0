"""Joins embeddings to their span's key: embeddings carry no service, model or prompt version.

Both topics are keyed by trace id, so a span and its embeddings reach the same worker (range
assignment of equal partition numbers). The risk stage writes embeddings after reading the span,
so the span usually comes first; it is remembered (its key fields only) in a bounded index of
``span_index_entries`` recent LLM spans. An embedding whose span is not (yet) indexed is held in
a bounded pending map of ``pending_embeddings`` entries until the span arrives.

Overflow: past either bound the oldest entry is dropped and counted (``dropped_spans``,
``dropped_embeddings``). A dropped span only matters if one of its embeddings is still to come
(it then waits as pending, and is dropped in its turn); a dropped embedding is missing from the
drift windows, which thins the sample and biases nothing unless drops favour some texts.
"""

from __future__ import annotations

from collections import OrderedDict

from llmtap.processors.drift.detector import SpanKeyFields
from llmtap.schemas.llm_span import LlmSpan
from llmtap.schemas.scores import SpanEmbedding

SpanIdentity = tuple[str, str]


class SpanJoin:
    def __init__(self, span_entries: int, pending_entries: int) -> None:
        self._span_entries = span_entries
        self._pending_entries = pending_entries
        self._spans: OrderedDict[SpanIdentity, SpanKeyFields] = OrderedDict()
        self._pending: OrderedDict[SpanIdentity, list[SpanEmbedding]] = OrderedDict()
        self._pending_count = 0
        self.dropped_spans = 0
        self.dropped_embeddings = 0

    @property
    def pending(self) -> int:
        return self._pending_count

    def add_span(self, span: LlmSpan) -> tuple[SpanKeyFields, list[SpanEmbedding]]:
        """Index the span; returns its key fields and the embeddings that waited for it."""
        identity = (span.trace_id, span.span_id)
        key_fields = SpanKeyFields.of(span)
        if self._span_entries:
            self._spans[identity] = key_fields
            self._spans.move_to_end(identity)
            if len(self._spans) > self._span_entries:
                self._spans.popitem(last=False)
                self.dropped_spans += 1
        waiting = self._pending.pop(identity, [])
        self._pending_count -= len(waiting)
        return key_fields, waiting

    def add_embedding(self, embedding: SpanEmbedding) -> SpanKeyFields | None:
        """The span's key fields, or None when the embedding is held until its span arrives."""
        identity = (embedding.trace_id, embedding.span_id)
        key_fields = self._spans.get(identity)
        if key_fields is not None:
            return key_fields
        if self._pending_entries == 0:
            self.dropped_embeddings += 1
            return None
        self._pending.setdefault(identity, []).append(embedding)
        self._pending_count += 1
        while self._pending_count > self._pending_entries:
            _, dropped = self._pending.popitem(last=False)
            self._pending_count -= len(dropped)
            self.dropped_embeddings += len(dropped)
        return None

    def clear(self) -> None:
        self._spans.clear()
        self._pending.clear()
        self._pending_count = 0
