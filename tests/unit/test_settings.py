"""Unit tests for loading settings from init values, environment and config files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from llmtap.collectors.config import ApiKey
from llmtap.errors import SettingsError
from llmtap.processors.alerts.config import WebhookConfig
from llmtap.settings import Settings, load_settings
from llmtap.web.config import TenantToken

PASSWORD = "pa55-Secret-xyz"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LLMTAP_* variable from the real environment; a fresh folder for the default data_dir."""
    for variable in list(os.environ):
        if variable.upper().startswith("LLMTAP_"):
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)


def write_config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problem_lines(error: SettingsError) -> list[str]:
    header, *lines = str(error).splitlines()
    assert header == f"Invalid settings ({len(lines)} problem{'s' if len(lines) != 1 else ''}):"
    return lines


# Defaults


def test_defaults_use_embedded_clickhouse_under_data_dir(tmp_path: Path) -> None:
    settings = load_settings()

    target = settings.clickhouse_target()
    assert target.kind == "chdb"
    assert Path(target.path).is_absolute()
    assert Path(target.path) == (tmp_path / ".llmtap" / "clickhouse").resolve()
    assert target.database == "llmtap"
    assert settings.kafka.bootstrap_servers is None
    assert settings.kafka.client_options == {}
    assert settings.log_level == "info"


def test_relative_data_dir_gives_absolute_embedded_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLMTAP_DATA_DIR", "state/here")

    target = load_settings().clickhouse_target()

    assert Path(target.path) == (tmp_path / "state" / "here" / "clickhouse").resolve()


# Precedence: init values > environment > config file > defaults

YAML_CONFIG = """\
log_level: debug
data_dir: /from/file
kafka:
  bootstrap_servers: file-broker:9092
  request_timeout_seconds: 3
local_kafka:
  heap_megabytes: 1024
"""

TOML_CONFIG = """\
log_level = "debug"
data_dir = "/from/file"

[kafka]
bootstrap_servers = "file-broker:9092"
request_timeout_seconds = 3

[local_kafka]
heap_megabytes = 1024
"""


@pytest.mark.parametrize(
    ("name", "text"),
    [("llmtap.yaml", YAML_CONFIG), ("llmtap.yml", YAML_CONFIG), ("llmtap.toml", TOML_CONFIG)],
)
def test_init_beats_environment_beats_file_beats_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, text: str
) -> None:
    config_file = write_config(tmp_path, name, text)
    monkeypatch.setenv("LLMTAP_LOG_LEVEL", "warning")
    monkeypatch.setenv("LLMTAP_DATA_DIR", "/from/env")
    monkeypatch.setenv("LLMTAP_KAFKA__BOOTSTRAP_SERVERS", "env-broker:9092")

    settings = load_settings(config_file, log_level="error")

    assert settings.log_level == "error"  # init over environment and file
    assert settings.data_dir == Path("/from/env")  # environment over file
    assert settings.kafka.bootstrap_servers == "env-broker:9092"  # environment over file, nested
    assert settings.kafka.request_timeout_seconds == 3  # file fills the rest of the section
    assert settings.local_kafka.heap_megabytes == 1024  # file over default
    assert settings.local_kafka.port == 0  # default


def test_config_file_named_by_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_file = write_config(tmp_path, "from-env.toml", 'log_level = "debug"\n')
    monkeypatch.setenv("LLMTAP_CONFIG_FILE", str(config_file))

    assert load_settings().log_level == "debug"


def test_config_file_argument_beats_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "LLMTAP_CONFIG_FILE", str(write_config(tmp_path, "env.yaml", "log_level: warning\n"))
    )
    argument = write_config(tmp_path, "arg.yaml", "log_level: debug\n")

    assert load_settings(argument).log_level == "debug"


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, "empty.yaml", ""))

    assert settings.log_level == "info"
    assert settings.kafka.bootstrap_servers is None


