"""Which spans to score when traffic exceeds the scoring budget, and with what weight.

The budget is spans per second of scoring capacity (a token bucket refilled at that rate,
holding at most ``burst_seconds`` of budget). A batch that fits is scored whole, weight 1.
When it does not, capacity goes to priority tiers in order:

1. spans with retrieved context (the ones a grounding score says most about);
2. flagged spans (a structural injection hint) and spans of a prompt template version not seen
   before (a new prompt is where regressions start);
3. everything else.

A tier that fits entirely is kept with probability 1; the first tier that does not gets a
uniform random sample of exactly ``k`` of its ``n`` spans (inclusion probability ``k / n``), and
later tiers get nothing. Every kept span records ``sampling_weight = n / k`` (1 / its inclusion
probability), so weighted sums and means over the scores estimate the whole traffic without bias
(Horvitz-Thompson) for every tier that got any budget. Tiers that got none are missing from the
scores entirely; the stage counts them as discarded ("sampled_out").
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingCandidate:
    has_context: bool
    flagged: bool = False
    prompt_template_key: str | None = None  # e.g. "service/template_id/version"


@dataclass(frozen=True)
class SamplingDecision:
    keep: bool
    weight: float  # 1 / inclusion probability when kept, 0 when dropped
    tier: int


class PrioritySampler:
    """``budget_spans_per_second=None`` scores everything (weight 1)."""

    def __init__(
        self,
        budget_spans_per_second: float | None,
        *,
        burst_seconds: float = 2.0,
        known_template_versions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.budget = budget_spans_per_second
        self._capacity = (budget_spans_per_second or 0.0) * burst_seconds
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()
        self._rng = rng or random.Random()
        self._seen_templates: OrderedDict[str, None] = OrderedDict()
        self._known_templates = known_template_versions

    def _is_new_template(self, key: str | None) -> bool:
        if key is None:
            return False
        if key in self._seen_templates:
            self._seen_templates.move_to_end(key)
            return False
        self._seen_templates[key] = None
        if len(self._seen_templates) > self._known_templates:
            self._seen_templates.popitem(last=False)
        return True

    def tier(self, candidate: SamplingCandidate) -> int:
        if candidate.has_context:
            return 0
        if candidate.flagged or self._is_new_template(candidate.prompt_template_key):
            return 1
        return 2

    def decide(self, candidates: Sequence[SamplingCandidate]) -> list[SamplingDecision]:
        tiers = [self.tier(candidate) for candidate in candidates]
        if self.budget is None:
            return [SamplingDecision(True, 1.0, tier) for tier in tiers]
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self.budget)
        self._last = now
        available = int(self._tokens)
        decisions = [SamplingDecision(False, 0.0, tier) for tier in tiers]
        for tier in (0, 1, 2):
            members = [index for index, value in enumerate(tiers) if value == tier]
            if not members:
                continue
            take = min(available, len(members))
            if take == 0:
                continue
            chosen = members if take == len(members) else self._rng.sample(members, take)
            weight = len(members) / take
            for index in chosen:
                decisions[index] = SamplingDecision(True, weight, tier)
            available -= take
        self._tokens -= sum(decision.keep for decision in decisions)
        return decisions
