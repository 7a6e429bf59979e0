"""SQL text is built from constants and reviewed identifiers only; values travel as parameters.

An AST walk over the code that builds SQL finds every value put into SQL text (an f-string, a
``.format`` of a template, a ``%`` or ``+`` with SQL text). A value passes when it is plainly
constant (a literal, a module-level UPPER_CASE name, arithmetic or a choice between those, a
module function called with literals) or when it is listed in REVIEWED with the reason it
cannot hold input. Anything else fails: put the value in a ``{name:Type}`` query parameter, or
review it here. A reviewed entry that no longer occurs fails too, so the list stays short.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SQL_FILES = [
    "llmtap/web/queries.py",
    "llmtap/cli_query.py",
    *sorted(str(path.relative_to(REPO)) for path in (REPO / "sinks/clickhouse").glob("*.py")),
]
# Text that is SQL (or a piece of it) rather than a message.
_SQL = re.compile(
    r"\b(SELECT|INSERT|ALTER|CREATE|DROP|FROM|WHERE|GROUP BY|ORDER BY|LIMIT|TTL|ENGINE)\b"
    r"|\{\w+:[A-Z]\w*|fromUnixTimestamp64Milli|toDateTime\(|toStartOfInterval"
)
_IDENTIFIERS = "identifiers validated by Topology (letters, digits, _, -) or from shipped files"
REVIEWED: dict[str, dict[str, str]] = {
    "llmtap/web/queries.py": {
        "column": "_in_range/_bucket_ms parameter; IDENTIFIER_FUNCTIONS checks every call",
        "table": "_cost_source: a constant table name",
        "key": "_cost_source: a column from the fixed COST_DIMENSIONS map",
        "where": "_cost_source: _FILTERS or _TENANT_FILTER",
        "_window_choice(table)": "_WINDOW_CHOICE of a constant table name",
    },
    "llmtap/cli_query.py": {
        "select": "_group_columns: columns and names from the fixed --by maps",
        "', '.join(names)": "_groups: names checked against the fixed --by maps",
        "table": "one of two constant table names",
        "usage_sums": "one of two constant strings",
        "in_range": "constant text",
        "conditions": "constant text, plus a constant clause",
    },
    "sinks/clickhouse/reprice.py": {
        "where": "constant clauses; values are parameters",
        "table": "_WindowCorrections._write: llm_aggregates or llm_user_aggregates, constants",
    },
    "sinks/clickhouse/span_json.py": {
        "table": "the caller's constant table name (SPANS_TABLE)",
        "', '.join(SPAN_COLUMNS)": "the table's constant column names",
        "', '.join(_SELECT.values())": "this module's constant expressions; values are parameters",
    },
    "sinks/clickhouse/migrations.py": {
        name: _IDENTIFIERS
        for name in (
            "column",
            "days",
            "database",
            "table",
            "local",
            "engine",
            "on_cluster",
            "storage",
            "alter",
            "wanted",
            "sharding[table]",
            "topology.cluster",
            "topology.database",
            "topology.on_cluster",
            "topology.storage_table(table)",
            "_spaced(topology.on_cluster)",
            "_spaced(self.topology.on_cluster)",
            "ttl_expression(column, retention_days)",
            "self._migrations_table",
        )
    },
}
# Functions whose parameters reach SQL text: every call must pass literals.
IDENTIFIER_FUNCTIONS = {"llmtap/web/queries.py": {"_in_range", "_bucket_ms"}}


class _Module:
    def __init__(self, tree: ast.Module) -> None:
        self.constants = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name) and target.id.lstrip("_").isupper()
        }
        self.functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        self.templates = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign) and _is_sql(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        }

    def is_constant(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            return node.id in self.constants
        if isinstance(node, ast.BinOp):
            return self.is_constant(node.left) and self.is_constant(node.right)
        if isinstance(node, ast.IfExp):
            return self.is_constant(node.body) and self.is_constant(node.orelse)
        if isinstance(node, ast.Call):
            return (
                isinstance(node.func, ast.Name)
                and node.func.id in self.functions
                and all(isinstance(argument, ast.Constant) for argument in node.args)
                and not node.keywords
            )
        return False


def _is_sql(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return bool(_SQL.search(node.value))
    if isinstance(node, ast.JoinedStr):
        return any(_is_sql(value) for value in node.values if isinstance(value, ast.Constant))
    return False


def interpolations(source: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(values put into SQL text that are not plainly constant, identifier calls with values)."""
    tree = ast.parse(source)
    module = _Module(tree)
    in_raise = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise)
        for inner in ast.walk(node)
    }
    found: list[tuple[int, str]] = []
    calls: list[tuple[int, str]] = []

    def check(node: ast.expr) -> None:
        if not module.is_constant(node):
            found.append((node.lineno, ast.unparse(node)))

    for node in ast.walk(tree):
        if id(node) in in_raise:  # error messages, not SQL
            continue
        if isinstance(node, ast.JoinedStr) and _is_sql(node):
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    check(value.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            template = node.func.value
            if node.func.attr == "format" and (
                _is_sql(template)
                or (isinstance(template, ast.Name) and template.id in module.templates)
            ):
                for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                    check(argument)
        elif (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Mod | ast.Add)
            and (_is_sql(node.left) or _is_sql(node.right))
        ):
            for side in (node.left, node.right):
                if not _is_sql(side):
                    check(side)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            literal = all(isinstance(argument, ast.Constant) for argument in node.args)
            if not literal or node.keywords:
                calls.append((node.lineno, node.func.id))
    return found, calls


def test_sql_text_holds_constants_and_reviewed_identifiers_only() -> None:
    problems = []
    used: set[tuple[str, str]] = set()
    for name in SQL_FILES:
        found, calls = interpolations((REPO / name).read_text())
        reviewed = REVIEWED.get(name, {})
        for line, expression in found:
            if expression in reviewed:
                used.add((name, expression))
            else:
                problems.append(f"{name}:{line}: {expression!r} is put into SQL text")
        for line, function in calls:
            if function in IDENTIFIER_FUNCTIONS.get(name, set()):
                problems.append(f"{name}:{line}: {function}() takes a column name: pass a literal")
    stale = {(name, expression) for name in REVIEWED for expression in REVIEWED[name]} - used
    problems += [
        f"{name}: {expression!r} is reviewed but no longer used"
        for name, expression in sorted(stale)
    ]
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_value_in_sql_text() -> None:
    found, _ = interpolations(
        "LIMIT = 10\n"
        "def bad(tenant, flag):\n"
        "    a = f\"SELECT * FROM llm_spans WHERE tenant = '{tenant}' LIMIT {LIMIT}\"\n"
        '    b = "SELECT * FROM t WHERE x = %s" % tenant\n'
        '    c = "SELECT 1 FROM t WHERE " + tenant\n'
        '    d = "SELECT {v} FROM t".format(v=tenant)\n'
        '    e = "SELECT 1 FROM t" + (" WHERE x" if flag else "")\n'
        '    raise ValueError(f"CREATE TABLE failed for {tenant}")\n'
    )
    assert found == [(3, "tenant"), (4, "tenant"), (5, "tenant"), (6, "tenant")]
