"""Evaluates alert rules over the stream, keeping every bit of its state in a bytes mapping.

The stream app backs the mapping with a changelogged table, so a restarted worker resumes with
exactly the state the last one left; a plain ``dict`` serves tests and backtests. Given the same
inputs and the same ``now_ms`` values the evaluator emits the same events, which is what lets a
backtest replay stored aggregates and show what would have fired.

State keys (values are msgpack):

- ``meta``: the base windows held, and the horizon before which data is pruned and ignored;
- ``agg:<window_start>``: the current version of every aggregate of that base window, by its
  ``window_key``. A re-emitted window replaces its earlier version, so nothing is counted twice;
- ``risk:<window_start>``: scored responses of that base window, summed per risk rule and group;
- ``drift``: the latest drift result per (group, feature, detector);
- ``alert:<fingerprint>`` and ``alerts``: the firing (or cooling down) alerts and their index.

A rolling window of N seconds evaluated at ``now`` covers the base windows whose ``window_start``
lies in ``[now - N, now)``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from llmtap.processors.alerts.rules import (
    AGGREGATE_DIMENSIONS,
    DRIFT_DIMENSIONS,
    BurnRateRule,
    CostBudgetRule,
    DriftRule,
    ErrorRateRule,
    HighRiskRateRule,
    LatencyP95Rule,
    Rule,
    RuleSet,
    UnpricedSpendRule,
)
from llmtap.schemas.aggregates import Aggregate, AlertEvent

DEFAULT_BASE_WINDOW_SECONDS = 60

_META_KEY = "meta"
_DRIFT_KEY = "drift"
_ALERTS_KEY = "alerts"
_AGGREGATE_PREFIX = "agg:"
_RISK_PREFIX = "risk:"
_ALERT_PREFIX = "alert:"


class _WindowRecord(msgspec.Struct, array_like=True, frozen=True):
    """What the rules need from one aggregate: its version, group and measures."""

    version: int
    dimension_set: str
    dimensions: tuple[str, ...]  # values in AGGREGATE_DIMENSIONS order
    requests: int
    errors: int
    unpriced_requests: int
    cost: str
    latency_sketch: bytes = b""


class _Meta(msgspec.Struct):
    aggregate_windows: list[int] = []
    risk_windows: list[int] = []
    horizon_seconds: int = 0  # data of base windows starting before this is pruned and ignored


class _DriftResult(msgspec.Struct, array_like=True):
    window_end_ms: int
    drifted: bool
    statistic: float
    p_value: float | None


class _AlertState(msgspec.Struct):
    rule_id: str
    labels: dict[str, str]
    firing: bool
    fired_at_ms: int
    resolved_at_ms: int | None = None
    value: float = 0.0
    threshold: float = 0.0


_Bucket = dict[str, _WindowRecord]
_RiskBucket = dict[str, dict[str, list[float]]]  # rule id -> group json -> [weight, high, count]
_Drift = dict[str, _DriftResult]  # json of the DRIFT_DIMENSIONS values -> latest result

_encoder = msgspec.msgpack.Encoder()


@dataclass
class _Measures:
    requests: int = 0
    errors: int = 0
    unpriced_requests: int = 0
    cost: Decimal = Decimal(0)
    sketches: list[bytes] = field(default_factory=list)

    def add(self, record: _WindowRecord) -> None:
        self.requests += record.requests
        self.errors += record.errors
        self.unpriced_requests += record.unpriced_requests
        self.cost += _decimal(record.cost)
        if record.latency_sketch:
            self.sketches.append(record.latency_sketch)


@dataclass(frozen=True)
class _Outcome:
    """A rule's condition for one group at one evaluation."""

    rule: Rule
    labels: dict[str, str]
    holds: bool
    value: float
    threshold: float
    detail: str