def test_tooling_variables_with_the_prefix_are_not_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMTAP_VENV", "/somewhere/.venv")

    assert load_settings().log_level == "info"


# Nested environment variables


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTAP_KAFKA__BOOTSTRAP_SERVERS", "a:9092,b:9093")
    monkeypatch.setenv(
        "LLMTAP_KAFKA__CLIENT_OPTIONS",
        '{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}',
    )
    monkeypatch.setenv("LLMTAP_LOCAL_KAFKA__PORT", "19092")

    settings = load_settings()

    assert settings.kafka.bootstrap_servers == "a:9092,b:9093"
    assert settings.kafka.client_options == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
    }
    assert settings.local_kafka.port == 19092


def test_malformed_json_in_environment_is_reported_with_other_problems(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMTAP_KAFKA__CLIENT_OPTIONS", "security.protocol=SSL")
    monkeypatch.setenv("LLMTAP_LOG_LEVLE", "debug")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    lines = problem_lines(caught.value)
    assert len(lines) == 2
    assert any("LLMTAP_LOG_LEVLE" in line for line in lines)
    assert any("kafka" in line and "EnvSettingsSource" in line for line in lines)


# Every problem at once


def test_every_problem_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTAP_KAFKA__BOOTSTRAP_SERVER", "broker:9092")
    monkeypatch.setenv("LLMTAP_LOCAL_KAFKA__PORT", "70000")
    monkeypatch.setenv("LLMTAP_CLICKHOUSE__DSN", "ftp://host/db")

    with pytest.raises(SettingsError, match=re.escape("Invalid settings (3 problems):")) as caught:
        load_settings()

    lines = problem_lines(caught.value)
    assert len(lines) == 3
    assert all(line.startswith("  - ") for line in lines)
    message = str(caught.value)
    assert "LLMTAP_KAFKA__BOOTSTRAP_SERVER: unknown setting in section 'kafka'" in message
    assert "local_kafka.port (LLMTAP_LOCAL_KAFKA__PORT)" in message
    assert "65535" in message
    assert "clickhouse.dsn (LLMTAP_CLICKHOUSE__DSN)" in message
    assert "unsupported scheme 'ftp'" in message


def test_problems_from_file_and_environment_reported_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config_file = write_config(tmp_path, "llmtap.yaml", "log_level: loud\n")
    monkeypatch.setenv("LLMTAP_NOT_A_SETTING", "1")

    with pytest.raises(SettingsError) as caught:
        load_settings(config_file)

    lines = problem_lines(caught.value)
    assert len(lines) == 2
    assert "environment variable LLMTAP_NOT_A_SETTING: unknown setting" in lines[0]
    assert lines[1].startswith("  - log_level (LLMTAP_LOG_LEVEL): ")


def test_single_problem_header_is_singular(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTAP_CLICKHOUSE__DATABASE", "my-db")

    with pytest.raises(SettingsError, match=re.escape("Invalid settings (1 problem):")):
        load_settings()


# Config file problems


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("llmtap.yaml", "kafak:\n  bootstrap_servers: a:1\nkafka:\n  bootstrap_server: a:1\n"),
        ("llmtap.toml", '[kafak]\nbootstrap_servers = "a:1"\n[kafka]\nbootstrap_server = "a:1"\n'),
    ],
)
def test_unknown_keys_in_config_file_top_level_and_nested(
    tmp_path: Path, name: str, text: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write_config(tmp_path, name, text))

    lines = problem_lines(caught.value)
    assert len(lines) == 2
    assert "  - kafak (LLMTAP_KAFAK): unknown setting" in lines
    assert "  - kafka.bootstrap_server (LLMTAP_KAFKA__BOOTSTRAP_SERVER): unknown setting" in lines


