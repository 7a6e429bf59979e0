"""Embedding drift: a calibrated centroid test, an MMD confirmation, and the evidence.

Primary statistic: the squared distance between the current window's centroid and the
reference sample's, divided by what it is expected to be with no drift,
``tr(Sigma) * (1/n + 1/m)`` (pooled total variance), so it reads ~1 whatever the window sizes
and dimension. A raw distance threshold would not: the distance shrinks as windows grow. The
p-value is calibrated by permutation (labels shuffled between the pooled rows,
``(1 + #{permuted >= observed}) / (B + 1)``), which is exact under exchangeability whatever the
embedding distribution; the permutation (1 - alpha) quantile is the window's calibrated critical
value of the statistic (the stored ``threshold``). All permutations are one matrix product,
``W @ Z``, where each row of ``W`` holds ``1/n`` on the rows labelled current and ``-1/m`` on the
others.

Confirmation: the RBF-kernel maximum mean discrepancy (biased V-statistic, median-heuristic
bandwidth) on the same rows, permutation-calibrated the same way (``a^T K a`` per label vector).
It sees changes the centroid misses (a spread that widens, a new cluster at the same mean) and
rejects mean shifts made of a few outliers; it runs only when the primary test rejects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]

_BANDWIDTH_PAIRS = 20_000


@dataclass(frozen=True)
class CentroidTest:
    statistic: float  # squared centroid distance / its no-drift expectation (~1 without drift)
    p_value: float
    critical_value: float  # the statistic's (1 - alpha) permutation quantile: the calibrated bar
    squared_distance: float
    expected_no_drift: float
    direction: npt.NDArray[np.float64]  # unit vector from the reference centroid to the current


@dataclass(frozen=True)
class MmdTest:
    statistic: float  # biased MMD^2
    p_value: float
    bandwidth: float  # sqrt of the kernel's scale: k(x, y) = exp(-|x - y|^2 / bandwidth^2)


def _label_weights(
    rng: np.random.Generator, permutations: int, current: int, reference: int
) -> npt.NDArray[np.float32]:
    """One row per permutation: 1/n on the rows drawn as current, -1/m on the others."""
    total = current + reference
    order = rng.permuted(np.tile(np.arange(total), (permutations, 1)), axis=1)
    weights = np.full((permutations, total), -1.0 / reference, dtype=np.float32)
    np.put_along_axis(weights, order[:, :current], np.float32(1.0 / current), axis=1)
    return weights


def _observed_weights(current: int, reference: int) -> npt.NDArray[np.float32]:
    weights = np.full(current + reference, -1.0 / reference, dtype=np.float32)
    weights[:current] = 1.0 / current
    return weights


def _permutation_p_value(observed: float, permuted: npt.NDArray[np.floating]) -> float:
    # A tolerance keeps ties (identical label sets) counted as ties despite float rounding.
    exceed = int(np.count_nonzero(permuted >= observed * (1 - 1e-9)))
    return (1 + exceed) / (len(permuted) + 1)


def centroid_test(
    current: FloatArray,
    reference: FloatArray,
    permutations: int,
    rng: np.random.Generator,
    alpha: float = 0.01,
) -> CentroidTest:
    n, m = len(current), len(reference)
    pooled = np.vstack((current, reference)).astype(np.float32)
    pooled -= pooled.mean(axis=0)
    difference = pooled[:n].mean(axis=0, dtype=np.float64) - pooled[n:].mean(
        axis=0, dtype=np.float64
    )
    squared_distance = float(difference @ difference)
    total_variance = float(np.einsum("ij,ij->", pooled, pooled, dtype=np.float64)) / (n + m - 1)
    expected = total_variance * (1.0 / n + 1.0 / m)
    shifted = _label_weights(rng, permutations, n, m) @ pooled
    permuted = np.einsum("ij,ij->i", shifted, shifted, dtype=np.float64)
    norm = np.sqrt(squared_distance)
    direction = difference / norm if norm > 0 else np.zeros_like(difference)
    scale = 1 / expected if expected > 0 else 0.0
    return CentroidTest(
        statistic=squared_distance * scale,
        p_value=_permutation_p_value(squared_distance, permuted),
        critical_value=float(np.quantile(permuted, 1 - alpha, method="higher")) * scale,
        squared_distance=squared_distance,
        expected_no_drift=expected,
        direction=direction,
    )


def mmd_test(
    current: FloatArray, reference: FloatArray, permutations: int, rng: np.random.Generator
) -> MmdTest:
    n, m = len(current), len(reference)
    pooled = np.vstack((current, reference)).astype(np.float32)
    pooled -= pooled.mean(axis=0)
    gram = pooled @ pooled.T
    norms = np.diag(gram).copy()
    squared = np.maximum(norms[:, None] + norms[None, :] - 2 * gram, 0)
    # median heuristic on a sample of pairs: the median of 20,000 distances is as good a scale
    # as the median of all N^2/2, at a fraction of the cost
    total = len(pooled)
    first = rng.integers(0, total, _BANDWIDTH_PAIRS)
    second = (first + rng.integers(1, total, _BANDWIDTH_PAIRS)) % total  # never a row with itself
    pairs = squared[first, second]
    scale = float(np.median(pairs)) or float(pairs.mean()) or 1.0
    kernel = np.exp(-squared / np.float32(scale))
    observed_weights = _observed_weights(n, m)
    observed = float(observed_weights @ kernel @ observed_weights)
    weights = _label_weights(rng, permutations, n, m)
    permuted = np.einsum("ij,ij->i", weights @ kernel, weights, dtype=np.float64)
    return MmdTest(
        statistic=observed,
        p_value=_permutation_p_value(observed, permuted),
        bandwidth=float(np.sqrt(scale)),
    )


def shift_evidence(
    current: FloatArray,
    current_labels: list[object],
    reference: FloatArray,
    reference_mean: npt.NDArray[np.float64],
    direction: npt.NDArray[np.float64],
    examples: int,
) -> dict[str, object]:
    """What moved and which examples moved most: projections on the shift direction.

    Projections are in reference standard deviations along the direction, from the reference
    mean; ``fraction_beyond_reference_p95`` is the share of the current window past the
    reference's 95th percentile on that axis (0.05 without drift).
    """
    reference_projection = (reference - reference_mean) @ direction
    current_projection = (current - reference_mean) @ direction
    spread = float(reference_projection.std()) or 1.0
    reference_p95 = float(np.quantile(reference_projection, 0.95))
    order = np.argsort(-current_projection)[:examples]
    top_dimensions = np.argsort(-np.abs(direction))[:10]
    most_shifted = []
    for index in order:
        label = current_labels[int(index)]
        entry: dict[str, object] = {
            "projection": round(float(current_projection[index]) / spread, 3)
        }
        if isinstance(label, dict):
            entry.update(label)
        most_shifted.append(entry)
    return {
        "mean_projection": round(float(current_projection.mean()) / spread, 3),
        "fraction_beyond_reference_p95": round(
            float(np.mean(current_projection > reference_p95)), 4
        ),
        "direction_top_dimensions": [
            [int(index), round(float(direction[index]), 4)] for index in top_dimensions
        ],
        "direction": [round(float(value), 4) for value in direction],
        "most_shifted": most_shifted,
    }
