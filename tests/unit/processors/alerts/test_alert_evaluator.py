"""The evaluator: transitions only, dedup and cooldown, version replacement, restart, every kind."""

from __future__ import annotations

from typing import Any

from ddsketch import DDSketch
from ddsketch.pb.proto import DDSketchProto
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtap.processors.alerts.evaluator import AlertEvaluator, fingerprint
from llmtap.processors.alerts.rules import RuleSet, parse_rules
from llmtap.schemas.aggregates import Aggregate

T0 = 1_900_000_000 // 3600 * 3600  # an hour boundary, in seconds
MINUTE = 60


def rules(text: str) -> RuleSet:
    return parse_rules("rules:\n" + text)


def aggregate(minute: int, **fields: Any) -> Aggregate:
    values: dict[str, Any] = {
        "window_start": T0 + minute * MINUTE,
        "window_seconds": 60,
        "tenant": "acme",
        "service_name": "chat",
        "request_model": "gpt-4o",
        "version": 1,
    }
    values.update(fields)
    return Aggregate(**values)


def at(minute: float) -> int:
    return int((T0 + minute * MINUTE) * 1000)


def states(events: list[Any]) -> list[tuple[str, str, str]]:
    return [(event.state, event.rule_id, event.group_key) for event in events]


BUDGET = rules(
    "  - {id: budget, kind: cost_budget, group_by: [tenant], window_seconds: 600, "
    "threshold: 10, cooldown_seconds: 300, severity: critical}\n"
)


def test_fires_once_stays_quiet_while_holding_and_resolves() -> None:
    evaluator = AlertEvaluator(BUDGET, {})
    for minute in range(4):
        evaluator.observe_aggregate(aggregate(minute, cost_total="3"))

    fired = evaluator.evaluate(at(4))
    assert states(fired) == [("firing", "budget", "tenant=acme")]
    event = fired[0]
    assert event.severity == "critical"
    assert event.value == 12.0
    assert event.threshold == 10.0
    assert event.tenant == "acme"
    assert event.labels == {"tenant": "acme", "kind": "cost_budget"}
    assert event.fingerprint == fingerprint("budget", {"tenant": "acme"})
    assert event.fired_at_ms == at(4)
    assert event.delivery_status == "pending"

    assert evaluator.evaluate(at(5)) == []  # still holding: no second notification
    resolved = evaluator.evaluate(at(12))  # minutes 0-3 left the 10-minute window
    assert states(resolved) == [("resolved", "budget", "tenant=acme")]
    assert resolved[0].fired_at_ms == at(4)
    assert resolved[0].resolved_at_ms == at(12)
    assert resolved[0].event_id != event.event_id
    assert resolved[0].fingerprint == event.fingerprint


def test_a_condition_that_returns_within_cooldown_does_not_fire_again() -> None:
    evaluator = AlertEvaluator(BUDGET, {})
    evaluator.observe_aggregate(aggregate(0, cost_total="11"))
    assert states(evaluator.evaluate(at(1))) == [("firing", "budget", "tenant=acme")]
    assert states(evaluator.evaluate(at(11))) == [("resolved", "budget", "tenant=acme")]

    evaluator.observe_aggregate(aggregate(11, cost_total="20"))
    assert evaluator.evaluate(at(12)) == []  # 1 minute after the resolve: cooling down
    assert evaluator.evaluate(at(15)) == []
    refired = evaluator.evaluate(at(16))  # the 5-minute cooldown is over and it still holds
    assert states(refired) == [("firing", "budget", "tenant=acme")]
    assert refired[0].fired_at_ms == at(16)


def test_a_re_emitted_window_replaces_the_earlier_version() -> None:
    evaluator = AlertEvaluator(BUDGET, {})
    assert evaluator.observe_aggregate(aggregate(0, cost_total="6", version=1))
    assert evaluator.observe_aggregate(aggregate(0, cost_total="8", version=2))
    assert not evaluator.observe_aggregate(aggregate(0, cost_total="6", version=1))  # stale
    assert not evaluator.observe_aggregate(aggregate(0, cost_total="8", version=2))  # re-delivery
    assert evaluator.evaluate(at(1)) == []  # 8, not 6 + 8 or 8 + 8

    assert evaluator.observe_aggregate(aggregate(0, cost_total="10.5", version=3))
    fired = evaluator.evaluate(at(2))
    assert [event.value for event in fired] == [10.5]


