"""Unit tests for parsing the ClickHouse DSN into a ClickHouseTarget."""

from __future__ import annotations

import re

import pytest

from llmtap.clickhouse_dsn import ClickHouseTarget, parse_clickhouse_dsn

PASSWORD = "pa55-Secret-xyz"


def test_chdb_dsn_gives_absolute_path_and_optional_database() -> None:
    assert parse_clickhouse_dsn("chdb:///var/lib/llmtap/") == ClickHouseTarget(
        kind="chdb", path="/var/lib/llmtap"
    )
    target = parse_clickhouse_dsn("chdb:///var/lib/llmtap?database=traces")
    assert (target.kind, target.path, target.database) == ("chdb", "/var/lib/llmtap", "traces")


@pytest.mark.parametrize(
    ("dsn", "port"),
    [
        ("http://clickhouse.internal/llmtap", 8123),
        ("https://clickhouse.internal/llmtap", 8443),
        ("HTTPS://clickhouse.internal:9443/llmtap", 9443),
    ],
)
def test_http_dsn_default_and_explicit_ports(dsn: str, port: int) -> None:
    target = parse_clickhouse_dsn(dsn)
    assert (target.host, target.port, target.database) == ("clickhouse.internal", port, "llmtap")
    assert target.username == "default"
    assert target.password == ""


def test_http_dsn_decodes_url_encoded_user_and_password() -> None:
    target = parse_clickhouse_dsn("http://ana%40corp:p%40ss%3Aw%2Fd@host:8123/db")
    assert target.username == "ana@corp"
    assert target.password == "p@ss:w/d"


def test_http_dsn_without_database_leaves_it_empty() -> None:
    assert parse_clickhouse_dsn("http://host:8123").database == ""
    assert parse_clickhouse_dsn("http://host:8123/").database == ""


def test_describe_and_repr_hide_the_password() -> None:
    target = parse_clickhouse_dsn(f"https://writer:{PASSWORD}@ch.example.com/llmtap")
    assert target.password == PASSWORD
    assert target.describe() == "ClickHouse server https://writer@ch.example.com:8443/llmtap"
    assert PASSWORD not in repr(target)
    assert PASSWORD not in str(target)


def test_describe_embedded_target() -> None:
    target = parse_clickhouse_dsn("chdb:///srv/ch")
    assert target.describe() == "embedded ClickHouse at /srv/ch (database default)"
    assert "database llmtap" in target.with_database("llmtap").describe()


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("localhost:8123/db", "must start with chdb://, http:// or https://"),
        ("ftp://host/db", "unsupported scheme 'ftp'"),
        ("chdb://relative/path", "three slashes"),
        ("chdb://host/var/lib/llmtap", "three slashes"),
        ("chdb:///", "must name an absolute folder"),
        ("chdb:///data?database=x&mode=rw", "unknown parameters: mode"),
        ("http:///db", "http DSN has no host"),
        ("https://:8443/db", "https DSN has no host"),
        ("http://host:abc/db", "port that is not a number in 1-65535"),
        ("http://host:0/db", "port that is not a number in 1-65535"),
        ("http://host:70000/db", "port that is not a number in 1-65535"),
        ("http://host:8123/a/b", "single database name"),
    ],
)
def test_malformed_dsn_gives_clear_reason(dsn: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_clickhouse_dsn(dsn)


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        (f"http://user:{PASSWORD}@host:notaport/db", "port"),
        (f"http://user:{PASSWORD}@host:0/db", "port"),
        (f"http://user:{PASSWORD}@:8123/db", "no host"),
        (f"http://user:{PASSWORD}@host/a/b", "single database name"),
        (f"ftp://user:{PASSWORD}@host/db", "unsupported scheme"),
        (f"user:{PASSWORD}@host/db", "must start with"),
        (f"chdb://user:{PASSWORD}@host/data", "three slashes"),
    ],
)
def test_error_never_echoes_the_password(dsn: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_clickhouse_dsn(dsn)
    assert PASSWORD not in str(caught.value)
