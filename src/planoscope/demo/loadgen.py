"""``planoscope load``: send Plano-shaped OTLP spans at a target as fast as it acknowledges them,
or at a fixed rate, and report what was acknowledged.

Requests are built once from a template and only their ids (and times) are rewritten per send,
so the client spends its CPU on sending, not on building spans: the figure measured is the
server's.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..net.otlp import OtlpSender


def template_request(spans: int, seed: int = 1) -> ExportTraceServiceRequest:
    """``spans`` spans of simulated Plano traffic (the traces ending last), in one request."""
    from .simulate import Simulation, export_request  # simulate uses otlp; no cycle at import

    sim = Simulation(rate=20, seed=seed, steady=True)
    now_s = time.time_ns() // 1_000_000_000
    picked, second = [], now_s - 3600
    while len(picked) < spans:
        for trace in sim.second(second):
            picked.extend(trace.spans)
        second += 1
    req = export_request(picked[:spans])
    shift = now_s * 1_000_000_000 - max(s.end_time_unix_nano for s in _spans_of(req))
    for s in _spans_of(req):
        s.start_time_unix_nano += shift
        s.end_time_unix_nano += shift
    return req


def _spans_of(req: ExportTraceServiceRequest) -> list:
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


class RequestFactory:
    """Serialized copies of a request of simulated Plano traffic, each with fresh random ids.

    The template is serialized once; each copy overwrites every id in place (one numpy scatter),
    so making a 512-span request costs tens of microseconds and the load generator leaves the
    CPU to the server it measures.
    """

    def __init__(self, spans: int, seed: int = 1):
        req = template_request(spans, seed)
        body = req.SerializeToString()
        # Every id, wherever it stands (a span's own, its children's parent, its trace's other
        # spans), gets the same fresh bytes in a copy: the trees stay whole.
        ids = dict.fromkeys(i for s in _spans_of(req) for i in (s.trace_id, s.span_id))
        dst, src, offset = [], [], 0
        for ident in ids:
            at = body.find(ident)
            while at >= 0:
                dst.append(np.arange(at, at + len(ident)))
                src.append(np.arange(offset, offset + len(ident)))
                at = body.find(ident, at + len(ident))
            offset += len(ident)
        self.spans = sum(1 for _ in _spans_of(req))
        self._template = np.frombuffer(body, dtype=np.uint8)
        self._dst, self._src, self._fresh = np.concatenate(dst), np.concatenate(src), offset

    def make(self) -> bytes:
        out = self._template.copy()
        out[self._dst] = np.frombuffer(os.urandom(self._fresh), dtype=np.uint8)[self._src]
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


async def run_load(
    target: str,
    protocol: str = "grpc",
    spans: int | None = None,
    duration: float | None = None,
    rate: float | None = None,
    batch: int = 512,
    concurrency: int = 4,
    gzip: bool = False,
    progress=None,
) -> LoadResult:
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
