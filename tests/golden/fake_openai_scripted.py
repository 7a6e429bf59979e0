"""The fake OpenAI server of ``tests/fake_openai.py``, with scripted answers for golden captures.

``tests.fake_openai.FakeOpenAI`` always answers with one reply and never calls a tool. Golden
inputs need more of what real traffic holds, so this subclass answers chat completions from a
small script instead:

- a request with ``tools`` whose last message is not a tool result gets ``tool_calls`` (several
  at once unless ``parallel_tool_calls`` is false or ``tool_choice`` names one), streamed as
  tool-call deltas when ``"stream": true``;
- a request whose last message is a tool result gets an answer built on those results;
- any other request gets the support reply its last user message asks for (see ``REPLIES``);
- a server made with ``failures`` answers its first chat requests with those API errors.

``created`` is fixed so that libraries that record the whole response body (OpenInference's
``output.value``) give the same bytes on every capture. Embeddings are the base server's.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.fake_openai import (
    CACHED_TOKEN_FRACTION,
    MODEL_SNAPSHOTS,
    REPLY,
    SYSTEM_FINGERPRINT,
    Exchange,
    FakeOpenAI,
    Usage,
    _Handler,
    _message_text,
    _Server,
    _State,
    count_tokens,
)

CREATED = 1767225600  # 2026-01-01T00:00:00Z, the base the capture also moves span times to
REASONING_TOKENS = 64  # what the base server reports for "o*" reasoning models

# (words in the last user message, reply): the first entry whose words all occur wins.
REPLIES: list[tuple[tuple[str, ...], str]] = [
    (
        ("return",),
        "Yes. Opened books can be returned within 30 days of delivery as long as they are "
        "undamaged: start the return from Orders > Return an item and print the prepaid label. "
        "The refund reaches your card 3 to 5 business days after we receive the parcel.",
    ),
    (
        ("office",),
        "Once a parcel has left the warehouse we can no longer change its address, but the "
        "carrier can: choose 'Change delivery' on the tracking page before 18:00 today and "
        "enter your office address in Villeurbanne.",
    ),
    (
        ("switzerland",),
        "Yes, we ship to Switzerland: delivery takes 4 to 6 business days and costs CHF 9.90, "
        "free above CHF 60. Swiss customs may charge VAT on arrival.",
    ),
    (
        ("ebook",),
        "E-books are delivered instantly to your library and can be read in our app or on any "
        "EPUB reader; they cannot be returned once downloaded.",
    ),
]
TOOL_RESULT_REPLY = (
    "Order A-10482 is with the carrier and due on Thursday. It can still be redirected to "
    "69100 Villeurbanne: pick 'Office delivery' (free) or 'Pick-up point' on the tracking page."
)
ORDER_ID = re.compile(r"\b[A-Z]-\d{5}\b")
POSTCODE = re.compile(r"\b\d{5}\b")


def reply_to(messages: list[dict[str, Any]]) -> str:
    if messages and messages[-1].get("role") == "tool":
        return TOOL_RESULT_REPLY
    question = next(
        (_message_text(m).lower() for m in reversed(messages) if m.get("role") == "user"), ""
    )
    for words, reply in REPLIES:
        if all(word in question for word in words):
            return reply
    return REPLY


def tool_arguments(function: dict[str, Any], question: str) -> dict[str, str]:
    """Arguments a model would fill in: the order id and postcode found in the question, for the
    parameters of those names the function declares."""
    declared = (function.get("parameters") or {}).get("properties") or {}
    found = {
        "order_id": ORDER_ID.search(question),
        "postcode": POSTCODE.search(ORDER_ID.sub("", question)),  # not an order id's digits
    }
    return {name: match.group(0) for name, match in found.items() if name in declared and match}


def tools_to_call(request: dict[str, Any]) -> list[dict[str, Any]]:
    functions = [tool["function"] for tool in request.get("tools") or [] if "function" in tool]
    choice = request.get("tool_choice")
    if isinstance(choice, dict):
        wanted = choice.get("function", {}).get("name")
        functions = [function for function in functions if function.get("name") == wanted]
    if request.get("parallel_tool_calls") is False:
        functions = functions[:1]
    return functions


@dataclass(frozen=True)
class Failure:
    """An error answer, as the real API words it."""

    status: int
    type: str
    code: str
    message: str
    param: str | None = None


RATE_LIMITED = Failure(
    429,
    "tokens",
    "rate_limit_exceeded",
    "Rate limit reached for gpt-4o-mini in organization org-folio on tokens per min (TPM): "
    "Limit 200000, Used 199532, Requested 612. Please try again in 43ms. Visit "
    "https://platform.openai.com/account/rate-limits to learn more.",
)
CONTEXT_TOO_LONG = Failure(
    400,
    "invalid_request_error",
    "context_length_exceeded",
    "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    "131072 tokens. Please reduce the length of the messages.",
    param="messages",
)


class ScriptedFakeOpenAI(FakeOpenAI):
    """``with ScriptedFakeOpenAI() as server: OpenAI(base_url=server.base_url, ...)``.

    ``failures`` answer the first chat completion requests, in order, instead of the script.
    """

    def __init__(self, failures: list[Failure] | None = None) -> None:
        # Not the base's __init__: it would bind a server with the base's handler.
        self._state = _State()
        self._server = _ScriptedServer(("127.0.0.1", 0), _ScriptedHandler, self._state)
        self._server.failures = list(failures or [])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])


class _ScriptedServer(_Server):
    failures: list[Failure]


class _ScriptedHandler(_Handler):
    server: _ScriptedServer

    def _chat_completions(self, request: dict[str, Any]) -> None:
        with self.server.state.lock:
            failure = self.server.failures.pop(0) if self.server.failures else None
        if failure:
            error = {
                "message": failure.message,
                "type": failure.type,
                "param": failure.param,
                "code": failure.code,
            }
            self._send_json(failure.status, {"error": error})
            return
        requested_model = str(request.get("model", ""))
        model = MODEL_SNAPSHOTS.get(requested_model, requested_model)
        messages = list(request.get("messages", []))
        prompt_tokens = sum(4 + count_tokens(_message_text(message)) for message in messages)
        prompt_tokens += count_tokens(json.dumps(request["tools"])) if request.get("tools") else 0
        reasoning_tokens = REASONING_TOKENS if requested_model.startswith("o") else 0
        question = next(
            (_message_text(m) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        calls: list[dict[str, Any]] = []
        reply: str | None = None
        if request.get("tools") and messages and messages[-1].get("role") != "tool":
            for function in tools_to_call(request):
                calls.append(
                    {
                        "id": "call_" + self.server.state.next_id("tool").split("-", 1)[1][:24],
                        "type": "function",
                        "function": {
                            "name": function["name"],
                            "arguments": json.dumps(tool_arguments(function, question)),
                        },
                    }
                )
        if not calls:
            reply = reply_to(messages)
        generated = reply or "".join(call["function"]["arguments"] for call in calls)
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=count_tokens(generated) + 8 * len(calls) + reasoning_tokens,
            cached_tokens=prompt_tokens // CACHED_TOKEN_FRACTION,
            reasoning_tokens=reasoning_tokens,
        )
        finish_reason = "tool_calls" if calls else "stop"
        response_id = self.server.state.next_id("chatcmpl")
        if not request.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": reply,
                "refusal": None,
                "annotations": [],
            }
            if calls:
                message["tool_calls"] = calls
            self.server.state.record(Exchange(self.path, request, response_id, model, usage))
            self._send_json(
                200,
                {
                    "id": response_id,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                    "service_tier": "default",
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage.chat_payload(),
                },
            )
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        chunks = list(
            stream_chunks(response_id, model, reply, calls, finish_reason, usage, include_usage)
        )
        self.server.state.record(
            Exchange(
                self.path,
                request,
                response_id,
                model,
                usage if include_usage else None,
                len(chunks),
            )
        )
        self._send_events(chunks)


def stream_chunks(
    response_id: str,
    model: str,
    reply: str | None,
    calls: list[dict[str, Any]],
    finish_reason: str,
    usage: Usage,
    include_usage: bool,
) -> Iterator[dict[str, Any]]:
    """Server-sent chunks as the real API sends them: a role chunk, content word by word or each
    tool call's id and name followed by its arguments in pieces, a finish chunk, then usage."""

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "service_tier": "default",
            "choices": choices,
        }
        if include_usage:
            document["usage"] = None  # as the real API does on every chunk but the last
        return document

    def delta(content: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

    yield chunk(delta({"role": "assistant", "content": "" if reply else None, "refusal": None}))
    if reply:
        for index, word in enumerate(reply.split(" ")):
            yield chunk(delta({"content": word if index == 0 else " " + word}))
    for index, call in enumerate(calls):
        first = {"id": call["id"], "type": "function"}
        function = {"name": call["function"]["name"], "arguments": ""}
        yield chunk(delta({"tool_calls": [{"index": index, **first, "function": function}]}))
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), 8):
            piece = {"arguments": arguments[start : start + 8]}
            yield chunk(delta({"tool_calls": [{"index": index, "function": piece}]}))
    yield chunk(delta({}, finish=finish_reason))
    if include_usage:
        final = chunk([])
        final["usage"] = usage.chat_payload()
        yield final
