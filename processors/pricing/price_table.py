"""The price table: which list price applies to a span, and exactly what the span cost.

The table is data (``prices.yaml`` beside this module), checked when loaded, with a user overrides
file in the same format that fixes a wrong price or adds a custom model without a release. Every
priced span records the table's :attr:`PriceTable.version`, a label plus a hash of the prices
themselves, so re-pricing history can tell which spans a price change touches.

Token accounting follows the span contract (``llmtap.schemas.llm_span``): ``input`` counts every
input token, cache reads and writes included; ``output`` counts every output token, reasoning
included. A span is priced in five parts that add up exactly to its total:

- input: the uncached input (``input - cache_read - cache_write``) at the input rate;
- cache_read and cache_write at their rates (both default to the input rate);
- output: the non-reasoning output (``output - reasoning``) at the output rate;
- reasoning at the reasoning rate (defaults to the output rate).

When cache reads plus cache writes exceed ``input`` (or reasoning exceeds ``output``), the source
evidently reported them *excluded* from the total, as Anthropic's API does for cache tokens and
Gemini's for thinking tokens, and the normalizer passed that on: the total is then taken as the
sum. Either reading bills every token exactly once, which avoids the two classic mistakes of
pricing tables: charging cached tokens twice (once as input, once as cache) and leaving cache
writes or reasoning tokens unpriced. (When the excluded parts happen to be smaller than the total,
nothing can tell the two readings apart; that is the normalizer's job.)

Amounts are exact: :class:`decimal.Decimal` with a context that traps any rounding. Prices have at
most six decimal places per million tokens, so every amount has at most twelve decimal places; the
strings carry at least nine (``"0.000123450"``) and never an exponent. A span without a model, or
without usage, or whose model no entry prices, gets ``priced=False`` with the reason and no
amounts: never a silent zero.

Which entry applies: the span's provider (aliases normalized, see :func:`normalize_provider`), an
entry whose ``match`` regex fully matches the model name (case-insensitive), and whose effective
dates contain the span's time. When several match, the most specific wins: the higher
``priority``, then an exact model name over a pattern, then the pattern with more literal
characters outside groups, then a user override over a shipped entry, then the smaller id. With no
provider, or one the table has no prices for, the model is looked up under every provider and
priced only when exactly one provider prices it.
"""

from __future__ import annotations

import calendar
import decimal
import functools
import hashlib
import importlib.resources
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from llmtap.errors import LlmtapError
from llmtap.schemas.llm_span import Cost, TokenUsage

SHIPPED_PRICES_RESOURCE = "prices.yaml"
# Models repeat from span to span; remembering which entries match a (provider, model) pair keeps
# regex matching off the hot path. Bounded, because model names come from untrusted spans.
LOOKUP_CACHE_SIZE = 10_000
MAX_PRICE_DECIMAL_PLACES = 6  # per 1M tokens, so a per-token price has at most 12 places
AMOUNT_DECIMAL_PLACES = 12
AMOUNT_MIN_DECIMAL_PLACES = 9
# Larger counts are corrupt data (msgspec decodes int64 at most); refusing them keeps every amount
# within the exact context's precision.
MAX_TOKENS = 10**18
TOKENS_PER_PRICE_UNIT = 1_000_000
VERSION_HASH_LENGTH = 12

# Exact arithmetic: 60 digits hold any token count up to MAX_TOKENS times any price; a rounding
# would be a bug, so it raises instead of passing unnoticed.
_EXACT = decimal.Context(
    prec=60,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Rounded, decimal.Overflow],
)
_AMOUNT_QUANTUM = Decimal(1).scaleb(-AMOUNT_DECIMAL_PLACES)
_PER_TOKEN_SCALE = -6  # a per-million price times 10**-6 is the per-token price
_NEVER = 1 << 70  # an open effective_until, as nanoseconds: later than any int64 timestamp
_NANOSECONDS_PER_SECOND = 1_000_000_000

