"""The drift detector on synthetic streams: warm-up, windows, consecutive rule, policies."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from llmtap.processors.drift.config import DriftConfig
from llmtap.processors.drift.detector import DriftDetector, SpanKeyFields
from llmtap.processors.drift.join import SpanJoin
from llmtap.schemas.drift import DriftResult, decode_drift_result, encode_drift_result
from llmtap.schemas.llm_span import LlmSpan, TokenUsage
from llmtap.schemas.scores import SpanEmbedding
from llmtap.sinks.clickhouse.drift_rows import DRIFT_COLUMNS, drift_rows

DIMENSION = 16
SMALL = {
    "reference_events": 100,
    "reservoir_size": 100,
    "window_events": 50,
    "min_window_events": 10,
    "permutations": 99,
    "categorical_permutations": 9999,
    "p_value_threshold": 0.02,
}
BASE_TIME = 1_700_000_000


def config(**overrides: Any) -> DriftConfig:
    return DriftConfig(**{**SMALL, **overrides})


def fields(**overrides: str) -> SpanKeyFields:
    values = {
        "tenant": "acme",
        "service_name": "support",
        "operation": "chat",
        "request_model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "prompt_template_version": "v1",
        **overrides,
    }
    return SpanKeyFields(**values)


def embedding(index: int, vector: np.ndarray, seconds: float | None = None) -> SpanEmbedding:
    return SpanEmbedding(
        timestamp=int((BASE_TIME + (index if seconds is None else seconds)) * 1e9),
        tenant="acme",
        trace_id=f"{index:032x}",
        span_id=f"{index:016x}",
        kind="prompt",
        model="test-model",
        content_hash=f"hash-{index}",
        vector=vector.tolist(),
    )


def span(index: int, *, latency_ms: float = 500.0, status: str = "ok", **overrides: Any) -> LlmSpan:
    start = int((BASE_TIME + index) * 1e9)
    values: dict[str, Any] = {
        "trace_id": f"{index:032x}",
        "span_id": f"{index:016x}",
        "span_type": "llm",
        "tenant": "acme",
        "service_name": "support",
        "operation": "chat",
        "request_model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "prompt_template_version": "v1",
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + int(latency_ms * 1e6),
        "status": status,
        "finish_reasons": ["stop"],
        "usage": TokenUsage(input=100, output=50),
        **overrides,
    }
    return LlmSpan(**values)


def feed_embeddings(
    detector: DriftDetector,
    rng: np.random.Generator,
    count: int,
    *,
    start: int = 0,
    shift: float = 0.0,
    key: SpanKeyFields | None = None,
) -> list[DriftResult]:
    results: list[DriftResult] = []
    for index in range(start, start + count):
        vector = rng.standard_normal(DIMENSION)
        vector[0] += shift
        results += detector.observe_embedding(embedding(index, vector), key or fields())
    return results


def test_no_results_during_warm_up_then_one_per_full_window() -> None:
    detector = DriftDetector(config())
    rng = np.random.default_rng(1)
    assert feed_embeddings(detector, rng, 100) == []  # the reference
    results = feed_embeddings(detector, rng, 100, start=100)
    assert len(results) == 2
    first = results[0]
    assert (first.feature, first.detector) == ("prompt_embedding", "centroid_permutation")
    assert (first.reference_size, first.current_size) == (100, 50)
    assert (first.window_start, first.window_end) == (BASE_TIME + 100, BASE_TIME + 149)
    # the threshold is the window's calibrated critical value of the statistic (~1 + noise)
    assert 1 < first.threshold < 5
    assert (first.statistic >= first.threshold) == (first.p_value <= 0.02)
    assert first.p_value is not None
    assert 0 < first.p_value <= 1


def test_a_shift_is_drifted_only_after_consecutive_windows_with_evidence() -> None:
    detector = DriftDetector(config(consecutive_windows=2))
    rng = np.random.default_rng(2)
    feed_embeddings(detector, rng, 100)
    quiet = feed_embeddings(detector, rng, 100, start=100)
    assert not any(result.drifted for result in quiet)
    shifted = feed_embeddings(detector, rng, 150, start=200, shift=1.5)
    passed = [json.loads(result.evidence)["window_passed"] for result in shifted]
    assert passed == [True, True, True]
    assert [result.drifted for result in shifted] == [False, True, True]
    evidence = json.loads(shifted[1].evidence)
    assert evidence["consecutive_passes"] == 2
    assert evidence["confirmation"]["test"] == "mmd_rbf"
    assert evidence["confirmation"]["p_value"] < 0.02
    assert evidence["shift"]["direction_top_dimensions"][0][0] == 0  # the shifted coordinate
    assert evidence["shift"]["direction_top_dimensions"][0][1] > 0
    examples = evidence["examples"]
    assert len(examples) == 5
    assert {"trace_id", "span_id", "content_hash", "projection"} <= set(examples[0])
    assert evidence["shift"]["fraction_beyond_reference_p95"] > 0.3


def test_reset_on_change_rebuilds_the_reference_for_a_new_model_version() -> None:
    detector = DriftDetector(config(reference_policy="reset_on_change"))
    rng = np.random.default_rng(3)
    feed_embeddings(detector, rng, 200)
    new_model = fields(response_model="gpt-4o-2024-11-20")
    # Embeddings do not move a key to a new version: only its span does.
    assert (
        detector.observe_embedding(embedding(999, rng.standard_normal(DIMENSION)), new_model) == []
    )
    assert detector.counters.references_reset == 0
    detector.observe_span(span(300, response_model="gpt-4o-2024-11-20"))
    assert detector.counters.references_reset == 1
    # The new version's traffic is shifted, but it is the new reference: warm-up, then no drift.
    warm_up = feed_embeddings(detector, rng, 100, start=300, shift=1.5, key=new_model)
    assert warm_up == []
    after = feed_embeddings(detector, rng, 100, start=400, shift=1.5, key=new_model)
    assert len(after) == 2
    assert not any(result.drifted for result in after)
    # Late events of the replaced version are dropped, not mixed into the new reference.
    stale_before = detector.counters.stale_events
    detector.observe_embedding(embedding(500, rng.standard_normal(DIMENSION)), fields())
    assert detector.counters.stale_events == stale_before + 1


def test_fixed_reference_reports_a_model_change_as_drift() -> None:
    detector = DriftDetector(config(reference_policy="fixed"))
    rng = np.random.default_rng(4)
    feed_embeddings(detector, rng, 200)
    new_model = fields(response_model="gpt-4o-2024-11-20")
    detector.observe_span(span(300, response_model="gpt-4o-2024-11-20"))
    results = feed_embeddings(detector, rng, 150, start=300, shift=1.5, key=new_model)
    assert detector.counters.references_reset == 0
    assert [result.drifted for result in results] == [False, False, True]  # 3 consecutive


def test_trailing_reference_absorbs_a_step_change() -> None:
    detector = DriftDetector(config(reference_policy="trailing", consecutive_windows=1))
    rng = np.random.default_rng(5)
    feed_embeddings(detector, rng, 200)
    results = feed_embeddings(detector, rng, 600, start=200, shift=1.5)
    passed = [json.loads(result.evidence)["window_passed"] for result in results]
    assert passed[0] is True
    assert passed[-3:] == [False, False, False]  # the reference is the new normal by then


def test_windows_close_by_event_time_and_by_tick() -> None:
    detector = DriftDetector(config(window_seconds=10.0))
    rng = np.random.default_rng(6)
    feed_embeddings(detector, rng, 100)
    results: list[DriftResult] = []
    for second in range(100, 120):  # 20 events over 20 s: the 10-s window closes at 110
        vector = rng.standard_normal(DIMENSION)
        results += detector.observe_embedding(embedding(second, vector), fields())
    assert len(results) == 1
    assert results[0].current_size == 10
    assert (results[0].window_start, results[0].window_end) == (BASE_TIME + 100, BASE_TIME + 109)
    assert detector.tick(BASE_TIME + 115) == []
    ticked = detector.tick(BASE_TIME + 121)
    assert len(ticked) == 1
    assert ticked[0].current_size == 10


def test_a_short_window_stays_open_until_it_has_enough_events() -> None:
    detector = DriftDetector(config(window_seconds=10.0, min_window_events=10))
    rng = np.random.default_rng(7)
    feed_embeddings(detector, rng, 100)
    results: list[DriftResult] = []
    for index, second in enumerate(range(100, 200, 20)):  # 5 events 20 s apart
        vector = rng.standard_normal(DIMENSION)
        results += detector.observe_embedding(embedding(100 + index, vector, second), fields())
    assert results == []
    assert detector.tick(BASE_TIME + 10_000) == []


def test_scalar_features_detect_latency_and_error_rate_shifts() -> None:
    detector = DriftDetector(config(consecutive_windows=1))
    rng = np.random.default_rng(8)
    results: list[DriftResult] = []
    for index in range(150):
        results += detector.observe_span(span(index, latency_ms=float(rng.lognormal(6, 0.5))))
    quiet = {(r.feature, r.detector): r for r in results}
    assert set(quiet) == {
        ("input_tokens", "psi"),
        ("input_tokens", "wasserstein"),
        ("output_tokens", "psi"),
        ("output_tokens", "wasserstein"),
        ("latency_ms", "psi"),
        ("latency_ms", "wasserstein"),
        ("finish_reason", "chi_square"),
        ("outcome", "chi_square"),
    }
    assert not any(result.drifted for result in results)
    shifted: list[DriftResult] = []
    for index in range(150, 200):
        status = "error" if index % 3 == 0 else "ok"
        latency = float(rng.lognormal(7, 0.5))  # ~2.7x slower
        shifted += detector.observe_span(span(index, latency_ms=latency, status=status))
    by_test = {(r.feature, r.detector): r for r in shifted}
    assert by_test[("latency_ms", "wasserstein")].drifted
    assert by_test[("latency_ms", "psi")].drifted
    assert by_test[("outcome", "chi_square")].drifted
    assert not by_test[("input_tokens", "psi")].drifted  # constant token counts
    latency = json.loads(by_test[("latency_ms", "wasserstein")].evidence)
    assert latency["direction"] == "up"
    assert latency["current_median"] > 2 * latency["reference_median"]
    outcome = json.loads(by_test[("outcome", "chi_square")].evidence)
    assert outcome["categories"][0]["category"] in ("error", "ok")
    assert by_test[("latency_ms", "psi")].statistic >= 0.2


def test_key_dimensions_choose_the_key_and_coarser_keys_merge_models() -> None:
    detector = DriftDetector(config(key_dimensions=("service_name",), reference_policy="fixed"))
    rng = np.random.default_rng(9)
    feed_embeddings(detector, rng, 100, key=fields(request_model="a"))
    results = feed_embeddings(detector, rng, 50, start=100, key=fields(request_model="b"))
    assert len(results) == 1  # one key: both models feed it
    result = results[0]
    assert (result.tenant, result.service_name, result.request_model, result.operation) == (
        "acme",
        "support",
        "",
        "",
    )


def test_other_spans_and_unconfigured_embedding_kinds_are_ignored() -> None:
    detector = DriftDetector(config())
    assert detector.observe_span(span(1, span_type="tool")) == []
    context = embedding(1, np.ones(DIMENSION))
    context.kind = "context"
    assert detector.observe_embedding(context, fields()) == []


def test_results_round_trip_through_kafka_encoding_and_clickhouse_rows() -> None:
    detector = DriftDetector(config(), clock=lambda: 1_700_000_123.456)
    rng = np.random.default_rng(10)
    results = feed_embeddings(detector, rng, 150)
    result = results[0]
    assert decode_drift_result(encode_drift_result(result)) == result
    assert result.version == 1_700_000_123_456
    [(table, row)] = drift_rows(encode_drift_result(result))
    assert table == "drift_results"
    assert len(row) == len(DRIFT_COLUMNS)
    named = dict(zip(DRIFT_COLUMNS, row, strict=True))
    assert named["operation"] == "chat"
    assert named["drifted"] == 0
    assert named["window_end"].timestamp() == result.window_end
    json.loads(str(named["evidence"]))


def test_span_join_holds_embeddings_until_their_span_and_bounds_what_it_holds() -> None:
    join = SpanJoin(span_entries=2, pending_entries=2)
    early = embedding(1, np.ones(DIMENSION))
    assert join.add_embedding(early) is None
    key_fields, waiting = join.add_span(span(1))
    assert waiting == [early]
    assert key_fields.service_name == "support"
    assert join.add_embedding(embedding(1, np.ones(DIMENSION))) == key_fields
    for index in (2, 3, 4):
        join.add_embedding(embedding(index, np.ones(DIMENSION)))
    assert (join.pending, join.dropped_embeddings) == (2, 1)
    join.add_span(span(5))
    join.add_span(span(6))
    assert join.dropped_spans == 1  # span 1 forgotten: the index holds two


def test_config_reports_every_error_at_once() -> None:
    with pytest.raises(ValidationError) as raised:
        DriftConfig(
            reservoir_size=5000, reference_events=1000, window_events=20, min_window_events=50
        )
    message = str(raised.value)
    assert "min_window_events" in message
    assert "reservoir_size" in message
    with pytest.raises(ValidationError, match="smallest permutation p-value"):
        DriftConfig(permutations=50, p_value_threshold=0.01)
    with pytest.raises(ValidationError):
        DriftConfig(unknown_setting=1)  # type: ignore[call-arg]


def test_tick_follows_the_streams_event_time_not_the_wall_clock() -> None:
    detector = DriftDetector(config(window_seconds=20.0))
    rng = np.random.default_rng(11)
    feed_embeddings(detector, rng, 100)
    feed_embeddings(detector, rng, 12, start=100)  # an open window of 12 events, 100..111
    # Replaying old traffic: the wall clock is far ahead, the stream's time is not.
    assert detector.tick() == []
    other = fields(service_name="billing")
    feed_embeddings(detector, rng, 1, start=125, key=other)  # stream time moves to 125
    ticked = detector.tick()
    assert [result.service_name for result in ticked] == ["support"]
    assert ticked[0].current_size == 12
