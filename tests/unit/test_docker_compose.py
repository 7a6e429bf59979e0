"""docker-compose.yml stays correct for users, checked without a Docker engine.

The stack cannot be started in CI, so these tests read the file and hold it to what the code
knows: pinned official images, healthchecks and startup order, loopback-only ports, llmtap
settings that exist and validate, CLI commands that exist, and Grafana provisioning that points
at the compose ClickHouse service.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from pydantic import BaseModel

from llmtap import settings as llmtap_settings
from llmtap.errors import SettingsError

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DATASOURCE_FILE = REPO_ROOT / "deploy/grafana/provisioning/datasources/clickhouse.yaml"
DASHBOARD_PROVIDER_FILE = REPO_ROOT / "deploy/grafana/provisioning/dashboards/llmtap.yaml"

# The HTTP port of the clickhouse/clickhouse-server image, which llmtap and Grafana talk to.
CLICKHOUSE_HTTP_PORT = 8123
OFFICIAL_IMAGES = frozenset({"apache/kafka", "clickhouse/clickhouse-server", "grafana/grafana"})
VERSION_TAG = re.compile(r"^\d+\.\d+(\.\d+)*([-.][A-Za-z0-9.]+)?$")
# "${LLMTAP_BIND_ADDRESS:-127.0.0.1}:${KAFKA_PORT:-9094}:9094", optionally with /tcp or /udp.
PUBLISHED_PORT = re.compile(
    r"^\$\{(?P<address_var>\w+):-(?P<address>[^}]*)\}:"
    r"\$\{(?P<port_var>\w+):-(?P<port>\d+)\}:(?P<target>\d+)(/(tcp|udp))?$"
)
INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>\w+)(?P<operator>:?[-?+])?(?P<default>[^}]*)\}|\$\w+"
)
# The local_kafka section configures the broker `llmtap dev kafka` runs on a developer machine.
DEV_ONLY_SECTIONS = frozenset({"local_kafka"})


# ---------------------------------------------------------------------------------------------
# Reading the compose file


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml must be a mapping at the top level"
    assert isinstance(document.get("services"), dict), "docker-compose.yml has no services"
    return document


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _llmtap_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the image built from this repository's Dockerfile."""
    services = {name: s for name, s in _services(compose).items() if "build" in s}
    assert services, "docker-compose.yml has no service built from this repository (build: .)"
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a KEY=VALUE list."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        environment = {}
        for item in raw:
            key, _, value = str(item).partition("=")
            environment[key] = value
        return environment
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def _interpolate(text: str, where: str) -> str:
    """Resolve compose `${VAR:-default}` / `${VAR-default}` to the default, as with VAR unset."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        operator = match.group("operator")
        assert operator in ("-", ":-"), (
            f"{where}: {match.group(0)!r} has no default; write ${{NAME:-default}} so the "
            "stack starts without a .env file"
        )
        return match.group("default")

    return INTERPOLATION.sub(replace, text)


def _image_name_and_tag(image: str) -> tuple[str, str]:
    name, separator, tag = image.rpartition(":")
    if not separator or "/" in tag:  # no tag at all, or the colon was a registry port
        return image, ""
    return name, tag


def _container_ports(service: dict[str, Any]) -> set[int]:
    """The container-side ports a service publishes."""
    ports = set()
    for entry in service.get("ports", []):
        match = PUBLISHED_PORT.match(str(entry))
        if match:
            ports.add(int(match.group("target")))
    return ports


# ---------------------------------------------------------------------------------------------
# Images


def test_every_service_uses_a_pinned_official_image_or_this_repository_dockerfile(
    compose: dict[str, Any],
) -> None:
    for name, service in _services(compose).items():
        if "build" in service:
            build = service["build"]
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            path = REPO_ROOT / context / (dockerfile or "Dockerfile")
            assert path.is_file(), f"service {name!r} builds from {path}, which does not exist"
            continue
        assert "image" in service, f"service {name!r} has neither image nor build"
        repository, tag = _image_name_and_tag(str(service["image"]))
        assert repository in OFFICIAL_IMAGES, (
            f"service {name!r} uses image {service['image']!r}; allowed repositories are "
            f"{sorted(OFFICIAL_IMAGES)}"
        )
        assert tag, f"service {name!r} image {service['image']!r} has no tag; pin a version"
        assert VERSION_TAG.match(tag), (
            f"service {name!r} image {service['image']!r} must be pinned to an explicit "
            "version tag such as 1.2.3 (not latest or a name)"
        )


def test_kafka_image_is_the_pinned_kafka_version(compose: dict[str, Any]) -> None:
    kafka = _services(compose).get("kafka")
    assert kafka is not None, "docker-compose.yml has no 'kafka' service"
    repository, tag = _image_name_and_tag(str(kafka.get("image", "")))
    assert repository == "apache/kafka", f"kafka must use apache/kafka, not {repository!r}"
    assert tag == llmtap_settings.DEFAULT_KAFKA_VERSION, (
        f"kafka image tag {tag!r} differs from DEFAULT_KAFKA_VERSION "
        f"{llmtap_settings.DEFAULT_KAFKA_VERSION!r} in llmtap/settings.py; update both together"
    )


# ---------------------------------------------------------------------------------------------
# Health and startup order


def test_services_have_healthchecks_and_one_shots_wait_for_healthy_services(
    compose: dict[str, Any],
) -> None:
    services = _services(compose)
    for name, service in services.items():
        # Only an explicit restart: "no" marks a one-shot; compose's default is long-running too.
        restart = service.get("restart", "unless-stopped")
        assert isinstance(restart, str), (
            f'service {name!r}: restart is {restart!r}; quote it (restart: "no"), YAML reads a '
            "bare no as false"
        )
        depends_on = service.get("depends_on", {})
        if restart == "no":
            assert depends_on, (
                f"one-shot service {name!r} must list depends_on, so it starts only once the "
                "services it needs are healthy"
            )
        assert isinstance(depends_on, dict), (
            f"service {name!r}: write depends_on as a mapping with condition: service_healthy"
        )
        for dependency, condition in depends_on.items():
            assert dependency in services, f"service {name!r} depends on unknown {dependency!r}"
            # A one-shot dependency (migrations) is waited for until it finished successfully.
            one_shot = services[dependency].get("restart") == "no"
            expected = "service_completed_successfully" if one_shot else "service_healthy"
            assert (condition or {}).get("condition") == expected, (
                f"service {name!r} must wait for {dependency!r} with condition: {expected}"
            )
        if restart != "no":
            healthcheck = service.get("healthcheck") or {}
            assert healthcheck.get("test"), (
                f"long-running service {name!r} needs a healthcheck, so dependents can wait on it"
            )
            assert not healthcheck.get("disable"), f"service {name!r} disables its healthcheck"


# ---------------------------------------------------------------------------------------------
# Published ports


def test_published_ports_are_configurable_and_bind_loopback_by_default(
    compose: dict[str, Any],
) -> None:
    for name, service in _services(compose).items():
        for entry in service.get("ports", []):
            match = PUBLISHED_PORT.match(str(entry))
            assert match, (
                f"service {name!r} publishes {entry!r}; write it as "
                '"${BIND_ADDRESS_VAR:-127.0.0.1}:${PORT_VAR:-<port>}:<container port>"'
            )
            assert match.group("address") == "127.0.0.1", (
                f"service {name!r} publishes {entry!r} on {match.group('address')!r} by default; "
                "bind to 127.0.0.1 unless the user opts in to a wider address"
            )


# ---------------------------------------------------------------------------------------------
# llmtap settings


def _setting_names() -> tuple[set[str], dict[str, set[str]]]:
    """Top-level setting names and, for nested sections, their field names (all upper case)."""
    top_level = {name.upper() for name in llmtap_settings.Settings.model_fields}
    sections = {
        name.upper(): {field_name.upper() for field_name in field.annotation.model_fields}
        for name, field in llmtap_settings.Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    return top_level, sections


def _load_settings(
    variables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> llmtap_settings.Settings:
    """load_settings() with exactly these LLMTAP_* variables set, as in the container."""
    with monkeypatch.context() as patch:
        for existing in list(os.environ):
            if existing.startswith(llmtap_settings.ENV_PREFIX):
                patch.delenv(existing)
        for key, value in variables.items():
            patch.setenv(key, value)
        return llmtap_settings.load_settings()


def _llmtap_variables(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        name: {
            key: _interpolate(value, f"service {name!r} {key}")
            for key, value in _environment(service).items()
            if key.startswith(llmtap_settings.ENV_PREFIX)
        }
        for name, service in _llmtap_services(compose).items()
    }


def test_llmtap_environment_variables_name_real_settings(compose: dict[str, Any]) -> None:
    top_level, sections = _setting_names()
    for service_name, variables in _llmtap_variables(compose).items():
        assert variables, f"service {service_name!r} sets no LLMTAP_* variables"
        for variable in variables:
            if variable == llmtap_settings.CONFIG_FILE_ENV:
                continue
            where = f"service {service_name!r}: {variable}"
            parts = variable.removeprefix(llmtap_settings.ENV_PREFIX).split(
                llmtap_settings.ENV_NESTED_DELIMITER
            )
            assert parts[0] in top_level, f"{where} names no setting; known: {sorted(top_level)}"
            assert parts[0].lower() not in DEV_ONLY_SECTIONS, (
                f"{where} configures the development broker, which the compose stack does not use"
            )
            if parts[0] in sections:
                field = parts[1] if len(parts) > 1 else "(none)"
                assert field in sections[parts[0]], (
                    f"{where} names no field of section {parts[0].lower()!r}; "
                    f"known: {sorted(sections[parts[0]])}"
                )
            else:
                assert len(parts) == 1, f"{where}: {parts[0].lower()!r} is not a section"
            assert len(parts) <= 2, f"{where}: settings nest one level deep"


def test_llmtap_environment_loads_as_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for service_name, variables in _llmtap_variables(compose).items():
        try:
            _load_settings(variables, monkeypatch)
        except SettingsError as error:
            pytest.fail(f"service {service_name!r} environment does not load:\n{error}")


def test_llmtap_endpoints_are_the_compose_services(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = _services(compose)
    kafka_environment = {
        key: _interpolate(value, f"kafka {key}")
        for key, value in _environment(services["kafka"]).items()
    }
    clickhouse_environment = {
        key: _interpolate(value, f"clickhouse {key}")
        for key, value in _environment(services["clickhouse"]).items()
    }
    advertised = {
        listener.partition("://")[2]
        for listener in kafka_environment.get("KAFKA_ADVERTISED_LISTENERS", "").split(",")
    }
    for service_name, variables in _llmtap_variables(compose).items():
        bootstrap_servers = variables.get("LLMTAP_KAFKA__BOOTSTRAP_SERVERS", "")
        for server in bootstrap_servers.split(","):
            assert server in advertised, (
                f"service {service_name!r} bootstraps from {server!r}, which the kafka service "
                f"does not advertise ({sorted(advertised)})"
            )
        target = _load_settings(variables, monkeypatch).clickhouse_target()
        assert (target.host, target.port) == ("clickhouse", CLICKHOUSE_HTTP_PORT), (
            f"service {service_name!r} reaches ClickHouse at {target.host}:{target.port}, not "
            f"the clickhouse service's HTTP port clickhouse:{CLICKHOUSE_HTTP_PORT}"
        )
        assert target.username == clickhouse_environment.get("CLICKHOUSE_USER"), (
            f"service {service_name!r} logs in as {target.username!r}, but the clickhouse "
            f"service creates {clickhouse_environment.get('CLICKHOUSE_USER')!r}"
        )
        assert target.password == clickhouse_environment.get("CLICKHOUSE_PASSWORD"), (
            f"service {service_name!r}: the DSN password differs from CLICKHOUSE_PASSWORD of "
            "the clickhouse service (with both at their defaults)"
        )
        assert target.database == clickhouse_environment.get("CLICKHOUSE_DB"), (
            f"service {service_name!r} uses database {target.database!r}, but the clickhouse "
            f"service creates {clickhouse_environment.get('CLICKHOUSE_DB')!r}"
        )


# ---------------------------------------------------------------------------------------------
# llmtap commands


def test_llmtap_service_commands_exist_in_the_cli(compose: dict[str, Any]) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r'^ENTRYPOINT \["llmtap"\]$', dockerfile, re.MULTILINE), (
        'the Dockerfile must set ENTRYPOINT ["llmtap"]: compose commands are llmtap arguments'
    )
    from llmtap import cli as cli_module

    root = getattr(cli_module, "cli", None)
    assert isinstance(root, click.Group), "llmtap.cli.cli must be the click group of `llmtap`"
    for service_name, service in _llmtap_services(compose).items():
        command = service.get("command")
        assert command, f"service {service_name!r} has no command"
        arguments = command.split() if isinstance(command, str) else [str(a) for a in command]
        context = click.Context(root, info_name="llmtap")
        resolved: click.Command = root
        path = ["llmtap"]
        while isinstance(resolved, click.Group):
            assert arguments, f"service {service_name!r}: `{' '.join(path)}` needs a subcommand"
            assert not arguments[0].startswith("-"), (
                f"service {service_name!r}: `{' '.join(path)}` needs a subcommand before options, "
                f"got {command!r}"
            )
            name = arguments.pop(0)
            subcommand = resolved.get_command(context, name)
            assert subcommand is not None, (
                f"service {service_name!r} runs `{' '.join([*path, name])}`, which the CLI does "
                f"not have (known: {sorted(resolved.list_commands(context))})"
            )
            path.append(name)
            if isinstance(subcommand, click.Group):
                context = click.Context(subcommand, info_name=name, parent=context)
            resolved = subcommand
        try:  # parses the options against the command's parameters without running it
            resolved.make_context(path[-1], arguments, parent=context)
        except click.ClickException as error:
            pytest.fail(f"service {service_name!r}: `{' '.join(path)}` {arguments}: {error}")


# ---------------------------------------------------------------------------------------------
# Grafana provisioning


def _grafana_mounts(compose: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of the grafana service's bind mounts."""
    mounts = {}
    for volume in _services(compose)["grafana"].get("volumes", []):
        source, _, rest = str(volume).partition(":")
        target = rest.partition(":")[0]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def test_grafana_datasource_points_at_the_compose_clickhouse(compose: dict[str, Any]) -> None:
    assert DATASOURCE_FILE.is_file(), f"{DATASOURCE_FILE} is missing"
    document = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))
    sources = [
        source
        for source in document.get("datasources", [])
        if source.get("type") == "grafana-clickhouse-datasource"
    ]
    assert len(sources) == 1, f"{DATASOURCE_FILE.name} must define one ClickHouse data source"
    settings = sources[0].get("jsonData", {})
    services = _services(compose)
    clickhouse = services.get("clickhouse")
    assert clickhouse is not None, "docker-compose.yml has no 'clickhouse' service"
    assert settings.get("host") == "clickhouse", (
        f"data source host {settings.get('host')!r} is not the compose service 'clickhouse'"
    )
    assert CLICKHOUSE_HTTP_PORT in _container_ports(clickhouse), (
        f"the clickhouse service does not publish its HTTP port {CLICKHOUSE_HTTP_PORT}"
    )
    assert (settings.get("protocol"), settings.get("port")) == ("http", CLICKHOUSE_HTTP_PORT), (
        f"data source connects with {settings.get('protocol')!r} on port "
        f"{settings.get('port')!r}; the clickhouse service serves http on {CLICKHOUSE_HTTP_PORT}"
    )
    environment = {
        key: _interpolate(value, f"clickhouse {key}")
        for key, value in _environment(clickhouse).items()
    }
    assert settings.get("username") == environment.get("CLICKHOUSE_USER"), (
        "data source username differs from the clickhouse service's CLICKHOUSE_USER"
    )
    assert settings.get("defaultDatabase") == environment.get("CLICKHOUSE_DB"), (
        "data source defaultDatabase differs from the clickhouse service's CLICKHOUSE_DB"
    )
    password = str(sources[0].get("secureJsonData", {}).get("password", ""))
    password_variable = re.fullmatch(r"\$\{?(\w+)\}?", password)
    assert password_variable, "data source password must come from an environment variable"
    grafana_environment = _environment(services["grafana"])
    assert password_variable.group(1) in grafana_environment, (
        f"the grafana service does not set {password_variable.group(1)}, which the data source "
        "reads its password from"
    )
    grafana_password = _interpolate(
        grafana_environment[password_variable.group(1)], f"grafana {password_variable.group(1)}"
    )
    assert grafana_password == environment.get("CLICKHOUSE_PASSWORD"), (
        f"grafana's {password_variable.group(1)} differs from the clickhouse service's "
        "CLICKHOUSE_PASSWORD (with both at their defaults)"
    )


def test_grafana_provisioning_folders_are_mounted(compose: dict[str, Any]) -> None:
    mounts = _grafana_mounts(compose)
    for target, source in mounts.items():
        assert (REPO_ROOT / source).is_dir(), f"grafana mounts {source} at {target}; it is missing"
    assert mounts.get("/etc/grafana/provisioning") == "./deploy/grafana/provisioning", (
        "grafana must mount ./deploy/grafana/provisioning at /etc/grafana/provisioning"
    )
    document = yaml.safe_load(DASHBOARD_PROVIDER_FILE.read_text(encoding="utf-8"))
    for provider in document.get("providers", []):
        path = provider.get("options", {}).get("path")
        assert path in mounts, (
            f"dashboard provider {provider.get('name')!r} reads {path}, which grafana does not "
            f"mount (mounts: {sorted(mounts)})"
        )