# Canonical provider names are the OpenTelemetry GenAI `gen_ai.provider.name` values; the aliases
# are what other conventions and older semantic-convention versions send (`gen_ai.system`,
# OpenInference `llm.provider` / `llm.system`, Traceloop, LiteLLM).
PROVIDER_ALIASES: Mapping[str, str] = {
    "openai": "openai",
    "azure.ai.openai": "azure.ai.openai",
    "az.ai.openai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure-openai": "azure.ai.openai",
    "azure.openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "aws.bedrock": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "aws_bedrock": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "aws": "aws.bedrock",
    "gcp.vertex_ai": "gcp.vertex_ai",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "vertex": "gcp.vertex_ai",
    "google_vertex_ai": "gcp.vertex_ai",
    "gcp.gemini": "gcp.gemini",
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "google_genai": "gcp.gemini",
    "google.genai": "gcp.gemini",
    "mistral_ai": "mistral_ai",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "mistral-ai": "mistral_ai",
}


class PriceTableError(LlmtapError):
    """The shipped price table or an overrides file is invalid; the message lists every problem."""

    exit_code = 2


def normalize_provider(name: str | None) -> str | None:
    """The canonical provider name for ``name`` (case and aliases folded); None for None or blank.

    Names that are no known alias are returned lower-cased, so a custom provider in an overrides
    file still matches spans that name it.
    """
    if name is None:
        return None
    folded = name.strip().lower()
    if not folded:
        return None
    return PROVIDER_ALIASES.get(folded, folded)


# --- The file format -------------------------------------------------------------------------


