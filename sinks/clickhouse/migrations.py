"""ClickHouse schema migrations: numbered SQL templates, rendered for one node or a cluster.

The files are ``schemas/clickhouse/NNNN_description.sql`` (installed as package data of
``llmtap.schemas``). Each is a template: ``{{database}}``, ``{{on_cluster}}``, ``{{table NAME}}``
and ``{{engine ...}}`` placeholders and ``-- distributed:`` / ``-- retention:`` directives,
described in ``schemas/clickhouse/README.md``. The same file renders to plain MergeTree tables on
one node, or to ``ON CLUSTER`` DDL with ``Replicated*MergeTree`` ``<table>_local`` tables behind
``Distributed`` tables on a cluster. Only the database and cluster names, both checked against a
strict identifier pattern, come from outside the files; nothing else is put into SQL.

:class:`Migrator` applies pending files in version order and records each one in
``<database>.llmtap_schema_migrations`` with the sha256 of its template text. It refuses to run
when a recorded file changed or disappeared: released migrations are never edited. After the
files it sets the retention TTL of every table with a ``-- retention:`` directive.

Two runs at the same time (two ``llmtap migrate``, or two services starting) are safe:

- every statement is idempotent (``IF NOT EXISTS``), so a statement both runs execute changes
  nothing the second time, and the retention ALTERs are only issued when the TTL differs;
- both runs record a version with the same ``insert_deduplication_token`` (version and checksum),
  which the migrations table deduplicates (``non_replicated_deduplication_window`` on one node,
  replicated deduplication on a cluster), so a version is recorded once;
- the table is a ``ReplacingMergeTree`` ordered by version, read with ``FINAL``, so a duplicate
  record that slipped past deduplication still reads as one.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING, Literal, NamedTuple

from llmtap.errors import LlmtapError

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

MIGRATIONS_TABLE = "llmtap_schema_migrations"
DEFAULT_RETENTION_DAYS = 30

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9]+(?:_[a-z0-9]+)*)\.sql")
# Used with fullmatch: "$" would also accept a name that ends in a newline.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLUSTER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# The optional leading space lets an empty {{on_cluster}} vanish without leaving a double space.
_PLACEHOLDER = re.compile(r"( ?)\{\{(.*?)\}\}")
_DIRECTIVE = re.compile(r"^--\s*([a-z][a-z_]*):(.*)$")
_ENGINE = re.compile(
    r"((?:Replacing|Summing|Aggregating|Collapsing|VersionedCollapsing|Coalescing)?MergeTree)"
    r"(?:\((.*)\))?",
    re.DOTALL,
)
_DDL = re.compile(r"^(CREATE|ALTER|DROP|RENAME|TRUNCATE|EXCHANGE)\b", re.IGNORECASE)
_CREATE_TABLE = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\b", re.IGNORECASE)
_TTL_CLAUSE = re.compile(r"\sTTL\s+(.*?)(?:\s+SETTINGS\s|$)", re.DOTALL)

DIRECTIVES = ("distributed", "retention")


class MigrationError(LlmtapError):
    """A migration could not be loaded or applied."""


class MigrationTemplateError(MigrationError):
    """A migration file breaks the naming or template rules (names the file and line)."""


class MigrationIntegrityError(MigrationError):
    """The recorded migrations disagree with the files: one was edited or removed after release."""


# -- templates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """Where the rendered SQL runs: a database on one node, or on every node of a cluster."""

    database: str
    cluster: str | None = None

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.database):
            raise MigrationError(
                f"Invalid ClickHouse database name {self.database!r}: use letters, digits and _."
            )
        if self.cluster is not None and not _CLUSTER_NAME.fullmatch(self.cluster):
            raise MigrationError(
                f"Invalid ClickHouse cluster name {self.cluster!r}: use letters, digits, _ and -."
            )

    @property
    def on_cluster(self) -> str:
        return f"ON CLUSTER '{self.cluster}'" if self.cluster else ""

    def storage_table(self, table: str) -> str:
        """The table that holds the rows: ``<table>_local`` on a cluster."""
        return f"{table}_local" if self.cluster else table


@dataclass(frozen=True)
class Statement:
    """One statement of a template, as written."""

    line: int  # where its first line of SQL is in the file (1-based)
    template: str  # without full-line comments and without the final ';'
    creates_table: str | None  # NAME when it is CREATE TABLE {{table NAME}}


@dataclass(frozen=True)
class DistributedDirective:
    table: str
    sharding_key: str


@dataclass(frozen=True)
class RetentionDirective:
    table: str
    column: str


class RenderedStatement(NamedTuple):
    sql: str
    line: int  # where the template statement starts in its file (1-based)


@dataclass(frozen=True)
class Migration:
    """One migration file, parsed and checked; render it for a topology with :meth:`render`."""

    version: int
    name: str  # the file name without .sql, e.g. 0001_core
    checksum: str  # sha256 (hex) of the template text
    statements: tuple[Statement, ...]
    distributed: tuple[DistributedDirective, ...]
    retention: tuple[RetentionDirective, ...]

    @property
    def filename(self) -> str:
        return f"{self.name}.sql"

    def render(self, topology: Topology) -> list[RenderedStatement]:
        """The statements to execute, in order; on a cluster each sharded table's Distributed
        table comes right after the statement that creates its local table."""
        sharding = {directive.table: directive.sharding_key for directive in self.distributed}
        rendered = []
        for statement in self.statements:
            sql = _render_text(statement, topology, self.filename)
            rendered.append(RenderedStatement(sql, statement.line))
            if topology.cluster and statement.creates_table is not None:
                sql = _distributed_table(statement.creates_table, sharding, topology)
                rendered.append(RenderedStatement(sql, statement.line))
        return rendered


def checksum(template: str) -> str:
    """The sha256 of a migration's template text, as recorded when it is applied."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def parse_migration(filename: str, template: str) -> Migration:
    """Parse and check one template; raises MigrationTemplateError naming file and line."""
    match = _FILE_NAME.fullmatch(filename)
    if match is None:
        raise MigrationTemplateError(
            f"{filename}: migration files are named NNNN_description.sql (four digits, then "
            "lowercase words joined by _), e.g. 0003_add_span_tags.sql."
        )
    version = int(match.group(1))
    if version == 0:
        raise MigrationTemplateError(f"{filename}: versions start at 0001.")
    statements: list[Statement] = []
    distributed: dict[str, DistributedDirective] = {}
    retention: dict[str, RetentionDirective] = {}
    buffer: list[str] = []
    first_line = 0
    for number, line in enumerate(template.splitlines(), start=1):
        stripped = line.strip()
        directive = _DIRECTIVE.match(stripped)
        if directive is not None:
            name, argument = directive.group(1), directive.group(2)
            _add_directive(filename, number, name, argument, distributed, retention)
            continue
        if not stripped or stripped.startswith("--"):
            continue  # full-line comments document the template; they are not rendered
        if not buffer:
            first_line = number
        buffer.append(line.rstrip())
        if stripped.endswith(";"):
            text = "\n".join(buffer).rstrip().removesuffix(";").rstrip()
            statements.append(_check_statement(filename, first_line, text))
            buffer = []
    if buffer:
        raise MigrationTemplateError(
            f"{filename} line {first_line}: the last statement does not end with ';' at the end "
            "of a line."
        )
    if not statements:
        raise MigrationTemplateError(f"{filename}: no statements.")
    _check_directives(filename, statements, distributed)
    return Migration(
        version=version,
        name=filename.removesuffix(".sql"),
        checksum=checksum(template),
        statements=tuple(statements),
        distributed=tuple(distributed.values()),
        retention=tuple(retention.values()),
    )


