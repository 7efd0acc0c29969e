"""``planoscope load``: send Plano-shaped OTLP spans at a target as fast as it acknowledges them,
or at a fixed rate, and report what was acknowledged.

Requests are built once from a template and only their ids (and times) are rewritten per send,
so the client spends its CPU on sending, not on building spans: the figure measured is the
server's.
"""

from __future__ import annotations

import asyncio
import gzip as gzip_mod
import os
import random
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MODELS = [("gpt-4o", "openai"), ("gpt-4o-mini", "openai"), ("claude-sonnet-4", "anthropic"),
          ("llama-3.1-70b", "groq")]


def key_value(key: str, value) -> KeyValue:
    """An OTLP attribute from a Python bool, int, float or str."""
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _llm_attrs(rng: random.Random) -> list[KeyValue]:
    model, provider = rng.choice(MODELS)
    prompt, completion = rng.randint(50, 4000), rng.randint(10, 1500)
    return [key_value(k, v) for k, v in [
        ("llm.model", model), ("llm.provider", provider), ("llm.is_streaming", rng.random() < 0.7),
        ("llm.time_to_first_token", rng.randint(80, 900)), ("llm.usage.prompt_tokens", prompt),
        ("llm.usage.completion_tokens", completion), ("llm.usage.total_tokens", prompt + completion),
        ("llm.usage.total_cost_usd", round((prompt * 2.5 + completion * 10) / 1e6, 6)),
        ("http.method", "POST"), ("http.status_code", 200), ("http.target", "/v1/chat/completions"),
        ("plano.session_id", f"sess-{rng.randint(1, 5000):05d}"), ("plano.route.name", "default"),
        ("llm.duration_ms", rng.randint(200, 9000)), ("llm.response_bytes", rng.randint(200, 40000)),
    ]]


def template_request(spans: int, seed: int = 1) -> ExportTraceServiceRequest:
    """A request of ``spans`` Plano-shaped spans (~15 attributes each), mostly LLM calls."""
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    groups = {}
    for service in ("plano(llm)", "plano(routing)", "plano(agent)", "plano(orchestrator)"):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend([key_value("service.name", service), key_value("telemetry.sdk.language", "rust")])
        ss = rs.scope_spans.add()
        ss.scope.name = "brightstaff"
        groups[service] = ss
    now = time.time_ns()
    for i in range(spans):
        r = rng.random()
        service = ("plano(llm)" if r < 0.7 else "plano(routing)" if r < 0.85
                   else "plano(agent)" if r < 0.95 else "plano(orchestrator)")
        s = groups[service].spans.add()
        s.start_time_unix_nano = now
        s.end_time_unix_nano = now + int(rng.lognormvariate(6.5, 0.8) * 1e6)
        if service == "plano(llm)":
            s.name = "POST /v1/chat/completions " + rng.choice(MODELS)[0]
            s.kind = 3
            s.attributes.extend(_llm_attrs(rng))
        elif service == "plano(routing)":
            s.name = "POST /v1/chat/completions"
            s.kind = 2
            s.attributes.extend([key_value("routing.strategy", "preference"), key_value("plano.route.name", "code"),
                                 key_value("http.method", "POST"), key_value("http.status_code", 200)])
        elif service == "plano(agent)":
            agent = rng.choice(["weather", "flights", "hotels"])
            s.name = f"{agent} /v1/chat/completions"
            s.attributes.extend([key_value("agent_id", agent), key_value("message_count", rng.randint(1, 20))])
        else:
            s.name = "POST /agents/v1/chat/completions"
            s.kind = 2
            s.attributes.extend([key_value("selection.listener", "travel"), key_value("selection.agent_count", 3),
                                 key_value("selection.agents", "weather,flights,hotels")])
    return req


def _spans_of(req: ExportTraceServiceRequest) -> list:
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


class RequestFactory:
    """Serialized copies of a template request, each with fresh random span and trace ids.

    The template is serialized once with unique placeholder ids; each copy overwrites the 24 id
    bytes of every span in place (one numpy scatter), so making a 512-span request costs tens of
    microseconds and the load generator leaves the CPU to the server it measures.
    """

    def __init__(self, spans: int, seed: int = 1):
        req = template_request(spans, seed)
        rng = random.Random(seed)
        now = time.time_ns()
        for s in _spans_of(req):
            dur = s.end_time_unix_nano - s.start_time_unix_nano
            s.trace_id, s.span_id = rng.randbytes(16), rng.randbytes(8)
            s.start_time_unix_nano, s.end_time_unix_nano = now - dur, now
        body = req.SerializeToString()
        positions = []
        for s in _spans_of(req):
            for ident in (s.trace_id, s.span_id):
                at = body.find(ident)
                if at < 0 or body.find(ident, at + 1) >= 0:
                    raise RuntimeError("placeholder id is not unique in the serialized template")
                positions.append(np.arange(at, at + len(ident)))
        self.spans = spans
        self._template = np.frombuffer(body, dtype=np.uint8)
        self._index = np.concatenate(positions)

    def make(self) -> bytes:
        out = self._template.copy()
        out[self._index] = np.frombuffer(os.urandom(len(self._index)), dtype=np.uint8)
        return out.tobytes()


@dataclass
class LoadResult:
    sent: int = 0
    acknowledged: int = 0
    rejected: int = 0
    retried: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def acked_per_s(self) -> float:
        return self.acknowledged / self.seconds if self.seconds else 0.0


class OtlpSender:
    """One OTLP client (gRPC or HTTP/protobuf) that sends serialized requests and classifies the
    answers as the exporters of the OpenTelemetry SDKs do: ok, retryable or fatal."""

    def __init__(self, target: str, protocol: str, gzip: bool):
        self.protocol = protocol
        self.gzip = gzip
        if protocol == "grpc":
            self.channel = grpc.aio.insecure_channel(
                target, options=[("grpc.max_send_message_length", 64 << 20)],
                compression=grpc.Compression.Gzip if gzip else None)
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
                retry = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED)
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


async def run_load(target: str, protocol: str = "grpc", spans: int | None = None,
                   duration: float | None = None, rate: float | None = None, batch: int = 512,
                   concurrency: int = 4, gzip: bool = False, progress=None) -> LoadResult:
    """Send until ``spans`` are acknowledged or ``duration`` seconds pass (at most ``rate`` spans/s)."""
    if spans is None and duration is None:
        spans = 100_000
    res = LoadResult()
    sender = OtlpSender(target, protocol, gzip)
    start = time.perf_counter()
    deadline = start + duration if duration else None
    budget = [spans if spans is not None else float("inf")]

    async def worker(w: int) -> None:
        factory = RequestFactory(batch, seed=w + 1)
        while True:
            n = int(min(batch, budget[0]))
            if n <= 0 or (deadline and time.perf_counter() >= deadline):
                return
            budget[0] -= n
            if rate:  # pace: this send may go out once the total so far fits the rate
                due = start + (res.sent + n) / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if n != factory.spans:
                factory = RequestFactory(n, seed=w + 1)
            body = factory.make()
            res.sent += n
            backoff = 0.05
            while True:
                outcome, rejected = await sender.send(body)
                if outcome == "ok":
                    res.acknowledged += n - rejected
                    res.rejected += rejected
                    if progress:
                        progress(n)
                    break
                if outcome == "retryable" and (not deadline or time.perf_counter() < deadline + 30):
                    res.retried += 1
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                res.failed += n
                res.errors[outcome] = res.errors.get(outcome, 0) + 1
                break

    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        res.seconds = time.perf_counter() - start
        await sender.close()
    return res
