"""Unit tests for the price table: entry choice, exact amounts, overrides, versions, validation.

Expected amounts are worked out by hand from the list prices (USD per 1M tokens) in the comments,
not by the code under test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtap.processors.pricing import (
    PriceTable,
    PriceTableError,
    format_breakdown,
    normalize_provider,
    split_usage,
)
from llmtap.schemas.llm_span import Cost, TokenUsage

TABLE = PriceTable.load()
AMOUNT_FIELDS = ("input", "cache_read", "cache_write", "output", "reasoning")


def at(moment: str) -> int:
    """Unix nanoseconds of an ISO-8601 UTC time."""
    parsed = datetime.fromisoformat(moment).replace(tzinfo=UTC)
    return int(parsed.timestamp()) * 1_000_000_000


NOW = at("2025-11-15T12:00:00")


def amounts(cost: Cost) -> dict[str, str | None]:
    return {"total": cost.total, **{name: getattr(cost, name) for name in AMOUNT_FIELDS}}


def write_overrides(tmp_path: Path, text: str, name: str = "prices.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- Exact amounts --------------------------------------------------------------------------------


def test_openai_cached_input_is_part_of_input() -> None:
    # gpt-4o: input 2.50, cached input 1.25, output 10.00 per 1M.
    # input 10,000 includes 4,000 cache reads, so 6,000 are uncached:
    #   6,000 x 2.50 / 1M = 0.015;  4,000 x 1.25 / 1M = 0.005;  500 x 10.00 / 1M = 0.005
    #   total 0.015 + 0.005 + 0.005 = 0.025
    usage = TokenUsage(input=10_000, output=500, cache_read=4_000)
    cost = TABLE.price("openai", "gpt-4o-2024-08-06", usage, NOW)
    assert cost.priced
    assert cost.price_id == "openai/gpt-4o"
    assert cost.currency == "USD"
    assert cost.tier is None
    assert amounts(cost) == {
        "total": "0.025000000",
        "input": "0.015000000",
        "cache_read": "0.005000000",
        "cache_write": "0.000000000",
        "output": "0.005000000",
        "reasoning": "0.000000000",
    }


def test_reasoning_tokens_are_part_of_output() -> None:
    # o4-mini: input 1.10, cached input 0.275, output 4.40 per 1M; reasoning billed as output.
    #   uncached input 2,000 - 1,024 = 976 x 1.10 / 1M = 0.0010736
    #   cache read 1,024 x 0.275 / 1M = 0.0002816
    #   output 3,000 - 2,500 reasoning = 500 x 4.40 / 1M = 0.0022
    #   reasoning 2,500 x 4.40 / 1M = 0.011
    #   total 0.0010736 + 0.0002816 + 0.0022 + 0.011 = 0.0145552
    usage = TokenUsage(input=2_000, output=3_000, cache_read=1_024, reasoning=2_500)
    cost = TABLE.price("openai", "o4-mini-2025-04-16", usage, NOW)
    assert cost.price_id == "openai/o4-mini"
    assert amounts(cost) == {
        "total": "0.014555200",
        "input": "0.001073600",
        "cache_read": "0.000281600",
        "cache_write": "0.000000000",
        "output": "0.002200000",
        "reasoning": "0.011000000",
    }


def test_anthropic_cache_writes_and_reads() -> None:
    # claude-3-5-sonnet: input 3.00, cache write 3.75, cache read 0.30, output 15.00 per 1M.
    # input 12,000 includes 8,000 cache reads and 3,000 cache writes: 1,000 uncached.
    #   1,000 x 3.00 / 1M = 0.003;  8,000 x 0.30 / 1M = 0.0024;  3,000 x 3.75 / 1M = 0.01125
    #   700 x 15.00 / 1M = 0.0105;  total 0.003 + 0.0024 + 0.01125 + 0.0105 = 0.02715
    usage = TokenUsage(input=12_000, output=700, cache_read=8_000, cache_write=3_000)
    cost = TABLE.price("anthropic", "claude-3-5-sonnet-20241022", usage, NOW)
    assert cost.price_id == "anthropic/claude-3-5-sonnet"
    assert amounts(cost) == {
        "total": "0.027150000",
        "input": "0.003000000",
        "cache_read": "0.002400000",
        "cache_write": "0.011250000",
        "output": "0.010500000",
        "reasoning": "0.000000000",
    }


def test_cache_reads_reported_outside_input_are_added_to_it() -> None:
    # The source reported input 500 *without* its 8,000 cache reads (cache_read > input), so the
    # input total is 8,500 with 500 uncached; nothing is billed twice or left out.
    #   500 x 3.00 / 1M = 0.0015;  8,000 x 0.30 / 1M = 0.0024;  100 x 15.00 / 1M = 0.0015
    #   total 0.0015 + 0.0024 + 0.0015 = 0.0054
    usage = TokenUsage(input=500, output=100, cache_read=8_000)
    cost = TABLE.price("anthropic", "claude-3-5-sonnet-20241022", usage, NOW)
    assert amounts(cost) == {
        "total": "0.005400000",
        "input": "0.001500000",
        "cache_read": "0.002400000",
        "cache_write": "0.000000000",
        "output": "0.001500000",
        "reasoning": "0.000000000",
    }
    split = split_usage(usage)
    assert (split.input_total, split.uncached_input, split.input_excluded_cache) == (
        8_500,
        500,
        True,
    )


def test_reasoning_reported_outside_output_is_added_to_it() -> None:
    # gemini-2.5-flash: input 0.30, output 2.50 per 1M (thinking billed as output).
    # output 200 with 800 reasoning (reasoning > output): the output total is 1,000.
    #   1,000 x 0.30 / 1M = 0.0003;  200 x 2.50 / 1M = 0.0005;  800 x 2.50 / 1M = 0.002
    #   total 0.0003 + 0.0005 + 0.002 = 0.0028
    usage = TokenUsage(input=1_000, output=200, reasoning=800)
    cost = TABLE.price("gcp.gemini", "gemini-2.5-flash", usage, NOW)
    assert cost.price_id == "gcp.gemini/gemini-2.5-flash"
    assert amounts(cost) == {
        "total": "0.002800000",
        "input": "0.000300000",
        "cache_read": "0.000000000",
        "cache_write": "0.000000000",
        "output": "0.000500000",
        "reasoning": "0.002000000",
    }
    split = split_usage(usage)
    assert (split.output_total, split.output, split.output_excluded_reasoning) == (1_000, 200, True)


def test_a_reasoning_rate_apart_from_output() -> None:
    # gemini-2.5-flash-preview-04-17: input 0.15, output 0.60, thinking 3.50 per 1M.
    #   1,000 x 0.15 / 1M = 0.00015;  400 x 0.60 / 1M = 0.00024;  600 x 3.50 / 1M = 0.0021
    #   total 0.00015 + 0.00024 + 0.0021 = 0.00249
    usage = TokenUsage(input=1_000, output=1_000, reasoning=600)
    cost = TABLE.price("gemini", "models/gemini-2.5-flash-preview-04-17", usage, NOW)
    assert cost.price_id == "gcp.gemini/gemini-2.5-flash-preview-04-17"
    assert (cost.input, cost.output, cost.reasoning, cost.total) == (
        "0.000150000",
        "0.000240000",
        "0.002100000",
        "0.002490000",
    )


def test_long_context_tier_prices_the_whole_claude_request() -> None:
    # claude-sonnet-4 above 200k input tokens (cache reads included): input 6.00, cache read 0.60,
    # output 22.50 per 1M for ALL tokens of the request.
    #   uncached 250,000 - 50,000 = 200,000 x 6.00 / 1M = 1.2
    #   50,000 x 0.60 / 1M = 0.03;  2,000 x 22.50 / 1M = 0.045;  total 1.275
    usage = TokenUsage(input=250_000, output=2_000, cache_read=50_000)
    cost = TABLE.price("anthropic", "claude-sonnet-4-20250514", usage, NOW)
    assert cost.tier == "input>200000"
    assert amounts(cost) == {
        "total": "1.275000000",
        "input": "1.200000000",
        "cache_read": "0.030000000",
        "cache_write": "0.000000000",
        "output": "0.045000000",
        "reasoning": "0.000000000",
    }


def test_exactly_at_the_tier_threshold_is_the_base_price() -> None:
    # 200,000 input tokens is not above 200k: 200,000 x 3.00 / 1M = 0.6; 1,000 x 15.00 / 1M = 0.015
    usage = TokenUsage(input=200_000, output=1_000)
    cost = TABLE.price("anthropic", "claude-sonnet-4-5-20250929", usage, NOW)
    assert cost.tier is None
    assert (cost.input, cost.output, cost.total) == ("0.600000000", "0.015000000", "0.615000000")


def test_long_context_tier_of_gemini_2_5_pro() -> None:
    # gemini-2.5-pro above 200k prompt tokens: input 2.50, output 15.00 per 1M (thinking as output).
    #   300,000 x 2.50 / 1M = 0.75;  6,000 x 15.00 / 1M = 0.09;  4,000 x 15.00 / 1M = 0.06
    #   total 0.75 + 0.09 + 0.06 = 0.9
    usage = TokenUsage(input=300_000, output=10_000, reasoning=4_000)
    cost = TABLE.price("gcp.gemini", "gemini-2.5-pro", usage, NOW)
    assert cost.tier == "input>200000"
    assert (cost.input, cost.output, cost.reasoning, cost.total) == (
        "0.750000000",
        "0.090000000",
        "0.060000000",
        "0.900000000",
    )


def test_embeddings_bill_input_only() -> None:
    # text-embedding-3-small: 0.02 per 1M.  10,000 x 0.02 / 1M = 0.0002
    cost = TABLE.price("openai", "text-embedding-3-small", TokenUsage(input=10_000), NOW)
    assert cost.priced
    assert (cost.total, cost.input, cost.output, cost.reasoning) == (
        "0.000200000",
        "0.000200000",
        None,
        None,
    )


def test_output_tokens_on_an_input_only_price_are_not_priced() -> None:
    usage = TokenUsage(input=10, output=5)
    cost = TABLE.price("openai", "text-embedding-3-small", usage, NOW)
    assert not cost.priced
    assert cost.price_id == "openai/text-embedding-3-small"
    assert "5 output tokens" in (cost.unpriced_reason or "")
    assert cost.total is None


def test_amounts_below_a_billionth_keep_every_digit() -> None:
    # gemini-1.5-flash cached input: 0.01875 per 1M, so one token is 0.00000001875 (11 places).
    usage = TokenUsage(input=1, output=0, cache_read=1)
    cost = TABLE.price("gcp.gemini", "gemini-1.5-flash-002", usage, NOW)
    assert (cost.input, cost.cache_read, cost.total) == (
        "0.000000000",
        "0.00000001875",
        "0.00000001875",
    )


# --- Not priced: never a silent zero --------------------------------------------------------------


def assert_unpriced(cost: Cost, *reason_parts: str) -> None:
    assert cost.priced is False
    assert cost.price_version == TABLE.version
    assert all(value is None for value in amounts(cost).values())
    for part in reason_parts:
        assert part in (cost.unpriced_reason or "")


def test_unknown_model_is_not_priced() -> None:
    cost = TABLE.price("openai", "gpt-9-ultra", TokenUsage(input=10, output=10), NOW)
    assert_unpriced(cost, "gpt-9-ultra", "openai")


def test_missing_usage_is_not_priced() -> None:
    assert_unpriced(TABLE.price("openai", "gpt-4o", TokenUsage(), NOW), "no token usage")


def test_missing_model_is_not_priced() -> None:
    assert_unpriced(TABLE.price("openai", None, TokenUsage(input=1), NOW), "names no model")
    assert_unpriced(TABLE.price("openai", "  ", TokenUsage(input=1), NOW), "names no model")


def test_negative_token_counts_are_not_priced() -> None:
    usage = TokenUsage(input=100, output=-3)
    assert_unpriced(TABLE.price("openai", "gpt-4o", usage, NOW), "impossible token count")


def test_a_span_without_a_time_is_not_priced() -> None:
    assert_unpriced(TABLE.price("openai", "gpt-4o", TokenUsage(input=1), 0), "no start time")


# --- Which entry applies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "expected_id"),
    [
        ("openai", "gpt-4o", "openai/gpt-4o"),
        ("openai", "gpt-4o-2024-11-20", "openai/gpt-4o"),
        ("openai", "GPT-4o-Mini-2024-07-18", "openai/gpt-4o-mini"),
        ("openai", "gpt-4.1-2025-04-14", "openai/gpt-4.1"),
        ("openai", "gpt-4.1-mini", "openai/gpt-4.1-mini"),
        ("openai", "gpt-4.1-nano-2025-04-14", "openai/gpt-4.1-nano"),
        ("openai", "o1-2024-12-17", "openai/o1"),
        ("openai", "o3", "openai/o3@2025-06-10"),
        ("openai", "o3-mini-2025-01-31", "openai/o3-mini"),
        ("openai", "gpt-5-2025-08-07", "openai/gpt-5"),
        ("openai", "gpt-5-mini", "openai/gpt-5-mini"),
        ("openai", "gpt-5-nano-2025-08-07", "openai/gpt-5-nano"),
        ("openai", "text-embedding-3-large", "openai/text-embedding-3-large"),
        ("openai", "text-embedding-ada-002", "openai/text-embedding-ada-002"),
        ("az.ai.openai", "gpt-4o-2024-08-06", "azure.ai.openai/gpt-4o"),
        ("anthropic", "claude-3-haiku-20240307", "anthropic/claude-3-haiku"),
        ("anthropic", "claude-3-5-haiku-latest", "anthropic/claude-3-5-haiku"),
        ("anthropic", "claude-3-7-sonnet-20250219", "anthropic/claude-3-7-sonnet"),
        ("anthropic", "claude-sonnet-4-0", "anthropic/claude-sonnet-4"),
        ("anthropic", "claude-sonnet-4-5", "anthropic/claude-sonnet-4-5"),
        ("anthropic", "claude-opus-4-20250514", "anthropic/claude-opus-4"),
        ("anthropic", "claude-opus-4-1-20250805", "anthropic/claude-opus-4-1"),
        ("anthropic", "claude-haiku-4-5-20251001", "anthropic/claude-haiku-4-5"),
        ("anthropic", "claude-opus-4-5-20251101", "anthropic/claude-opus-4-5"),
        (
            "aws.bedrock",
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "aws.bedrock/claude-3-5-sonnet",
        ),
        (
            "bedrock",
            "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
            "aws.bedrock/claude-3-7-sonnet",
        ),
        (
            "aws.bedrock",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "eu.anthropic.claude-sonnet-4-20250514-v1:0",
            "aws.bedrock/claude-sonnet-4",
        ),
        ("aws.bedrock", "anthropic.claude-3-haiku-20240307-v1:0:48k", "aws.bedrock/claude-3-haiku"),
        ("aws.bedrock", "anthropic.claude-opus-4-1-20250805-v1:0", "aws.bedrock/claude-opus-4-1"),
        (
            "aws.bedrock",
            "global.anthropic.claude-haiku-4-5-20251001-v1:0",
            "aws.bedrock/claude-haiku-4-5-global",
        ),
        (
            "aws.bedrock",
            "apac.anthropic.claude-opus-4-5-20251101-v1:0",
            "aws.bedrock/claude-opus-4-5-regional",
        ),
        ("vertex_ai", "claude-3-5-sonnet-v2@20241022", "gcp.vertex_ai/claude-3-5-sonnet"),
        (
            "gcp.vertex_ai",
            "publishers/anthropic/models/claude-opus-4-1@20250805",
            "gcp.vertex_ai/claude-opus-4-1",
        ),
        ("gcp.vertex_ai", "claude-haiku-4-5@20251001", "gcp.vertex_ai/claude-haiku-4-5"),
        ("google", "gemini-1.5-pro-002", "gcp.gemini/gemini-1.5-pro@2024-10-01"),
        ("gemini", "models/gemini-2.0-flash", "gcp.gemini/gemini-2.0-flash"),
        ("gcp.gemini", "gemini-2.0-flash-lite-001", "gcp.gemini/gemini-2.0-flash-lite"),
        ("gcp.gemini", "gemini-2.5-pro-preview-05-06", "gcp.gemini/gemini-2.5-pro"),
        ("gcp.gemini", "gemini-2.5-flash-lite", "gcp.gemini/gemini-2.5-flash-lite"),
        ("mistral", "mistral-large-2411", "mistral_ai/mistral-large-2411"),
        ("mistral_ai", "mistral-small-2503", "mistral_ai/mistral-small-3"),
    ],
)
def test_model_names_resolve_to_their_entry(provider: str, model: str, expected_id: str) -> None:
    usage = TokenUsage(input=100, output=None if "embedding" in model else 10)
    cost = TABLE.price(provider, model, usage, NOW)
    assert cost.priced, cost.unpriced_reason
    assert cost.price_id == expected_id


def test_bedrock_regional_endpoints_cost_ten_percent_more_than_global() -> None:
    # claude-sonnet-4-5 on Bedrock: 3.00 per 1M input globally, 3.30 regionally.
    #   100,000 x 3.00 / 1M = 0.3;  100,000 x 3.30 / 1M = 0.33
    usage = TokenUsage(input=100_000, output=0)
    model = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert TABLE.price("aws.bedrock", f"global.{model}", usage, NOW).total == "0.300000000"
    assert TABLE.price("aws.bedrock", f"us.{model}", usage, NOW).total == "0.330000000"
    assert TABLE.price("aws.bedrock", model, usage, NOW).total == "0.330000000"


def test_no_provider_uses_the_only_provider_that_prices_the_model() -> None:
    usage = TokenUsage(input=1_000, output=100)
    for provider in (None, "", "some_gateway"):
        cost = TABLE.price(provider, "claude-3-5-sonnet-20241022", usage, NOW)
        assert cost.price_id == "anthropic/claude-3-5-sonnet"
        cost = TABLE.price(provider, "us.anthropic.claude-3-5-sonnet-20241022-v2:0", usage, NOW)
        assert cost.price_id == "aws.bedrock/claude-3-5-sonnet"


def test_no_provider_and_several_providers_pricing_the_model_is_not_priced() -> None:
    cost = TABLE.price(None, "gpt-4o", TokenUsage(input=1_000, output=100), NOW)
    assert_unpriced(cost, "azure.ai.openai, openai", "names no provider")
    cost = TABLE.price("some_gateway", "gpt-4o", TokenUsage(input=1_000, output=100), NOW)
    assert_unpriced(cost, "'some_gateway'")


def test_a_known_provider_does_not_borrow_another_providers_price() -> None:
    cost = TABLE.price("mistral_ai", "gpt-4o", TokenUsage(input=1, output=1), NOW)
    assert_unpriced(cost, "no mistral_ai price matches model 'gpt-4o'")


def test_price_change_at_a_date_picks_the_entry_in_effect() -> None:
    # o3 cost 10.00 / 40.00 per 1M until 2025-06-10 and 2.00 / 8.00 from then on.
    #   before: 1,000,000 x 10.00 / 1M + 100,000 x 40.00 / 1M = 10 + 4 = 14
    #   after:  1,000,000 x  2.00 / 1M + 100,000 x  8.00 / 1M = 2 + 0.8 = 2.8
    usage = TokenUsage(input=1_000_000, output=100_000)
    before = TABLE.price("openai", "o3-2025-04-16", usage, at("2025-06-09T23:59:59"))
    after = TABLE.price("openai", "o3-2025-04-16", usage, at("2025-06-10T00:00:00"))
    assert (before.price_id, before.total) == ("openai/o3", "14.000000000")
    assert (after.price_id, after.total) == ("openai/o3@2025-06-10", "2.800000000")
    too_early = TABLE.price("openai", "o3", usage, at("2025-04-15T12:00:00"))
    assert_unpriced(too_early, "in effect at 2025-04-15T12:00:00Z", "openai/o3@2025-06-10")


def test_the_gpt_4o_alias_followed_its_snapshot() -> None:
    # Until 2024-10-02 `gpt-4o` meant gpt-4o-2024-05-13 (5.00 per 1M input); the dated 2024-08-06
    # snapshot was 2.50 from its release. 1,000,000 input tokens each.
    usage = TokenUsage(input=1_000_000, output=0)
    september = at("2024-09-01T00:00:00")
    assert TABLE.price("openai", "gpt-4o", usage, september).total == "5.000000000"
    assert TABLE.price("openai", "gpt-4o-2024-08-06", usage, september).total == "2.500000000"
    assert TABLE.price("openai", "gpt-4o", usage, at("2024-10-02T00:00:00")).total == "2.500000000"
    assert TABLE.price("openai", "gpt-4o-2024-05-13", usage, NOW).total == "5.000000000"


def test_repeated_lookups_give_the_same_answer() -> None:
    usage = TokenUsage(input=1_234, output=56)
    first = TABLE.price("openai", "gpt-4.1", usage, NOW)
    assert all(TABLE.price("openai", "gpt-4.1", usage, NOW) == first for _ in range(3))


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("OpenAI", "openai"),
        ("az.ai.openai", "azure.ai.openai"),
        ("azure", "azure.ai.openai"),
        ("Anthropic", "anthropic"),
        ("aws.bedrock", "aws.bedrock"),
        ("vertex_ai", "gcp.vertex_ai"),
        ("gemini", "gcp.gemini"),
        ("google", "gcp.gemini"),
        ("mistral", "mistral_ai"),
        ("MistralAI", "mistral_ai"),
        ("Acme", "acme"),
        (" ", None),
        (None, None),
    ],
)
def test_provider_aliases(name: str | None, canonical: str | None) -> None:
    assert normalize_provider(name) == canonical


# --- Overrides and versions -----------------------------------------------------------------------

OVERRIDES = """
version: acme.1
entries:
  - id: openai/gpt-4o-mini
    provider: openai
    match: 'gpt-4o-mini(?:-\\d{4}-\\d{2}-\\d{2})?'
    effective_from: 2024-07-18
    input: "0.20"
    output: "0.80"
  - id: acme/acme-chat
    provider: acme
    match: 'acme-chat-7b(?:-v\\d+)?'
    effective_from: 2025-01-01
    input: "0.05"
    output: "0.10"
"""


def test_an_override_replaces_a_shipped_price(tmp_path: Path) -> None:
    # Overridden gpt-4o-mini: input 0.20 (and cache read defaulting to it), output 0.80 per 1M.
    #   1,000,000 x 0.20 / 1M + 500,000 x 0.80 / 1M = 0.2 + 0.4 = 0.6
    table = PriceTable.load(write_overrides(tmp_path, OVERRIDES))
    usage = TokenUsage(input=1_000_000, output=500_000, cache_read=0)
    cost = table.price("openai", "gpt-4o-mini", usage, NOW)
    assert (cost.price_id, cost.total) == ("openai/gpt-4o-mini", "0.600000000")
    assert len(table.entries) == len(TABLE.entries) + 1


def test_an_override_adds_a_custom_model(tmp_path: Path) -> None:
    # acme-chat-7b: 0.05 / 0.10 per 1M.  2,000,000 x 0.05 / 1M + 1,000,000 x 0.10 / 1M = 0.2
    table = PriceTable.load(write_overrides(tmp_path, OVERRIDES))
    usage = TokenUsage(input=2_000_000, output=1_000_000)
    for provider in ("acme", "ACME", None):
        cost = table.price(provider, "acme-chat-7b-v2", usage, NOW)
        assert (cost.price_id, cost.total) == ("acme/acme-chat", "0.200000000")
    assert not TABLE.price("acme", "acme-chat-7b", usage, NOW).priced


def test_the_version_changes_with_any_price(tmp_path: Path) -> None:
    label, digest = TABLE.version.split("+")
    assert label == "2026-11-01"
    assert len(digest) == 12
    assert int(digest, 16) >= 0
    assert PriceTable.load().version == TABLE.version

    first = PriceTable.load(write_overrides(tmp_path, OVERRIDES, "first.yaml"))
    changed = OVERRIDES.replace('output: "0.10"', 'output: "0.11"')
    second = PriceTable.load(write_overrides(tmp_path, changed, "second.yaml"))
    assert first.version.startswith("acme.1+")
    assert len({TABLE.version, first.version, second.version}) == 3
    # The same prices written differently are the same table.
    respelled = OVERRIDES.replace('output: "0.10"', 'output: "0.1000"')
    third = PriceTable.load(write_overrides(tmp_path, respelled, "third.yaml"))
    assert third.version == first.version
    cost = second.price("acme", "acme-chat-7b", TokenUsage(input=1, output=1), NOW)
    assert cost.price_version == second.version


def test_an_override_can_end_a_shipped_price_and_start_a_new_one(tmp_path: Path) -> None:
    # A price change written by a user: the shipped entry (replaced by id) ends on 2026-01-01 and a
    # new entry takes over. claude-haiku-4-5 input 1.00 before, 0.90 after; 1,000,000 input tokens.
    overrides = """
