"""The drift detector: spans and embeddings in, drift results out when windows complete.

Pure and Kafka-free (the stage feeds it). State per drift key (``key_dimensions`` of the span)
and feature: a reference (``reference.py``) and a current window (``windows.py``). A feature's
first events build its reference (warm-up: no results); after that every completed window is
tested against it and gives one result per test:

- prompt_embedding, completion_embedding (context_embedding if configured): the span's
  vectors; detector centroid_permutation (with the MMD confirmation in its evidence);
- input_tokens, output_tokens, latency_ms, cost_usd: log1p of the value; psi and wasserstein;
- finish_reason (the first one, or "none") and outcome (ok, error, refusal): chi_square.

A window *passes* a test when it is significant (p below the threshold) and, for PSI and
Wasserstein, large enough (statistic at or above its threshold); an embedding window passes when
the centroid test and its MMD confirmation both reject. ``drifted`` is set when the last
``consecutive_windows`` windows of that feature and test all passed.

Reference policies: ``fixed`` and ``trailing`` as in ``reference.py``; ``reset_on_change``
rebuilds a key's references when a span carries a new value of a ``version_fields`` field (a new
model, prompt version or deploy), and from then on drops events of the versions it replaced
(late spans and embeddings of the old version must not leak into the new reference).
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats
from threadpoolctl import ThreadpoolController

from llmtap.processors.drift.config import DriftConfig
from llmtap.processors.drift.embedding_tests import centroid_test, mmd_test, shift_evidence
from llmtap.processors.drift.reference import Reference
from llmtap.processors.drift.scalar_tests import chi_square, psi, wasserstein
from llmtap.processors.drift.windows import CurrentWindow
from llmtap.schemas.drift import DriftResult
from llmtap.schemas.llm_span import LlmSpan
from llmtap.schemas.scores import SpanEmbedding

CONTINUOUS_FEATURES = ("input_tokens", "output_tokens", "latency_ms", "cost_usd")
CATEGORICAL_FEATURES = ("finish_reason", "outcome")
REFUSAL_FINISH_REASONS = frozenset({"content_filter", "refusal", "safety", "recitation"})
# Categories per feature (the rest are "other"). Categorical rows are one-hot, so the reference's
# running sums are exact counts over every reference event, not just over its sample.
_MAX_CATEGORIES = 16
# Event timestamps further ahead of the wall clock do not advance the stream's time (clock skew).
_MAX_CLOCK_SKEW_SECONDS = 300.0
# Chi-square p-values are calibrated by permutation below this asymptotic value; above it the
# asymptotic value is reported (the rare-category error is far smaller than the gap).
_PERMUTE_BELOW = 0.05


@dataclass(frozen=True)
class SpanKeyFields:
    """What an embedding needs from its span: the key dimensions and the version fields."""

    tenant: str = "default"
    service_name: str = ""
    environment: str = ""
    provider: str = ""
    operation: str = ""
    request_model: str = ""
    prompt_template_version: str = ""
    response_model: str = ""
    service_version: str = ""

    @classmethod
    def of(cls, span: LlmSpan) -> SpanKeyFields:
        return cls(
            tenant=span.tenant,
            service_name=span.service_name,
            environment=span.environment or "",
            provider=span.provider or "",
            operation=span.operation or "",
            request_model=span.request_model or "",
            prompt_template_version=span.prompt_template_version or "",
            response_model=span.response_model or "",
            service_version=span.service_version or "",
        )


_KEY_FIELD_NAMES = tuple(
    f.name for f in fields(SpanKeyFields) if f.name not in ("response_model", "service_version")
)


@dataclass
class _FeatureState:
    kind: str  # embedding | continuous | categorical
    reference: Reference
    window: CurrentWindow
    rng: np.random.Generator
    streaks: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    embedding_model: str = ""


@dataclass
class _KeyState:
    dimensions: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)
    retired: dict[str, set[str]] = field(default_factory=dict)
    features: dict[str, _FeatureState] = field(default_factory=dict)


@dataclass
class DetectorCounters:
    references_reset: int = 0
    stale_events: int = 0  # events of a version the reference was reset away from
    keys_evicted: int = 0
    windows_evaluated: int = 0


class DriftDetector:
    """``observe_span``, ``observe_embedding`` and ``tick`` return the results of the windows
    they completed (usually none). ``clock`` gives each result's ``version`` (unix seconds)."""

    def __init__(self, config: DriftConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._keys: OrderedDict[tuple[str, ...], _KeyState] = OrderedDict()
        self.counters = DetectorCounters()
        self.stream_seconds = 0.0  # event time: the latest event timestamp seen

    # ---------------------------------------------------------------- input

    def observe_span(self, span: LlmSpan) -> list[DriftResult]:
        """Scalar features of an LLM span; also moves the key to a new version if it has one."""
        if span.span_type != "llm":
            return []
        fields_ = SpanKeyFields.of(span)
        state = self._key_state(fields_, from_span=True)
        if state is None:
            return []
        timestamp = span.start_time_unix_nano / 1e9
        label = None  # scalar evidence is bins and categories, not examples: no ids kept
        results: list[DriftResult] = []
        for name, value in _continuous_values(span):
            feature = self._feature(state, name, "continuous", 1)
            results += self._observe(state, name, feature, np.array([value]), timestamp, label)
        for name, category in _categorical_values(span):
            feature = self._feature(state, name, "categorical", _MAX_CATEGORIES)
            one_hot = np.zeros(_MAX_CATEGORIES)
            one_hot[_category_code(feature, category)] = 1.0
            results += self._observe(state, name, feature, one_hot, timestamp, label)
        return results

    def observe_embedding(
        self, embedding: SpanEmbedding, span_key_fields: SpanKeyFields
    ) -> list[DriftResult]:
        if embedding.kind not in self.config.embedding_kinds or not embedding.vector:
            return []
        state = self._key_state(span_key_fields, from_span=False)
        if state is None:
            return []
        name = f"{embedding.kind}_embedding"
        vector = np.asarray(embedding.vector, dtype=np.float64)
        feature = state.features.get(name)
        if (
            feature is None
            or feature.embedding_model != embedding.model
            or feature.reference.width != len(vector)
        ):
            # first vector, or another embedding model: not comparable with the reference's
            feature = self._new_feature(state, name, "embedding", len(vector))
            feature.embedding_model = embedding.model
        label = {
            "trace_id": embedding.trace_id,
            "span_id": embedding.span_id,
            "content_hash": embedding.content_hash,
        }
        return self._observe(state, name, feature, vector, embedding.timestamp / 1e9, label)

    def tick(self, now_seconds: float | None = None) -> list[DriftResult]:
        """Close windows whose time is up although no later event of their key arrived.

        ``now_seconds`` defaults to the stream's event time (the latest event timestamp seen, not
        ahead of the wall clock), so replaying a backlog closes windows as the live stream would
        have, not all at once.
        """
        if now_seconds is None:
            now_seconds = self.stream_seconds
        results: list[DriftResult] = []
        config = self.config
        for state in self._keys.values():
            for name, feature in state.features.items():
                if feature.reference.ready and feature.window.expired(
                    now_seconds, config.window_seconds, config.min_window_events
                ):
                    results += self._evaluate(state, name, feature)
        return results

    # ---------------------------------------------------------------- state

    def _key_state(self, fields_: SpanKeyFields, *, from_span: bool) -> _KeyState | None:
        dimensions = {
            name: getattr(fields_, name)
            if name == "tenant" or name in self.config.key_dimensions
            else ""
            for name in _KEY_FIELD_NAMES
        }
        key = tuple(dimensions.values())
        state = self._keys.get(key)
        if state is None:
            state = _KeyState(dimensions)
            self._keys[key] = state
            if len(self._keys) > self.config.max_keys:
                self._keys.popitem(last=False)
                self.counters.keys_evicted += 1
        else:
            self._keys.move_to_end(key)
        if self.config.reference_policy != "reset_on_change":
            return state
        changed = False
        for name in self.config.version_fields:
            value = getattr(fields_, name)
            if not value:
                continue  # unknown (e.g. no response model on an error): not a change
            if value in state.retired.get(name, ()):
                self.counters.stale_events += 1
                return None
            current = state.versions.get(name)
            if current is None:
                state.versions[name] = value
            elif current != value:
                if not from_span:
                    # only spans move a key to a new version; an embedding of an unseen version
                    # waits for its span's version to become the key's
                    self.counters.stale_events += 1
                    return None
                state.retired.setdefault(name, set()).add(current)
                state.versions[name] = value
                changed = True
        if changed:
            state.features.clear()
            self.counters.references_reset += 1
        return state

    def _feature(self, state: _KeyState, name: str, kind: str, width: int) -> _FeatureState:
        feature = state.features.get(name)
        if feature is None:
            feature = self._new_feature(state, name, kind, width)
        return feature

    def _new_feature(self, state: _KeyState, name: str, kind: str, width: int) -> _FeatureState:
        config = self.config
        seed = zlib.crc32("|".join((*state.dimensions.values(), name)).encode())
        rng = np.random.default_rng([config.seed, seed])
        trailing = config.reference_policy == "trailing"
        feature = _FeatureState(
            kind=kind,
            reference=Reference(
                trailing=trailing,
                capacity=config.reservoir_size,
                reference_events=config.reservoir_size if trailing else config.reference_events,
                width=width,
                rng=rng,
            ),
            window=CurrentWindow(capacity=config.window_events, width=width),
            rng=rng,
        )
        state.features[name] = feature
        return feature

    def _observe(
        self,
        state: _KeyState,
        name: str,
        feature: _FeatureState,
        row: npt.NDArray[np.float64],
        timestamp: float,
        label: dict[str, str] | None,
    ) -> list[DriftResult]:
        if self.stream_seconds < timestamp <= self._clock() + _MAX_CLOCK_SKEW_SECONDS:
            self.stream_seconds = timestamp
        if not feature.reference.ready:
            feature.reference.add(row, label)
            return []
        config = self.config
        results: list[DriftResult] = []
        window = feature.window
        if window.expired(timestamp, config.window_seconds, config.min_window_events):
            results += self._evaluate(state, name, feature)
        window.add(row, timestamp, label)
        if window.full:
            results += self._evaluate(state, name, feature)
        return results

    # ---------------------------------------------------------------- tests

    def _evaluate(self, state: _KeyState, name: str, feature: _FeatureState) -> list[DriftResult]:
        with _single_threaded_blas():
            return self._evaluate_window(state, name, feature)

    def _evaluate_window(
        self, state: _KeyState, name: str, feature: _FeatureState
    ) -> list[DriftResult]:
        self.counters.windows_evaluated += 1
        window = feature.window
        if feature.kind == "embedding":
            results = [self._embedding_result(state, name, feature)]
        elif feature.kind == "continuous":
            results = self._continuous_results(state, name, feature)
        else:
            results = [self._categorical_result(state, name, feature)]
        if feature.reference.trailing:
            feature.reference.add_many(window.rows.astype(np.float64), list(window.labels))
        window.clear()
        return results

    def _streak(self, feature: _FeatureState, detector: str, passed: bool) -> tuple[bool, int]:
        streak = feature.streaks.get(detector, 0) + 1 if passed else 0
        feature.streaks[detector] = streak
        return streak >= self.config.consecutive_windows, streak

    def _result(
        self,
        state: _KeyState,
        feature_name: str,
        feature: _FeatureState,
        *,
        detector: str,
        statistic: float,
        p_value: float | None,
        threshold: float,
        passed: bool,
        evidence: dict[str, object],
    ) -> DriftResult:
        drifted, streak = self._streak(feature, detector, passed)
        evidence = {
            "window_passed": passed,
            "p_value_threshold": self.config.p_value_threshold,
            "consecutive_passes": streak,
            "consecutive_required": self.config.consecutive_windows,
            "reference_policy": self.config.reference_policy,
            **({"versions": dict(state.versions)} if state.versions else {}),
            **evidence,
        }
        window = feature.window
        dimensions = state.dimensions
        return DriftResult(
            window_start=int(window.start_seconds),
            window_end=int(window.end_seconds),
            tenant=dimensions["tenant"],
            service_name=dimensions["service_name"],
            environment=dimensions["environment"],
            provider=dimensions["provider"],
            operation=dimensions["operation"],
            request_model=dimensions["request_model"],
            prompt_template_version=dimensions["prompt_template_version"],
            feature=feature_name,
            detector=detector,
            statistic=_finite(statistic),
            p_value=None if p_value is None else _finite(p_value),
            threshold=threshold,
            drifted=drifted,
            reference_size=feature.reference.count,
            current_size=window.size,
            evidence=json.dumps(evidence, separators=(",", ":")),
            version=int(self._clock() * 1000),
        )

    def _embedding_result(self, state: _KeyState, name: str, feature: _FeatureState) -> DriftResult:
        config = self.config
        current = feature.window.rows
        reference = feature.reference.sample
        alpha = config.p_value_threshold
        primary = centroid_test(current, reference, config.permutations, feature.rng, alpha)
        confirmation = None
        if primary.p_value < alpha:
            confirmation = mmd_test(current, reference, config.permutations, feature.rng)
        passed = confirmation is not None and confirmation.p_value < alpha
        evidence: dict[str, object] = {
            "squared_distance": primary.squared_distance,
            "expected_no_drift": primary.expected_no_drift,
            "permutations": config.permutations,
            "reference_sample": len(reference),
            "embedding_model": feature.embedding_model,
            "confirmation": None
            if confirmation is None
            else {
                "test": "mmd_rbf",
                "statistic": confirmation.statistic,
                "p_value": confirmation.p_value,
                "bandwidth": confirmation.bandwidth,
            },
        }
        shift = shift_evidence(
            current,
            feature.window.labels,
            reference,
            feature.reference.mean,
            primary.direction,
            config.evidence_examples,
        )
        evidence["examples"] = shift.pop("most_shifted")
        evidence["shift"] = shift
        return self._result(
            state,
            name,
            feature,
            detector="centroid_permutation",
            statistic=primary.statistic,
            p_value=primary.p_value,
            threshold=primary.critical_value,
            passed=passed,
            evidence=evidence,
        )

    def _continuous_results(
        self, state: _KeyState, name: str, feature: _FeatureState
    ) -> list[DriftResult]:
        config = self.config
        current = feature.window.rows[:, 0].astype(np.float64)
        reference = feature.reference.sample[:, 0].astype(np.float64)
        alpha = config.p_value_threshold
        binned = psi(reference, current, config.psi_bins, config.psi_smoothing)
        top = np.argsort(-np.abs(binned.contributions))[:3]
        psi_evidence: dict[str, object] = {
            "scale": "log1p",
            "edges": [round(edge, 4) for edge in binned.edges],
            "top_bins": [
                {
                    "bin": int(index),
                    "reference_fraction": round(binned.reference_fraction[index], 4),
                    "current_fraction": round(binned.current_fraction[index], 4),
                    "contribution": round(binned.contributions[index], 4),
                }
                for index in top
            ],
        }
        moved = wasserstein(reference, current, config.permutations, feature.rng, stop_at_p=alpha)
        wasserstein_evidence: dict[str, object] = {
            "scale": "log1p",
            "reference_median": round(float(np.expm1(moved.reference_median)), 4),
            "current_median": round(float(np.expm1(moved.current_median)), 4),
            "direction": "up" if moved.current_median > moved.reference_median else "down",
        }
        return [
            self._result(
                state,
                name,
                feature,
                detector="psi",
                statistic=binned.psi,
                p_value=binned.p_value,
                threshold=config.psi_threshold,
                passed=binned.psi >= config.psi_threshold and binned.p_value < alpha,
                evidence=psi_evidence,
            ),
            self._result(
                state,
                name,
                feature,
                detector="wasserstein",
                statistic=moved.distance,
                p_value=moved.p_value,
                threshold=config.wasserstein_threshold,
                passed=moved.distance >= config.wasserstein_threshold and moved.p_value < alpha,
                evidence=wasserstein_evidence,
            ),
        ]

    def _categorical_result(
        self, state: _KeyState, name: str, feature: _FeatureState
    ) -> DriftResult:
        config = self.config
        size = max(len(feature.categories), 1)
        # every reference event counts (exact running sums), not only the reservoir's: a 3 %
        # category is estimated from 1,000 events rather than 500, which halves the variance
        # that all windows tested against this reference share
        reference_counts = np.rint(feature.reference.total[:size]).astype(np.int64)
        current_counts = feature.window.rows[:, :size].sum(axis=0).round().astype(np.int64)
        test = chi_square(
            reference_counts,
            current_counts,
            config.categorical_permutations,
            feature.rng,
            permute_below=_PERMUTE_BELOW,
        )
        names = {code: category for category, code in feature.categories.items()}
        reference_share = reference_counts / max(reference_counts.sum(), 1)
        current_share = current_counts / max(current_counts.sum(), 1)
        changes = sorted(
            range(size), key=lambda code: -abs(current_share[code] - reference_share[code])
        )[:5]
        evidence: dict[str, object] = {
            "degrees_of_freedom": test.degrees_of_freedom,
            "cramers_v": round(test.cramers_v, 4),
            "categories": [
                {
                    "category": names.get(code, "?"),
                    "reference_share": round(float(reference_share[code]), 4),
                    "current_share": round(float(current_share[code]), 4),
                }
                for code in changes
            ],
        }
        alpha = config.categorical_p_value_threshold
        evidence["p_value_threshold"] = alpha
        return self._result(
            state,
            name,
            feature,
            detector="chi_square",
            statistic=test.statistic,
            p_value=test.p_value,
            # the statistic's critical value at alpha (chi-square law): statistic / threshold > 1
            # reads "significant" like the other tests; the decision itself uses the p-value
            threshold=float(stats.chi2.isf(alpha, max(test.degrees_of_freedom, 1))),
            passed=test.p_value < alpha,
            evidence=evidence,
        )


def _continuous_values(span: LlmSpan) -> list[tuple[str, float]]:
    values: list[tuple[str, float]] = []
    if span.usage.input is not None:
        values.append(("input_tokens", float(np.log1p(max(span.usage.input, 0)))))
    if span.usage.output is not None:
        values.append(("output_tokens", float(np.log1p(max(span.usage.output, 0)))))
    if span.end_time_unix_nano > span.start_time_unix_nano:
        values.append(("latency_ms", float(np.log1p(span.duration_ms))))
    cost = span.cost
    if cost is not None and cost.priced and cost.total is not None:
        with contextlib.suppress(ValueError):  # not decimal text: no cost value, not a failure
            # micro-units of the currency: log1p keeps fractions of a cent apart
            values.append(("cost_usd", float(np.log1p(max(float(cost.total), 0.0) * 1e6))))
    return values


def _categorical_values(span: LlmSpan) -> list[tuple[str, str]]:
    reasons = [reason.lower() for reason in span.finish_reasons]
    if span.status == "error" or span.error_type:
        outcome = "error"
    elif any(reason in REFUSAL_FINISH_REASONS for reason in reasons):
        outcome = "refusal"
    else:
        outcome = "ok"
    return [("finish_reason", reasons[0] if reasons else "none"), ("outcome", outcome)]


def _category_code(feature: _FeatureState, category: str) -> int:
    code = feature.categories.get(category)
    if code is None:
        if len(feature.categories) >= _MAX_CATEGORIES - 1:
            category = "other"
            code = feature.categories.get(category)
        if code is None:
            code = len(feature.categories)
            feature.categories[category] = code
    return code


_blas_controller: ThreadpoolController | None = None


def _single_threaded_blas() -> Any:
    """numpy's OpenBLAS on one thread while a window is tested.

    Its worker threads spin while waiting; on cores shared with other stages and processes that
    made the 384-d centroid test 9x slower (46 ms instead of 5 ms, 200 vs 500 rows).
    Only OpenBLAS is limited, for the duration: torch's thread pools (the risk stage) are not.
    """
    global _blas_controller
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    return _blas_controller.select(internal_api="openblas").limit(limits=1)


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else 0.0
