"""OTLP client pieces shared by the simulator and the load generator."""

from __future__ import annotations

import gzip as gzip_mod

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


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

    def __init__(self, target: str, protocol: str, gzip: bool, tls: bool = False):
        self.protocol = protocol
        self.gzip = gzip
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
                raw = await self.export(body, timeout=30)
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
        headers = {"Content-Type": "application/x-protobuf"}
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
