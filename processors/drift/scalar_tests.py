"""Scalar drift: PSI on reference-quantile bins, normalized Wasserstein, chi-square.

Continuous features (tokens, latency, cost) are compared on a log scale (``log1p``), where
their long tails stop dominating.

- **PSI** ``sum((c - r) * ln(c / r))`` over ``bins`` bins cut at the reference's quantiles (ties
  merge bins), with ``smoothing`` pseudo-counts in every bin on both sides so an empty bin is
  finite. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 large. Its p-value is the
  chi-square test of homogeneity on the same binned counts: PSI alone grows as windows shrink
  (``(bins - 1) * (1/n + 1/m)`` with no drift), so a window passes only when both say so.
- **Wasserstein-1** between the two empirical distributions, divided by the reference standard
  deviation: "how far, in reference spreads, mass had to move". 0.25 is a quarter of a standard
  deviation. Its p-value is by permutation, vectorized: the pooled values are sorted once and
  each permutation is a cumulative sum of shuffled labels. The detector stops permuting once
  the p-value cannot end below its threshold (most windows, the ones without drift).
- **Chi-square** test of homogeneity for categories (finish reasons, ok / error / refusal),
  permutation-calibrated (rare categories make the chi-square law anti-conservative), with
  Cramér's V as the effect size in the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    p_value: float
    degrees_of_freedom: int
    cramers_v: float


@dataclass(frozen=True)
class Psi:
    psi: float
    p_value: float  # chi-square homogeneity test on the binned counts
    edges: list[float]  # inner bin edges (reference quantiles)
    reference_fraction: list[float]
    current_fraction: list[float]
    contributions: list[float]


@dataclass(frozen=True)
class Wasserstein:
    distance: float  # in reference standard deviations
    p_value: float
    reference_median: float
    current_median: float
    permutations_run: int = 0  # fewer than asked when stopped early (``stop_at_p``)


def chi_square(
    reference_counts: npt.ArrayLike,
    current_counts: npt.ArrayLike,
    permutations: int = 0,
    rng: np.random.Generator | None = None,
    permute_below: float = 1.0,
) -> ChiSquare:
    """Homogeneity of two count vectors over the same categories; empty categories dropped.

    With ``permutations`` the p-value is calibrated by permutation, which stays exact when rare
    categories have expected counts far below 5 (where the chi-square law is anti-conservative:
    a 3 % category in a 200-event window). A permutation of the pooled events only changes the
    current window's counts, which follow the multivariate hypergeometric law: drawn directly.
    Permutations run only when the asymptotic p-value is below ``permute_below``: far from the
    threshold the asymptotic value is kept (the decision does not depend on it).
    """
    table = np.vstack((reference_counts, current_counts)).astype(np.int64)
    table = table[:, table.sum(axis=0) > 0]
    total = int(table.sum())
    if table.shape[1] < 2 or total == 0 or (table.sum(axis=1) == 0).any():
        return ChiSquare(0.0, 1.0, 0, 0.0)
    statistic = float(_chi_square_statistic(table[1], table.sum(axis=0), total)[()])
    dof = table.shape[1] - 1
    asymptotic = float(stats.chi2.sf(statistic, dof))
    if permutations and rng is not None and asymptotic < permute_below:
        drawn = rng.multivariate_hypergeometric(
            table.sum(axis=0), int(table[1].sum()), size=permutations
        )
        permuted = _chi_square_statistic(drawn, table.sum(axis=0), total)
        exceed = int(np.count_nonzero(permuted >= statistic * (1 - 1e-9)))
        p_value = (1 + exceed) / (permutations + 1)
    else:
        p_value = asymptotic
    return ChiSquare(
        statistic=statistic,
        p_value=p_value,
        degrees_of_freedom=dof,
        cramers_v=float(np.sqrt(statistic / total)),  # min(rows, cols) - 1 == 1
    )


def _chi_square_statistic(
    current: npt.NDArray[np.int64], column_totals: npt.NDArray[np.int64], total: int
) -> npt.NDArray[np.float64]:
    """Pearson's statistic of the 2 x K table with these current counts (one per row)."""
    current = np.asarray(current, dtype=np.float64)
    current_total = current.sum(axis=-1, keepdims=True)
    reference = column_totals - current
    expected_current = current_total * column_totals / total
    expected_reference = (total - current_total) * column_totals / total
    return (  # type: ignore[no-any-return]
        (current - expected_current) ** 2 / expected_current
        + (reference - expected_reference) ** 2 / expected_reference
    ).sum(axis=-1)


