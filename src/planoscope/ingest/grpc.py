"""OTLP/gRPC ``TraceService/Export``.

Registered as a generic handler that receives the raw request bytes, so the message is parsed
exactly once, by the shared decoder. gzip (``grpc-encoding: gzip``) is handled by gRPC itself.
"""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from ..net.auth import Credentials
from .admission import Ingest, retry_status
from .decode import BadRequest
from .writer import WriterUnavailable

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class GrpcReceiver:
    """Async context manager serving OTLP/gRPC on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        address: str,
        ingest: Ingest,
        max_message_bytes: int,
        credentials: Credentials | None = None,
        max_concurrent: int | None = None,
    ):
        self.address = address
        self.max_concurrent = max_concurrent
        self.credentials = credentials or Credentials()
        self.ingest = ingest
        self.max_message_bytes = max_message_bytes
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    async def _export(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if self.credentials.required:
            given = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
            if not self.credentials.check(given if isinstance(given, str) else None):
                self.ingest.refuse("unauthenticated")
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token: send metadata authorization: Bearer TOKEN"
                )
        try:
            batch = await self.ingest(body, "protobuf")
        except BadRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except WriterUnavailable as e:  # overloaded, or the store failed: retryable, with a delay
            status, info = retry_status(str(e), getattr(e, "retry_after", 1.0))
            # grpc-status-details-bin is the standard place (Go, Java, the collector read it);
            # the Python SDK exporter reads google.rpc.retryinfo-bin instead.
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                str(e),
                trailing_metadata=(
                    ("grpc-status-details-bin", status.SerializeToString()),
                    ("google.rpc.retryinfo-bin", info.SerializeToString()),
                ),
            )
        resp = ExportTraceServiceResponse()
        if batch.error_message:  # rejected spans, or (with none rejected) a warning of what was cut
            resp.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=batch.rejected, error_message=batch.error_message)
            )
        return resp.SerializeToString()

    async def __aenter__(self) -> GrpcReceiver:
        server = grpc.aio.server(
            # Beyond it gRPC answers RESOURCE_EXHAUSTED (retryable) before reading the message.
            maximum_concurrent_rpcs=self.max_concurrent,
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._export)}
        )
        server.add_generic_rpc_handlers((handler,))
        try:
            self.port = server.add_insecure_port(self.address)
        except RuntimeError as e:
            raise OSError(f"cannot listen on {self.address}: {e}") from None
        if not self.port:
            raise OSError(f"cannot listen on {self.address}: address in use or not available")
        await server.start()
        self._server = server
        return self

    async def __aexit__(self, *exc) -> None:
        server, self._server = self._server, None  # (may be called twice: see app._stop_receiving)
        if server is not None:
            # Stop taking new RPCs; in-flight ones get the grace period to be journaled.
            await server.stop(grace=10)