def _parse_price(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        # A ValueError, not a TypeError: pydantic reports only the former as a validation error.
        raise ValueError(
            "must be a quoted decimal string such as '2.50' (YAML numbers with a fraction are "
            "binary floats and may not be exact)"
        )
    try:
        price = Decimal(value.strip() if isinstance(value, str) else value)
    except decimal.InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not price.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    if price < 0:
        raise ValueError(f"{value!r} is negative")
    exponent = price.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > MAX_PRICE_DECIMAL_PLACES:
        raise ValueError(
            f"{value!r} has more than {MAX_PRICE_DECIMAL_PLACES} decimal places (USD per 1M tokens)"
        )
    return price


Price = Annotated[Decimal, BeforeValidator(_parse_price)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceTier(_Strict):
    """Prices for a whole request whose input tokens exceed ``above_input_tokens``."""

    above_input_tokens: int = Field(ge=1)
    input: Price
    output: Price | None = None
    cache_read: Price | None = None
    cache_write: Price | None = None
    reasoning: Price | None = None


class PriceEntry(_Strict):
    """One model's prices (USD per 1M tokens) for one provider over a span of dates."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")
    provider: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    match: str = Field(min_length=1, max_length=1000)
    effective_from: date
    effective_until: date | None = None
    input: Price
    output: Price | None = None  # absent for models that bill input only (embeddings)
    cache_read: Price | None = None
    cache_write: Price | None = None
    reasoning: Price | None = None
    tiers: tuple[PriceTier, ...] = ()
    priority: int = 0

    @field_validator("provider")
    @classmethod
    def _canonical_provider(cls, value: str) -> str:
        canonical = normalize_provider(value)
        if canonical != value:
            raise ValueError(f"write the canonical provider name {canonical!r}, not {value!r}")
        return value

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value, re.IGNORECASE)
        except re.error as error:
            raise ValueError(f"invalid regular expression {value!r}: {error}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PriceEntry:
        if self.effective_until is not None and self.effective_until <= self.effective_from:
            raise ValueError(
                f"effective_until {self.effective_until} is not after "
                f"effective_from {self.effective_from}"
            )
        thresholds = [tier.above_input_tokens for tier in self.tiers]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("tiers must have strictly increasing above_input_tokens")
        if self.output is None and self.reasoning is not None:
            raise ValueError("reasoning is priced but output is not")
        for index, tier in enumerate(self.tiers):
            if (tier.output is None) != (self.output is None):
                state = "has" if self.output is not None else "has no"
                raise ValueError(
                    f"tiers[{index}]: the entry {state} an output price, and its tiers must match"
                )
        return self


class PriceDocument(_Strict):
    """A price file: the shipped table, or a user overrides file (where version is optional)."""

    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    entries: tuple[PriceEntry, ...] = ()


# --- Pricing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartRates:
    """The rates applied to one span, in currency per 1M tokens; output is None for embeddings."""

    input: Decimal
    output: Decimal | None
    cache_read: Decimal
    cache_write: Decimal
    reasoning: Decimal | None


class TokenSplit(NamedTuple):
    """A usage split into the five priced parts, after the excluded-parts rule (module docs)."""

    uncached_input: int
    cache_read: int
    cache_write: int
    output: int  # non-reasoning output
    reasoning: int
    input_total: int
    output_total: int
    input_excluded_cache: bool  # cache tokens were reported outside input
    output_excluded_reasoning: bool  # reasoning tokens were reported outside output


def split_usage(usage: TokenUsage) -> TokenSplit:
    """Split ``usage`` into priced parts; missing counts are 0. Counts must not be negative."""
    input_total = usage.input or 0
    output_total = usage.output or 0
    cache_read = usage.cache_read or 0
    cache_write = usage.cache_write or 0
    reasoning = usage.reasoning or 0
    input_excluded_cache = cache_read + cache_write > input_total
    if input_excluded_cache:
        input_total += cache_read + cache_write
    output_excluded_reasoning = reasoning > output_total
    if output_excluded_reasoning:
        output_total += reasoning
    return TokenSplit(  # positional: this runs once per span
        input_total - cache_read - cache_write,
        cache_read,
        cache_write,
        output_total - reasoning,
        reasoning,
        input_total,
        output_total,
        input_excluded_cache,
        output_excluded_reasoning,
    )


@dataclass(frozen=True, slots=True)
class _Rates:
    """Per-1M rates for the breakdown, and the same as exact per-token prices for pricing."""

    per_million: PartRates
    input: Decimal
    output: Decimal | None
    cache_read: Decimal
    cache_write: Decimal
    reasoning: Decimal | None

    @classmethod
    def of(cls, prices: PriceEntry | PriceTier) -> _Rates:
        output = prices.output
        per_million = PartRates(
            input=prices.input,
            output=output,
            cache_read=prices.input if prices.cache_read is None else prices.cache_read,
            cache_write=prices.input if prices.cache_write is None else prices.cache_write,
            reasoning=output if prices.reasoning is None else prices.reasoning,
        )
        return cls(
            per_million=per_million,
            input=_per_token(per_million.input),
            output=None if per_million.output is None else _per_token(per_million.output),
            cache_read=_per_token(per_million.cache_read),
            cache_write=_per_token(per_million.cache_write),
            reasoning=None if per_million.reasoning is None else _per_token(per_million.reasoning),
        )


def _per_token(per_million: Decimal) -> Decimal:
    return per_million.scaleb(_PER_TOKEN_SCALE, context=_EXACT)


@dataclass(frozen=True, slots=True)
class _CompiledEntry:
    entry: PriceEntry
    pattern: re.Pattern[str]
    from_unix_nano: int
    until_unix_nano: int
    rates: _Rates
    tiers: tuple[tuple[int, str, _Rates], ...]  # (above_input_tokens, name), highest first
    from_overrides: bool
    rank: tuple[int, int, int, int, str]  # smaller sorts first: the most specific entry

    def effective_at(self, unix_nano: int) -> bool:
        return self.from_unix_nano <= unix_nano < self.until_unix_nano

    def rates_for(self, input_total: int) -> tuple[_Rates, str | None]:
        for threshold, name, rates in self.tiers:
            if input_total > threshold:
                return rates, name
        return self.rates, None


@dataclass(frozen=True, slots=True)
class _Choice:
    entry: _CompiledEntry | None
    reason: str | None


def _unix_nano(day: date) -> int:
    return calendar.timegm(day.timetuple()) * _NANOSECONDS_PER_SECOND


def _format_time(unix_nano: int) -> str:
    seconds = unix_nano // _NANOSECONDS_PER_SECOND
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{unix_nano} ns since the epoch"


def _format_amount(amount: Decimal) -> str:
    """Exact decimal text without exponent, with 9 to 12 decimal places (trailing zeros up to 9)."""
    quantized = amount.quantize(_AMOUNT_QUANTUM, context=_EXACT)  # exact: traps any rounding
    # str() is the fast path, and plain (no exponent) for a negative exponent down to 1e-6.
    text = str(quantized) if quantized.adjusted() >= -6 else f"{quantized:f}"
    if text.endswith("000"):
        return text[:-3]
    if text.endswith("00"):
        return text[:-2]
    return text[:-1] if text.endswith("0") else text


_ZERO = Decimal(0)
_ZERO_TEXT = _format_amount(_ZERO)


def _part(rate: Decimal, tokens: int) -> tuple[Decimal, str]:
    """The exact amount for ``tokens`` at a per-token ``rate``, and its text."""
    if tokens == 0:
        return _ZERO, _ZERO_TEXT
    amount = _EXACT.multiply(rate, Decimal(tokens))
    return amount, _format_amount(amount)


def _literal_specificity(pattern: str) -> tuple[bool, int]:
    """(whether the pattern is a plain model name, its count of certain literal characters).

    Counts characters at the top level of the pattern (outside groups and classes) that every
    match must contain, so `(?:us\\.)?anthropic\\.claude-3-5-sonnet-\\d{8}` scores on its model
    part despite the optional prefix. With top-level alternatives, the weakest one counts.
    """
    branches: list[int] = []
    count = 0
    depth = 0
    fully_literal = True
    last_atom_counted = False
    index = 0
    length = len(pattern)
    while index < length:
        char = pattern[index]
        counted = False
        if char == "\\":
            escaped = pattern[index + 1 : index + 2]
            counted = depth == 0 and escaped != "" and not escaped.isalnum()
            fully_literal = fully_literal and counted
            index += 2
        elif char == "[":
            end = index + 1
            if pattern[end : end + 1] == "^":
                end += 1
            if pattern[end : end + 1] == "]":
                end += 1
            while end < length and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            fully_literal = False
            index = end + 1
        elif char in "?*+" or (char == "{" and re.match(r"\{\d*(,\d*)?\}", pattern[index:])):
            fully_literal = False
            if char == "{":
                quantifier = re.match(r"\{(\d*)", pattern[index:])
                optional = quantifier is not None and quantifier.group(1) in ("", "0")
                index = pattern.index("}", index) + 1
            else:
                optional = char != "+"
                index += 1
            if optional and last_atom_counted:
                count -= 1
            if pattern[index : index + 1] in ("?", "+"):  # lazy or possessive
                index += 1
            last_atom_counted = False
            continue
        elif char == "(":
            depth += 1
            fully_literal = False
            index += 1
        elif char == ")":
            depth -= 1
            index += 1
        elif char == "|":
            fully_literal = False
            if depth == 0:
                branches.append(count)
                count = 0
            index += 1
        elif char in ".^$":
            fully_literal = False
            index += 1
        else:
            counted = depth == 0
            index += 1
        if counted:
            count += 1
        last_atom_counted = counted
    branches.append(count)
    return fully_literal, min(branches)


# --- Loading ---------------------------------------------------------------------------------


def _read_document(text: str, source: str) -> tuple[PriceDocument | None, list[str]]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(error, "problem", None) or str(error)
        return None, [f"{source}: invalid YAML{where}: {reason}"]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, [f"{source}: the top level must be a mapping with `entries`"]
    try:
        return PriceDocument.model_validate(raw), []
    except ValidationError as error:
        return None, [
            _describe_error(source, raw, item) for item in error.errors(include_url=False)
        ]


def _describe_error(source: str, raw: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    location: tuple[int | str, ...] = tuple(item["loc"])
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        message = "unknown key"
    where = source
    rest = location
    if len(location) >= 2 and location[0] == "entries" and isinstance(location[1], int):
        index = location[1]
        entries = raw.get("entries")
        entry_id = None
        if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
            entry_id = entries[index].get("id")
        named = f" (id {entry_id!r})" if isinstance(entry_id, str) else ""
        where = f"{source}: entries[{index}]{named}"
        rest = location[2:]
    path = ""
    for part in rest:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{where}: {path}: {message}" if path else f"{where}: {message}"


def _canonical_decimal(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.normalize():f}"


def _canonical_entry(entry: PriceEntry, from_overrides: bool) -> dict[str, Any]:
    """The entry's meaning, defaults resolved: equal prices written differently hash the same."""

    def rates(prices: PriceEntry | PriceTier) -> dict[str, str | None]:
        applied = _Rates.of(prices).per_million
        return {
            "input": _canonical_decimal(applied.input),
            "output": _canonical_decimal(applied.output),
            "cache_read": _canonical_decimal(applied.cache_read),
            "cache_write": _canonical_decimal(applied.cache_write),
            "reasoning": _canonical_decimal(applied.reasoning),
        }

    return {
        "id": entry.id,
        "provider": entry.provider,
        "match": entry.match,
        "effective_from": entry.effective_from.isoformat(),
        "effective_until": (
            None if entry.effective_until is None else entry.effective_until.isoformat()
        ),
        "priority": entry.priority,
        "rates": rates(entry),
        "tiers": [
            {"above_input_tokens": tier.above_input_tokens, "rates": rates(tier)}
            for tier in entry.tiers
        ],
        "from_overrides": from_overrides,
    }


def _overlap_problems(entries: Sequence[tuple[PriceEntry, str]]) -> list[str]:
    """Entries with the same provider and match must not be in effect on the same day."""
    problems = []
    groups: dict[tuple[str, str], list[tuple[PriceEntry, str]]] = {}
    for entry, source in entries:
        groups.setdefault((entry.provider, entry.match), []).append((entry, source))
    for (provider, match), group in groups.items():
        group.sort(key=lambda item: item[0].effective_from)
        for (earlier, earlier_source), (later, later_source) in itertools.pairwise(group):
            if earlier.effective_until is None or earlier.effective_until > later.effective_from:
                until = earlier.effective_until or "open-ended"
                hint = (
                    f"; to change the shipped price, give the override the id {earlier.id!r}"
                    if earlier_source != later_source
                    else ""
                )
                problems.append(
                    f"{later_source}: entry {later.id!r} (provider {provider!r}, match "
                    f"{match!r}, from {later.effective_from}) overlaps entry {earlier.id!r} of "
                    f"{earlier_source} (from {earlier.effective_from} until {until}): set "
                    f"effective_until on the earlier one{hint}"
                )
    return problems


# --- The table -------------------------------------------------------------------------------


class PriceTable:
    """A validated, immutable price table; :meth:`price` is pure and safe to share among threads."""

    def __init__(
        self,
        entries: Sequence[tuple[PriceEntry, bool]],
        *,
        label: str,
        currency: str,
    ) -> None:
        """Build from checked entries, each with whether it came from the user overrides file.

        Use :meth:`load`; this assumes entries that passed its checks.
        """
        canonical = {
            "currency": currency,
            "entries": sorted(
                (_canonical_entry(entry, from_overrides) for entry, from_overrides in entries),
                key=lambda item: str(item["id"]),
            ),
        }
        digest = hashlib.sha256(
            json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode("utf-8")
        ).hexdigest()
        self.label = label
        self.currency = currency
        self.version = f"{label}+{digest[:VERSION_HASH_LENGTH]}"
        self.entries: tuple[PriceEntry, ...] = tuple(entry for entry, _ in entries)
        compiled = [self._compile(entry, from_overrides) for entry, from_overrides in entries]
        compiled.sort(key=lambda item: item.rank)
        self._compiled: tuple[_CompiledEntry, ...] = tuple(compiled)
        self.providers: frozenset[str] = frozenset(entry.provider for entry in self.entries)
        self._candidates = functools.lru_cache(maxsize=LOOKUP_CACHE_SIZE)(self._find_candidates)

    @staticmethod
    def _compile(entry: PriceEntry, from_overrides: bool) -> _CompiledEntry:
        fully_literal, literal_characters = _literal_specificity(entry.match)
        until = _NEVER if entry.effective_until is None else _unix_nano(entry.effective_until)
        return _CompiledEntry(
            entry=entry,
            pattern=re.compile(entry.match, re.IGNORECASE),
            from_unix_nano=_unix_nano(entry.effective_from),
            until_unix_nano=until,
            rates=_Rates.of(entry),
            tiers=tuple(
                (tier.above_input_tokens, f"input>{tier.above_input_tokens}", _Rates.of(tier))
                for tier in sorted(entry.tiers, key=lambda tier: -tier.above_input_tokens)
            ),
            from_overrides=from_overrides,
            rank=(
                -entry.priority,
                0 if fully_literal else 1,
                -literal_characters,
                0 if from_overrides else 1,
                entry.id,
            ),
        )

    @classmethod
    def load(cls, overrides_file: Path | None = None) -> PriceTable:
        """The shipped table, with the entries of ``overrides_file`` replacing or adding to it.

        Raises PriceTableError listing every problem in either file at once.
        """
        shipped_text = (
            importlib.resources.files(__package__ or "llmtap.processors.pricing")
            .joinpath(SHIPPED_PRICES_RESOURCE)
            .read_text(encoding="utf-8")
        )
        overrides_text = None
        if overrides_file is not None:
            try:
                overrides_text = overrides_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise PriceTableError(
                    f"Price overrides file {overrides_file} cannot be read ({error})."
                ) from None
        return cls.from_texts(
            shipped_text,
            overrides_text,
            shipped_source=f"shipped {SHIPPED_PRICES_RESOURCE}",
            overrides_source=f"overrides file {overrides_file}",
        )

    @classmethod
    def from_texts(
        cls,
        shipped_text: str,
        overrides_text: str | None = None,
        *,
        shipped_source: str = "price table",
        overrides_source: str = "price overrides",
    ) -> PriceTable:
        """Like :meth:`load`, from YAML texts; the sources name them in error messages."""
        shipped, problems = _read_document(shipped_text, shipped_source)
        overrides = None
        if overrides_text is not None:
            overrides, override_problems = _read_document(overrides_text, overrides_source)
            problems += override_problems
        if shipped is not None:
            if shipped.version is None:
                problems.append(f"{shipped_source}: version: a version label is required")
            if shipped.currency is None:
                problems.append(f"{shipped_source}: currency: a currency code is required")
        if shipped is None or problems:
            raise PriceTableError(_format_problems(problems))
        currency = shipped.currency or "USD"
        label = shipped.version or ""
        if overrides is not None:
            if overrides.currency is not None and overrides.currency != currency:
                problems.append(
                    f"{overrides_source}: currency: {overrides.currency} differs from the "
                    f"shipped table's {currency}; one table has one currency"
                )
            label = overrides.version or label

        merged: dict[str, tuple[PriceEntry, str]] = {}  # by id: an override replaces its entry
        from_overrides: set[str] = set()
        for document, source in ((shipped, shipped_source), (overrides, overrides_source)):
            if document is None:
                continue
            seen: set[str] = set()
            for index, entry in enumerate(document.entries):
                if entry.id in seen:
                    problems.append(
                        f"{source}: entries[{index}] (id {entry.id!r}): id: duplicate id"
                    )
                    continue
                seen.add(entry.id)
                merged[entry.id] = (entry, source)
                if document is overrides:
                    from_overrides.add(entry.id)
        problems += _overlap_problems(list(merged.values()))
        if problems:
            raise PriceTableError(_format_problems(problems))
        return cls(
            [(entry, entry.id in from_overrides) for entry, _ in merged.values()],
            label=label,
            currency=currency,
        )

    # --- Lookup ------------------------------------------------------------------------------

    def _find_candidates(self, provider: str | None, model: str) -> tuple[_CompiledEntry, ...]:
        """Entries of ``provider`` (any when None) that match ``model``, the most specific first."""
        return tuple(
            compiled
            for compiled in self._compiled
            if (provider is None or compiled.entry.provider == provider)
            and compiled.pattern.fullmatch(model)
        )

    def _choose(self, provider: str | None, model: str, at_unix_nano: int) -> _Choice:
        canonical = normalize_provider(provider)
        known = canonical if canonical in self.providers else None
        candidates = self._candidates(known, model)
        chosen = None
        for candidate in candidates:
            if not candidate.effective_at(at_unix_nano):
                continue
            if chosen is None:
                chosen = candidate
                if known is not None:
                    break
            elif candidate.entry.provider != chosen.entry.provider:
                providers = sorted(
                    {c.entry.provider for c in candidates if c.effective_at(at_unix_nano)}
                )
                named = (
                    "names no provider"
                    if canonical is None
                    else f"names provider {provider!r}, which this table has no prices for"
                )
                return _Choice(
                    None,
                    f"model {model!r} has prices from several providers ({', '.join(providers)}) "
                    f"and the span {named}",
                )
        if chosen is not None:
            return _Choice(chosen, None)
        if candidates:
            ids = ", ".join(candidate.entry.id for candidate in candidates)
            return _Choice(
                None,
                f"no price for model {model!r} is in effect at {_format_time(at_unix_nano)} "
                f"(entries matching at other dates: {ids})",
            )
        if known is not None:
            return _Choice(None, f"no {known} price matches model {model!r}")
        if canonical is None:
            return _Choice(None, f"no provider's price matches model {model!r}")
        return _Choice(
            None,
            f"no price matches model {model!r} (provider {provider!r} has no prices in this table, "
            f"and no other provider's prices match)",
        )

    # --- Pricing -----------------------------------------------------------------------------

    def price(
        self, provider: str | None, model: str | None, usage: TokenUsage, at_unix_nano: int
    ) -> Cost:
        """What a span cost, from the provider and model it names, its usage and its time.

        ``at_unix_nano`` picks the prices in effect then (the span's start or end; a price change
        takes effect at 00:00 UTC of its effective_from day).
        """
        return self._price(provider, model, usage, at_unix_nano)[0]

    def _unpriced(self, reason: str, price_id: str | None = None) -> Cost:
        # Every amount stays None: a span that could not be priced must never read as $0.
        return Cost(
            priced=False,
            price_version=self.version,
            currency=self.currency,
            price_id=price_id,
            unpriced_reason=reason,
        )

    def _price(
        self, provider: str | None, model: str | None, usage: TokenUsage, at_unix_nano: int
    ) -> tuple[Cost, PartRates | None]:
        model = model.strip() if model is not None else ""
        if not model:
            return self._unpriced("the span names no model"), None
        if usage.input is None and usage.output is None:
            return self._unpriced("the span reports no token usage (input and output)"), None
        counts = (usage.input, usage.output, usage.cache_read, usage.cache_write, usage.reasoning)
        for count in counts:
            if count is not None and not 0 <= count <= MAX_TOKENS:
                return self._unpriced(
                    f"the span reports an impossible token count (input={usage.input}, "
                    f"output={usage.output}, cache_read={usage.cache_read}, "
                    f"cache_write={usage.cache_write}, reasoning={usage.reasoning})"
                ), None
        if at_unix_nano <= 0:
            return self._unpriced("the span has no start time, so no dated price applies"), None
        choice = self._choose(provider, model, at_unix_nano)
        compiled = choice.entry
        if compiled is None:
            assert choice.reason is not None
            return self._unpriced(choice.reason), None

        split = split_usage(usage)
        rates, tier = compiled.rates_for(split.input_total)
        output_text = reasoning_text = None
        if rates.output is None or rates.reasoning is None:
            if split.output_total:
                return self._unpriced(
                    f"price {compiled.entry.id!r} bills input only, but the span reports "
                    f"{split.output_total} output tokens",
                    compiled.entry.id,
                ), None
            total = _ZERO
        else:
            output_amount, output_text = _part(rates.output, split.output)
            reasoning_amount, reasoning_text = _part(rates.reasoning, split.reasoning)
            total = _EXACT.add(output_amount, reasoning_amount)
        input_amount, input_text = _part(rates.input, split.uncached_input)
        cache_read_amount, cache_read_text = _part(rates.cache_read, split.cache_read)
        cache_write_amount, cache_write_text = _part(rates.cache_write, split.cache_write)
        total = _EXACT.add(total, _EXACT.add(input_amount, cache_read_amount))
        total = _EXACT.add(total, cache_write_amount)
        cost = Cost(
            priced=True,
            price_version=self.version,
            currency=self.currency,
            total=_format_amount(total),
            input=input_text,
            output=output_text,
            cache_read=cache_read_text,
            cache_write=cache_write_text,
            reasoning=reasoning_text,
            price_id=compiled.entry.id,
            tier=tier,
        )
        return cost, rates.per_million

    def explain(
        self, provider: str | None, model: str | None, usage: TokenUsage, at_unix_nano: int
    ) -> str:
        """A readable breakdown of :meth:`price`'s answer: rates, tokens, parts, total, version."""
        cost, rates = self._price(provider, model, usage, at_unix_nano)
        header = (
            f"model {model!r}, provider {provider!r}, at {_format_time(at_unix_nano)}"
            if at_unix_nano > 0
            else f"model {model!r}, provider {provider!r}, no time"
        )
        return header + "\n" + format_breakdown(cost, usage, rates)


# --- Breakdown -------------------------------------------------------------------------------


def _format_rate(rate: Decimal | None) -> str:
    if rate is None:
        return "-"
    text = f"{rate.normalize():f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def _derived_rate(amount: str | None, tokens: int) -> Decimal | None:
    """The per-1M rate behind ``amount``, when the tokens make it recoverable."""
    if amount is None or tokens == 0:
        return None
    return Decimal(amount) * TOKENS_PER_PRICE_UNIT / tokens


def format_breakdown(cost: Cost, usage: TokenUsage, rates: PartRates | None = None) -> str:
    """Rates, token counts, per-part amounts, total, price id, tier and version, as a small table.

    Without ``rates`` (which :meth:`PriceTable.explain` passes), each rate is worked back from its
    amount, and shown as ``?`` for a part with no tokens.
    """
    lines = []
    if not cost.priced:
        lines.append(f"not priced: {cost.unpriced_reason}")
        if cost.price_id is not None:
            lines.append(f"price       {cost.price_id}")
        lines.append(f"version     {cost.price_version}")
        return "\n".join(lines)
    split = split_usage(usage)
    tier = cost.tier or "base"
    lines.append(f"price       {cost.price_id} (tier {tier})")
    lines.append(f"version     {cost.price_version}")
    currency = cost.currency
    lines.append(f"{'part':<24}{'tokens':>14}{f'{currency} per 1M':>16}{currency:>22}")
    parts = [  # (label, tokens, amount, the PartRates field)
        ("input (uncached)", split.uncached_input, cost.input, "input"),
        ("cache read", split.cache_read, cost.cache_read, "cache_read"),
        ("cache write", split.cache_write, cost.cache_write, "cache_write"),
        ("output (non-reasoning)", split.output, cost.output, "output"),
        ("reasoning", split.reasoning, cost.reasoning, "reasoning"),
    ]
    for name, tokens, amount, field in parts:
        if rates is None:
            derived = _derived_rate(amount, tokens)
            rate_text = "?" if derived is None and amount is not None else _format_rate(derived)
        else:
            rate_text = _format_rate(getattr(rates, field))
        lines.append(f"{name:<24}{tokens:>14,}{rate_text:>16}{amount or '-':>22}")
    total_tokens = split.input_total + split.output_total
    lines.append(f"{'total':<24}{total_tokens:>14,}{'':>16}{cost.total:>22}")
    if split.input_excluded_cache:
        lines.append(
            f"note: cache tokens ({split.cache_read} read + {split.cache_write} written) exceed "
            f"the reported input ({usage.input or 0}): the source counted them apart, so the "
            f"input total is taken as {split.input_total}"
        )
    if split.output_excluded_reasoning:
        lines.append(
            f"note: reasoning tokens ({split.reasoning}) exceed the reported output "
            f"({usage.output or 0}): the source counted them apart, so the output total is "
            f"taken as {split.output_total}"
        )
    return "\n".join(lines)


def _format_problems(problems: list[str]) -> str:
    count = len(problems)
    header = f"Invalid price table ({count} problem{'s' if count != 1 else ''}):"
    return "\n".join([header, *(f"  - {problem}" for problem in problems)])