def psi(reference: FloatArray, current: FloatArray, bins: int, smoothing: float) -> Psi:
    quantiles = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique(quantiles)
    reference_counts = np.bincount(
        np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1
    )
    current_counts = np.bincount(
        np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1
    )
    reference_fraction = (reference_counts + smoothing) / (
        reference_counts.sum() + smoothing * len(reference_counts)
    )
    current_fraction = (current_counts + smoothing) / (
        current_counts.sum() + smoothing * len(current_counts)
    )
    contributions = (current_fraction - reference_fraction) * np.log(
        current_fraction / reference_fraction
    )
    return Psi(
        psi=float(contributions.sum()),
        p_value=chi_square(reference_counts, current_counts).p_value,
        edges=[float(edge) for edge in edges],
        reference_fraction=[float(value) for value in reference_fraction],
        current_fraction=[float(value) for value in current_fraction],
        contributions=[float(value) for value in contributions],
    )


_FIRST_CHUNK = 16  # permutations before the first look (then 32, 64, ...)


def _wasserstein_from_sorted(
    labels: npt.NDArray[np.int8], gaps: npt.NDArray[np.float64], n: int, m: int
) -> npt.NDArray[np.float64]:
    """W1 for each row of ``labels`` (1 = current) over pooled values sorted once.

    Below the k-th gap, ``c`` current and ``k - c`` reference values lie, so the distance
    between the two empirical CDFs there is ``|c/n - (k - c)/m| = |c (1/n + 1/m) - k/m|``: one
    integer running count per row, not one per sample.
    """
    below = np.cumsum(labels, axis=-1, dtype=np.int32)[..., :-1]
    spread = below * (1 / n + 1 / m)  # in place from here: the matrix is permutations x (n + m)
    spread -= np.arange(1, labels.shape[-1], dtype=np.float64) / m
    np.abs(spread, out=spread)
    distances: npt.NDArray[np.float64] = spread @ gaps
    return distances


def wasserstein(
    reference: FloatArray,
    current: FloatArray,
    permutations: int,
    rng: np.random.Generator,
    stop_at_p: float | None = None,
) -> Wasserstein:
    """W1 between the two samples in reference standard deviations, with a permutation p-value.

    With ``stop_at_p``, permutations run in growing chunks and stop as soon as the p-value
    cannot end below it (Besag & Clifford's sequential Monte Carlo test): a window without
    drift is settled after a few dozen permutations instead of all of them. Whether p ends below
    ``stop_at_p`` is decided exactly as by the full test over the same permutations; a stopped
    test reports ``max(h / l, (1 + h) / (B + 1))`` (h of l permutations at least as far apart),
    which is never below ``stop_at_p``.
    """
    n, m = len(current), len(reference)
    pooled = np.concatenate((current, reference)).astype(np.float64)
    order = np.argsort(pooled, kind="stable")
    gaps = np.diff(pooled[order])
    labels = np.zeros(n + m, dtype=np.int8)
    labels[:n] = 1
    observed = float(_wasserstein_from_sorted(labels[order], gaps, n, m))
    p_value = float("nan")  # not computed (permutations=0)
    exceed = done = 0
    if permutations:
        chunk = _FIRST_CHUNK if stop_at_p is not None else permutations
        while done < permutations:
            size = min(chunk, permutations - done)
            shuffled = rng.permuted(np.tile(labels, (size, 1)), axis=1)
            permuted = _wasserstein_from_sorted(shuffled, gaps, n, m)
            exceed += int(np.count_nonzero(permuted >= observed * (1 - 1e-9)))
            done += size
            chunk *= 2
            if stop_at_p is not None and (1 + exceed) / (permutations + 1) >= stop_at_p:
                break
        p_value = (1 + exceed) / (permutations + 1)
        if done < permutations:
            p_value = max(exceed / done, p_value)
    scale = float(np.std(reference, ddof=1)) if m > 1 else 0.0
    if scale == 0:
        # a constant reference: any movement is in units of the values themselves
        scale = 1.0
    return Wasserstein(
        distance=observed / scale,
        p_value=p_value,
        reference_median=float(np.median(reference)),
        current_median=float(np.median(current)),
        permutations_run=done,
    )
