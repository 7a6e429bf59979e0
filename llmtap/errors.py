"""Errors that reach the user as one clear message, without a traceback.

Anything raised as a subclass of :class:`LlmtapError` is a user-facing problem (bad settings,
a missing tool, a service that cannot be reached). The CLI prints its message and exits with
:attr:`LlmtapError.exit_code`; any other exception is a bug and keeps its traceback.
"""


class LlmtapError(Exception):
    """A problem the user can fix; the message says what happened and what to do."""

    exit_code = 1


class SettingsError(LlmtapError):
    """The settings (environment, config file or flags) are invalid."""

    exit_code = 2


class DependencyMissingError(LlmtapError):
    """A program llmtap needs (java, mvn) is not installed or too old."""


class ServiceUnavailableError(LlmtapError):
    """A service (Kafka broker, ClickHouse) did not answer."""


class LocalKafkaError(LlmtapError):
    """The local development broker could not be fetched, started or stopped."""


class EmbeddedClickHouseError(LlmtapError):
    """The embedded ClickHouse engine could not be opened."""
