"""OTLP/gRPC receiver (``TraceService/Export``, ``LogsService/Export``) on the OTLP/HTTP core.

The request arrives as raw bytes (no deserializer) and goes through the same ingest, limits and
Kafka acknowledgement as HTTP; gRPC handles its own compression and message size limit.
"""

from __future__ import annotations

import grpc
from grpc import aio

from llmtap.collectors.receiver import ExportRefused, ReceiverCore
from llmtap.schemas.otlp import OtlpDecodeError
from llmtap.schemas.topics import Encoding
from llmtap.telemetry import Stage

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


def build_grpc_server(core: ReceiverCore, address: str, port: int) -> tuple[aio.Server, int]:
    """Create (not start) the server; returns it with the bound port."""
    limit = core.config.max_decompressed_bytes
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ],
        maximum_concurrent_rpcs=core.config.max_in_flight_requests * 2,
    )
    handler = _ExportHandler(core)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                TRACE_SERVICE,
                {"Export": grpc.unary_unary_rpc_method_handler(handler.export)},
            ),
            grpc.method_handlers_generic_handler(
                LOGS_SERVICE,
                {"Export": grpc.unary_unary_rpc_method_handler(handler.export_logs)},
            ),
        )
    )
    bound = server.add_insecure_port(f"{address}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}:{port}")
    return server, bound


class _ExportHandler:
    def __init__(self, core: ReceiverCore) -> None:
        self._core = core

    async def export(self, body: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        return await self._export(body, context, logs=False)

    async def export_logs(self, body: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        return await self._export(body, context, logs=True)

    async def _export(
        self, body: bytes, context: aio.ServicerContext[bytes, bytes], *, logs: bool
    ) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        tenant = self._core.authenticate(_token(metadata))
        if tenant is None:
            self._core.telemetry.error(Stage.RECEIVING, "grpc_unauthenticated")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")
        assert tenant is not None
        try:
            export = self._core.export_logs if logs else self._core.export
            response = await export(body, Encoding.OTLP_PROTO, tenant=tenant, source="otlp_grpc")
        except OtlpDecodeError as error:
            self._core.telemetry.error(Stage.RECEIVING, "decode")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except ExportRefused as error:
            if error.retry_after_seconds is not None:
                context.set_trailing_metadata((("retry-after", str(error.retry_after_seconds)),))
            code = grpc.StatusCode[error.refusal.grpc_code_name]
            # OTLP clients retry RESOURCE_EXHAUSTED only with RetryInfo; UNAVAILABLE always.
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                code = grpc.StatusCode.UNAVAILABLE
            await context.abort(code, str(error))
        return bytes(response.SerializeToString())


def _token(metadata: dict[str, str | bytes]) -> str | None:
    authorization = metadata.get("authorization")
    if isinstance(authorization, str):
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = metadata.get("x-api-key")
    return api_key if isinstance(api_key, str) and api_key else None