def test_partials_and_other_window_lengths_are_ignored() -> None:
    evaluator = AlertEvaluator(BUDGET, {})
    assert not evaluator.observe_aggregate(aggregate(0, cost_total="50", source_partition=2))
    assert not evaluator.observe_aggregate(aggregate(0, cost_total="50", window_seconds=3600))
    assert evaluator.evaluate(at(1)) == []


def test_a_restarted_evaluator_on_the_same_store_continues_exactly() -> None:
    store: dict[str, bytes] = {}
    first = AlertEvaluator(BUDGET, store)
    first.observe_aggregate(aggregate(0, cost_total="11"))
    assert states(first.evaluate(at(1))) == [("firing", "budget", "tenant=acme")]

    restarted = AlertEvaluator(BUDGET, dict(store))
    assert restarted.evaluate(at(2)) == []  # knows it is already firing
    assert not restarted.observe_aggregate(aggregate(0, cost_total="11"))  # knows the version
    resolved_a = restarted.evaluate(at(11))
    resolved_b = first.evaluate(at(11))
    assert resolved_a == resolved_b
    assert states(resolved_a) == [("resolved", "budget", "tenant=acme")]


def test_groups_where_filters_and_the_user_dimension_set() -> None:
    rule_set = rules(
        "  - {id: chat, kind: cost_budget, group_by: [request_model], "
        "where: {service_name: chat}, window_seconds: 600, threshold: 5}\n"
        "  - {id: users, kind: cost_budget, group_by: [tenant, user_id], window_seconds: 600, "
        "threshold: 5}\n"
    )
    evaluator = AlertEvaluator(rule_set, {})
    evaluator.observe_aggregate(aggregate(0, cost_total="6"))
    evaluator.observe_aggregate(aggregate(0, cost_total="6", request_model="o3"))
    evaluator.observe_aggregate(aggregate(0, cost_total="60", service_name="search"))
    evaluator.observe_aggregate(
        aggregate(
            0, dimension_set="user", service_name="", request_model="", user_id="u1", cost_total="7"
        )
    )
    evaluator.observe_aggregate(
        aggregate(
            0, dimension_set="user", service_name="", request_model="", user_id="u2", cost_total="1"
        )
    )
    assert states(evaluator.evaluate(at(1))) == [
        ("firing", "chat", "request_model=gpt-4o"),
        ("firing", "chat", "request_model=o3"),
        ("firing", "users", "tenant=acme,user_id=u1"),
    ]


def test_burn_rate_needs_both_windows_of_a_pair() -> None:
    # Budget 1440 per day = 1 per minute; factor 2 => a window burns too fast at 2 per minute.
    rule_set = rules(
        "  - id: burn\n"
        "    kind: burn_rate\n"
        "    group_by: [tenant]\n"
        "    budget: 1440\n"
        "    budget_period_seconds: 86400\n"
        "    windows: [{long_seconds: 3600, short_seconds: 300, factor: 2}]\n"
        "    cooldown_seconds: 0\n"
    )
    evaluator = AlertEvaluator(rule_set, {})
    # A burst in the last 5 minutes only: the short window burns at 10, the hour at 0.83.
    for minute in range(55, 60):
        evaluator.observe_aggregate(aggregate(minute, cost_total="10"))
    assert evaluator.evaluate(at(60)) == []
    # Keep burning: after the hour has spent 120 (2 per minute on average), both windows hold.
    for minute in range(60, 67):
        evaluator.observe_aggregate(aggregate(minute, cost_total="10"))
    fired = evaluator.evaluate(at(67))
    assert states(fired) == [("firing", "burn", "tenant=acme")]
    assert fired[0].value == 120 / 60  # the long window's burn rate
    assert fired[0].threshold == 2
    # Spending stops: the short window clears first, and the pair stops holding.
    assert states(evaluator.evaluate(at(72))) == [("resolved", "burn", "tenant=acme")]


