"""Allows ``python -m llmtap``."""

from llmtap.cli import main

main()
