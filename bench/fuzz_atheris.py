"""Coverage-guided fuzzing (atheris, libFuzzer) of the hostile-input boundaries, on demand.

The CI fuzz tests (``tests/unit/fuzz``) run a fixed 10,000+ generated cases per target; this
runs libFuzzer's coverage-guided mutation for as long as you like, on the same contracts:

- ``otlp``: bytes as an OTLP/HTTP body (protobuf or JSON, traces or logs) through the
  collector's ingest: accepted, or OtlpDecodeError (400) / RequestTooLarge (413).
- ``normalizer``: bytes as a raw-topic message through decoding and the normalizer: undecodable
  is OtlpDecodeError (dead letter); otherwise no span may fail and every span must encode.
- ``messages``: bytes as a Kafka value of each stage-to-stage topic through its decoder and the
  sink's row building: the record, msgspec.DecodeError, or a data error with a reason.

atheris is not a project dependency (it needs a clang-built libFuzzer wheel)::

    .venv/bin/uv pip install --python .venv/bin/python atheris
    .venv/bin/python bench/fuzz_atheris.py otlp -atheris_runs=200000 -max_len=65536
    .venv/bin/python bench/fuzz_atheris.py normalizer corpus_dir/   # libFuzzer flags pass through

A crash prints the input and writes it to ``crash-<sha1>``: keep it as an ``@example`` in the
matching test under ``tests/unit/fuzz``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    import msgspec

    from llmtap.collectors.config import CollectorConfig
    from llmtap.collectors.log_ingest import LogIngest
    from llmtap.collectors.trace_ingest import IngestTopics, RequestTooLarge, TraceIngest
    from llmtap.processors.normalize.normalizer import Normalizer
    from llmtap.processors.pricing import PriceTable
    from llmtap.schemas.aggregates import decode_aggregates, decode_alert
    from llmtap.schemas.drift import decode_drift_result
    from llmtap.schemas.llm_span import decode_span, encode_span
    from llmtap.schemas.otlp import OtlpDecodeError, decode_traces, sniff_encoding
    from llmtap.schemas.scores import decode_embedding, decode_score
    from llmtap.schemas.topics import Encoding
    from llmtap.sinks.clickhouse.derived import (
        aggregate_rows,
        alert_rows,
        embedding_rows,
        score_rows,
    )
    from llmtap.sinks.clickhouse.drift_rows import drift_rows
    from llmtap.sinks.clickhouse.rows import span_row

_TOPICS = IngestTopics(raw_spans="raw", dead_letter="dead", max_message_bytes=1024 * 1024)
_CONFIG = CollectorConfig(max_spans_per_request=50, max_attribute_value_bytes=4_096)
_TRACE_INGEST = TraceIngest(_CONFIG, _TOPICS)
_LOG_INGEST = LogIngest(_CONFIG, _TOPICS)
_NORMALIZER = Normalizer(PriceTable.load().price, recent_retrievals=64)


def fuzz_otlp(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    encoding = Encoding.OTLP_JSON if provider.ConsumeBool() else Encoding.OTLP_PROTO
    ingest = _LOG_INGEST.ingest if provider.ConsumeBool() else _TRACE_INGEST.ingest
    body = provider.ConsumeBytes(provider.remaining_bytes())
    try:
        ingest(body, encoding, tenant="t", source="fuzz")
    except (OtlpDecodeError, RequestTooLarge) as error:
        if not str(error):
            raise AssertionError("a refusal must say why") from error


def fuzz_normalizer(data: bytes) -> None:
    try:
        request = decode_traces(data, sniff_encoding(data))
    except OtlpDecodeError:
        return
    failures: list[Exception] = []
    spans = _NORMALIZER.normalize_request(
        request, tenant="fuzz", on_error=lambda span, error: failures.append(error)
    )
    if failures:
        raise failures[0]
    for span in spans:
        assert decode_span(encode_span(span)) == span
        span_row(span, "normalized", 0, 0)


def _span_rows(value: bytes) -> object:
    return span_row(decode_span(value), "normalized", 0, 0)


_MESSAGE_TARGETS: list[tuple[Callable[[bytes], object], Callable[[bytes], object]]] = [
    (decode_span, _span_rows),
    (decode_aggregates, aggregate_rows),
    (decode_alert, alert_rows),
    (decode_score, score_rows),
    (decode_embedding, embedding_rows),
    (decode_drift_result, drift_rows),
]


def fuzz_messages(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    decoder, rows = _MESSAGE_TARGETS[provider.ConsumeIntInRange(0, len(_MESSAGE_TARGETS) - 1)]
    value = provider.ConsumeBytes(provider.remaining_bytes())
    try:
        decoder(value)
    except msgspec.DecodeError:
        return
    try:
        rows(value)
    except (ValueError, ArithmeticError, OSError) as problem:
        if not str(problem):
            raise AssertionError("a dead letter needs a reason") from problem


TARGETS = {"otlp": fuzz_otlp, "normalizer": fuzz_normalizer, "messages": fuzz_messages}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[sys.argv[1]]
    # llmtap's subpackages live in folders of other names (collectors/, schemas/, ...), which
    # instrument_imports does not follow: instrument every loaded function instead.
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