entries:
  - id: anthropic/claude-haiku-4-5
    provider: anthropic
    match: 'claude-haiku-4-5(?:-\\d{8})?'
    effective_from: 2025-10-01
    effective_until: 2026-01-01
    input: "1.00"
    output: "5.00"
  - id: anthropic/claude-haiku-4-5@2026-01-01
    provider: anthropic
    match: 'claude-haiku-4-5(?:-\\d{8})?'
    effective_from: 2026-01-01
    input: "0.90"
    output: "5.00"
"""
    table = PriceTable.load(write_overrides(tmp_path, overrides))
    usage = TokenUsage(input=1_000_000, output=0)
    december = table.price("anthropic", "claude-haiku-4-5", usage, at("2025-12-31T23:00:00"))
    january = table.price("anthropic", "claude-haiku-4-5", usage, at("2026-01-01T01:00:00"))
    assert (december.total, january.total) == ("1.000000000", "0.900000000")
    assert table.version.startswith("2026-11-01+")


def test_explicit_priority_beats_a_more_specific_pattern(tmp_path: Path) -> None:
    overrides = """
entries:
  - id: custom/all-gpt
    provider: openai
    match: 'gpt-.*'
    effective_from: 2020-01-01
    priority: 10
    input: "1"
    output: "1"
