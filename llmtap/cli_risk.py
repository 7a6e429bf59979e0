"""``llmtap risk``: score responses from a file, refit the risk model on labeled data.

Kept out of cli.py so the heavy imports (torch, sentence-transformers) load only when a risk
command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

import click

SCORE_BATCH = 64


def _settings_risk(obj: Any) -> Any:
    """The ``processor.risk`` settings, from the global CLI state."""
    return obj.settings.processor.risk


def _progressbar(length: int, label: str) -> Any:
    # Only worth drawing for long files; click draws nothing when stderr is not a terminal.
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)


@click.group()
def risk() -> None:
    """Hallucination-risk and prompt-injection scores of LLM responses."""


@risk.command()
@click.option(
    "--input",
    "input_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="JSON lines: answer, optional question, optional context (string or list).",
)
@click.option(
    "--output",
    "output_file",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="Where scored lines go (default stdout).",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Weights from `llmtap risk fit` (default processor.risk.weights_file, then shipped).",
)
@click.pass_obj
def score(obj: Any, input_file: Path, output_file: IO[str], weights: Path | None) -> None:
    """Add `risk` (a ranking: higher = less supported, not a probability) and its components.

    Each input line is written back with `risk` and `risk_components` (support per answer
    sentence, similarities, injection score and reasons).
    """
    from llmtap.processors.risk.fit import read_json_lines, risk_input
    from llmtap.processors.risk.scorer import RiskScorer

    config = _settings_risk(obj)
    if weights is not None:
        config = config.model_copy(update={"weights_file": weights})
    scorer = RiskScorer.from_config(config)
    click.echo(
        f"llmtap: risk model {scorer.model_version} ({scorer.encoder.backend.reason})", err=True
    )
    with input_file.open(encoding="utf-8") as counting:
        total = sum(1 for line in counting if line.strip())
    records: list[tuple[str, dict[str, Any]]] = []
    with _progressbar(total, "scoring") as bar:

        def flush() -> None:
            inputs = [risk_input(record, where) for where, record in records]
            for (_, record), result in zip(records, scorer.score_inputs(inputs), strict=True):
                components = result.components()
                record["risk"] = components.pop("risk")
                record["risk_components"] = components
                output_file.write(json.dumps(record, ensure_ascii=False) + "\n")
            bar.update(len(records))
            records.clear()

        for where, record in read_json_lines(input_file):
            records.append((where, record))
            if len(records) >= SCORE_BATCH:
                flush()
        if records:
            flush()
    output_file.flush()


@risk.command()
@click.option(
    "--input",
    "input_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="JSON lines: answer, question, context, and label (1 = supported, 0 = hallucinated).",
)
@click.option(
    "--output",
    "output_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Weights file to write; use it with --weights or processor.risk.weights_file.",
)
@click.option(
    "--l2",
    type=click.FloatRange(min=0),
    default=None,
    help="L2 regularization (default: chosen by 5-fold cross-validation on the input).",
)
@click.option("--version", "version", default=None, help="Name stored in the weights.")
@click.pass_obj
def fit(
    obj: Any, input_file: Path, output_file: Path, l2: float | None, version: str | None
) -> None:
    """Refit the risk model's weights on your own labeled responses."""
    from llmtap.processors.embeddings.encoder import load_encoder
    from llmtap.processors.risk.fit import feature_matrix, fit_weights, read_labeled

    config = _settings_risk(obj)
    inputs, risky = read_labeled(input_file)
    encoder = load_encoder(
        config.model_path,
        backend=config.backend,
        min_agreement=config.min_backend_agreement,
        batch_size=config.batch_size,
        max_tokens=config.max_tokens,
        cache_entries=config.cache_entries,
    )
    with _progressbar(len(inputs), "features") as bar:
        features = feature_matrix(encoder, inputs, bar.update)
    model = fit_weights(
        features, risky, version=version or input_file.stem, l2=l2, source=str(input_file)
    )
    model.save(output_file)
    click.echo(
        f"llmtap: fitted on {len(risky)} rows ({sum(risky)} hallucinated), training AUROC "
        f"{model.training['training_auroc']}; weights in {output_file}",
        err=True,
    )