def migrations_folder() -> Traversable:
    """schemas/clickhouse, wherever llmtap is installed."""
    return importlib.resources.files("llmtap.schemas").joinpath("clickhouse")


def load_migrations(folder: Traversable | None = None) -> list[Migration]:
    """Every ``*.sql`` file of the folder, parsed, in version order; versions run 1, 2, 3..."""
    folder = folder if folder is not None else migrations_folder()
    migrations = []
    for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if not entry.name.endswith(".sql"):
            continue
        try:
            template = entry.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise MigrationTemplateError(f"{entry.name}: not UTF-8 text ({error}).") from None
        migrations.append(parse_migration(entry.name, template))
    check_sequence(migrations)
    return migrations


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Versions must be 1..N without gaps or duplicates (two branches adding the same number
    show up here), and every retention directive must name a table some migration creates."""
    seen: dict[int, str] = {}
    for migration in migrations:
        if migration.version in seen:
            raise MigrationTemplateError(
                f"{seen[migration.version]}.sql and {migration.filename} have the same version "
                f"{migration.version:04d}; renumber the newer one."
            )
        seen[migration.version] = migration.name
    for expected, version in enumerate(sorted(seen), start=1):
        if version != expected:
            raise MigrationTemplateError(
                f"Migration versions must run 0001, 0002, ... without gaps: {expected:04d} is "
                f"missing before {seen[version]}.sql."
            )
    created = {s.creates_table for m in migrations for s in m.statements if s.creates_table}
    for migration in migrations:
        for directive in migration.retention:
            if directive.table not in created:
                raise MigrationTemplateError(
                    f"{migration.filename}: '-- retention: {directive.table} ...' names a table "
                    "that no migration creates with CREATE TABLE {{table " + directive.table + "}}."
                )


def render_script(statements: Iterable[tuple[str, Sequence[str]]]) -> str:
    """SQL text for review: each group under a ``-- heading`` line, statements ending in ';'."""
    parts = []
    for heading, sqls in statements:
        if sqls:
            parts.append(f"-- {heading}\n" + "".join(f"{sql};\n" for sql in sqls))
    return "\n".join(parts)


def render_schema(
    topology: Topology,
    retention_days: int | None = DEFAULT_RETENTION_DAYS,
    migrations: Sequence[Migration] | None = None,
) -> str:
    """Everything a first run on an empty database executes, as one script for review."""
    migrations = migrations if migrations is not None else load_migrations()
    groups: list[tuple[str, Sequence[str]]] = [("bootstrap", bootstrap_statements(topology))]
    for migration in migrations:
        groups.append((migration.filename, [s.sql for s in migration.render(topology)]))
    if retention_days is not None:
        statements = [
            f"ALTER TABLE {topology.database}.{topology.storage_table(table)}"
            f"{_spaced(topology.on_cluster)} MODIFY TTL {ttl_expression(column, retention_days)}"
            for table, column in retention_columns(migrations).items()
        ]
        groups.append((f"retention ({retention_days} days)", statements))
    return render_script(groups)


def bootstrap_statements(topology: Topology) -> list[str]:
    """The database and the migrations table, created before the first migration."""
    table = f"{topology.database}.{MIGRATIONS_TABLE}"
    if topology.cluster:
        # One replica group over the whole cluster ({shard}-{replica} is unique), so every node
        # sees every record whichever node a run connected to.
        path = f"/clickhouse/tables/llmtap_cluster_wide/{topology.database}/{MIGRATIONS_TABLE}"
        engine = f"ReplicatedReplacingMergeTree('{path}', '{{shard}}-{{replica}}', applied_at)"
    else:
        engine = "ReplacingMergeTree(applied_at)"
    on_cluster = _spaced(topology.on_cluster)
    return [
        f"CREATE DATABASE IF NOT EXISTS {topology.database}{on_cluster}",
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster}\n"
        "(\n"
        "    version UInt32,\n"
        "    name String,\n"
        "    checksum String,\n"
        "    applied_at DateTime64(3) DEFAULT now64(3)\n"
        ")\n"
        f"ENGINE = {engine}\n"
        "ORDER BY version\n"
        "SETTINGS non_replicated_deduplication_window = 1000",
    ]


def retention_columns(migrations: Iterable[Migration]) -> dict[str, str]:
    """Each retention table's time column; a later migration may move it."""
    return {d.table: d.column for migration in migrations for d in migration.retention}


