"""Rules files: every kind parses, every problem is reported at once with its line."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from llmtap.processors.alerts.rules import (
    RULE_KINDS,
    BurnRateRule,
    CostBudgetRule,
    RulesFileError,
    load_rules,
    parse_rules,
)


def problems_of(text: str) -> list[str]:
    with pytest.raises(RulesFileError) as caught:
        parse_rules(text, "rules.yaml")
    return str(caught.value).splitlines()[1:]


def test_the_shipped_example_has_every_kind() -> None:
    example = resources.files("llmtap.processors.alerts") / "example_rules.yaml"
    with resources.as_file(example) as path:
        rules = load_rules(path)
    assert {rule.kind for rule in rules.rules} == set(RULE_KINDS)
    user_rule = rules.by_id()["user-daily-budget"]
    assert isinstance(user_rule, CostBudgetRule)
    assert user_rule.dimension_set == "user"
    burn = rules.by_id()["service-budget-burn"]
    assert isinstance(burn, BurnRateRule)
    assert burn.window_span_seconds == 21600
    assert rules.longest_window_seconds == 86400


def test_every_problem_is_reported_with_its_line() -> None:
    text = """\
rules:
  - id: budget
    kind: cost_budget
    threshold: 5
    group_by: [tenant, region]
    colour: red
  - id: budget
    kind: budgett
  - id: burn
    kind: burn_rate
    budget: 10
    windows:
      - {long_seconds: 60, short_seconds: 300, factor: 2}
  - id: errors
    kind: error_rate
    threshold: 2
"""
    assert problems_of(text) == [
        "  rules.yaml:5: rules[0].group_by: unknown dimension(s) 'region'; choose from tenant, "
        "service_name, environment, provider, request_model, operation, "
        "prompt_template_version, user_id",
        "  rules.yaml:6: rules[0].colour: unknown field for kind cost_budget",
        "  rules.yaml:7: rules[1].id: duplicate id 'budget' (first on line 2)",
        "  rules.yaml:8: rules[1].kind: kind must be one of cost_budget, burn_rate, error_rate, "
        "latency_p95, unpriced_spend, high_risk_rate, drift",
        "  rules.yaml:9: rules[2].budget_period_seconds: required field is missing "
        "(kind burn_rate)",
        "  rules.yaml:13: rules[2].windows[0]: short_seconds must be less than long_seconds",
        "  rules.yaml:16: rules[3].threshold: Input should be less than or equal to 1",
    ]


def test_kind_specific_fields_are_required_and_foreign_ones_refused() -> None:
    text = """\
rules:
  - id: slow
    kind: latency_p95
    budget: 3
  - id: drifted
    kind: drift
    threshold: 0.5
    group_by: [feature, user_id]
"""
    problems = problems_of(text)
    assert "  rules.yaml:2: rules[0].threshold: required field is missing (kind latency_p95)" in (
        problems
    )
    assert "  rules.yaml:4: rules[0].budget: unknown field for kind latency_p95" in problems
    assert "  rules.yaml:7: rules[1].threshold: unknown field for kind drift" in problems
    assert any(
        p.startswith("  rules.yaml:8: rules[1].group_by: unknown dimension(s) 'user_id'")
        for p in problems
    )


def test_user_rules_only_group_by_tenant_and_user() -> None:
    problems = problems_of(
        "rules:\n"
        "  - id: u\n"
        "    kind: cost_budget\n"
        "    threshold: 1\n"
        "    group_by: [user_id, service_name]\n"
    )
    assert len(problems) == 1
    assert problems[0].startswith("  rules.yaml:2: rules[0]: per-user rules read the 'user'")


def test_yaml_syntax_and_shape_errors_name_the_line() -> None:
    assert problems_of("rules:\n  - id: a\n   kind: [\n")[0].startswith(
        "  rules.yaml:3: invalid YAML"
    )
    assert problems_of("- 1\n- 2\n") == [
        "  rules.yaml:1: the top level must be a mapping: rules: [...]"
    ]
    assert problems_of("rulez: []\n") == ["  rules.yaml:1: rulez: unknown field"]


def test_an_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RulesFileError, match="cannot be read"):
        load_rules(tmp_path / "missing.yaml")


def test_an_empty_file_has_no_rules() -> None:
    assert parse_rules("").rules == []
