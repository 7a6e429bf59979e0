"""The drift tests' statistics: calibration under no drift, power under shift, known values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from llmtap.processors.drift.embedding_tests import centroid_test, mmd_test, shift_evidence
from llmtap.processors.drift.scalar_tests import chi_square, psi, wasserstein

DIMENSION = 32
SCALES = 1 / np.sqrt(np.arange(1, DIMENSION + 1))  # a decaying spectrum, like real embeddings


def sample(rng: np.random.Generator, count: int, shift: float = 0.0) -> np.ndarray:
    rows = rng.standard_normal((count, DIMENSION)) * SCALES
    rows[:, 3] += shift
    return rows


def test_centroid_p_values_are_uniform_without_drift() -> None:
    rng = np.random.default_rng(1)
    p_values = np.array(
        [centroid_test(sample(rng, 40), sample(rng, 80), 99, rng).p_value for _ in range(300)]
    )
    # Permutation p-values are exact: P(p <= a) <= a for every a, and close to it.
    for level in (0.05, 0.1, 0.25, 0.5):
        assert np.mean(p_values <= level) == pytest.approx(level, abs=0.06)
    assert stats.kstest(p_values, "uniform").pvalue > 0.001


def test_centroid_statistic_reads_one_without_drift_whatever_the_window_size() -> None:
    rng = np.random.default_rng(2)
    for window in (30, 300):
        values = [
            centroid_test(sample(rng, window), sample(rng, 300), 19, rng).statistic
            for _ in range(40)
        ]
        assert np.mean(values) == pytest.approx(1.0, abs=0.15)


def test_centroid_detects_a_shift_and_points_along_it() -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        result = centroid_test(sample(rng, 100, shift=0.8), sample(rng, 200), 199, rng)
        assert result.p_value < 0.01
        assert result.statistic > 3
        assert abs(result.direction[3]) > 0.8  # the shifted coordinate
        assert result.direction[3] > 0  # from the reference toward the current window


def test_mmd_is_calibrated_and_sees_a_change_of_spread_the_centroid_misses() -> None:
    rng = np.random.default_rng(4)
    null = np.array(
        [mmd_test(sample(rng, 40), sample(rng, 80), 99, rng).p_value for _ in range(100)]
    )
    assert np.mean(null <= 0.1) == pytest.approx(0.1, abs=0.08)
    wider = sample(rng, 150) * 1.8
    reference = sample(rng, 150)
    assert centroid_test(wider, reference, 199, rng).p_value > 0.01
    assert mmd_test(wider, reference, 199, rng).p_value < 0.01


def test_shift_evidence_lists_the_most_shifted_examples() -> None:
    rng = np.random.default_rng(5)
    reference = sample(rng, 200)
    current = sample(rng, 50)
    current[:5, 3] += 8.0  # five examples moved far along coordinate 3
    labels = [{"span_id": f"{index:016x}"} for index in range(50)]
    test = centroid_test(current, reference, 99, rng)
    evidence = shift_evidence(current, labels, reference, reference.mean(axis=0), test.direction, 5)
    most_shifted = evidence["most_shifted"]
    assert isinstance(most_shifted, list)
    assert {entry["span_id"] for entry in most_shifted} == {f"{index:016x}" for index in range(5)}
    assert evidence["direction_top_dimensions"][0][0] == 3  # type: ignore[index]
    assert len(evidence["direction"]) == DIMENSION  # type: ignore[arg-type]


def test_psi_on_known_bins() -> None:
    reference = np.arange(100, dtype=float)  # quartile edges 24.75, 49.5, 74.25
    current = np.concatenate((np.full(50, 10.0), np.full(50, 30.0)))  # all in the first two bins
    result = psi(reference, current, bins=4, smoothing=0.5)
    r = np.full(4, 25.5 / 102)
    c = np.array([50.5, 50.5, 0.5, 0.5]) / 102
    assert result.psi == pytest.approx(float(((c - r) * np.log(c / r)).sum()))
    assert result.edges == pytest.approx([24.75, 49.5, 74.25])
    assert result.p_value < 1e-10
    same = psi(reference, reference.copy(), bins=4, smoothing=0.5)
    assert same.psi == pytest.approx(0.0)
    assert same.p_value == pytest.approx(1.0)


def test_psi_merges_bins_at_tied_quantiles() -> None:
    reference = np.array([1.0] * 80 + [2.0] * 20)  # token counts: many ties
    result = psi(reference, reference.copy(), bins=10, smoothing=0.5)
    assert len(result.edges) < 9
    assert np.isfinite(result.psi)


def test_wasserstein_of_a_shift_is_the_shift_in_reference_deviations() -> None:
    rng = np.random.default_rng(6)
    reference = np.arange(100, dtype=float)
    result = wasserstein(reference, reference + 5.0, 199, rng)
    assert result.distance == pytest.approx(5.0 / np.std(reference, ddof=1))
    assert result.current_median - result.reference_median == pytest.approx(5.0)
    same = wasserstein(reference, reference.copy(), 199, rng)
    assert same.distance == pytest.approx(0.0)
    assert same.p_value == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_wasserstein_distance_and_p_value_match_scipy_and_a_direct_permutation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = np.round(rng.lognormal(size=int(rng.integers(20, 300))), 1)  # with ties
    current = np.round(rng.lognormal(0.2, size=int(rng.integers(10, 200))), 1)
    result = wasserstein(reference, current, 99, np.random.default_rng(seed))
    scale = np.std(reference, ddof=1)
    assert result.distance == pytest.approx(
        stats.wasserstein_distance(current, reference) / scale, rel=1e-9, abs=1e-12
    )
    # the p-value counts the same label permutations, each distance computed by scipy
    labels = np.zeros(len(current) + len(reference), dtype=np.int8)
    labels[: len(current)] = 1
    pooled = np.concatenate((current, reference))
    order = np.argsort(pooled, kind="stable")
    # each row: which of the sorted pooled values are "current" under one permutation
    shuffled = np.random.default_rng(seed).permuted(np.tile(labels, (99, 1)), axis=1)
    ordered = pooled[order]
    permuted = [
        stats.wasserstein_distance(ordered[row == 1], ordered[row == 0]) for row in shuffled
    ]
    observed = result.distance * scale
    exceed = sum(distance >= observed * (1 - 1e-9) for distance in permuted)
    assert result.p_value == pytest.approx((1 + exceed) / 100)


def test_wasserstein_p_values_are_calibrated() -> None:
    rng = np.random.default_rng(7)
    p_values = np.array(
        [
            wasserstein(rng.normal(size=100), rng.normal(size=50), 99, rng).p_value
            for _ in range(200)
        ]
    )
    assert np.mean(p_values <= 0.1) == pytest.approx(0.1, abs=0.06)


def test_chi_square_on_a_known_table() -> None:
    result = chi_square(np.array([10, 20]), np.array([20, 10]))
    assert result.statistic == pytest.approx(60 / 9)  # 4 * (5^2 / 15)
    assert result.p_value == pytest.approx(stats.chi2.sf(60 / 9, 1))
    assert result.degrees_of_freedom == 1
    assert result.cramers_v == pytest.approx(np.sqrt(60 / 9 / 60))
    assert chi_square(np.array([5, 0]), np.array([7, 0])).p_value == 1.0  # one category only


def test_chi_square_permutation_p_values_stay_calibrated_with_rare_categories() -> None:
    rng = np.random.default_rng(8)
    shares = [0.95, 0.03, 0.02]
    p_values = []
    for _ in range(300):
        reference = np.bincount(rng.choice(3, 300, p=shares), minlength=3)
        current = np.bincount(rng.choice(3, 100, p=shares), minlength=3)
        p_values.append(chi_square(reference, current, 999, rng).p_value)
    assert np.mean(np.array(p_values) <= 0.05) <= 0.075


@pytest.mark.parametrize("seed", range(40))
def test_a_wasserstein_test_stopped_early_decides_as_the_full_test(seed: int) -> None:
    """Stopping once p cannot end below alpha changes the work, never the decision."""
    rng = np.random.default_rng(100 + seed)
    reference = rng.lognormal(size=300)
    # from no drift to clear drift: some windows pass, some fail, some sit near alpha
    current = rng.lognormal(mean=0.05 * (seed % 8), size=120)
    alpha = 0.01
    full = wasserstein(reference, current, 199, np.random.default_rng(seed))
    stopped = wasserstein(reference, current, 199, np.random.default_rng(seed), stop_at_p=alpha)
    assert (stopped.p_value < alpha) == (full.p_value < alpha)
    assert stopped.distance == full.distance
    if stopped.permutations_run == 199:
        assert stopped.p_value == full.p_value
    else:
        assert stopped.p_value >= alpha
        assert full.p_value >= alpha


def test_a_window_without_drift_is_settled_after_a_few_permutations() -> None:
    rng = np.random.default_rng(12)
    runs = [
        wasserstein(rng.normal(size=500), rng.normal(size=200), 200, rng, stop_at_p=0.01)
        for _ in range(50)
    ]
    assert np.median([run.permutations_run for run in runs]) <= 16
    # and a clear shift still gets every permutation and a small p-value
    shifted = wasserstein(rng.normal(size=500), rng.normal(1.0, size=200), 200, rng, stop_at_p=0.01)
    assert shifted.permutations_run == 200
    assert shifted.p_value == pytest.approx(1 / 201)
