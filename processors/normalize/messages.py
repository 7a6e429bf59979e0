"""Chat messages, tool calls and retrieved documents from every shape instrumentations use.

Shapes handled: OTel GenAI typed parts (``[{"role", "parts": [{"type": "text", "content"}]}]``),
OpenAI-style dicts (``{"role", "content", "tool_calls"}``), indexed flat attributes
(``gen_ai.prompt.0.role``, ``llm.input_messages.0.message.content``) and event bodies.
"""

from __future__ import annotations

import json
import math
from typing import Any

from llmtap.processors.normalize.attributes import as_text, parse_json
from llmtap.schemas.llm_span import Message, RetrievedDocument, ToolCall


def messages_from_json(value: Any, default_role: str = "user") -> list[Message]:
    """Messages from a parsed JSON value: a list of messages, one message, or plain text."""
    if value is None:
        return []
    if isinstance(value, str):
        return [Message(role=default_role, content=value)] if value else []
    if isinstance(value, dict):
        if isinstance(value.get("messages"), list):  # a request body: {"messages": [...]}
            return messages_from_json(value["messages"], default_role)
        return [message] if (message := message_from_dict(value, default_role)) else []
    if isinstance(value, list):
        messages = []
        for item in value:
            if isinstance(item, dict):
                message = message_from_dict(item, default_role)
                if message is not None:
                    messages.append(message)
            elif isinstance(item, str):
                messages.append(Message(role=default_role, content=item))
        return messages
    return []


def message_from_dict(item: dict[str, Any], default_role: str = "user") -> Message | None:
    role = str(item.get("role") or default_role)
    texts: list[str] = []
    tool_calls: list[ToolCall] = []
    tool_call_id = _text(
        item.get("tool_call_id") or item.get("id") if role == "tool" else item.get("tool_call_id")
    )
    parts = item.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text" or (kind is None and "content" in part):
                if (text := _text(part.get("content"))) is not None:
                    texts.append(text)
            elif kind == "tool_call":
                tool_calls.append(
                    _tool_call(part.get("name"), part.get("id"), part.get("arguments"))
                )
            elif kind == "tool_call_response":
                tool_call_id = _text(part.get("id")) or tool_call_id
                if (text := _text(part.get("response", part.get("result")))) is not None:
                    texts.append(text)
            elif kind == "reasoning":
                continue  # model's thinking is not the answer text
    content = item.get("content")
    if isinstance(content, list):  # OpenAI content parts: [{"type": "text", "text": ...}]
        for part in content:
            if isinstance(part, dict) and (text := _text(part.get("text") or part.get("content"))):
                texts.append(text)
            elif isinstance(part, str):
                texts.append(part)
    elif content is not None and (text := _text(content)) is not None:
        texts.append(text)
    message_payload = item.get("message")  # gen_ai.choice body: {"message": {...}}
    if isinstance(message_payload, dict) and not texts and not tool_calls:
        nested = message_from_dict(message_payload, role if "role" in item else "assistant")
        if nested is not None:
            finish = _text(item.get("finish_reason")) or nested.finish_reason
            return Message(
                role=nested.role,
                content=nested.content,
                tool_calls=nested.tool_calls,
                tool_call_id=nested.tool_call_id,
                finish_reason=finish,
            )
    calls = item.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict):
            function = call["function"] if isinstance(call.get("function"), dict) else call
            tool_calls.append(
                _tool_call(function.get("name"), call.get("id"), function.get("arguments"))
            )
    if not texts and not tool_calls and tool_call_id is None:
        return None
    return Message(
        role=role,
        content="\n".join(texts) if texts else None,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id,
        finish_reason=_text(item.get("finish_reason")),
    )


def messages_from_indexed(groups: dict[int, dict[str, Any]], prefix: str = "") -> list[Message]:
    """Flattened messages: {0: {"role": .., "content": .., "tool_calls.0.name": ..}}.

    ``prefix`` is stripped from keys first (OpenInference nests under ``message.``).
    """
    messages = []
    for fields in groups.values():
        if prefix:
            fields = {key.removeprefix(prefix): value for key, value in fields.items()}
        texts = []
        if (content := _text(fields.get("content"))) is not None:
            texts.append(content)
        contents: dict[int, str] = {}
        calls: dict[int, dict[str, Any]] = {}
        for key, value in fields.items():
            head, _, rest = key.partition(".")
            if head in ("contents", "tool_calls"):
                index_text, _, field = rest.partition(".")
                if not index_text.isdigit():
                    continue
                if head == "contents" and field.endswith("text"):
                    contents[int(index_text)] = str(value)
                elif head == "tool_calls":
                    field = field.removeprefix("tool_call.").removeprefix("function.")
                    calls.setdefault(int(index_text), {})[field] = value
        texts.extend(text for _, text in sorted(contents.items()))
        tool_calls = [
            _tool_call(call.get("name"), call.get("id"), call.get("arguments"))
            for _, call in sorted(calls.items())
        ]
        role = _text(fields.get("role")) or "user"
        if not texts and not tool_calls:
            continue
        messages.append(
            Message(
                role=role,
                content="\n".join(texts) if texts else None,
                tool_calls=tool_calls,
                tool_call_id=_text(fields.get("tool_call_id")),
                finish_reason=_text(fields.get("finish_reason")),
            )
        )
    return messages


def documents_from_json(value: Any) -> list[RetrievedDocument]:
    if isinstance(value, dict):
        value = value.get("documents", [value])
    if not isinstance(value, list):
        return []
    documents = []
    for item in value:
        if isinstance(item, str):
            documents.append(RetrievedDocument(content=item))
        elif isinstance(item, dict):
            documents.append(
                RetrievedDocument(
                    id=_text(item.get("id")),
                    content=_text(
                        item.get("content") or item.get("text") or item.get("page_content")
                    ),
                    score=_float(item.get("score")),
                )
            )
    return documents


def documents_from_indexed(groups: dict[int, dict[str, Any]]) -> list[RetrievedDocument]:
    """OpenInference: retrieval.documents.N.document.{id,content,score}."""
    return [
        RetrievedDocument(
            id=_text(fields.get("document.id")),
            content=_text(fields.get("document.content")),
            score=_float(fields.get("document.score")),
        )
        for fields in groups.values()
    ]


def instructions_text(value: Any) -> str | None:
    """gen_ai.system_instructions: a list of parts, or text."""
    if value is None:
        return None
    if isinstance(value, list):
        texts = [
            text
            for part in value
            if (text := _text(part.get("content") if isinstance(part, dict) else part)) is not None
        ]
        return "\n".join(texts) or None
    return _text(value)


def last_text(messages: list[Message], role: str) -> str | None:
    for message in reversed(messages):
        if message.role == role and message.content:
            return message.content
    return None


def first_text(messages: list[Message]) -> str | None:
    for message in messages:
        if message.content:
            return message.content
    return None


def _tool_call(name: Any, call_id: Any, arguments: Any) -> ToolCall:
    if isinstance(arguments, dict | list):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return ToolCall(name=_text(name) or "unknown", id=_text(call_id), arguments=_text(arguments))


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    return as_text(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float
        return None
    return number if math.isfinite(number) else None


def parse_maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        parsed = parse_json(value)
        return value if parsed is None else parsed
    return value
