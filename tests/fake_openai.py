"""A local OpenAI-compatible HTTP server, so real instrumentation libraries can run offline.

It answers ``POST /v1/chat/completions`` (JSON, or server-sent events when ``"stream": true``,
with a final usage chunk when ``stream_options.include_usage`` is set) and ``POST /v1/embeddings``
(float lists or base64, as the ``openai`` client asks for). Answers are deterministic, shaped like
the real API's, and every exchange is recorded so a test can compare telemetry with what the
"provider" actually returned.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Real responses name a dated snapshot, not the alias the request used; normalizers must cope.
MODEL_SNAPSHOTS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "o4-mini": "o4-mini-2025-04-16",
}
SYSTEM_FINGERPRINT = "fp_0ba0d124f1"
DEFAULT_EMBEDDING_DIMENSIONS = 16
# A real prompt cache only serves whole 128-token blocks; a fake one serves every third token
# so that small test prompts still report a non-zero cached count.
CACHED_TOKEN_FRACTION = 3
REPLY = (
    "Your order A-10482 left our Lyon warehouse on Tuesday and should arrive within two business "
    "days. You can follow it with the tracking link in your confirmation email."
)


def count_tokens(text: str) -> int:
    """A stand-in tokenizer: about four characters a token, never zero for non-empty text."""
    return max(1, (len(text) + 3) // 4) if text else 0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def chat_payload(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def embeddings_payload(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class Exchange:
    """One request the server answered and the usage it reported for it."""

    path: str
    request: dict[str, Any]
    response_id: str
    response_model: str
    usage: Usage | None  # None for a stream whose client did not ask for usage
    chunks: int = 0  # server-sent events with a JSON chunk, for a stream ("[DONE]" not counted)

    @property
    def streamed(self) -> bool:
        return bool(self.request.get("stream"))


@dataclass
class _State:
    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def next_id(self, prefix: str) -> str:
        with self.lock:
            self.counter += 1
            digest = hashlib.sha256(f"{prefix}{self.counter}".encode()).hexdigest()
        return f"{prefix}-{digest[:29]}"

    def record(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)


class FakeOpenAI:
    """``with FakeOpenAI() as server: OpenAI(base_url=server.base_url, api_key="test-key")``."""

    def __init__(self) -> None:
        self._state = _State()
        self._server = _Server(("127.0.0.1", 0), _Handler, self._state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def exchanges(self) -> list[Exchange]:
        with self._state.lock:
            return list(self._state.exchanges)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], state: _State) -> None:
        super().__init__(address, handler)
        self.state = state


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client's httpx pool expects
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows the test's own output, not an access log."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self._send_error(401, "invalid_api_key", "You didn't provide an API key.")
            return
        try:
            request = json.loads(raw or b"{}")
        except json.JSONDecodeError as error:
            self._send_error(400, "invalid_json", f"We could not parse the JSON body: {error}")
            return
        if self.path == "/v1/chat/completions":
            self._chat_completions(request)
        elif self.path == "/v1/embeddings":
            self._embeddings(request)
        else:
            self._send_error(404, "unknown_url", f"Unknown request URL: POST {self.path}.")

    def _chat_completions(self, request: dict[str, Any]) -> None:
        requested_model = str(request.get("model", ""))
        model = MODEL_SNAPSHOTS.get(requested_model, requested_model)
        prompt_tokens = sum(
            4 + count_tokens(_message_text(message)) for message in request.get("messages", [])
        )
        reasoning_tokens = 64 if requested_model.startswith("o") else 0
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=count_tokens(REPLY) + reasoning_tokens,
            cached_tokens=prompt_tokens // CACHED_TOKEN_FRACTION,
            reasoning_tokens=reasoning_tokens,
        )
        response_id = self.server.state.next_id("chatcmpl")
        created = int(time.time())
        if not request.get("stream"):
            self.server.state.record(Exchange(self.path, request, response_id, model, usage))
            self._send_json(
                200,
                {
                    "id": response_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                    "service_tier": "default",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": REPLY,
                                "refusal": None,
                                "annotations": [],
                            },
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage.chat_payload(),
                },
            )
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        chunks = list(_stream_chunks(response_id, created, model, usage, include_usage))
        reported_usage = usage if include_usage else None
        self.server.state.record(
            Exchange(self.path, request, response_id, model, reported_usage, len(chunks))
        )
        self._send_events(chunks)

    def _embeddings(self, request: dict[str, Any]) -> None:
        inputs = request.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else [str(item) for item in inputs]
        dimensions = int(request.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS)
        as_base64 = request.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embedding(text, dimensions)
            encoded: object = (
                base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        usage = Usage(prompt_tokens=sum(count_tokens(text) for text in texts))
        model = str(request.get("model", ""))
        self.server.state.record(
            Exchange(self.path, request, self.server.state.next_id("embd"), model, usage)
        )
        self._send_json(
            200,
            {"object": "list", "data": data, "model": model, "usage": usage.embeddings_payload()},
        )

    def _send_json(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_{hashlib.sha256(body).hexdigest()[:24]}")
        self.send_header("openai-processing-ms", "42")
        self.end_headers()
        self.wfile.write(body)

    def _send_events(self, chunks: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        events = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]
        for event in events:
            payload = event.encode()
            self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _send_error(self, status: int, code: str, message: str) -> None:
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        self._send_json(status, {"error": error})


def _stream_chunks(
    response_id: str, created: int, model: str, usage: Usage, include_usage: bool
) -> Iterator[dict[str, Any]]:
    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "service_tier": "default",
            "choices": choices,
        }
        if include_usage:
            document["usage"] = None  # as the real API does on every chunk but the last
        return document

    def delta(content: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish_reason}]

    yield chunk(delta({"role": "assistant", "content": "", "refusal": None}))
    words = REPLY.split(" ")
    for index, word in enumerate(words):
        yield chunk(delta({"content": word if index == 0 else " " + word}))
    yield chunk(delta({}, finish_reason="stop"))
    if include_usage:
        final = chunk([])
        final["usage"] = usage.chat_payload()
        yield final


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from the text (same text, same vector)."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [(seed[index % len(seed)] - 127.5) / 127.5 for index in range(dimensions)]
    norm = sum(value * value for value in raw) ** 0.5 or 1.0
    # Round through float32 so base64 and float answers decode to the same numbers.
    return [struct.unpack("<f", struct.pack("<f", value / norm))[0] for value in raw]