def fingerprint(rule_id: str, labels: dict[str, str]) -> str:
    """Stable identity of (rule, group): the dedup and cooldown key."""
    text = json.dumps([rule_id, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def event_id(fingerprint: str, fired_at_ms: int, state: str) -> str:
    """Stable per notification: the same firing (or its resolve) always has the same id."""
    text = f"{fingerprint}:{fired_at_ms}:{state}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class AlertEvaluator:
    """Feeds rule inputs in with ``observe_*``; ``evaluate(now_ms)`` returns state changes."""

    def __init__(
        self,
        rules: RuleSet | Sequence[Rule],
        store: MutableMapping[str, bytes],
        *,
        base_window_seconds: int = DEFAULT_BASE_WINDOW_SECONDS,
    ) -> None:
        if base_window_seconds < 1:
            raise ValueError("base_window_seconds must be at least 1")
        self.rules: list[Rule] = list(rules.rules if isinstance(rules, RuleSet) else rules)
        self.store = store
        self.base_window_seconds = base_window_seconds
        self._rule_order = {rule.id: index for index, rule in enumerate(self.rules)}
        self._keep_sketches = any(isinstance(rule, LatencyP95Rule) for rule in self.rules)
        self._risk_rules = [rule for rule in self.rules if isinstance(rule, HighRiskRateRule)]
        self._longest_seconds = max((rule.window_span_seconds for rule in self.rules), default=0)
        # Decoded values by key, reused while the stored bytes are unchanged. Derived from the
        # store only, so it never makes two workers with the same store disagree.
        self._decoded: dict[str, tuple[bytes, Any]] = {}

    # -- inputs ----------------------------------------------------------------------------------

    def observe_aggregate(self, aggregate: Aggregate) -> bool:
        """Take one (possibly re-emitted) window; returns whether it changed the state.

        Only merged base windows count (other window lengths and per-partition partials are
        ignored); a version at or below the one held is a re-delivery and is ignored.
        """
        if aggregate.window_seconds != self.base_window_seconds or aggregate.source_partition != -1:
            return False
        meta = self._meta()
        if aggregate.window_start < meta.horizon_seconds:
            return False
        key = f"{_AGGREGATE_PREFIX}{aggregate.window_start}"
        bucket = dict(self._read(key, _Bucket) or {})
        window_key = aggregate.window_key
        held = bucket.get(window_key)
        if held is not None and held.version >= aggregate.version:
            return False
        bucket[window_key] = _WindowRecord(
            version=aggregate.version,
            dimension_set=aggregate.dimension_set,
            dimensions=tuple(getattr(aggregate, name) for name in AGGREGATE_DIMENSIONS),
            requests=aggregate.requests,
            errors=aggregate.errors,
            unpriced_requests=aggregate.unpriced_requests,
            cost=aggregate.cost_total,
            latency_sketch=aggregate.latency_sketch if self._keep_sketches else b"",
        )
        self._write(key, bucket)
        if _insert_sorted(meta.aggregate_windows, aggregate.window_start):
            self._write(_META_KEY, meta)
        return True

    def observe_risk(
        self,
        tenant: str,
        service_name: str,
        prompt_template_version: str,
        request_model: str,
        timestamp_ms: int,
        risk_score: float,
        sampling_weight: float = 1.0,
    ) -> None:
        """Count one scored response (weighted by its sampling weight) for the risk rules."""
        if not self._risk_rules:
            return
        window_start = timestamp_ms // 1000 // self.base_window_seconds * self.base_window_seconds
        meta = self._meta()
        if window_start < meta.horizon_seconds:
            return
        values = {
            "tenant": tenant,
            "service_name": service_name,
            "prompt_template_version": prompt_template_version,
            "request_model": request_model,
        }
        weight = sampling_weight if sampling_weight > 0 else 1.0
        key = f"{_RISK_PREFIX}{window_start}"
        bucket: _RiskBucket = {
            rule_id: {group: list(sums) for group, sums in groups.items()}
            for rule_id, groups in (self._read(key, _RiskBucket) or {}).items()
        }
        changed = False
        for rule in self._risk_rules:
            if not _matches(rule.where, values):
                continue
            group = json.dumps([values[name] for name in rule.group_by])
            sums = bucket.setdefault(rule.id, {}).setdefault(group, [0.0, 0.0, 0.0])
            sums[0] += weight
            if risk_score >= rule.risk_score_threshold:
                sums[1] += weight
            sums[2] += 1
            changed = True
        if not changed:
            return
        self._write(key, bucket)
        if _insert_sorted(meta.risk_windows, window_start):
            self._write(_META_KEY, meta)

    def observe_drift(
        self,
        tenant: str,
        service_name: str,
        request_model: str,
        prompt_template_version: str,
        feature: str,
        detector: str,
        drifted: bool,
        statistic: float,
        p_value: float | None,
        window_end_ms: int,
    ) -> None:
        """Keep the latest drift result per (group, feature, detector)."""
        key = json.dumps(
            [tenant, service_name, request_model, prompt_template_version, feature, detector]
        )
        results = dict(self._read(_DRIFT_KEY, _Drift) or {})
        held = results.get(key)
        if held is not None and held.window_end_ms > window_end_ms:
            return
        result = _DriftResult(window_end_ms, drifted, float(statistic), p_value)
        if held == result:
            return
        results[key] = result
        self._write(_DRIFT_KEY, results)

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, now_ms: int) -> list[AlertEvent]:
        """Evaluate every rule at ``now_ms``; returns the firing and resolved transitions."""
        self._prune(now_ms)
        outcomes: list[_Outcome] = []
        for rule in self.rules:
            if isinstance(rule, HighRiskRateRule):
                outcomes.extend(self._evaluate_risk(rule, now_ms))
            elif isinstance(rule, DriftRule):
                outcomes.extend(self._evaluate_drift(rule, now_ms))
            else:
                outcomes.extend(self._evaluate_aggregates(rule, now_ms))
        return self._transitions(outcomes, now_ms)

    def _evaluate_aggregates(self, rule: Rule, now_ms: int) -> list[_Outcome]:
        span_ms = rule.window_span_seconds * 1000
        per_group: dict[tuple[str, ...], list[tuple[int, _Measures]]] = {}
        dimension_set = getattr(rule, "dimension_set", "model")
        for window_start in self._windows(self._meta().aggregate_windows, now_ms, span_ms):
            bucket = self._read(f"{_AGGREGATE_PREFIX}{window_start}", _Bucket) or {}
            window_groups: dict[tuple[str, ...], _Measures] = {}
            for window_key in sorted(bucket):
                record = bucket[window_key]
                if record.dimension_set != dimension_set:
                    continue
                values = dict(zip(AGGREGATE_DIMENSIONS, record.dimensions, strict=True))
                if not _matches(rule.where, values):
                    continue
                group = tuple(values[name] for name in rule.group_by)
                window_groups.setdefault(group, _Measures()).add(record)
            for group, measures in window_groups.items():
                per_group.setdefault(group, []).append((window_start, measures))
        outcomes = []
        for group in sorted(per_group):
            labels = dict(zip(rule.group_by, group, strict=True))
            windows = per_group[group]
            outcome = _judge_aggregate(rule, labels, windows, now_ms)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _evaluate_risk(self, rule: HighRiskRateRule, now_ms: int) -> list[_Outcome]:
        sums: dict[str, list[float]] = {}
        windows = self._windows(self._meta().risk_windows, now_ms, rule.window_seconds * 1000)
        for window_start in windows:
            bucket = self._read(f"{_RISK_PREFIX}{window_start}", _RiskBucket) or {}
            for group, (weight, high, count) in bucket.get(rule.id, {}).items():
                total = sums.setdefault(group, [0.0, 0.0, 0.0])
                total[0] += weight
                total[1] += high
                total[2] += count
        outcomes = []
        for group in sorted(sums):
            weight, high, count = sums[group]
            labels = dict(zip(rule.group_by, json.loads(group), strict=True))
            rate = high / weight if weight > 0 else 0.0
            holds = count >= rule.min_requests and rate >= rule.threshold
            detail = (
                f"high-risk rate {rate:.1%} of {int(count)} scored responses "
                f"(risk score >= {rule.risk_score_threshold:g}) over {rule.window_seconds}s"
            )
            outcomes.append(_Outcome(rule, labels, holds, rate, rule.threshold, detail))
        return outcomes

    def _evaluate_drift(self, rule: DriftRule, now_ms: int) -> list[_Outcome]:
        oldest_ms = now_ms - rule.window_seconds * 1000
        groups: dict[tuple[str, ...], list[tuple[str, _DriftResult]]] = {}
        results = self._read(_DRIFT_KEY, _Drift) or {}
        for key in sorted(results):
            result = results[key]
            if not oldest_ms <= result.window_end_ms <= now_ms:
                continue
            values = dict(zip(DRIFT_DIMENSIONS, json.loads(key), strict=True))
            if not _matches(rule.where, values):
                continue
            group = tuple(values[name] for name in rule.group_by)
            groups.setdefault(group, []).append(
                (f"{values['feature']}/{values['detector']}", result)
            )
        outcomes = []
        for group in sorted(groups):
            labels = dict(zip(rule.group_by, group, strict=True))
            drifted = [(name, result) for name, result in groups[group] if result.drifted]
            value = max((result.statistic for _, result in drifted), default=0.0)
            detail = (
                "drift detected in " + ", ".join(name for name, _ in drifted)
                if drifted
                else "no drift"
            )
            outcomes.append(_Outcome(rule, labels, bool(drifted), value, 0.0, detail))
        return outcomes

    def _transitions(self, outcomes: list[_Outcome], now_ms: int) -> list[AlertEvent]:
        index = set(self._read(_ALERTS_KEY, list[str]) or [])
        tracked = set(index)
        events: list[tuple[tuple[int, str], AlertEvent]] = []
        seen: set[str] = set()
        for outcome in outcomes:
            alert_fingerprint = fingerprint(outcome.rule.id, outcome.labels)
            seen.add(alert_fingerprint)
            state = (
                self._read(f"{_ALERT_PREFIX}{alert_fingerprint}", _AlertState)
                if alert_fingerprint in index
                else None
            )
            if outcome.holds:
                if state is not None and state.firing:
                    continue
                if (
                    state is not None
                    and state.resolved_at_ms is not None
                    and now_ms < state.resolved_at_ms + outcome.rule.cooldown_seconds * 1000
                ):
                    continue  # cooling down after a resolve: a flap is not news
                state = _AlertState(
                    rule_id=outcome.rule.id,
                    labels=outcome.labels,
                    firing=True,
                    fired_at_ms=now_ms,
                    value=outcome.value,
                    threshold=outcome.threshold,
                )
                self._write(f"{_ALERT_PREFIX}{alert_fingerprint}", state)
                index.add(alert_fingerprint)
                events.append(self._event(outcome.rule, alert_fingerprint, state, outcome, now_ms))
            elif state is not None and state.firing:
                events.append(
                    self._resolve(outcome.rule, alert_fingerprint, state, outcome, now_ms)
                )
        rules = {rule.id: rule for rule in self.rules}
        for alert_fingerprint in sorted(index - seen):
            state = self._read(f"{_ALERT_PREFIX}{alert_fingerprint}", _AlertState)
            if state is None or not state.firing:
                continue
            rule = rules.get(state.rule_id)
            detail = "no data in the window" if rule is not None else "the rule was removed"
            events.append(self._resolve(rule, alert_fingerprint, state, None, now_ms, detail))
        # Forget resolved alerts once their cooldown is over.
        for alert_fingerprint in sorted(index):
            state = self._read(f"{_ALERT_PREFIX}{alert_fingerprint}", _AlertState)
            rule = rules.get(state.rule_id) if state is not None else None
            cooldown_ms = rule.cooldown_seconds * 1000 if rule is not None else 0
            if state is None or (
                not state.firing
                and state.resolved_at_ms is not None
                and now_ms >= state.resolved_at_ms + cooldown_ms
            ):
                self._delete(f"{_ALERT_PREFIX}{alert_fingerprint}")
                index.discard(alert_fingerprint)
        if index != tracked:
            self._write(_ALERTS_KEY, sorted(index))
        events.sort(key=lambda item: item[0])
        return [event for _, event in events]

    def _resolve(
        self,
        rule: Rule | None,
        alert_fingerprint: str,
        state: _AlertState,
        outcome: _Outcome | None,
        now_ms: int,
        detail: str = "",
    ) -> tuple[tuple[int, str], AlertEvent]:
        resolved = msgspec.structs.replace(
            state,
            firing=False,
            resolved_at_ms=now_ms,
            value=outcome.value if outcome is not None else 0.0,
        )
        self._write(f"{_ALERT_PREFIX}{alert_fingerprint}", resolved)
        return self._event(rule, alert_fingerprint, resolved, outcome, now_ms, detail)

    def _event(
        self,
        rule: Rule | None,
        alert_fingerprint: str,
        state: _AlertState,
        outcome: _Outcome | None,
        now_ms: int,
        detail: str = "",
    ) -> tuple[tuple[int, str], AlertEvent]:
        status = "firing" if state.firing else "resolved"
        labels = dict(state.labels)
        group_key = ",".join(f"{name}={value}" for name, value in labels.items())
        where = dict(rule.where) if rule is not None else {}
        detail = outcome.detail if outcome is not None else detail
        message = f"[{status}] {state.rule_id}"
        if group_key:
            message += f" ({group_key})"
        message += f": {detail}"
        order = self._rule_order.get(state.rule_id, len(self.rules))
        event = AlertEvent(
            event_id=event_id(alert_fingerprint, state.fired_at_ms, status),
            fingerprint=alert_fingerprint,
            rule_id=state.rule_id,
            severity=rule.severity if rule is not None else "info",
            state=status,
            tenant=labels.get("tenant") or where.get("tenant", ""),
            group_key=group_key,
            labels={**where, **labels, **({"kind": rule.kind} if rule is not None else {})},
            value=state.value,
            threshold=outcome.threshold if outcome is not None else state.threshold,
            message=message,
            fired_at_ms=state.fired_at_ms,
            resolved_at_ms=state.resolved_at_ms,
            evaluated_at_ms=now_ms,
        )
        return (order, alert_fingerprint), event

    # -- state -----------------------------------------------------------------------------------

    def _prune(self, now_ms: int) -> None:
        meta = self._meta()
        horizon = (now_ms // 1000) - self._longest_seconds - self.base_window_seconds
        if horizon <= meta.horizon_seconds:
            return
        meta.horizon_seconds = horizon
        for windows, prefix in (
            (meta.aggregate_windows, _AGGREGATE_PREFIX),
            (meta.risk_windows, _RISK_PREFIX),
        ):
            cut = bisect.bisect_left(windows, horizon)
            for window_start in windows[:cut]:
                self._delete(f"{prefix}{window_start}")
            del windows[:cut]
        self._write(_META_KEY, meta)
        results = self._read(_DRIFT_KEY, _Drift) or {}
        kept = {
            key: value for key, value in results.items() if value.window_end_ms >= horizon * 1000
        }
        if len(kept) != len(results):
            self._write(_DRIFT_KEY, kept)

    def _windows(self, starts: list[int], now_ms: int, span_ms: int) -> list[int]:
        """The base windows whose start lies in [now - span, now)."""
        low = bisect.bisect_left(starts, -(-(now_ms - span_ms) // 1000))
        high = bisect.bisect_left(starts, -(-now_ms // 1000))
        return starts[low:high]

    def _meta(self) -> _Meta:
        meta = self._read(_META_KEY, _Meta)
        if meta is None:
            return _Meta()
        # A copy: callers change it and write it back.
        return _Meta(list(meta.aggregate_windows), list(meta.risk_windows), meta.horizon_seconds)

    def _read(self, key: str, kind: Any) -> Any:
        raw = self.store.get(key)
        if raw is None:
            self._decoded.pop(key, None)
            return None
        cached = self._decoded.get(key)
        if cached is not None and (cached[0] is raw or cached[0] == raw):
            return cached[1]
        value = msgspec.msgpack.decode(raw, type=kind)
        self._decoded[key] = (raw, value)
        return value

    def _write(self, key: str, value: Any) -> None:
        raw = _encoder.encode(value)
        self.store[key] = raw
        self._decoded[key] = (raw, value)

    def _delete(self, key: str) -> None:
        self.store.pop(key, None)
        self._decoded.pop(key, None)


def _judge_aggregate(
    rule: Rule, labels: dict[str, str], windows: list[tuple[int, _Measures]], now_ms: int
) -> _Outcome | None:
    def total(seconds: int) -> _Measures:
        oldest_ms = now_ms - seconds * 1000
        result = _Measures()
        for window_start, measures in windows:
            if window_start * 1000 >= oldest_ms:
                result.requests += measures.requests
                result.errors += measures.errors
                result.unpriced_requests += measures.unpriced_requests
                result.cost += measures.cost
                result.sketches.extend(measures.sketches)
        return result

    if isinstance(rule, CostBudgetRule):
        spend = float(total(rule.window_seconds).cost)
        detail = f"spend {spend:.4f} over {rule.window_seconds}s (budget {rule.threshold:g})"
        return _Outcome(rule, labels, spend >= rule.threshold, spend, rule.threshold, detail)
    if isinstance(rule, BurnRateRule):
        best: tuple[float, float, float, str] | None = None  # (ratio to factor, burn, factor, text)
        holds = False
        for window in rule.windows:
            burns = []
            for seconds in (window.long_seconds, window.short_seconds):
                allowed = rule.budget * seconds / rule.budget_period_seconds
                burns.append(float(total(seconds).cost) / allowed)
            pair_holds = min(burns) >= window.factor
            text = (
                f"burn rate {burns[0]:.2f} over {window.long_seconds}s and {burns[1]:.2f} over "
                f"{window.short_seconds}s (factor {window.factor:g})"
            )
            candidate = (min(burns) / window.factor, burns[0], window.factor, text)
            if pair_holds and not holds:
                best, holds = candidate, True
            elif pair_holds == holds and (best is None or candidate[0] > best[0]):
                best = candidate
        assert best is not None
        return _Outcome(rule, labels, holds, best[1], best[2], best[3])
    if isinstance(rule, ErrorRateRule):
        measures = total(rule.window_seconds)
        rate = measures.errors / measures.requests if measures.requests else 0.0
        holds = measures.requests >= rule.min_requests and rate >= rule.threshold
        detail = (
            f"error rate {rate:.1%} of {measures.requests} requests over {rule.window_seconds}s"
        )
        return _Outcome(rule, labels, holds, rate, rule.threshold, detail)
    if isinstance(rule, LatencyP95Rule):
        measures = total(rule.window_seconds)
        p95 = _quantile(measures.sketches, 0.95)
        holds = measures.requests >= rule.min_requests and p95 >= rule.threshold
        detail = f"p95 latency {p95:.0f} ms over {measures.requests} requests"
        return _Outcome(rule, labels, holds, p95, rule.threshold, detail)
    if isinstance(rule, UnpricedSpendRule):
        count = float(total(rule.window_seconds).unpriced_requests)
        detail = f"{int(count)} requests to unpriced models over {rule.window_seconds}s"
        return _Outcome(rule, labels, count >= rule.threshold, count, rule.threshold, detail)
    return None


def _quantile(sketches: Iterable[bytes], quantile: float) -> float:
    from ddsketch.pb.ddsketch_pb2 import DDSketch as DDSketchMessage
    from ddsketch.pb.proto import DDSketchProto

    merged = None
    for raw in sketches:
        message = DDSketchMessage()
        message.ParseFromString(raw)
        sketch = DDSketchProto.from_proto(message)  # type: ignore[no-untyped-call]
        if merged is None:
            merged = sketch
        else:
            merged.merge(sketch)
    if merged is None or merged.count == 0:
        return 0.0
    value = merged.get_quantile_value(quantile)
    return float(value) if value is not None else 0.0


def _matches(where: dict[str, str], values: dict[str, str]) -> bool:
    return all(values.get(name) == expected for name, expected in where.items())


def _insert_sorted(values: list[int], value: int) -> bool:
    position = bisect.bisect_left(values, value)
    if position < len(values) and values[position] == value:
        return False
    values.insert(position, value)
    return True


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        return Decimal(0)
