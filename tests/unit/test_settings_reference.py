"""docs/configuration.md is the settings model, rendered; it must not drift from the code."""

from __future__ import annotations

from pathlib import Path

from llmtap.settings import LocalKafkaSettings, Settings
from llmtap.settings_reference import render_reference

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_reference_matches_the_model() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render_reference(), (
        "docs/configuration.md is stale: run `make docs` and review the diff"
    )


def test_reference_lists_every_setting_with_its_environment_variable() -> None:
    text = render_reference()
    for name in Settings.model_fields:
        assert f"`LLMTAP_{name.upper()}`" in text or f"`LLMTAP_{name.upper()}__" in text
    for name in LocalKafkaSettings.model_fields:
        assert f"`LLMTAP_LOCAL_KAFKA__{name.upper()}`" in text
