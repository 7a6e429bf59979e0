"""The normalizer stage: raw OTLP spans in, normalized LLM spans (priced) out."""
