"""Cost of LLM calls: the shipped, versioned price table and exact per-span pricing.

Installed as ``llmtap.processors.pricing``. See :mod:`llmtap.processors.pricing.price_table` for
the token accounting rules and how an entry is chosen.
"""

from llmtap.processors.pricing.price_table import (
    LOOKUP_CACHE_SIZE,
    PROVIDER_ALIASES,
    SHIPPED_PRICES_RESOURCE,
    PartRates,
    PriceDocument,
    PriceEntry,
    PriceTable,
    PriceTableError,
    PriceTier,
    TokenSplit,
    format_breakdown,
    normalize_provider,
    split_usage,
)

__all__ = [
    "LOOKUP_CACHE_SIZE",
    "PROVIDER_ALIASES",
    "SHIPPED_PRICES_RESOURCE",
    "PartRates",
    "PriceDocument",
    "PriceEntry",
    "PriceTable",
    "PriceTableError",
    "PriceTier",
    "TokenSplit",
    "format_breakdown",
    "normalize_provider",
    "split_usage",
]