"""
    table = PriceTable.load(write_overrides(tmp_path, overrides))
    cost = table.price("openai", "gpt-4o-2024-08-06", TokenUsage(input=1, output=1), NOW)
    assert cost.price_id == "custom/all-gpt"


def test_an_override_as_specific_as_a_shipped_entry_wins(tmp_path: Path) -> None:
    # Same literal characters as the shipped `openai/gpt-4o` pattern, written differently (so no
    # overlap error): the user's entry wins the tie.
    overrides = """
entries:
  - id: my/gpt-4o
    provider: openai
    match: 'gpt-4o(-[0-9]{4}-[0-9]{2}-[0-9]{2})?'
    effective_from: 2024-08-06
    input: "2.00"
    output: "8.00"
"""
    table = PriceTable.load(write_overrides(tmp_path, overrides))
    cost = table.price("openai", "gpt-4o-2024-11-20", TokenUsage(input=1, output=1), NOW)
    assert cost.price_id == "my/gpt-4o"


def test_a_missing_overrides_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="cannot be read"):
        PriceTable.load(tmp_path / "absent.yaml")


# --- Validation -----------------------------------------------------------------------------------


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(PriceTableError) as raised:
        PriceTable.load(write_overrides(tmp_path, text))
    return str(raised.value)


def entry(entry_id: str, **fields: str) -> str:
    values = {
        "provider": "acme",
        "match": "'acme-.*'",
        "effective_from": "2025-01-01",
        "input": '"1.00"',
        "output": '"2.00"',
        **fields,
    }
    lines = [f"  - id: {entry_id}"] + [f"    {key}: {value}" for key, value in values.items()]
    return "\n".join(lines)


def test_a_bad_regex_names_the_entry(tmp_path: Path) -> None:
    message = load_error(tmp_path, "entries:\n" + entry("acme/broken", match="'acme-(unclosed'"))
    assert "entries[0] (id 'acme/broken'): match: invalid regular expression" in message


def test_a_negative_price_names_the_entry(tmp_path: Path) -> None:
    message = load_error(tmp_path, "entries:\n" + entry("acme/negative", output='"-2.00"'))
    assert "entries[0] (id 'acme/negative'): output: '-2.00' is negative" in message


def test_an_unknown_key_names_the_entry(tmp_path: Path) -> None:
    message = load_error(tmp_path, "entries:\n" + entry("acme/typo", cache_raed='"0.1"'))
    assert "entries[0] (id 'acme/typo'): cache_raed: unknown key" in message


def test_overlapping_entries_are_an_error(tmp_path: Path) -> None:
    text = "entries:\n" + entry("acme/one") + "\n" + entry("acme/two", effective_from="2025-06-01")
    message = load_error(tmp_path, text)
    assert "entry 'acme/two'" in message
    assert "overlaps entry 'acme/one'" in message


def test_an_override_overlapping_a_shipped_entry_is_told_to_reuse_its_id(tmp_path: Path) -> None:
    text = "entries:\n" + entry(
        "my/gpt-4o",
        provider="openai",
        match="'gpt-4o(?:-\\d{4}-\\d{2}-\\d{2})?'",
        effective_from="2025-01-01",
    )
    message = load_error(tmp_path, text)
    assert "overlaps entry 'openai/gpt-4o'" in message
    assert "give the override the id 'openai/gpt-4o'" in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "entries:",
            entry("acme/float", input="1.5"),
            entry("acme/alias", provider="google", match="'acme-alias'"),
            entry("acme/dates", match="'acme-dates'", effective_until="2024-01-01"),
            entry("acme/places", match="'acme-places'", input='"0.0000001"'),
            entry(
                "acme/tiers", match="'acme-tiers'", tiers='[{above_input_tokens: 10, input: "2"}]'
            ),
            "  - provider: acme",
        ]
    )
    message = load_error(tmp_path, text)
    assert "(id 'acme/float'): input: must be a quoted decimal string" in message
    assert "(id 'acme/alias'): provider: write the canonical provider name 'gcp.gemini'" in message
    assert "(id 'acme/dates'): effective_until 2024-01-01 is not after" in message
    assert "(id 'acme/places'): input: '0.0000001' has more than 6 decimal places" in message
    assert "(id 'acme/tiers'): tiers[0]: the entry has an output price" in message
    for field in ("id", "match", "effective_from", "input"):  # the last entry has no other key
        assert f"entries[5]: {field}: Field required" in message
    assert message.startswith("Invalid price table (9 problems):")


def test_duplicate_ids_and_currency_mismatch(tmp_path: Path) -> None:
    text = "\n".join(
        ["currency: EUR", "entries:", entry("acme/same"), entry("acme/same", match="'x'")]
    )
    message = load_error(tmp_path, text)
    assert "entries[1] (id 'acme/same'): id: duplicate id" in message
    assert "currency: EUR differs from the shipped table's USD" in message


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "entries:\n  - id: [unclosed\n")
    assert "invalid YAML at line" in message


def test_the_shipped_table_holds_the_requested_families() -> None:
    providers = {entry.provider for entry in TABLE.entries}
    assert providers >= {
        "openai",
        "azure.ai.openai",
        "anthropic",
        "aws.bedrock",
        "gcp.vertex_ai",
        "gcp.gemini",
        "mistral_ai",
    }
    assert TABLE.currency == "USD"


# --- Breakdown ------------------------------------------------------------------------------------


def test_explain_shows_rates_tokens_parts_and_version() -> None:
    usage = TokenUsage(input=250_000, output=2_000, cache_read=50_000)
    text = TABLE.explain("anthropic", "claude-sonnet-4-20250514", usage, NOW)
    assert "anthropic/claude-sonnet-4 (tier input>200000)" in text
    assert TABLE.version in text
    lines = {line.split()[0] + " " + line.split()[1]: line.split() for line in text.splitlines()}
    assert lines["input (uncached)"][-3:] == ["200,000", "6.00", "1.200000000"]
    assert lines["cache read"][-3:] == ["50,000", "0.60", "0.030000000"]
    assert lines["output (non-reasoning)"][-3:] == ["2,000", "22.50", "0.045000000"]
    assert text.splitlines()[-1].split() == ["total", "252,000", "1.275000000"]


def test_format_breakdown_works_back_rates_from_a_stored_cost() -> None:
    usage = TokenUsage(input=500, output=100, cache_read=8_000)
    cost = TABLE.price("anthropic", "claude-3-5-sonnet-20241022", usage, NOW)
    text = format_breakdown(cost, usage)
    assert "0.30" in text  # 0.0024 for 8,000 cache reads is 0.30 per 1M
    assert "cache write" in text
    assert "?" in text  # no cache writes: their rate cannot be worked back
    assert "the input total is taken as 8500" in text


def test_format_breakdown_of_an_unpriced_cost() -> None:
    cost = TABLE.price("openai", "gpt-9-ultra", TokenUsage(input=1, output=1), NOW)
    text = format_breakdown(cost, TokenUsage(input=1, output=1))
    assert text.startswith("not priced: no openai price matches model 'gpt-9-ultra'")
    assert TABLE.version in text


# --- Properties -----------------------------------------------------------------------------------

PRICED_MODELS = [
    ("openai", "gpt-4o-2024-08-06"),
    ("openai", "o3"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("aws.bedrock", "us.anthropic.claude-opus-4-5-20251101-v1:0"),
    ("gcp.gemini", "gemini-1.5-flash"),
    ("gcp.gemini", "gemini-2.5-flash-preview-04-17"),
    ("mistral_ai", "mistral-small-2501"),
]
token_counts = st.one_of(st.none(), st.integers(min_value=0, max_value=10**12))


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(PRICED_MODELS),
    input_tokens=st.integers(min_value=0, max_value=10**12),
    output_tokens=token_counts,
    cache_read=token_counts,
    cache_write=token_counts,
    reasoning=token_counts,
)
def test_parts_always_add_up_to_the_total(
    model: tuple[str, str],
    input_tokens: int,
    output_tokens: int | None,
    cache_read: int | None,
    cache_write: int | None,
    reasoning: int | None,
) -> None:
    usage = TokenUsage(
        input=input_tokens,
        output=output_tokens,
        cache_read=cache_read,
        cache_write=cache_write,
        reasoning=reasoning,
    )
    cost = TABLE.price(*model, usage, NOW)
    assert cost.priced, cost.unpriced_reason
    assert cost.total is not None
    parts = [Decimal(getattr(cost, name)) for name in AMOUNT_FIELDS]
    assert all(part >= 0 for part in parts)
    assert sum(parts) == Decimal(cost.total)
    for text in (cost.total, *(getattr(cost, name) for name in AMOUNT_FIELDS)):
        assert "E" not in text.upper()
        assert len(text.partition(".")[2]) >= 9
    split = split_usage(usage)
    assert min(split) >= 0
    assert split.uncached_input + split.cache_read + split.cache_write == split.input_total
    assert split.output + split.reasoning == split.output_total