def ttl_expression(column: str, days: int) -> str:
    """The table TTL for ``days`` of retention, spelled as ClickHouse prints it back."""
    return f"toDateTime({column}) + toIntervalDay({days})"


def _add_directive(
    filename: str,
    line: int,
    name: str,
    argument: str,
    distributed: dict[str, DistributedDirective],
    retention: dict[str, RetentionDirective],
) -> None:
    where = f"{filename} line {line}"
    words = argument.split()
    if name == "distributed":
        sharding = argument.strip().partition(" ")[2].strip()
        if not words or not _IDENTIFIER.fullmatch(words[0]) or not sharding.startswith("sharding="):
            raise MigrationTemplateError(
                f"{where}: write '-- distributed: TABLE sharding=EXPRESSION', e.g. "
                "'-- distributed: llm_spans sharding=cityHash64(trace_id)'."
            )
        key = sharding.removeprefix("sharding=").strip()
        if not key:
            raise MigrationTemplateError(f"{where}: the sharding expression is empty.")
        if words[0] in distributed:
            raise MigrationTemplateError(f"{where}: a second distributed directive for {words[0]}.")
        distributed[words[0]] = DistributedDirective(words[0], key)
    elif name == "retention":
        if len(words) != 2 or not all(_IDENTIFIER.fullmatch(word) for word in words):
            raise MigrationTemplateError(
                f"{where}: write '-- retention: TABLE TIME_COLUMN', e.g. "
                "'-- retention: llm_spans timestamp'."
            )
        retention[words[0]] = RetentionDirective(words[0], words[1])
    else:
        raise MigrationTemplateError(
            f"{where}: unknown directive '-- {name}:' (known: {', '.join(DIRECTIVES)}). A comment "
            "that is not a directive must not start with a lowercase word and a colon."
        )


