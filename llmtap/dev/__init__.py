"""Developer tooling: local infrastructure for development, tests and the demo."""
