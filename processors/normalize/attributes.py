"""OTLP attribute values as Python values, and tolerant readers for hostile ones.

Spans are hostile input: token counts arrive as strings, floats or negatives, JSON attributes
are sometimes not JSON, values nest without end. Every reader here returns None (and records a
warning) rather than raising, so one odd attribute never loses a span.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import msgspec
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

MAX_DEPTH = 16
_json_decode = msgspec.json.Decoder().decode  # 2-3x faster than json.loads on message lists
MAX_ATTRIBUTE_TEXT = 65_536  # remaining attributes are kept as text up to this length


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
            self._joined = "".join("\n" + key for key in self.attributes)
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

    def text(self, *keys: str) -> str | None:
        value = self.raw(*keys)
        if value is None:
            return None
        if isinstance(value, str):
            return value or None
        if isinstance(value, bool | int | float):
            return str(value)
        return json.dumps(value, ensure_ascii=False, default=str)

    def integer(self, *keys: str) -> int | None:
        return self._integer(self.raw(*keys), keys[0])

    def _integer(self, value: Any, name: str) -> int | None:
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value.strip())
        else:
            self.warnings.append(f"{name}: not an integer")
            return None
        if number < 0:
            self.warnings.append(f"{name}: negative")
            return None
        return number

    def number(self, *keys: str) -> float | None:
        value = self.raw(*keys)
        if value is None or isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.warnings.append(f"{keys[0]}: not a number")
            return None
        return number if math.isfinite(number) else None

    def flag(self, *keys: str) -> bool | None:
        value = self.raw(*keys)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return None

    def strings(self, *keys: str) -> list[str]:
        value = self.raw(*keys)
        if value is None:
            return []
        if isinstance(value, list):
            return [str(item) for item in value if item is not None]
        if isinstance(value, str):
            parsed = parse_json(value) if value.startswith("[") else None
            if isinstance(parsed, list):
                return [str(item) for item in parsed]
            return [value]
        return [str(value)]

    def structured(self, *keys: str) -> Any:
        """A value that may be a JSON string or already structured (OTel allows both)."""
        value = self.raw(*keys)
        if isinstance(value, str):
            parsed = parse_json(value)
            if parsed is None and value.strip():
                self.warnings.append(f"{keys[0]}: not valid JSON")
            return parsed
        return value

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
        for key, value in self.attributes.items():
            if key in self.used or value is None:
                continue
            text = (
                value
                if isinstance(value, str)
                else json.dumps(value, ensure_ascii=False, default=str)
            )
            result[key] = text[:MAX_ATTRIBUTE_TEXT]
        return result


def parse_json(text: str) -> Any:
    try:
        return _json_decode(text)
    except (msgspec.DecodeError, RecursionError):
        return None


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
