"""Normalizer benchmark: raw OTLP messages to priced, encoded LLM spans, in batches, one core.

Why: the normalizer runs on every span; the target is 20,000 spans/s per core. The figure is
CPU time per span (process time, so other load on the shared machine matters less), as a median
over repeats and as a ratio to a baseline measured in the same run: decoding the same protobuf
messages and nothing else (the floor any normalizer pays).

    .venv/bin/python bench/normalize.py [--requests 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector import build_request

from llmtap.processors.normalize.normalizer import Normalizer
from llmtap.processors.pricing import PriceTable
from llmtap.schemas.llm_span import encode_span

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="100-span requests per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = random.Random(11)
    bodies = [build_request(100, 10, rng) for _ in range(args.requests)]
    spans = args.requests * 100
    normalizer = Normalizer(PriceTable.load().price)
    baseline_runs, normalize_runs = [], []
    for repeat in range(args.repeats):
        started = time.process_time()
        for body in bodies:
            ExportTraceServiceRequest.FromString(body)
        baseline_runs.append((time.process_time() - started) / spans * 1e6)

        started = time.process_time()
        for body in bodies:
            for span in normalizer.normalize_request(
                ExportTraceServiceRequest.FromString(body), tenant="t"
            ):
                encode_span(span)
        normalize_runs.append((time.process_time() - started) / spans * 1e6)
        print(
            f"repeat {repeat + 1}/{args.repeats}: decode {baseline_runs[-1]:.2f} µs/span, "
            f"normalize+price+encode {normalize_runs[-1]:.2f} µs/span"
        )

    baseline = statistics.median(baseline_runs)
    measured = statistics.median(normalize_runs)
    print()
    print(f"{'stage':<28}{'CPU-µs/span':>12}{'spans/CPU-s':>14}{'x decode':>10}")
    print(
        f"{'protobuf decode (baseline)':<28}{baseline:>12.2f}{1e6 / baseline:>14,.0f}{1.0:>10.2f}"
    )
    ratio = measured / baseline
    print(f"{'normalize+price+encode':<28}{measured:>12.2f}{1e6 / measured:>14,.0f}{ratio:>10.2f}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = RESULTS_DIR / f"normalize-{time.strftime('%Y%m%dT%H%M%S')}.json"
    output.write_text(
        json.dumps(
            {
                "args": vars(args),
                "baseline_runs": baseline_runs,
                "normalize_runs": normalize_runs,
                "median_cpu_microseconds_per_span": measured,
                "ratio_to_decode": measured / baseline,
            },
            indent=2,
        )
    )
    print(f"\nwritten {output}")


if __name__ == "__main__":
    main()