def _check_statement(filename: str, line: int, text: str) -> Statement:
    where = f"{filename} line {line}"
    placeholders = [_parse_placeholder(inner, where) for _, inner in _PLACEHOLDER.findall(text)]
    leftover = _PLACEHOLDER.sub("", text)
    if "{{" in leftover or "}}" in leftover:
        raise MigrationTemplateError(f"{where}: unbalanced '{{{{' or '}}}}' in the statement.")
    names = [name for name, _ in placeholders]
    tables = [argument for name, argument in placeholders if name == "table"]
    creates_table = None
    if _CREATE_TABLE.match(text):
        if not tables:
            raise MigrationTemplateError(
                f"{where}: CREATE TABLE must name its table as {{{{table NAME}}}} so that it "
                "becomes NAME_local plus a Distributed table on a cluster."
            )
        if "engine" not in names:
            raise MigrationTemplateError(
                f"{where}: CREATE TABLE must give its engine as {{{{engine ...}}}} so that it "
                "becomes Replicated on a cluster."
            )
        creates_table = tables[0]
    elif "engine" in names:
        raise MigrationTemplateError(f"{where}: {{{{engine ...}}}} belongs in a CREATE TABLE.")
    if _DDL.match(text) and "on_cluster" not in names:
        raise MigrationTemplateError(
            f"{where}: DDL must carry {{{{on_cluster}}}} after the object name, so that it runs "
            "on every node of a cluster."
        )
    return Statement(line=line, template=text, creates_table=creates_table)


def _parse_placeholder(inner: str, where: str) -> tuple[str, str]:
    """(name, argument) of a placeholder's text; raises on anything not in the template language."""
    name, _, argument = inner.strip().partition(" ")
    argument = argument.strip()
    if name in ("database", "on_cluster") and not argument:
        return name, ""
    if name == "table" and _IDENTIFIER.fullmatch(argument):
        return name, argument
    if name == "engine" and _ENGINE.fullmatch(argument):
        return name, argument
    raise MigrationTemplateError(
        f"{where}: unknown placeholder {{{{{inner}}}}}; known: {{{{database}}}}, "
        "{{on_cluster}}, {{table NAME}}, {{engine [Replacing|Summing|...]MergeTree[(args)]}}."
    )


def _check_directives(
    filename: str, statements: list[Statement], distributed: dict[str, DistributedDirective]
) -> None:
    created = [statement.creates_table for statement in statements if statement.creates_table]
    for table in created:
        if table not in distributed:
            raise MigrationTemplateError(
                f"{filename}: CREATE TABLE {{{{table {table}}}}} needs a "
                f"'-- distributed: {table} sharding=EXPRESSION' directive (the cluster's "
                "Distributed table and how rows spread over shards)."
            )
    for table in distributed:
        if table not in created:
            raise MigrationTemplateError(
                f"{filename}: '-- distributed: {table} ...' but the file does not create "
                f"{{{{table {table}}}}}."
            )


def _render_text(statement: Statement, topology: Topology, filename: str) -> str:
    where = f"{filename} line {statement.line}"

    def substitute(match: re.Match[str]) -> str:
        space, inner = match.groups()
        name, argument = _parse_placeholder(inner, where)
        if name == "database":
            value = topology.database
        elif name == "on_cluster":
            value = topology.on_cluster
        elif name == "table":
            value = f"{topology.database}.{topology.storage_table(argument)}"
        else:
            value = _engine(argument, statement.creates_table or "", topology)
        return f"{space}{value}" if value else ""

    return _PLACEHOLDER.sub(substitute, statement.template)


