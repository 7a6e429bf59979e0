"""OTLP/HTTP receiver (``POST /v1/traces`` and ``POST /v1/logs``), following the OTLP specification.

Status codes: 200 with ``ExportTraceServiceResponse`` once Kafka acknowledged every message
(``partial_success`` when some spans broke the limits); 400 with a ``google.rpc.Status`` body for
undecodable input (clients do not retry it); 401 without a valid API key; 413 above the size
limits; 415 for other content types or encodings; 429 when too much is in flight and 503 when
Kafka does not acknowledge in time, both with ``Retry-After`` (clients retry those).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from llmtap.collectors.receiver import ExportRefused
from llmtap.schemas.otlp import OtlpDecodeError, encode_json_response
from llmtap.schemas.topics import Encoding
from llmtap.telemetry import Stage

if TYPE_CHECKING:
    from llmtap.collectors.receiver import ReceiverCore

logger = logging.getLogger(__name__)

_CONTENT_TYPES = {
    "application/x-protobuf": Encoding.OTLP_PROTO,
    "application/protobuf": Encoding.OTLP_PROTO,
    "application/json": Encoding.OTLP_JSON,
}
_RPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    413: code_pb2.INVALID_ARGUMENT,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    503: code_pb2.UNAVAILABLE,
}


class HttpError(Exception):
    def __init__(
        self, status: int, message: str, *, retry_after_seconds: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_seconds = retry_after_seconds


def build_http_app(
    core: ReceiverCore, extra_metrics: Callable[[], Awaitable[bytes]] | None = None
) -> web.Application:
    # aiohttp's own body limit guards the compressed size. Its automatic decompression is off:
    # _decompress inflates with a hard output limit, so a gzip bomb never expands in memory.
    app = web.Application(
        client_max_size=core.config.max_request_bytes,
        handler_args={"auto_decompress": False},
    )
    handler = _TracesHandler(core, extra_metrics)
    app.router.add_post("/v1/traces", handler.handle)
    app.router.add_post("/v1/logs", handler.handle_logs)
    app.router.add_get("/metrics", handler.metrics)
    app.router.add_get("/healthz", handler.health)
    return app


class _TracesHandler:
    def __init__(
        self, core: ReceiverCore, extra_metrics: Callable[[], Awaitable[bytes]] | None = None
    ) -> None:
        self._core = core
        self._extra_metrics = extra_metrics

    async def handle(self, request: web.Request) -> web.Response:
        return await self._handle(request, logs=False)

    async def handle_logs(self, request: web.Request) -> web.Response:
        return await self._handle(request, logs=True)

    async def _handle(self, request: web.Request, *, logs: bool) -> web.Response:
        started = time.perf_counter()
        encoding = Encoding.OTLP_PROTO
        try:
            encoding = _encoding_of(request.content_type)
            tenant = self._core.authenticate(_bearer_token(request))
            if tenant is None:
                raise HttpError(
                    401, "missing or invalid API key (send Authorization: Bearer <key>)"
                )
            compressed = await _read_body(request, self._core.config.max_request_bytes)
            body = _decompress(
                compressed,
                request.headers.get("Content-Encoding", "identity"),
                self._core.config.max_decompressed_bytes,
            )
            export = self._core.export_logs if logs else self._core.export
            response = await export(body, encoding, tenant=tenant, source="otlp_http")
            return _message_response(200, response, encoding)
        except ExportRefused as error:
            return _status_response(
                HttpError(
                    error.refusal.http_status,
                    str(error),
                    retry_after_seconds=error.retry_after_seconds,
                ),
                encoding,
            )
        except HttpError as error:
            self._core.telemetry.error(Stage.RECEIVING, f"http_{error.status}")
            return _status_response(error, encoding)
        except OtlpDecodeError as error:
            self._core.telemetry.error(Stage.RECEIVING, "decode")
            return _status_response(HttpError(400, str(error)), encoding)
        finally:
            self._core.telemetry.latency_seconds.observe(time.perf_counter() - started)

    async def metrics(self, request: web.Request) -> web.Response:
        extra = await self._extra_metrics() if self._extra_metrics is not None else b""
        return web.Response(
            body=self._core.telemetry.render() + extra,
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "in_flight": self._core.in_flight_requests})


def _encoding_of(content_type: str) -> Encoding:
    encoding = _CONTENT_TYPES.get(content_type.lower())
    if encoding is None:
        raise HttpError(
            415,
            f"unsupported content type {content_type or '(none)'!r}; "
            "use application/x-protobuf or application/json",
        )
    return encoding


def _bearer_token(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-Api-Key") or None


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, f"request body of {request.content_length} bytes exceeds {limit}")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise HttpError(413, f"request body exceeds {limit} bytes") from None


def _decompress(body: bytes, content_encoding: str, limit: int) -> bytes:
    """Inflate gzip/deflate bodies without ever holding more than ``limit`` bytes (gzip bombs)."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise HttpError(413, f"request body exceeds {limit} bytes")
        return body
    if encoding in ("gzip", "x-gzip"):
        window_bits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        window_bits = zlib.MAX_WBITS  # zlib-wrapped, as RFC 9110 defines "deflate"
    else:
        raise HttpError(
            415, f"unsupported content encoding {content_encoding!r}; use gzip or deflate"
        )
    inflater = zlib.decompressobj(window_bits)
    try:
        output = inflater.decompress(body, limit + 1)
        if len(output) > limit or inflater.unconsumed_tail:
            raise HttpError(413, f"decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise HttpError(400, f"truncated {encoding} body")
    except zlib.error as error:
        raise HttpError(400, f"invalid {encoding} body: {error}") from None
    return output


def _message_response(status: int, message: Message, encoding: Encoding) -> web.Response:
    if encoding is Encoding.OTLP_JSON:
        return web.Response(
            status=status, body=encode_json_response(message), content_type="application/json"
        )
    return web.Response(
        status=status, body=message.SerializeToString(), content_type="application/x-protobuf"
    )


def _status_response(error: HttpError, encoding: Encoding) -> web.Response:
    status = status_pb2.Status(
        code=_RPC_CODES.get(error.status, code_pb2.UNKNOWN), message=str(error)
    )
    response = _message_response(error.status, status, encoding)
    if error.retry_after_seconds is not None:
        response.headers["Retry-After"] = str(error.retry_after_seconds)
    return response
