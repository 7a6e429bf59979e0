"""Drift benchmark: calibration (false positives), power at known shifts, and speed.

Why: the drift stage must alert on real shifts and stay quiet otherwise. Acceptance (issue #8):
detection power >= 0.9 at the documented effect size and a false-positive rate <= 0.05 per key
per day with no drift, at the default windows; plus the stage's cost per event and the p95 time
to evaluate one 384-d window. Synthetic streams with known shift sizes, the detector's own test
functions and its consecutive-window rule; the defaults of ``DriftConfig`` throughout.

Streams. Embeddings: 384-d Gaussian with a decaying spectrum (eigenvalue k proportional to 1/k,
effective rank ~26, like sentence embeddings), randomly rotated. Effect size
``delta = |mean shift| / sqrt(total variance)``. Scalars: log-normal values (sigma 0.7 on the
log scale); effect size = mean shift of the log in reference standard deviations (Cohen's d).
Categories: ok / error / refusal at 95 / 3 / 2 %, shifted to a higher error share.

"A day" is ``--windows-per-day`` windows (default 288: the 5-minute window) of one key, with a
fresh reference; a false positive is a day with at least one ``drifted`` result in any feature
(two embedding features, four continuous features with PSI and Wasserstein, two categorical).

    .venv/bin/python bench/drift.py [--days 40] [--trials 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from llmtap.processors.drift.config import DriftConfig
from llmtap.processors.drift.detector import DriftDetector, SpanKeyFields
from llmtap.processors.drift.embedding_tests import centroid_test, mmd_test
from llmtap.processors.drift.join import SpanJoin
from llmtap.processors.drift.scalar_tests import chi_square, psi, wasserstein
from llmtap.schemas.drift import DriftResult
from llmtap.schemas.llm_span import Cost, LlmSpan, TokenUsage, decode_span, encode_span
from llmtap.schemas.scores import SpanEmbedding, decode_embedding, encode_embedding

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DIMENSION = 384
CATEGORY_SHARES = np.array([0.95, 0.03, 0.02])


class EmbeddingStream:
    def __init__(self, rng: np.random.Generator, dimension: int = DIMENSION) -> None:
        scales = 1 / np.sqrt(np.arange(1, dimension + 1))
        rotation, _ = np.linalg.qr(rng.standard_normal((dimension, dimension)))
        self.basis = (rotation * scales).astype(np.float32)  # rows: x = z @ basis.T
        self.total_variance = float((scales**2).sum())
        direction = rng.standard_normal(dimension)
        self.direction = direction / np.linalg.norm(direction)

    def sample(self, rng: np.random.Generator, count: int, delta: float = 0.0) -> np.ndarray:
        rows = rng.standard_normal((count, self.basis.shape[0]), dtype=np.float32) @ self.basis.T
        if delta:
            rows += (delta * np.sqrt(self.total_variance) * self.direction).astype(np.float32)
        return rows


def embedding_passes(
    config: DriftConfig, current: np.ndarray, reference: np.ndarray, rng: np.random.Generator
) -> bool:
    alpha = config.p_value_threshold
    if centroid_test(current, reference, config.permutations, rng, alpha).p_value >= alpha:
        return False
    return bool(mmd_test(current, reference, config.permutations, rng).p_value < alpha)


def continuous_passes(
    config: DriftConfig, current: np.ndarray, reference: np.ndarray, rng: np.random.Generator
) -> tuple[bool, bool]:
    alpha = config.p_value_threshold
    binned = psi(reference, current, config.psi_bins, config.psi_smoothing)
    # permutations only when the distance can pass (the decision needs both): same outcome
    moved = wasserstein(reference, current, 0, rng)
    if moved.distance >= config.wasserstein_threshold:
        moved = wasserstein(reference, current, config.permutations, rng)
    return (
        binned.psi >= config.psi_threshold and binned.p_value < alpha,
        moved.distance >= config.wasserstein_threshold and moved.p_value < alpha,
    )


def categorical_passes(
    config: DriftConfig, current: np.ndarray, reference: np.ndarray, rng: np.random.Generator
) -> bool:
    counts = [np.bincount(values, minlength=3) for values in (reference, current)]
    test = chi_square(
        counts[0], counts[1], config.categorical_permutations, rng, permute_below=0.05
    )
    return bool(test.p_value < config.categorical_p_value_threshold)


def alerted(passes: list[bool], consecutive: int) -> bool:
    streak = 0
    for passed in passes:
        streak = streak + 1 if passed else 0
        if streak >= consecutive:
            return True
    return False


def false_positive_days(
    config: DriftConfig, days: int, windows_per_day: int, seed: int
) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    stream = EmbeddingStream(rng)
    n, m = config.window_events, config.reservoir_size
    alerted_days = {"embedding": 0, "continuous": 0, "categorical": 0, "any": 0}
    window_passes = {"embedding": 0, "psi": 0, "wasserstein": 0, "categorical": 0}
    for _ in range(days):
        embedding_passes_by_feature = []
        for _feature in range(2):  # prompt and completion embeddings
            reference = stream.sample(rng, m)
            passes = [
                embedding_passes(config, stream.sample(rng, n), reference, rng)
                for _ in range(windows_per_day)
            ]
            window_passes["embedding"] += sum(passes)
            embedding_passes_by_feature.append(alerted(passes, config.consecutive_windows))
        continuous_alerts = []
        for _feature in range(4):  # input and output tokens, latency, cost
            reference = rng.normal(6.0, 0.7, m)
            results = [
                continuous_passes(config, rng.normal(6.0, 0.7, n), reference, rng)
                for _ in range(windows_per_day)
            ]
            psi_passes = [result[0] for result in results]
            wasserstein_passes = [result[1] for result in results]
            window_passes["psi"] += sum(psi_passes)
            window_passes["wasserstein"] += sum(wasserstein_passes)
            continuous_alerts.append(
                alerted(psi_passes, config.consecutive_windows)
                or alerted(wasserstein_passes, config.consecutive_windows)
            )
        categorical_alerts = []
        for _feature in range(2):  # finish reason, outcome
            # categorical references count every reference event (one-hot running sums)
            reference = rng.choice(3, config.reference_events, p=CATEGORY_SHARES)
            passes = [
                categorical_passes(config, rng.choice(3, n, p=CATEGORY_SHARES), reference, rng)
                for _ in range(windows_per_day)
            ]
            window_passes["categorical"] += sum(passes)
            categorical_alerts.append(alerted(passes, config.consecutive_windows))
        flags = {
            "embedding": any(embedding_passes_by_feature),
            "continuous": any(continuous_alerts),
            "categorical": any(categorical_alerts),
        }
        flags["any"] = any(flags.values())
        for name, flag in flags.items():
            alerted_days[name] += int(flag)
    return {
        "days": days,
        "windows_per_day": windows_per_day,
        "days_with_alert": alerted_days,
        "false_positive_rate_per_key_day": alerted_days["any"] / days,
        "per_window_pass_rate": {
            "embedding": window_passes["embedding"] / (2 * days * windows_per_day),
            "psi": window_passes["psi"] / (4 * days * windows_per_day),
            "wasserstein": window_passes["wasserstein"] / (4 * days * windows_per_day),
            "categorical": window_passes["categorical"] / (2 * days * windows_per_day),
        },
    }


def embedding_power(
    config: DriftConfig, delta: float, window_events: int, trials: int, seed: int
) -> dict[str, float]:
    """Share of shifts alerted by the consecutive_windows-th window after the shift."""
    rng = np.random.default_rng(seed)
    stream = EmbeddingStream(rng)
    windows = config.consecutive_windows
    detected = 0
    window_passes = 0
    for _ in range(trials):
        reference = stream.sample(rng, config.reservoir_size)
        passes = [
            embedding_passes(config, stream.sample(rng, window_events, delta), reference, rng)
            for _ in range(windows)
        ]
        window_passes += sum(passes)
        detected += int(alerted(passes, windows))
    return {"power": detected / trials, "per_window": window_passes / (trials * windows)}


def scalar_power(config: DriftConfig, effect: float, trials: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    n, m = config.window_events, config.reservoir_size
    windows = config.consecutive_windows
    detected = {"psi": 0, "wasserstein": 0, "any": 0}
    for _ in range(trials):
        reference = rng.normal(6.0, 0.7, m)
        results = [
            continuous_passes(config, rng.normal(6.0 + effect * 0.7, 0.7, n), reference, rng)
            for _ in range(windows)
        ]
        psi_alert = alerted([result[0] for result in results], windows)
        wasserstein_alert = alerted([result[1] for result in results], windows)
        detected["psi"] += int(psi_alert)
        detected["wasserstein"] += int(wasserstein_alert)
        detected["any"] += int(psi_alert or wasserstein_alert)
    return {name: count / trials for name, count in detected.items()}


def categorical_power(config: DriftConfig, error_share: float, trials: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    shifted = np.array([0.98 - error_share, error_share, 0.02])
    windows = config.consecutive_windows
    detected = 0
    for _ in range(trials):
        reference = rng.choice(3, config.reference_events, p=CATEGORY_SHARES)
        passes = [
            categorical_passes(
                config, rng.choice(3, config.window_events, p=shifted), reference, rng
            )
            for _ in range(windows)
        ]
        detected += int(alerted(passes, windows))
    return detected / trials


class TimedDetector(DriftDetector):
    """The detector, timing each window test (milliseconds) into ``timings``."""

    def __init__(self, config: DriftConfig, timings: list[float]) -> None:
        super().__init__(config)
        self.timings = timings

    def _evaluate(self, *args: Any) -> list[DriftResult]:
        started = time.perf_counter()
        results = super()._evaluate(*args)
        self.timings.append((time.perf_counter() - started) * 1000)
        return results


def window_evaluation_ms(config: DriftConfig, samples: int, seed: int) -> dict[str, float]:
    """Time to test one 384-d embedding window: null windows (centroid only) and drifted
    windows (centroid + MMD confirmation + evidence), through the detector's own code."""
    rng = np.random.default_rng(seed)
    stream = EmbeddingStream(rng)
    timings: dict[str, list[float]] = {"no_drift": [], "drift": []}
    for case, delta in (("no_drift", 0.0), ("drift", 0.3)):
        detector = TimedDetector(config, timings[case])
        fields = SpanKeyFields(tenant="t", service_name="s", request_model="m")
        events = config.reference_events + samples * config.window_events
        vectors = np.vstack(
            (
                stream.sample(rng, config.reference_events),
                stream.sample(rng, events - config.reference_events, delta),
            )
        )
        for index, vector in enumerate(vectors):
            detector.observe_embedding(_embedding(index, vector.tolist()), fields)
    return {
        f"{case}_{name}": value
        for case, values in timings.items()
        for name, value in (
            ("p50_ms", statistics.median(values)),
            ("p95_ms", float(np.quantile(values, 0.95))),
        )
    }