def test_error_rate_needs_enough_requests() -> None:
    rule_set = rules(
        "  - {id: errors, kind: error_rate, group_by: [service_name], window_seconds: 300, "
        "threshold: 0.5, min_requests: 10}\n"
    )
    evaluator = AlertEvaluator(rule_set, {})
    evaluator.observe_aggregate(aggregate(0, requests=4, errors=4))
    assert evaluator.evaluate(at(1)) == []  # 100 % of 4 requests: too few to judge
    evaluator.observe_aggregate(aggregate(1, requests=8, errors=3))
    fired = evaluator.evaluate(at(2))
    assert states(fired) == [("firing", "errors", "service_name=chat")]
    assert fired[0].value == 7 / 12


def sketch_bytes(values: list[float]) -> bytes:
    sketch = DDSketch(relative_accuracy=0.01)
    for value in values:
        sketch.add(value)
    return bytes(DDSketchProto.to_proto(sketch).SerializeToString())


def test_latency_p95_merges_the_window_sketches() -> None:
    rule_set = rules(
        "  - {id: slow, kind: latency_p95, group_by: [request_model], window_seconds: 300, "
        "threshold: 1000, min_requests: 10}\n"
    )
    evaluator = AlertEvaluator(rule_set, {})
    # Each window alone has a p95 under 1000 ms; merged, 10 % of requests take 5000 ms.
    evaluator.observe_aggregate(
        aggregate(0, requests=95, latency_sketch=sketch_bytes([100.0] * 90 + [5000.0] * 5))
    )
    assert evaluator.evaluate(at(1)) == []
    evaluator.observe_aggregate(
        aggregate(1, requests=105, latency_sketch=sketch_bytes([100.0] * 90 + [5000.0] * 15))
    )
    fired = evaluator.evaluate(at(2))
    assert states(fired) == [("firing", "slow", "request_model=gpt-4o")]
    assert abs(fired[0].value - 5000) / 5000 < 0.02


def test_unpriced_spend_counts_requests_to_unpriced_models() -> None:
    rule_set = rules(
        "  - {id: unpriced, kind: unpriced_spend, group_by: [request_model], window_seconds: 600}\n"
    )
    evaluator = AlertEvaluator(rule_set, {})
    evaluator.observe_aggregate(aggregate(0, requests=5))
    assert evaluator.evaluate(at(1)) == []
    evaluator.observe_aggregate(aggregate(1, requests=5, unpriced_requests=2, request_model="x"))
    assert states(evaluator.evaluate(at(2))) == [("firing", "unpriced", "request_model=x")]


def test_high_risk_rate_fires_and_resolves() -> None:
    rule_set = rules(
        "  - {id: risky, kind: high_risk_rate, group_by: [prompt_template_version], "
        "window_seconds: 600, threshold: 0.5, risk_score_threshold: 0.7, min_requests: 2, "
        "cooldown_seconds: 0}\n"
    )
    evaluator = AlertEvaluator(rule_set, {})
    evaluator.observe_risk("acme", "chat", "v1", "gpt-4o", at(0.5), 0.9, 1.0)
    evaluator.observe_risk("acme", "chat", "v1", "gpt-4o", at(0.5), 0.1, 3.0)  # weighs 3
    assert evaluator.evaluate(at(1)) == []  # 1 / 4 weighted
    evaluator.observe_risk("acme", "chat", "v1", "gpt-4o", at(1.5), 0.8, 4.0)
    fired = evaluator.evaluate(at(2))
    assert states(fired) == [("firing", "risky", "prompt_template_version=v1")]
    assert fired[0].value == 5 / 8
    assert states(evaluator.evaluate(at(12))) == [
        ("resolved", "risky", "prompt_template_version=v1")
    ]


def test_drift_fires_on_a_drifted_result_and_resolves_on_a_clean_one() -> None:
    rule_set = rules(
        "  - {id: drift, kind: drift, group_by: [service_name, feature], window_seconds: 3600, "
        "where: {detector: mmd}, cooldown_seconds: 0}\n"
    )
    evaluator = AlertEvaluator(rule_set, {})

    def result(drifted: bool, end_minute: int, detector: str = "mmd") -> None:
        evaluator.observe_drift(
            "acme",
            "chat",
            "gpt-4o",
            "v1",
            "prompt_embedding",
            detector,
            drifted,
            0.42 if drifted else 0.01,
            0.001 if drifted else 0.6,
            at(end_minute),
        )

    result(True, 5, detector="ks")  # another detector: filtered out by where
    assert evaluator.evaluate(at(6)) == []
    result(True, 10)
    fired = evaluator.evaluate(at(11))
    assert states(fired) == [("firing", "drift", "service_name=chat,feature=prompt_embedding")]
    assert fired[0].value == 0.42
    result(True, 8)  # an older result does not replace the newer one
    assert evaluator.evaluate(at(12)) == []
    result(False, 20)
    assert [event.state for event in evaluator.evaluate(at(21))] == ["resolved"]