def test_yaml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, "bad.yaml", "log_level: info\nkafka:\n  a: 1\n b: 2\n")

    with pytest.raises(SettingsError) as caught:
        load_settings(config_file)

    (line,) = problem_lines(caught.value)
    assert f"config file {config_file}: invalid YAML at line 4, column 2" in line


def test_toml_syntax_error_is_reported(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, "bad.toml", 'log_level = "info"\nkafka = =\n')

    with pytest.raises(SettingsError) as caught:
        load_settings(config_file)

    (line,) = problem_lines(caught.value)
    assert f"config file {config_file}: invalid TOML" in line
    assert "line 2" in line


def test_config_file_that_is_a_list(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, "list.yaml", "- log_level\n- debug\n")

    with pytest.raises(SettingsError, match="top level must be a mapping"):
        load_settings(config_file)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist or is not a file"):
        load_settings(tmp_path / "missing.yaml")


def test_missing_config_file_named_by_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLMTAP_CONFIG_FILE", str(tmp_path / "missing.toml"))

    with pytest.raises(SettingsError, match=re.escape("missing.toml does not exist")):
        load_settings()


def test_config_file_with_wrong_suffix(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, "llmtap.json", '{"log_level": "debug"}')

    with pytest.raises(SettingsError, match=re.escape("must end in .yaml, .yml or .toml")):
        load_settings(config_file)


# ClickHouse DSN in settings


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ("localhost:8123/db", "must start with chdb://, http:// or https://"),
        ("ftp://host/db", "unsupported scheme 'ftp'"),
        ("chdb://relative/path", "absolute folder with three slashes"),
        ("chdb://host/var/lib/llmtap", "absolute folder with three slashes"),
        ("http:///db", "http DSN has no host"),
        ("http://host:abc/db", "port that is not a number in 1-65535"),
        ("http://host:8123/a/b", "path must be a single database name"),
    ],
)
def test_malformed_dsn_is_explained(monkeypatch: pytest.MonkeyPatch, dsn: str, reason: str) -> None:
    monkeypatch.setenv("LLMTAP_CLICKHOUSE__DSN", dsn)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    (line,) = problem_lines(caught.value)
    assert line.startswith("  - clickhouse.dsn (LLMTAP_CLICKHOUSE__DSN): ")
    assert reason in line


@pytest.mark.parametrize(
    "dsn",
    [
        f"http://writer:{PASSWORD}@host:notaport/db",
        f"http://writer:{PASSWORD}@:8123/db",
        f"https://writer:{PASSWORD}@host/a/b",
        f"ftp://writer:{PASSWORD}@host/db",
        f"writer:{PASSWORD}@host/db",
    ],
)
@pytest.mark.parametrize("source", ["environment", "config file", "init"])
def test_password_in_malformed_dsn_never_in_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dsn: str, source: str
) -> None:
    config_file = None
    overrides = {}
    if source == "environment":
        monkeypatch.setenv("LLMTAP_CLICKHOUSE__DSN", dsn)
    elif source == "config file":
        config_file = write_config(tmp_path, "llmtap.toml", f'[clickhouse]\ndsn = "{dsn}"\n')
    else:
        overrides = {"clickhouse": {"dsn": dsn}}

    with pytest.raises(SettingsError, match=re.escape("clickhouse.dsn")) as caught:
        load_settings(config_file, **overrides)

    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(caught.value)


def test_secrets_never_in_a_validation_error_of_settings_built_directly() -> None:
    short_key = "sk-0123"  # under 16 characters
    webhook_secret = "hmac-5ecret-value"
    webhook_url = "hooks.example.com/services/T0/B0/xoxb-url-secret"  # no scheme
    with pytest.raises(ValidationError) as caught:
        Settings(
            collector={"api_keys": [{"tenant": "acme", "key": short_key}]},  # type: ignore[arg-type]
            processor={  # type: ignore[arg-type]
                "alerts": {"webhooks": [{"url": webhook_url, "secret": webhook_secret}]}
            },
            clickhouse={"dsn": f"ftp://writer:{PASSWORD}@host/db"},  # type: ignore[arg-type]
        )
    text = str(caught.value)
    for secret in (short_key, webhook_secret, "xoxb-url-secret", PASSWORD):
        assert secret not in text
        assert secret not in repr(caught.value)
    # still useful: where, and what is wrong
    assert "collector.api_keys.0" in text
    assert "the API key of tenant 'acme' is shorter than 16 characters" in text
    assert "processor.alerts.webhooks.0.url" in text
    assert "String should match pattern" in text
    assert "clickhouse.dsn" in text


