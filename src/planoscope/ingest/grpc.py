"""OTLP/gRPC ``TraceService/Export``.

Registered as a generic handler that receives the raw request bytes, so the message is parsed
exactly once, by the shared decoder. gzip (``grpc-encoding: gzip``) is handled by gRPC itself.

The handler is registered as stream-unary, although Export is unary (on the wire a unary call and
a stream of one message are the same): gRPC calls a unary handler only once the whole message is
in, and a stream handler as soon as the headers are. So the token is checked from the metadata
before anything is read, the request takes one of ``max_concurrent_requests`` slots only once it
is authenticated, and the read of its message has a deadline (see ``slots.py``). gRPC's own
``maximum_concurrent_rpcs`` is not used: it counts a call from its headers, before any handler or
interceptor runs, so calls that never send their message held every slot until they went away.
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
from .slots import Slots
from .writer import WriterUnavailable

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
GRPC_RESOURCE_EXHAUSTED = 8
# A connection that has not finished the HTTP/2 handshake (preface and SETTINGS, which a client
# sends at once) by then is closed; gRPC's default is 120 s, long for a socket that sends nothing.
HANDSHAKE_TIMEOUT_MS = 10_000
# A connection without calls for this long is closed with a GOAWAY; its client reconnects when it
# next exports (the SDKs' batch processors export every 5 s, so theirs stay open). Server
# keepalive pings and a maximum connection age would add nothing: an idle connection goes at
# this age, and a call has its request timeout, so a vanished peer's connection goes within a
# minute either way.
MAX_CONNECTION_IDLE_MS = 60_000


class GrpcReceiver:
    """Async context manager serving OTLP/gRPC on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        address: str,
        ingest: Ingest,
        max_message_bytes: int,
        credentials: Credentials | None = None,
        max_concurrent: int = 64,
        request_timeout: float = 30.0,
        max_connections: int | None = None,
    ):
        self.address = address
        self.credentials = credentials or Credentials()
        self.ingest = ingest
        self.max_message_bytes = max_message_bytes
        self.slots = Slots(max_concurrent, request_timeout)
        self.max_connections = max_connections
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    async def _export(self, requests, context: grpc.aio.ServicerContext) -> bytes:
        if self.credentials.required:
            given = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
            if not self.credentials.check(given if isinstance(given, str) else None):
                self.ingest.refuse("unauthenticated")
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token: send metadata authorization: Bearer TOKEN"
                )
        slot = self.slots.take()
        if slot is None:
            self.ingest.refuse("overloaded")
            await self._retry_later(
                context, f"overloaded: {self.slots.held} requests in progress (max_concurrent_requests)"
            )
        try:
            try:
                async with slot.receiving():
                    body = await context.read()
            except TimeoutError:
                if slot.evicted:
                    self.ingest.refuse("evicted")
                    await self._retry_later(
                        context, "overloaded: the message was still not in when every slot was taken; retry"
                    )
                self.ingest.refuse("timeout")
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"the request message did not arrive within {self.slots.request_timeout:g} s (otlp_request_timeout)",
                )
            if body is grpc.aio.EOF:  # gRPC refused the message itself (too large), or none was sent
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call ended without a request message")
            return await self._ingest(body, context)
        finally:
            slot.release()

    async def _retry_later(self, context: grpc.aio.ServicerContext, message: str) -> None:
        """RESOURCE_EXHAUSTED with a RetryInfo: the OTLP spec makes it retryable only with one."""
        status, info = retry_status(message, self.ingest.retry_after(), GRPC_RESOURCE_EXHAUSTED)
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED, message, trailing_metadata=_retry_trailers(status, info)
        )

    async def _ingest(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            batch = await self.ingest(body, "protobuf")
        except BadRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except WriterUnavailable as e:  # overloaded, or the store failed: retryable, with a delay
            status, info = retry_status(str(e), getattr(e, "retry_after", 1.0))
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e), trailing_metadata=_retry_trailers(status, info))
        resp = ExportTraceServiceResponse()
        if batch.error_message:  # rejected spans, or (with none rejected) a warning of what was cut
            resp.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=batch.rejected, error_message=batch.error_message)
            )
        return resp.SerializeToString()

    async def __aenter__(self) -> GrpcReceiver:
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
            ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_MS),
            # A quarter of the slots per connection, so one client cannot take them all with one
            # channel; the SDK exporters send one request at a time, Envoy a few.
            ("grpc.max_concurrent_streams", max(1, self.slots.size // 4)),
        ]
        if self.max_connections is not None:  # this listener's share of the file descriptors
            options.append(("grpc.max_allowed_incoming_connections", self.max_connections))
        server = grpc.aio.server(options=options)
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.stream_unary_rpc_method_handler(self._export)}
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


def _retry_trailers(status, info) -> tuple[tuple[str, bytes], ...]:
    # grpc-status-details-bin is the standard place (Go, Java, the collector read it);
    # the Python SDK exporter reads google.rpc.retryinfo-bin instead.
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )
