"""Alert rules: the YAML file format, its validation, and where each problem is in the file.

A rules file is a mapping with one key, ``rules``, holding a list of rules. Every rule has an
``id`` (unique in the file), a ``kind`` that selects its other fields, a ``severity``, the
dimensions it groups by and optional equality filters (``where``). :func:`load_rules` reports
every problem at once, each as ``file:line: message``; the YAML is composed (not just loaded) so
that pydantic's error locations can be mapped back to the lines of the nodes they name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmtap.errors import LlmtapError
from llmtap.schemas.aggregates import MODEL_DIMENSIONS, USER_DIMENSIONS

Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

# What each family of rules can group and filter by.
AGGREGATE_DIMENSIONS = (*MODEL_DIMENSIONS, "user_id")
RISK_DIMENSIONS = ("tenant", "service_name", "prompt_template_version", "request_model")
DRIFT_DIMENSIONS = (
    "tenant",
    "service_name",
    "request_model",
    "prompt_template_version",
    "feature",
    "detector",
)


class RulesFileError(LlmtapError):
    """A rules file is unreadable or invalid; the message lists every problem with its line."""

    exit_code = 2


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    severity: Severity = "warning"
    description: str = ""
    group_by: list[str] = Field(default_factory=list)
    where: dict[str, str] = Field(default_factory=dict)
    cooldown_seconds: int = Field(default=300, ge=0)

    # The dimensions this kind can name in group_by and where.
    dimensions: ClassVar[tuple[str, ...]] = AGGREGATE_DIMENSIONS

    @field_validator("group_by")
    @classmethod
    def _check_group_by(cls, value: list[str]) -> list[str]:
        allowed = cls.dimensions
        unknown = [name for name in value if name not in allowed]
        if unknown:
            raise ValueError(
                f"unknown dimension(s) {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(allowed)}"
            )
        if len(set(value)) != len(value):
            raise ValueError("names a dimension twice")
        return value

    @field_validator("where")
    @classmethod
    def _check_where(cls, value: dict[str, str]) -> dict[str, str]:
        allowed = cls.dimensions
        unknown = [name for name in value if name not in allowed]
        if unknown:
            raise ValueError(
                f"unknown dimension(s) {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(allowed)}"
            )
        return value

    @property
    def window_span_seconds(self) -> int:
        """The longest stretch of history this rule reads."""
        return int(getattr(self, "window_seconds", 0))


class _AggregateRule(_Rule):
    """Rules over the windowed aggregates."""

    @model_validator(mode="after")
    def _check_dimension_set(self) -> _AggregateRule:
        names = set(self.group_by) | set(self.where)
        if "user_id" in names:
            other = sorted(names - set(USER_DIMENSIONS))
            if other:
                raise ValueError(
                    "per-user rules read the 'user' aggregates, grouped by tenant and user_id "
                    f"only; remove {', '.join(other)} from group_by/where"
                )
        return self

    @property
    def dimension_set(self) -> str:
        return "user" if "user_id" in self.group_by or "user_id" in self.where else "model"


class CostBudgetRule(_AggregateRule):
    """Spend over the rolling window reaches ``threshold`` (in the aggregates' currency)."""

    kind: Literal["cost_budget"]
    window_seconds: int = Field(default=3600, gt=0)
    threshold: float = Field(gt=0)


class BurnWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    long_seconds: int = Field(gt=0)
    short_seconds: int = Field(gt=0)
    factor: float = Field(gt=0)

    @model_validator(mode="after")
    def _short_is_shorter(self) -> BurnWindow:
        if self.short_seconds >= self.long_seconds:
            raise ValueError("short_seconds must be less than long_seconds")
        return self


class BurnRateRule(_AggregateRule):
    """Spend rate against a budget, over pairs of windows (Google SRE multi-window burn rate).

    Burn rate over a window = spend in the window / (budget * window / budget period). A pair
    holds when both its long and its short window burn at ``factor`` or more; the rule fires when
    any pair holds.
    """

    kind: Literal["burn_rate"]
    budget: float = Field(gt=0)
    budget_period_seconds: int = Field(gt=0)
    windows: list[BurnWindow] = Field(min_length=1)

    @property
    def window_span_seconds(self) -> int:
        return max(window.long_seconds for window in self.windows)


class ErrorRateRule(_AggregateRule):
    """errors / requests over the window reaches ``threshold`` (a ratio, 0 to 1)."""

    kind: Literal["error_rate"]
    window_seconds: int = Field(default=3600, gt=0)
    threshold: float = Field(gt=0, le=1)
    min_requests: int = Field(default=1, ge=1)


class LatencyP95Rule(_AggregateRule):
    """The 95th percentile latency over the window (merged sketches) reaches ``threshold`` ms."""

    kind: Literal["latency_p95"]
    window_seconds: int = Field(default=3600, gt=0)
    threshold: float = Field(gt=0)
    min_requests: int = Field(default=1, ge=1)


class UnpricedSpendRule(_AggregateRule):
    """Requests to models without a price over the window reach ``threshold`` (a count)."""

    kind: Literal["unpriced_spend"]
    window_seconds: int = Field(default=3600, gt=0)
    threshold: float = Field(default=1, gt=0)


class HighRiskRateRule(_Rule):
    """The weighted share of responses with risk_score >= ``risk_score_threshold`` reaches
    ``threshold`` (a ratio), once ``min_requests`` responses were scored in the window."""

    kind: Literal["high_risk_rate"]
    dimensions: ClassVar[tuple[str, ...]] = RISK_DIMENSIONS
    window_seconds: int = Field(default=3600, gt=0)
    threshold: float = Field(gt=0, le=1)
    risk_score_threshold: float = Field(default=0.5, ge=0, le=1)
    min_requests: int = Field(default=20, ge=1)


class DriftRule(_Rule):
    """A drift test whose latest result for the group says drifted, ending within the window."""

    kind: Literal["drift"]
    dimensions: ClassVar[tuple[str, ...]] = DRIFT_DIMENSIONS
    window_seconds: int = Field(default=86400, gt=0)


Rule = Annotated[
    CostBudgetRule
    | BurnRateRule
    | ErrorRateRule
    | LatencyP95Rule
    | UnpricedSpendRule
    | HighRiskRateRule
    | DriftRule,
    Field(discriminator="kind"),
]
AggregateRule = CostBudgetRule | BurnRateRule | ErrorRateRule | LatencyP95Rule | UnpricedSpendRule
RULE_KINDS = (
    "cost_budget",
    "burn_rate",
    "error_rate",
    "latency_p95",
    "unpriced_spend",
    "high_risk_rate",
    "drift",
)


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = Field(default_factory=list)

    @property
    def longest_window_seconds(self) -> int:
        return max((rule.window_span_seconds for rule in self.rules), default=0)

    def by_id(self) -> dict[str, Rule]:
        return {rule.id: rule for rule in self.rules}


def load_rules(path: Path | str) -> RuleSet:
    """Read and validate a rules file; raises one :class:`RulesFileError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RulesFileError(f"{path}: cannot be read ({error})") from None
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Validate rules from YAML text; ``source`` names the file in error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(error, "problem", None) or str(error)
        raise RulesFileError(_format(source, [(line, f"invalid YAML: {reason}")])) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        raise RulesFileError(
            _format(source, [(line, "the top level must be a mapping: rules: [...]")])
        )
    problems: list[tuple[int, str]] = []
    rule_set: RuleSet | None = None
    try:
        rule_set = RuleSet.model_validate(document)
    except ValidationError as error:
        for item in error.errors(include_url=False, include_input=False):
            problems.append(_describe(root, item["loc"], item["type"], item["msg"], document))
    problems.extend(_duplicate_ids(root, document))
    if problems:
        raise RulesFileError(_format(source, sorted(set(problems))))
    assert rule_set is not None
    return rule_set


def _duplicate_ids(root: yaml.Node | None, document: dict[str, Any]) -> list[tuple[int, str]]:
    rules = document.get("rules")
    if not isinstance(rules, list):
        return []
    first_seen: dict[str, int] = {}
    problems = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict) or not isinstance(rule.get("id"), str):
            continue
        line, _ = _locate(root, ("rules", index, "id"))
        rule_id = rule["id"]
        if rule_id in first_seen:
            problems.append(
                (
                    line,
                    f"rules[{index}].id: duplicate id {rule_id!r} (first on line "
                    f"{first_seen[rule_id]})",
                )
            )
        else:
            first_seen[rule_id] = line
    return problems


def _describe(
    root: yaml.Node | None,
    location: Sequence[int | str],
    error_type: str,
    message: str,
    document: dict[str, Any],
) -> tuple[int, str]:
    line, path = _locate(root, location)
    message = message.removeprefix("Value error, ")
    if error_type == "extra_forbidden":
        message = "unknown field"
        if len(path) >= 3 and path[0] == "rules":
            kind = _rule_kind(document, path[1])
            if kind:
                message = f"unknown field for kind {kind}"
    elif error_type == "missing":
        message = "required field is missing"
        if len(path) >= 3 and path[0] == "rules":
            kind = _rule_kind(document, path[1])
            if kind:
                message = f"required field is missing (kind {kind})"
    elif error_type in {"union_tag_invalid", "union_tag_not_found"}:
        line, path = _locate(root, (*location, "kind"))
        message = f"kind must be one of {', '.join(RULE_KINDS)}"
    return line, f"{_dotted(path)}: {message}"


def _rule_kind(document: dict[str, Any], index: int | str) -> str | None:
    rules = document.get("rules")
    if isinstance(rules, list) and isinstance(index, int) and index < len(rules):
        rule = rules[index]
        if isinstance(rule, dict) and isinstance(rule.get("kind"), str):
            return str(rule["kind"])
    return None


def _locate(root: yaml.Node | None, location: Sequence[int | str]) -> tuple[int, list[int | str]]:
    """The line of the deepest YAML node on ``location``, and the location without the union tag.

    pydantic puts the discriminator's value in the location of a tagged union member
    (``rules.0.cost_budget.threshold``); it names no node and is dropped. A missing field is
    reported on its parent's line.
    """
    node = root
    line = root.start_mark.line + 1 if root is not None else 1
    path: list[int | str] = []
    for part in location:
        child = _child(node, part)
        if child is None:
            if isinstance(part, str) and part in RULE_KINDS and path and isinstance(path[-1], int):
                continue  # the union tag
            path.append(part)
            node = None
            continue
        key_node, node = child
        path.append(part)
        line = (key_node or node).start_mark.line + 1
    return line, path


def _child(node: yaml.Node | None, part: int | str) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key, value
    elif (
        isinstance(node, yaml.SequenceNode)
        and isinstance(part, int)
        and 0 <= part < len(node.value)
    ):
        return None, node.value[part]
    return None


def _dotted(path: Sequence[int | str]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "file"


def _format(source: str, problems: list[tuple[int, str]]) -> str:
    count = len(problems)
    header = f"Invalid alert rules in {source} ({count} problem{'s' if count != 1 else ''}):"
    return "\n".join([header, *(f"  {source}:{line}: {message}" for line, message in problems)])