@pytest.mark.parametrize(
    ("model", "values", "secret"),
    [
        (ApiKey, {"tenant": "acme", "key": "sk-0123"}, "sk-0123"),
        (WebhookConfig, {"url": "ftp://x/secret-path", "secret": "s3cret"}, "secret-path"),
        (TenantToken, {"tenant": "acme", "token": "tok-0123"}, "tok-0123"),
    ],
)
def test_secrets_never_in_a_validation_error_of_a_section_built_directly(
    model: type[BaseModel], values: dict[str, str], secret: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model(**values)
    assert secret not in str(caught.value)


def test_password_never_in_settings_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTAP_CLICKHOUSE__DSN", f"https://writer:{PASSWORD}@ch.example.com/db")

    settings = load_settings()

    assert settings.clickhouse_target().password == PASSWORD
    for text in (
        repr(settings),
        str(settings),
        repr(settings.clickhouse),
        repr(settings.clickhouse_target()),
        settings.clickhouse_target().describe(),
    ):
        assert PASSWORD not in text


def test_dsn_database_wins_over_database_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTAP_CLICKHOUSE__DSN", "http://host:8123/from_dsn")
    monkeypatch.setenv("LLMTAP_CLICKHOUSE__DATABASE", "from_setting")

    assert load_settings().clickhouse_target().database == "from_dsn"


@pytest.mark.parametrize("dsn", ["http://host:8123", "http://host:8123/", "chdb:///srv/ch"])
def test_database_setting_fills_dsn_without_database(
    monkeypatch: pytest.MonkeyPatch, dsn: str
) -> None:
    monkeypatch.setenv("LLMTAP_CLICKHOUSE__DSN", dsn)
    monkeypatch.setenv("LLMTAP_CLICKHOUSE__DATABASE", "from_setting")

    assert load_settings().clickhouse_target().database == "from_setting"


def test_chdb_dsn_database_parameter_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTAP_CLICKHOUSE__DSN", "chdb:///srv/ch?database=from_dsn")

    target = load_settings().clickhouse_target()

    assert (target.path, target.database) == ("/srv/ch", "from_dsn")


# Kafka bootstrap servers


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "is empty"),
        (" , ", "is empty"),
        ("broker", "'broker' is not host:port"),
        (":9092", "':9092' is not host:port"),
        ("broker:0", "'broker:0' is not host:port with a port in 1-65535"),
        ("broker:70000", "'broker:70000' is not host:port with a port in 1-65535"),
        ("broker:abc", "'broker:abc' is not host:port"),
        ("a:9092,broker", "'broker' is not host:port"),
    ],
)
def test_bad_bootstrap_servers(monkeypatch: pytest.MonkeyPatch, value: str, reason: str) -> None:
    monkeypatch.setenv("LLMTAP_KAFKA__BOOTSTRAP_SERVERS", value)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    (line,) = problem_lines(caught.value)
    assert line.startswith("  - kafka.bootstrap_servers (LLMTAP_KAFKA__BOOTSTRAP_SERVERS): ")
    assert reason in line


def test_bootstrap_servers_normalised() -> None:
    settings = load_settings(kafka={"bootstrap_servers": " a:9092 ,b.example.com:9093, ,"})

    assert settings.kafka.bootstrap_servers == "a:9092,b.example.com:9093"
