"""The web dashboard that llmtap serves: read-only pages over the ClickHouse tables."""
