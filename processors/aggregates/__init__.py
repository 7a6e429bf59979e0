"""Windowed aggregates of LLM spans: per-partition partials, merged per window and group."""
