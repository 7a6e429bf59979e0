"""The one way llmtap opens ClickHouse: clickhouse-connect, embedded (chdb) or server (HTTP).

Everything above this module gets a ``clickhouse_connect`` client and cannot tell the two apart.
The embedded engine has one rule that shapes llmtap's embedded mode: a process can hold one
engine data path at a time, and a path can be held by one process at a time. So all roles that
touch the embedded store run inside one process (``llmtap up``), and the factory refuses a
second path with an error that says why, instead of the engine's ``BAD_ARGUMENTS``.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.errors import EmbeddedClickHouseError, ServiceUnavailableError
from llmtap.settings import Settings

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_embedded_lock = threading.Lock()
_embedded_path: str | None = None
_embedded_clients = 0


def open_client(settings: Settings, *, create_database: bool = True) -> Client:
    """Open a client on the configured target; creates the target database if asked."""
    return open_target(settings.clickhouse_target(), create_database=create_database)


def open_target(target: ClickHouseTarget, *, create_database: bool = True) -> Client:
    if target.database and not _IDENTIFIER.match(target.database):
        raise EmbeddedClickHouseError(f"Invalid ClickHouse database name {target.database!r}.")
    client = _open_embedded(target) if target.kind == "chdb" else _open_server(target)
    if target.database:
        try:
            if create_database:
                client.command(f"CREATE DATABASE IF NOT EXISTS `{target.database}`")
            client.database = target.database
        except Exception:
            client.close()
            raise
    return client


def is_embedded(client: Any) -> bool:
    """Whether the client runs the embedded engine (in this process) rather than a server."""
    from clickhouse_connect.driver._chdbclient import ChdbClient

    return isinstance(client, ChdbClient)


def _open_server(target: ClickHouseTarget) -> Client:
    import clickhouse_connect

    try:
        return clickhouse_connect.get_client(
            host=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            secure=target.kind == "https",
            # The database may not exist yet; it is created and selected after connecting.
            database="default",
            connect_timeout=10,
            settings=dict(target.options) or None,
        )
    except Exception as error:
        raise ServiceUnavailableError(
            f"Cannot connect to {target.describe()}: {_first_line(error)}"
        ) from None


def _open_embedded(target: ClickHouseTarget) -> Client:
    global _embedded_path, _embedded_clients
    import clickhouse_connect

    path = str(Path(target.path).resolve())
    with _embedded_lock:
        if _embedded_path is not None and _embedded_clients > 0 and _embedded_path != path:
            raise EmbeddedClickHouseError(
                f"This process already has the embedded ClickHouse at {_embedded_path} open; "
                f"it cannot also open {path} (the engine allows one data path per process). "
                "Run the second store in another process, or use one LLMTAP_CLICKHOUSE__DSN."
            )
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise EmbeddedClickHouseError(
                f"Cannot create the embedded ClickHouse folder {path}: {error.strerror}."
            ) from None
        try:
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        except Exception as error:
            raise _explain_embedded_failure(path, error) from None
        _embedded_path = path
        _embedded_clients += 1
    _release_on_close(client)
    return client


def _release_on_close(client: Client) -> None:
    """Count open embedded clients so the path check knows when the engine is free again."""
    original_close = client.close
    released = False

    def close() -> None:
        global _embedded_clients
        nonlocal released
        try:
            original_close()
        finally:
            with _embedded_lock:
                if not released:
                    released = True
                    _embedded_clients -= 1

    client.close = close  # type: ignore[method-assign]


def _explain_embedded_failure(path: str, error: Exception) -> EmbeddedClickHouseError:
    text = str(error)
    holder = _lock_holder(Path(path))
    if holder is not None or "Cannot lock file" in text:
        return EmbeddedClickHouseError(
            f"The embedded ClickHouse at {path} is in use by another process{holder or ''} "
            "(only one process may open it). Stop that process, query through it, or point "
            "this one at another folder with LLMTAP_DATA_DIR or LLMTAP_CLICKHOUSE__DSN."
        )
    if "Permission denied" in text or "Read-only file system" in text:
        return EmbeddedClickHouseError(
            f"The embedded ClickHouse cannot write to {path}: {_first_line(error)}"
        )
    return EmbeddedClickHouseError(
        f"Cannot open the embedded ClickHouse at {path}: {_first_line(error)}"
    )


def _lock_holder(path: Path) -> str | None:
    """The engine flocks ``<path>/status`` and writes its PID there; the message names it.

    Returns None when nobody holds the lock, else a phrase like " (pid 1234)".
    """
    import fcntl

    status = path / "status"
    try:
        with status.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                match = re.search(rb"PID:\s*(\d+)", handle.read())
                return f" (pid {match.group(1).decode()})" if match else ""
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def check_reachable(settings: Settings) -> str:
    """Open the configured store, run one query, and describe what answered."""
    target = settings.clickhouse_target()
    client = open_target(target, create_database=False)
    try:
        version = client.query("SELECT version()").result_rows[0][0]
    except Exception as error:
        raise ServiceUnavailableError(
            f"{target.describe()} did not answer: {_first_line(error)}"
        ) from None
    finally:
        client.close()
    return f"{target.describe()}, ClickHouse {version}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]
