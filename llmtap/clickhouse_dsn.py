"""Parsing of the one ClickHouse DSN setting into a typed target.

Two kinds share everything above the client: ``chdb:///absolute/path`` (the embedded engine,
in-process and persistent on disk) and ``http(s)://user:password@host:port/database`` (a
ClickHouse server). Parsing lives apart from the client so settings can validate a DSN without
importing the engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

_DEFAULT_PORTS = {"http": 8123, "https": 8443}


@dataclass(frozen=True)
class ClickHouseTarget:
    """Where ClickHouse is. ``password`` never appears in ``repr`` or :meth:`describe`."""

    kind: Literal["chdb", "http", "https"]
    path: str = ""
    host: str = ""
    port: int = 0
    username: str = "default"
    password: str = dataclasses.field(default="", repr=False)
    database: str = ""
    options: tuple[tuple[str, str], ...] = ()

    def with_database(self, database: str) -> ClickHouseTarget:
        return dataclasses.replace(self, database=database)

    def describe(self) -> str:
        """A human-readable location without secrets, for logs and error messages."""
        if self.kind == "chdb":
            return f"embedded ClickHouse at {self.path} (database {self.database or 'default'})"
        return (
            f"ClickHouse server {self.kind}://{self.username}@{self.host}:{self.port}"
            f"/{self.database or 'default'}"
        )


def parse_clickhouse_dsn(dsn: str) -> ClickHouseTarget:
    """Parse a DSN, raising ValueError with a reason that never echoes the password."""
    text = dsn.strip()
    if not text:
        raise ValueError("is empty")
    scheme, separator, _ = text.partition("://")
    if not separator:
        raise ValueError("must start with chdb://, http:// or https://")
    scheme = scheme.lower()
    if scheme == "chdb":
        return _parse_chdb(text)
    if scheme == "http":
        return _parse_http(text, "http")
    if scheme == "https":
        return _parse_http(text, "https")
    raise ValueError(f"has unsupported scheme {scheme!r}; use chdb, http or https")


def _parse_chdb(text: str) -> ClickHouseTarget:
    parts = urlsplit(text)
    if parts.netloc:
        raise ValueError(
            "chdb DSN must name an absolute folder with three slashes, e.g. chdb:///var/lib/llmtap"
        )
    path = unquote(parts.path)
    if not path.startswith("/") or path == "/":
        raise ValueError("chdb DSN must name an absolute folder, e.g. chdb:///var/lib/llmtap")
    database = _single_query_value(parts.query, "database")
    return ClickHouseTarget(kind="chdb", path=path.rstrip("/"), database=database)


def _parse_http(text: str, scheme: Literal["http", "https"]) -> ClickHouseTarget:
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:  # also `host:0`, which urlsplit accepts but no server listens on
        raise ValueError("has a port that is not a number in 1-65535")
    if not parts.hostname:
        raise ValueError(f"{scheme} DSN has no host, e.g. {scheme}://user:password@host:8123/db")
    database = unquote(parts.path.strip("/"))
    if "/" in database:
        raise ValueError("path must be a single database name")
    options = tuple(
        (key, values[-1]) for key, values in parse_qs(parts.query, keep_blank_values=True).items()
    )
    return ClickHouseTarget(
        kind=scheme,
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[scheme],
        username=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        database=database,
        options=options,
    )


def _single_query_value(query: str, key: str) -> str:
    values = parse_qs(query).get(key, [])
    unknown = set(parse_qs(query)) - {key}
    if unknown:
        raise ValueError(f"chdb DSN has unknown parameters: {', '.join(sorted(unknown))}")
    return values[-1] if values else ""