def _engine(engine: str, table: str, topology: Topology) -> str:
    if not topology.cluster:
        return engine
    match = _ENGINE.fullmatch(engine)
    assert match is not None  # checked when the template was parsed
    family, arguments = match.groups()
    path = f"'/clickhouse/tables/{{shard}}/{topology.database}/{topology.storage_table(table)}'"
    extra = f", {arguments.strip()}" if arguments and arguments.strip() else ""
    return f"Replicated{family}({path}, '{{replica}}'{extra})"


def _distributed_table(table: str, sharding: dict[str, str], topology: Topology) -> str:
    database, local = topology.database, topology.storage_table(table)
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.{table} {topology.on_cluster} "
        f"AS {database}.{local}\n"
        f"ENGINE = Distributed('{topology.cluster}', '{database}', '{local}', {sharding[table]})"
    )


# -- runner --------------------------------------------------------------------------------------


class AppliedRecord(NamedTuple):
    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    # applied: recorded and unchanged; pending: not recorded yet; changed: the file differs from
    # what was applied; missing: recorded, but no file has that version any more
    state: Literal["applied", "pending", "changed", "missing"]
    applied_at: datetime | None = None


@dataclass(frozen=True)
class RetentionChange:
    table: str  # the logical table name (llm_spans)
    days: int | None  # None: keep forever
    sql: str


@dataclass(frozen=True)
class ApplyReport:
    applied: tuple[Migration, ...]
    retention: tuple[RetentionChange, ...]

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.retention)


