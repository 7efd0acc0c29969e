"""OTLP client pieces shared by the forwarder, the simulator and the load generator."""

from __future__ import annotations

import gzip as gzip_mod
import re
from collections.abc import Sequence

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
# Set by the client itself (HTTP/2, gRPC and OTLP framing): a user's value would break the request.
_RESERVED = frozenset({"content-type", "content-encoding", "content-length", "te", "host", "connection"})


def parse_header(text: str) -> tuple[str, str]:
    """``"authorization=Bearer TOKEN"`` → ``("authorization", "Bearer TOKEN")``: a header (HTTP)
    or metadata entry (gRPC: lowercase names) sent with every request. Raises ValueError; the
    message never holds the value, which is usually a secret."""
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if not sep or not name:
        raise ValueError("each header must be NAME=VALUE, e.g. authorization=Bearer TOKEN")
    if not _HEADER_NAME.fullmatch(name) or name.endswith("-bin"):
        # Not echoed: "authorization: Bearer abc=" splits at the token's own "=".
        raise ValueError("a header name is letters, digits, -, _ and . (not a binary -bin one), then =VALUE")
    if name in _RESERVED or name.startswith(("grpc-", ":")):
        raise ValueError(f"{name!r} is set by the OTLP client itself")
    value = value.strip()
    if not value or not all(0x20 <= ord(c) < 0x7F for c in value):
        raise ValueError(f"the value of header {name!r} must be non-empty printable ASCII")
    return name, value


def key_value(key: str, value) -> KeyValue:
    """An OTLP attribute from a Python bool, int, float or str."""
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


class OtlpSender:
    """One OTLP client (gRPC or HTTP/protobuf) that sends serialized requests and classifies the
    answers as the exporters of the OpenTelemetry SDKs do: ok, retryable or fatal."""

    def __init__(
        self, target: str, protocol: str, gzip: bool, tls: bool = False, headers: Sequence[tuple[str, str]] = ()
    ):
        """``headers``: (lowercase name, value) pairs sent with every request, as gRPC metadata
        or HTTP headers (e.g. ``("authorization", "Bearer TOKEN")``)."""
        self.protocol = protocol
        self.gzip = gzip
        self.metadata = tuple(headers)
        if protocol == "grpc":
            options = [("grpc.max_send_message_length", 64 << 20)]
            compression = grpc.Compression.Gzip if gzip else None
            self.channel = (
                grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options, compression)
                if tls
                else grpc.aio.insecure_channel(target, options, compression)
            )
            self.export = self.channel.unary_unary(EXPORT_METHOD)
        else:
            self.url = target if target.startswith("http") else f"http://{target}/v1/traces"
            self.client = httpx.AsyncClient(timeout=30)

    async def send(self, body: bytes) -> tuple[str, int]:
        """('ok'|'retryable'|'fatal', rejected spans)."""
        if self.protocol == "grpc":
            try:
                raw = await self.export(body, timeout=30, metadata=self.metadata or None)
            except grpc.aio.AioRpcError as e:
                code = e.code()
                retry = code in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.ABORTED,
                )
                return ("retryable" if retry else "fatal:" + code.name), 0
            resp = ExportTraceServiceResponse.FromString(raw)
            return "ok", resp.partial_success.rejected_spans
        headers = {**dict(self.metadata), "Content-Type": "application/x-protobuf"}
        if self.gzip:
            body = gzip_mod.compress(body, 1)
            headers["Content-Encoding"] = "gzip"
        try:
            r = await self.client.post(self.url, content=body, headers=headers)
        except httpx.TransportError:
            return "retryable", 0
        if r.status_code in (429, 502, 503, 504):
            return "retryable", 0
        if r.status_code != 200:
            return f"fatal:HTTP {r.status_code}", 0
        return "ok", ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans

    async def close(self) -> None:
        if self.protocol == "grpc":
            await self.channel.close()
        else:
            await self.client.aclose()
