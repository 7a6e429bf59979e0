"""Demo traffic for trying llmtap out: realistic LLM spans sent through OpenTelemetry."""