def _embedding(index: int, vector: list[float], kind: str = "prompt") -> SpanEmbedding:
    return SpanEmbedding(
        timestamp=1_700_000_000_000_000_000 + index * 1_000_000_000,
        tenant="acme",
        trace_id=f"{index:032x}",
        span_id=f"{index:016x}",
        kind=kind,
        model="all-MiniLM-L6-v2",
        content_hash=f"{index:016x}",
        vector=vector,
    )


def stage_messages(count: int, seed: int) -> list[tuple[str, bytes]]:
    """What the stage reads per LLM call: the span, then its prompt and completion vectors."""
    rng = np.random.default_rng(seed)
    stream = EmbeddingStream(rng)
    vectors = stream.sample(rng, 2 * count)
    messages: list[tuple[str, bytes]] = []
    for index in range(count):
        start = 1_700_000_000_000_000_000 + index * 50_000_000
        span = LlmSpan(
            trace_id=f"{index:032x}",
            span_id=f"{index:016x}",
            span_type="llm",
            tenant="acme",
            service_name="support-bot",
            operation="chat",
            provider="openai",
            request_model="gpt-4o-mini",
            response_model="gpt-4o-mini-2024-07-18",
            prompt_template_version="v3",
            start_time_unix_nano=start,
            end_time_unix_nano=start + int(rng.lognormal(6.5, 0.5) * 1e6),
            status="ok",
            finish_reasons=["stop"],
            usage=TokenUsage(input=int(rng.lognormal(6, 0.7)), output=int(rng.lognormal(5, 0.7))),
            cost=Cost(priced=True, price_version="bench", total=f"{rng.lognormal(-7, 0.7):.10f}"),
        )
        messages.append(("span", encode_span(span)))
        for offset, kind in enumerate(("prompt", "completion")):
            embedding = _embedding(index, vectors[2 * index + offset].tolist(), kind)
            embedding.timestamp = start
            messages.append(("embedding", encode_embedding(embedding)))
    return messages