def test_old_state_is_pruned() -> None:
    store: dict[str, bytes] = {}
    evaluator = AlertEvaluator(BUDGET, store)
    for minute in range(30):
        evaluator.observe_aggregate(aggregate(minute, cost_total="0.1"))
    evaluator.evaluate(at(30))
    windows = sorted(int(key.split(":")[1]) for key in store if key.startswith("agg:"))
    assert windows[0] >= T0 + (30 - 11) * MINUTE  # the 10-minute window plus one base window
    # Data older than the horizon can no longer come back.
    assert not evaluator.observe_aggregate(aggregate(0, cost_total="100", version=9))


def test_a_removed_rule_resolves_its_firing_alerts() -> None:
    store: dict[str, bytes] = {}
    evaluator = AlertEvaluator(BUDGET, store)
    evaluator.observe_aggregate(aggregate(0, cost_total="11"))
    evaluator.evaluate(at(1))
    without_rules = AlertEvaluator(RuleSet(), store)
    resolved = without_rules.evaluate(at(2))
    assert states(resolved) == [("resolved", "budget", "tenant=acme")]
    assert "removed" in resolved[0].message


# -- order independence ----------------------------------------------------------------------

PROPERTY_RULES = rules(
    "  - {id: budget, kind: cost_budget, group_by: [tenant], window_seconds: 300, threshold: 20}\n"
    "  - {id: errors, kind: error_rate, group_by: [request_model], window_seconds: 300, "
    "threshold: 0.3, min_requests: 5}\n"
)

versions = st.lists(
    st.tuples(
        st.integers(0, 4),  # minute
        st.sampled_from(["gpt-4o", "o3"]),
        st.integers(1, 4),  # version
        st.integers(0, 20),  # requests
        st.integers(0, 20),  # errors (clipped to requests)
        st.decimals(0, 15, places=3),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(versions, st.randoms(use_true_random=False))
def test_redelivered_or_reordered_versions_give_the_same_evaluation(
    records: list[tuple[int, str, int, int, int, Any]], shuffler: Any
) -> None:
    def build(record: tuple[int, str, int, int, int, Any]) -> Aggregate:
        minute, model, version, requests, errors, cost = record
        return aggregate(
            minute,
            request_model=model,
            version=version,
            requests=requests + version,
            errors=min(errors, requests),
            cost_total=str(cost + version),
        )

    # One version of a window always has the same content (the stream's guarantee).
    by_version = {(r[0], r[1], r[2]): r for r in reversed(records)}
    records = [by_version[(r[0], r[1], r[2])] for r in records]
    in_order = sorted(by_version.values(), key=lambda r: (r[0], r[1], r[2]))
    latest: dict[tuple[int, str], tuple[int, str, int, int, int, Any]] = {}
    for record in in_order:
        latest[(record[0], record[1])] = record
    expected_input = [build(record) for record in latest.values()]

    shuffled = [build(record) for record in records] + [build(record) for record in records]
    shuffler.shuffle(shuffled)

    reference = AlertEvaluator(PROPERTY_RULES, {})
    for item in expected_input:
        reference.observe_aggregate(item)
    replayed = AlertEvaluator(PROPERTY_RULES, {})
    for item in shuffled:
        replayed.observe_aggregate(item)
    # Only the latest version of each window may count, whatever the order and repeats.
    assert _latest_only(shuffled) == {a.window_key: a for a in expected_input}
    assert replayed.evaluate(at(5)) == reference.evaluate(at(5))


def _latest_only(items: list[Aggregate]) -> dict[str, Aggregate]:
    latest: dict[str, Aggregate] = {}
    for item in items:
        held = latest.get(item.window_key)
        if held is None or item.version > held.version:
            latest[item.window_key] = item
    return latest
