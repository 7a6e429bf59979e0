"""Priority sampling under a budget, and the weights that keep aggregates unbiased."""

from __future__ import annotations

import random

from llmtap.processors.risk.sampling import PrioritySampler, SamplingCandidate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_without_a_budget_everything_is_kept_with_weight_one() -> None:
    sampler = PrioritySampler(None)
    decisions = sampler.decide([SamplingCandidate(False)] * 50)
    assert all(d.keep and d.weight == 1.0 for d in decisions)


def test_context_spans_come_first_then_flagged_then_the_rest() -> None:
    clock = Clock()
    sampler = PrioritySampler(10, burst_seconds=1.0, clock=clock, rng=random.Random(1))
    candidates = (
        [SamplingCandidate(True)] * 4
        + [SamplingCandidate(False, flagged=True)] * 4
        + [SamplingCandidate(False)] * 20
    )
    decisions = sampler.decide(candidates)
    assert all(d.keep and d.weight == 1.0 for d in decisions[:8])  # tiers 0 and 1 fit
    rest = decisions[8:]
    assert sum(d.keep for d in rest) == 2  # 10 tokens: 8 used, 2 left for 20 spans
    assert {d.weight for d in rest if d.keep} == {10.0}
    assert all(d.weight == 0.0 for d in rest if not d.keep)


def test_a_new_prompt_template_version_is_prioritized_once() -> None:
    sampler = PrioritySampler(None)
    first = SamplingCandidate(False, prompt_template_key="svc/greeting/v2")
    assert sampler.tier(first) == 1
    assert sampler.tier(first) == 2  # seen before


def test_the_budget_refills_with_time_up_to_the_burst() -> None:
    clock = Clock()
    sampler = PrioritySampler(5, burst_seconds=2.0, clock=clock, rng=random.Random(2))
    assert sum(d.keep for d in sampler.decide([SamplingCandidate(False)] * 100)) == 10
    assert sum(d.keep for d in sampler.decide([SamplingCandidate(False)] * 100)) == 0
    clock.now += 1.0
    assert sum(d.keep for d in sampler.decide([SamplingCandidate(False)] * 100)) == 5
    clock.now += 100.0
    assert sum(d.keep for d in sampler.decide([SamplingCandidate(False)] * 100)) == 10


def test_weighted_sums_estimate_the_whole_traffic_without_bias() -> None:
    clock = Clock()
    rng = random.Random(3)
    sampler = PrioritySampler(30, burst_seconds=1.0, clock=clock, rng=rng)
    true_total = 0.0
    estimate = 0.0
    for _ in range(400):
        clock.now += 1.0
        candidates = [SamplingCandidate(rng.random() < 0.2) for _ in range(60)]
        values = [5.0 if c.has_context else 1.0 for c in candidates]  # tiers differ in value
        true_total += sum(values)
        for decision, value in zip(sampler.decide(candidates), values, strict=True):
            if decision.keep:
                estimate += decision.weight * value
    assert abs(estimate - true_total) / true_total < 0.02
