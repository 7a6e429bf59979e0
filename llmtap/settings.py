"""Typed settings for every llmtap role, from flags, environment and an optional config file.

Sources, highest precedence first: values passed by the CLI, environment variables
(``LLMTAP_`` prefix, ``__`` between nested names, e.g. ``LLMTAP_KAFKA__BOOTSTRAP_SERVERS``), the
config file (YAML or TOML, named by ``--config`` or ``LLMTAP_CONFIG_FILE``), then defaults.
Every problem found is reported at once, as one :class:`~llmtap.errors.SettingsError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)
from pydantic_settings import SettingsError as PydanticSettingsError

from llmtap.clickhouse_dsn import ClickHouseTarget, parse_clickhouse_dsn
from llmtap.collectors.config import CollectorConfig
from llmtap.errors import SettingsError
from llmtap.processors.config import ProcessorConfig
from llmtap.sinks.config import SinkConfig
from llmtap.web.config import WebConfig

ENV_PREFIX = "LLMTAP_"
ENV_NESTED_DELIMITER = "__"
CONFIG_FILE_ENV = "LLMTAP_CONFIG_FILE"
# Variables with the prefix that configure the tooling around llmtap, not llmtap itself.
NON_SETTING_ENV_VARS = frozenset({CONFIG_FILE_ENV, "LLMTAP_VENV"})

DEFAULT_KAFKA_VERSION = "4.3.1"


class _Section(BaseModel):
    # Validation errors name the field and the problem, never the value: sections hold secrets
    # (the ClickHouse DSN's password, SASL passwords in Kafka client options).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class KafkaSettings(_Section):
    """Where the Kafka cluster is and how clients talk to it."""

    bootstrap_servers: str | None = Field(
        default=None,
        description=(
            "Comma-separated host:port list of the Kafka cluster. Unset: use the local "
            "development broker started by `llmtap dev kafka start`."
        ),
    )
    client_options: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra librdkafka properties for every client (security.protocol, sasl.*, ssl.*). "
            "Values here override llmtap's defaults."
        ),
    )
    request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a metadata or admin request may take."
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap_servers(cls, value: str | None) -> str | None:
        if value is None:
            return None
        servers = [part.strip() for part in value.split(",") if part.strip()]
        if not servers:
            raise ValueError("is empty; give host:port[,host:port...] or leave it unset")
        for server in servers:
            host, separator, port = server.rpartition(":")
            if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server!r} is not host:port with a port in 1-65535")
        return ",".join(servers)


class TopicsSettings(_Section):
    """Kafka topic names and how llmtap creates them."""

    raw_spans: str = Field(
        default="otlp_spans",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description=(
            "Raw OTLP spans (otlp_proto or otlp_json values). The default is the OTel Collector "
            "Kafka exporter's default topic, so a Collector can write here unchanged."
        ),
    )
    raw_logs: str = Field(
        default="otlp_logs",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description=(
            "Raw OTLP log records (otlp_proto or otlp_json values, keyed by hex trace id), where "
            "GenAI event records (message content) arrive; the OTel Collector Kafka exporter's "
            "default logs topic."
        ),
    )
    normalized_spans: str = Field(
        default="llmtap.spans.normalized",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Normalized, priced LLM spans (JSON, one span per message, keyed by trace id).",
    )
    scores: str = Field(
        default="llmtap.scores",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Risk and injection scores of LLM spans (JSON SpanScore, keyed by trace id).",
    )
    embeddings: str = Field(
        default="llmtap.embeddings",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Prompt, completion and context embeddings (JSON SpanEmbedding, by trace id).",
    )
    aggregate_inputs: str = Field(
        default="llmtap.aggregates.inputs",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description=(
            "What the stream worker aggregates: the normalizer writes each batch's LLM and "
            "embedding calls here, only their aggregated fields, up to 1,000 per message "
            "(msgpack), in the same transaction as the normalized spans."
        ),
    )
    aggregate_partials: str = Field(
        default="llmtap.aggregates.partials",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description=(
            "Per-partition window partials between the two aggregation stages (keyed by window "
            "and group, so one worker merges each window)."
        ),
    )
    aggregates: str = Field(
        default="llmtap.aggregates",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description=(
            "Merged windowed aggregates (one partition: the alert evaluator sees every group)."
        ),
    )
    alert_signals: str = Field(
        default="llmtap.alerts.signals",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description=(
            "Risk scores and drift results forwarded to the alert evaluator (one partition, "
            "only while alert rules are configured)."
        ),
    )
    alerts: str = Field(
        default="llmtap.alerts",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Alert notifications (firing / resolved) and their delivery outcomes.",
    )
    drift: str = Field(
        default="llmtap.drift",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Drift test results per key, feature and window (JSON DriftResult).",
    )
    dead_letter: str = Field(
        default="llmtap.dead_letter",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Records that could not be processed, with the reason in headers.",
    )
    partitions: int = Field(default=6, ge=1, description="Partitions of topics llmtap creates.")
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replication factor of topics llmtap creates (3 in production).",
    )
    max_message_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024 * 1024,
        description="max.message.bytes of topics llmtap creates, and its producers' limit.",
    )
    create_missing: bool = Field(
        default=True, description="Create missing topics at start-up (needs the admin permission)."
    )


class LocalKafkaSettings(_Section):
    """The single-node Apache Kafka broker that `llmtap dev kafka` runs on this machine."""

    version: str = Field(
        default=DEFAULT_KAFKA_VERSION,
        pattern=r"^4\.\d+\.\d+$",
        description="Apache Kafka 4.x release resolved from Maven Central (kafka_2.13).",
    )
    port: int = Field(
        default=0, ge=0, le=65535, description="Client port on 127.0.0.1; 0 picks a free one."
    )
    controller_port: int = Field(
        default=0, ge=0, le=65535, description="KRaft controller port; 0 picks a free one."
    )
    heap_megabytes: int = Field(default=512, ge=128, description="Broker JVM heap size.")
    start_timeout_seconds: float = Field(
        default=90.0, gt=0, description="How long to wait for the broker to answer after start."
    )
    jar_cache_dir: Path | None = Field(
        default=None,
        description="Where fetched broker jars are kept. Unset: `<data_dir>/kafka/dist`.",
    )
    maven_command: str = Field(default="mvn", description="Maven executable used to fetch jars.")
    java_command: str = Field(default="java", description="Java 17+ executable.")


class ClickHouseSettings(_Section):
    """Where llmtap stores its tables."""

    dsn: SecretStr | None = Field(
        default=None,
        description=(
            "`chdb:///absolute/path` for the embedded engine, or "
            "`http(s)://user:password@host:port/database` for a ClickHouse server. "
            "Unset: embedded engine under `<data_dir>/clickhouse`."
        ),
    )
    database: str = Field(
        default="llmtap",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Database for llmtap's tables when the DSN names none.",
    )
    cluster: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
        description=(
            "ClickHouse cluster name (from the server's remote_servers) for `llmtap migrate`: "
            "tables are created ON CLUSTER as replicated `<table>_local` tables behind "
            "Distributed tables. Unset: a single node with plain MergeTree tables."
        ),
    )
    retention_days: int | None = Field(
        default=30,
        ge=1,
        description=(
            "Days of data kept in every time-series table (a TTL on its time column, set by "
            "`llmtap migrate`; whole daily parts are dropped). null in the config file: keep "
            "forever (the TTL is removed)."
        ),
    )

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_clickhouse_dsn(value.get_secret_value())  # raises ValueError with the reason
        return value


class Settings(BaseSettings):
    """All llmtap settings. Nested sections map to ``LLMTAP_<SECTION>__<NAME>`` variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        validate_default=True,
        # A ValidationError built here (Settings(...) directly) echoes no input: the sections
        # hold API keys, webhook secrets and URLs, DSN passwords. load_settings also drops it.
        hide_input_in_errors=True,
    )

    data_dir: Path = Field(
        default=Path(".llmtap"),
        description="Folder for local state: Kafka jars and data, embedded ClickHouse, logs.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of llmtap's own loggers."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    local_kafka: LocalKafkaSettings = Field(default_factory=LocalKafkaSettings)
    topics: TopicsSettings = Field(default_factory=TopicsSettings)
    collector: CollectorConfig = Field(default_factory=CollectorConfig)
    processor: ProcessorConfig = Field(default_factory=ProcessorConfig)
    sink: SinkConfig = Field(default_factory=SinkConfig)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    web: WebConfig = Field(default_factory=WebConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)

    def clickhouse_target(self) -> ClickHouseTarget:
        """The parsed ClickHouse DSN, defaulting to the embedded engine under ``data_dir``."""
        if self.clickhouse.dsn is None:
            path = (self.data_dir / "clickhouse").resolve()
            return ClickHouseTarget(kind="chdb", path=str(path), database=self.clickhouse.database)
        target = parse_clickhouse_dsn(self.clickhouse.dsn.get_secret_value())
        return target if target.database else target.with_database(self.clickhouse.database)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Load and validate settings, raising one SettingsError that lists every problem."""
    path = Path(config_file) if config_file else _env_config_file()
    if path is not None:
        if not path.is_file():
            raise SettingsError(f"Config file {path} does not exist or is not a file.")
        if path.suffix not in {".yaml", ".yml", ".toml"}:
            raise SettingsError(f"Config file {path} must end in .yaml, .yml or .toml.")
        syntax_problems = _check_config_file_syntax(path)
        if syntax_problems:
            raise SettingsError(_format_problems(syntax_problems))
    problems = _unknown_env_vars()
    settings_class = Settings if path is None else _settings_class_reading(path)
    try:
        settings = settings_class(**overrides)
    except ValidationError as error:
        problems.extend(_describe_validation_error(error))
    except PydanticSettingsError as error:  # e.g. malformed JSON in LLMTAP_KAFKA__CLIENT_OPTIONS
        cause = f": {error.__cause__}" if error.__cause__ else ""
        problems.append(f"{error}{cause}")
    if problems:
        raise SettingsError(_format_problems(problems))
    return settings


def _settings_class_reading(path: Path) -> type[Settings]:
    """pydantic-settings reads its file names from the class config, so bind one per file."""
    config = SettingsConfigDict(**Settings.model_config)
    if path.suffix == ".toml":
        config["toml_file"] = path
    else:
        config["yaml_file"] = path
    return type("Settings", (Settings,), {"model_config": config, "__doc__": Settings.__doc__})


def _env_config_file() -> Path | None:
    value = os.environ.get(CONFIG_FILE_ENV, "").strip()
    return Path(value) if value else None


def _check_config_file_syntax(path: Path) -> list[str]:
    """Report unreadable files and syntax errors with a line number, before pydantic sees them."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return [f"config file {path}: cannot be read ({error})"]
    if path.suffix == ".toml":
        import tomllib

        try:
            document: object = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            return [f"config file {path}: invalid TOML ({error})"]
    else:
        import yaml

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            reason = getattr(error, "problem", None) or str(error)
            return [f"config file {path}: invalid YAML{where}: {reason}"]
    if document is not None and not isinstance(document, dict):
        return [f"config file {path}: the top level must be a mapping of setting names"]
    return []


def _unknown_env_vars() -> list[str]:
    """pydantic-settings ignores unknown LLMTAP_* variables; a typo there must not pass silently."""
    problems = []
    for variable in sorted(os.environ):
        if not variable.upper().startswith(ENV_PREFIX) or variable.upper() in NON_SETTING_ENV_VARS:
            continue
        parts = variable[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER)
        problem = _unknown_path(Settings, parts)
        if problem is not None:
            problems.append(f"environment variable {variable}: {problem}")
    return problems


def _unknown_path(model: type[BaseModel], parts: list[str]) -> str | None:
    """Why ``parts`` names no setting of ``model`` (None when it does)."""
    section: list[str] = []
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            known = ", ".join(sorted(model.model_fields))
            where = f" in section '{'.'.join(section)}'" if section else ""
            return f"unknown setting{where} (known: {known})"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if index == len(parts) - 1:
                return None  # a whole section as JSON
            model = annotation
            section.append(part)
            continue
        return None  # a leaf; deeper parts address dict keys, which pydantic validates
    return None


def _describe_validation_error(error: ValidationError) -> list[str]:
    # pydantic-settings passes unknown nested variables (LLMTAP_KAFKA__TYPO) on to the section,
    # which forbids them; _unknown_env_vars has already reported those, so skip the duplicate.
    env_names = {
        _env_name(tuple(name[len(ENV_PREFIX) :].upper().split(ENV_NESTED_DELIMITER)))
        for name in os.environ
        if name.upper().startswith(ENV_PREFIX)
    }
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "settings"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            if _env_name(item["loc"]) in env_names:
                continue
            message = "unknown setting"
        problems.append(f"{location} ({_env_name(item['loc'])}): {message}")
    return problems


def _env_name(location: tuple[int | str, ...]) -> str:
    names = [str(part).upper() for part in location if isinstance(part, str)]
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(names)


def _format_problems(problems: list[str]) -> str:
    count = len(problems)
    header = f"Invalid settings ({count} problem{'s' if count != 1 else ''}):"
    return "\n".join([header, *(f"  - {problem}" for problem in problems)])
