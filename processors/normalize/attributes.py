"""OTLP attribute values as Python values, and tolerant readers for hostile ones.

Spans are hostile input: token counts arrive as strings, floats or negatives, JSON attributes
are sometimes not JSON, values nest without end. Every reader here returns None (and records a
warning) rather than raising, so one odd attribute never loses a span.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

MAX_DEPTH = 16
_json_decode = msgspec.json.Decoder().decode  # 2-3x faster than json.loads on message lists
MAX_ATTRIBUTE_TEXT = 65_536  # remaining attributes are kept as text up to this length
MAX_INTEGER = 2**63 - 1  # OTLP integers are int64: a larger count, size or seed is corrupt
# ASCII digits only: str.isdigit() also accepts superscripts, which int() refuses.
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,30}")


def value_of(value: AnyValue, depth: int = 0) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if depth >= MAX_DEPTH:
        return None
    if kind == "array_value":
        return [value_of(item, depth + 1) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: value_of(item.value, depth + 1) for item in value.kvlist_value.values}
    return None


def attributes_of(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {attribute.key: value_of(attribute.value) for attribute in attributes}


class Reader:
    """Reads typed values out of one span's attributes, remembering which keys were used."""

    __slots__ = ("_joined", "attributes", "used", "warnings")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes
        self.used: set[str] = set()
        self.warnings: list[str] = []
        self._joined: str | None = None

    def joined_keys(self) -> str:
        """All keys, each after a newline, so a prefix test is one substring search in C."""
        if self._joined is None:
            self._joined = "\n" + "\n".join(self.attributes) if self.attributes else ""
        return self._joined

    def has_prefix(self, prefix: str) -> bool:
        return "\n" + prefix in self.joined_keys()

    def raw(self, *keys: str) -> Any:
        """The first present value among ``keys``; all of them count as used."""
        attributes = self.attributes
        found = None
        for key in keys:
            if key in attributes:
                self.used.add(key)
                if found is None:
                    found = attributes[key]
        return found

    def _integer(self, value: Any, name: str) -> int | None:
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _INTEGER_TEXT.fullmatch(text := value.strip()):
            number = int(text)
        else:
            self.warnings.append(f"{name}: not an integer")
            return None
        if number < 0:
            self.warnings.append(f"{name}: negative")
            return None
        if number > MAX_INTEGER:
            self.warnings.append(f"{name}: too large")
            return None
        return number

    def structured(self, *keys: str) -> Any:
        """A value that may be a JSON string or already structured (OTel allows both)."""
        value = self.raw(*keys)
        return None if value is None else _convert_structured(self, value, keys[0])

    def indexed(self, prefix: str) -> dict[int, dict[str, Any]]:
        """Flattened lists such as ``gen_ai.prompt.0.role``: {0: {"role": ...}}; marks them used."""
        groups: dict[int, dict[str, Any]] = {}
        if not self.has_prefix(prefix):
            return groups
        start = len(prefix)
        for key, value in self.attributes.items():
            if not key.startswith(prefix):
                continue
            index_text, _, rest = key[start:].partition(".")
            if not index_text.isdigit() or not rest:
                continue
            self.used.add(key)
            groups.setdefault(int(index_text), {})[rest] = value
        return dict(sorted(groups.items()))

    def indexed_prefix(self, prefix: str) -> dict[str, Any]:
        """Keys under a prefix, by their rest: ``a.b.x`` -> {"x": ...}; marks them used."""
        found: dict[str, Any] = {}
        if not self.has_prefix(prefix):
            return found
        for key, value in self.attributes.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                self.used.add(key)
                found[key[len(prefix) :]] = value
        return found

    def remaining(self) -> dict[str, str]:
        """Attributes no mapping used, as text (bounded), for the span's attribute map."""
        result = {}
        used = self.used
        for key, value in self.attributes.items():
            if key in used or value is None:
                continue
            result[key] = as_text(value)[:MAX_ATTRIBUTE_TEXT]
        return result


def parse_json(text: str) -> Any:
    try:
        return _json_decode(text)
    except (msgspec.DecodeError, RecursionError):
        return None


def as_text(value: Any) -> str:
    """Attribute values as text: strings as they are, numbers and booleans as JSON would write
    them, arrays and maps as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False, default=str)


class ScalarFields:
    """Single-value fields read in one pass over a span's attributes (the hot path).

    ``fields`` maps a field name to its conversion ("text", "integer", "number", "flag",
    "strings", "structured", "raw") and its attribute keys in precedence order. One dictionary
    lookup per attribute replaces a lookup per (field, key) pair.
    """

    def __init__(self, fields: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        self._kinds = {field: kind for field, (kind, _) in fields.items()}
        self._lookup = {
            key: (field, rank)
            for field, (_, keys) in fields.items()
            for rank, key in enumerate(keys)
        }

    def read(self, reader: Reader) -> dict[str, Any]:
        best: dict[str, tuple[int, Any, str]] = {}
        lookup = self._lookup
        used = reader.used
        for key, value in reader.attributes.items():
            hit = lookup.get(key)
            if hit is None:
                continue
            used.add(key)
            if value is None:
                continue
            field, rank = hit
            current = best.get(field)
            if current is None or rank < current[0]:
                best[field] = (rank, value, key)
        values: dict[str, Any] = {}
        kinds = self._kinds
        for field, (_, value, key) in best.items():
            kind = kinds[field]
            if kind == "text" and isinstance(value, str):  # the common case, without a call
                if value:
                    values[field] = value
                continue
            converted = _CONVERTERS[kind](reader, value, key)
            if converted is not None:
                values[field] = converted
        return values


def _convert_text(reader: Reader, value: Any, key: str) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _convert_integer(reader: Reader, value: Any, key: str) -> int | None:
    return reader._integer(value, key)


def _convert_number(reader: Reader, value: Any, key: str) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        reader.warnings.append(f"{key}: not a number")
        return None
    return number if math.isfinite(number) else None


def _convert_flag(reader: Reader, value: Any, key: str) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _convert_strings(reader: Reader, value: Any, key: str) -> list[str] | None:
    if isinstance(value, list):
        return [str(item) for item in value if item is not None]
    if isinstance(value, str):
        parsed = parse_json(value) if value.startswith("[") else None
        if isinstance(parsed, list):
            return [str(item) for item in parsed]
        return [value]
    return [str(value)]


def _convert_structured(reader: Reader, value: Any, key: str) -> Any:
    if isinstance(value, str):
        parsed = parse_json(value)
        if parsed is None and value.strip():
            reader.warnings.append(f"{key}: not valid JSON")
        return parsed
    return value


def _convert_raw(reader: Reader, value: Any, key: str) -> Any:
    return value


_CONVERTERS: dict[str, Callable[[Reader, Any, str], Any]] = {
    "text": _convert_text,
    "integer": _convert_integer,
    "number": _convert_number,
    "flag": _convert_flag,
    "strings": _convert_strings,
    "structured": _convert_structured,
    "raw": _convert_raw,
}
