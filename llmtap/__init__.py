"""llmtap: a streaming monitoring pipeline for LLM telemetry.

The data path lives in subpackages named after the top-level folders of the source tree:
``llmtap.collectors`` (data in), ``llmtap.processors`` (stream computations),
``llmtap.sinks`` (data out) and ``llmtap.schemas`` (the contracts between them).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmtap")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