class Migrator:
    """Applies the migration files to ``database`` through a clickhouse-connect client.

    ``cluster`` renders every file for that cluster (see the module docstring); ``None`` is a
    single node. ``retention_days`` is set as a TTL on every table with a retention directive
    after the files (``None`` removes the TTL: keep forever).
    """

    def __init__(
        self,
        client: Client,
        database: str,
        cluster: str | None = None,
        *,
        retention_days: int | None = DEFAULT_RETENTION_DAYS,
        migrations: Sequence[Migration] | None = None,
    ) -> None:
        if retention_days is not None and retention_days < 1:
            raise MigrationError(f"retention_days must be at least 1 (got {retention_days}).")
        self._client = client
        self.topology = Topology(database, cluster)
        self.retention_days = retention_days
        self.migrations = list(migrations) if migrations is not None else load_migrations()
        check_sequence(self.migrations)
        self.migrations.sort(key=lambda migration: migration.version)

    @property
    def _migrations_table(self) -> str:
        return f"{self.topology.database}.{MIGRATIONS_TABLE}"

    def status(self) -> list[MigrationStatus]:
        """Every file and every record, in version order, with what state each is in."""
        records = self._applied_records()
        files = {migration.version: migration for migration in self.migrations}
        statuses = []
        for version in sorted(files.keys() | records.keys()):
            record, migration = records.get(version), files.get(version)
            if migration is None:
                assert record is not None
                statuses.append(MigrationStatus(version, record.name, "missing", record.applied_at))
            elif record is None:
                statuses.append(MigrationStatus(version, migration.name, "pending"))
            elif record.checksum != migration.checksum:
                statuses.append(
                    MigrationStatus(version, migration.name, "changed", record.applied_at)
                )
            else:
                statuses.append(
                    MigrationStatus(version, migration.name, "applied", record.applied_at)
                )
        return statuses

    def plan(self) -> list[Migration]:
        """The migrations not applied yet, in order; refuses if an applied one was altered."""
        records = self._applied_records()
        self._check_integrity(records)
        return [migration for migration in self.migrations if migration.version not in records]

    def apply(self, progress: Callable[[str], None] | None = None) -> ApplyReport:
        """Apply what is pending, then the retention; calls ``progress`` once per change."""
        report = progress or (lambda message: None)
        if not self._migrations_table_exists():
            for sql in bootstrap_statements(self.topology):
                self._client.command(sql)
        pending = self.plan()
        for migration in pending:
            rendered = migration.render(self.topology)
            for statement in rendered:
                self._execute(statement, migration.filename)
            self._record(migration)
            count = len(rendered)
            report(f"applied {migration.name} ({count} statement{'s' if count != 1 else ''})")
        changes = self.retention_changes()
        for change in changes:
            self._execute(RenderedStatement(change.sql, 0), "retention")
            kept = f"{change.days} days" if change.days is not None else "forever"
            report(f"retention {change.table}: keep {kept}")
        return ApplyReport(applied=tuple(pending), retention=tuple(changes))

    def dry_run(self) -> str:
        """The SQL :meth:`apply` would run now, for review; empty when up to date."""
        bootstrap = [] if self._migrations_table_exists() else bootstrap_statements(self.topology)
        groups: list[tuple[str, Sequence[str]]] = [("bootstrap", bootstrap)]
        for migration in self.plan():
            sqls = [statement.sql for statement in migration.render(self.topology)]
            groups.append((f"{migration.filename} (sha256 {migration.checksum})", sqls))
        groups.append(("retention", [change.sql for change in self.retention_changes()]))
        return render_script(groups)

    def retention_changes(self) -> list[RetentionChange]:
        """The TTL changes that make every retention table match ``retention_days``."""
        current = self._current_ttls()
        changes = []
        for table, column in retention_columns(self.migrations).items():
            storage = f"{self.topology.database}.{self.topology.storage_table(table)}"
            alter = f"ALTER TABLE {storage}{_spaced(self.topology.on_cluster)}"
            if self.retention_days is None:
                if current.get(table) is not None:
                    changes.append(RetentionChange(table, None, f"{alter} REMOVE TTL"))
                continue
            wanted = ttl_expression(column, self.retention_days)
            if current.get(table) != wanted:
                sql = f"{alter} MODIFY TTL {wanted}"
                changes.append(RetentionChange(table, self.retention_days, sql))
        return changes

    def _current_ttls(self) -> dict[str, str | None]:
        """The table TTL expression of each existing retention table, as ClickHouse prints it."""
        storage_names = {
            self.topology.storage_table(table): table
            for table in retention_columns(self.migrations)
        }
        result = self._client.query(
            "SELECT name, engine_full FROM system.tables "
            "WHERE database = {database:String} AND name IN {names:Array(String)}",
            parameters={"database": self.topology.database, "names": sorted(storage_names)},
        )
        ttls: dict[str, str | None] = {}
        for name, engine_full in result.result_rows:
            match = _TTL_CLAUSE.search(engine_full)
            ttls[storage_names[name]] = match.group(1).strip() if match else None
        return ttls

    def _migrations_table_exists(self) -> bool:
        result = self._client.query(
            "SELECT count() FROM system.tables WHERE database = {database:String} "
            "AND name = {table:String}",
            parameters={"database": self.topology.database, "table": MIGRATIONS_TABLE},
        )
        return bool(result.result_rows[0][0])

    def _applied_records(self) -> dict[int, AppliedRecord]:
        if not self._migrations_table_exists():
            return {}
        result = self._client.query(
            f"SELECT version, name, checksum, applied_at FROM {self._migrations_table} FINAL "  # noqa: S608 (validated identifiers)
            "ORDER BY version"
        )
        return {row[0]: AppliedRecord(*row) for row in result.result_rows}

    def _check_integrity(self, records: dict[int, AppliedRecord]) -> None:
        files = {migration.version: migration for migration in self.migrations}
        for version, record in sorted(records.items()):
            migration = files.get(version)
            if migration is None:
                raise MigrationIntegrityError(
                    f"Migration {record.name}.sql is recorded as applied in "
                    f"{self._migrations_table} but no migration file has version {version:04d}. "
                    "Restore the file (migrations are never removed once released) or run an "
                    "llmtap version that has it."
                )
            if record.checksum != migration.checksum:
                raise MigrationIntegrityError(
                    f"Migration {migration.filename} changed after it was applied: its sha256 is "
                    f"{migration.checksum[:12]}..., {self._migrations_table} recorded "
                    f"{record.checksum[:12]}... Released migrations are never edited: restore "
                    "the file and put the change in a new migration."
                )

    def _execute(self, statement: RenderedStatement, filename: str) -> None:
        try:
            self._client.command(statement.sql)
        except Exception as error:
            where = f"{filename} line {statement.line}" if statement.line else filename
            first_line = (str(error).strip() or type(error).__name__).splitlines()[0][:500]
            sql_start = statement.sql.splitlines()[0]
            raise MigrationError(
                f"{where}: ClickHouse refused `{sql_start} ...`: {first_line}"
            ) from error

    def _record(self, migration: Migration) -> None:
        self._client.insert(
            MIGRATIONS_TABLE,
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
            database=self.topology.database,
            settings={
                "insert_deduplicate": 1,
                "insert_deduplication_token": f"llmtap-migration-{migration.version}-"
                f"{migration.checksum}",
                # An asynchronous insert would skip deduplication (async_insert_deduplicate=0).
                "async_insert": 0,
            },
        )


def _spaced(clause: str) -> str:
    return f" {clause}" if clause else ""