def stage_cpu(config: DriftConfig, messages: list[tuple[str, bytes]]) -> dict[str, float]:
    """The stage's per-message work without Kafka: decode, join, detector (windows included)."""
    detector = DriftDetector(config)
    join = SpanJoin(config.span_index_entries, config.pending_embeddings)
    started_cpu = time.process_time()
    started = time.perf_counter()
    results = 0
    for topic, value in messages:
        if topic == "span":
            span = decode_span(value)
            fields, waiting = join.add_span(span)
            results += len(detector.observe_span(span))
            for embedding in waiting:
                results += len(detector.observe_embedding(embedding, fields))
        else:
            embedding = decode_embedding(value)
            key_fields = join.add_embedding(embedding)
            if key_fields is not None:
                results += len(detector.observe_embedding(embedding, key_fields))
    cpu = time.process_time() - started_cpu
    wall = time.perf_counter() - started
    spans = len(messages) // 3
    # the baseline, same run: decoding the same messages and nothing else (the floor)
    started_cpu = time.process_time()
    for topic, value in messages:
        if topic == "span":
            decode_span(value)
        else:
            decode_embedding(value)
    decode_cpu = time.process_time() - started_cpu
    return {
        "decode_only_cpu_us_per_llm_call": decode_cpu / spans * 1e6,
        "ratio_to_decode_only": cpu / decode_cpu,
        "cpu_us_per_message": cpu / len(messages) * 1e6,
        "cpu_us_per_llm_call": cpu / spans * 1e6,
        "llm_calls_per_second_one_core": spans / cpu,
        "messages_per_second_wall": len(messages) / wall,
        "results": results,
        "windows": detector.counters.windows_evaluated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=40, help="simulated no-drift key-days")
    parser.add_argument("--windows-per-day", type=int, default=288)
    parser.add_argument("--trials", type=int, default=100, help="shifts per power cell")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the speed runs")
    parser.add_argument("--llm-calls", type=int, default=6000, help="LLM calls per speed run")
    parser.add_argument(
        "--parts",
        default="power,false_positives,speed",
        help="comma-separated: power, false_positives, speed",
    )
    parser.add_argument("--seed", type=int, default=11, help="seed of the no-drift days")
    args = parser.parse_args()
    # One BLAS thread, as the detector runs its windows: the figures are per core.
    threadpool_limits(limits=1, user_api="blas")
    config = DriftConfig()
    report: dict[str, object] = {"config": config.model_dump(mode="json")}

    parts = set(args.parts.split(","))
    if "power" in parts:
        windows = config.consecutive_windows
        print(f"power: embedding windows, share alerted by shifted window {windows}")
        print(f"{'delta':>6} " + " ".join(f"{'n=' + str(n):>14}" for n in (100, 200, 500)))
        embedding_table = {}
        for delta in (0.05, 0.075, 0.1, 0.125, 0.15):
            row = {}
            for window in (100, 200, 500):
                sized = config.model_copy(update={"window_events": window})
                row[window] = embedding_power(sized, delta, window, args.trials, seed=window)
            embedding_table[str(delta)] = row
            cells = " ".join(
                f"{row[n]['power']:>6.2f} ({row[n]['per_window']:.2f})" for n in (100, 200, 500)
            )
            print(f"{delta:>6} {cells}")
        report["embedding_power"] = embedding_table

        print(f"power: continuous features (log scale), n=200, alerted by window {windows}")
        scalar_table = {}
        for effect in (0.25, 0.35, 0.5, 0.75):
            scalar_table[str(effect)] = scalar_power(config, effect, args.trials, seed=7)
            print(f"  d={effect:<5} {scalar_table[str(effect)]}")
        report["scalar_power"] = scalar_table

        print(f"power: outcome categories, error share 3% -> x, n=200, by window {windows}")
        categorical_table = {}
        for share in (0.06, 0.08, 0.10, 0.12, 0.15):
            categorical_table[str(share)] = categorical_power(config, share, args.trials, seed=9)
            print(f"  error share {share:.2f}: {categorical_table[str(share)]:.2f}")
        report["categorical_power"] = categorical_table

    if "false_positives" in parts:
        started = time.perf_counter()
        fpr = false_positive_days(config, args.days, args.windows_per_day, seed=args.seed)
        fpr["seconds"] = time.perf_counter() - started
        report["false_positives"] = fpr
        print(f"no drift: {json.dumps(fpr)}")

    if "speed" in parts:
        report.update(speed_report(config, args.llm_calls, args.repeats))

    RESULTS_DIR.mkdir(exist_ok=True)
    output = RESULTS_DIR / f"drift-{time.strftime('%Y%m%dT%H%M%S')}.json"
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written {output}", file=sys.stderr)


def speed_report(config: DriftConfig, llm_calls: int, repeats: int) -> dict[str, object]:
    messages = stage_messages(llm_calls, seed=3)
    runs = [stage_cpu(config, messages) for _ in range(repeats)]
    speed = {
        name: statistics.median(run[name] for run in runs)
        for name in runs[0]
        if isinstance(runs[0][name], float)
    }
    speed["min_cpu_us_per_llm_call"] = min(run["cpu_us_per_llm_call"] for run in runs)
    speed["max_cpu_us_per_llm_call"] = max(run["cpu_us_per_llm_call"] for run in runs)
    speed["windows_per_run"] = runs[0]["windows"]
    print(f"stage work (decode + join + detector), median of {repeats}: {json.dumps(speed)}")
    evaluation = window_evaluation_ms(config, samples=60, seed=5)
    print(f"one 384-d embedding window (n=200 vs reservoir 500): {json.dumps(evaluation)}")
    return {"stage_cpu": speed, "window_evaluation": evaluation}


if __name__ == "__main__":
    main()
