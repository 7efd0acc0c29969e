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
from .export import export_request
from .simulate import Simulation


def _service_spans(spans: int, seed: int) -> tuple[dict[str, list], dict[str, int]]:
    """``spans`` spans of each service of simulated Plano traffic, and how many spans of each
    the traffic had meanwhile (their shares), most common first."""
    sim = Simulation(rate=20, seed=seed, steady=True)
    second = time.time_ns() // 1_000_000_000 - 3600
    by_service: dict[str, list] = {}
    seen: dict[str, int] = {}
    while len(by_service) < 3 or any(len(v) < spans for v in by_service.values()):
        for trace in sim.second(second):
            for service, span in trace.spans:
                seen[service] = seen.get(service, 0) + 1
                group = by_service.setdefault(service, [])
                if len(group) < spans:
                    group.append((service, span))
        second += 1
    order = sorted(by_service, key=lambda svc: -seen[svc])
    return {svc: by_service[svc] for svc in order}, {svc: seen[svc] for svc in order}


def _turns(shares: list[int], slots: int = 100) -> list[int]:
    """A cycle of indices in proportion to ``shares``, spread out (smooth weighted round robin)."""
    total = sum(shares)
    weights = [max(1, round(slots * w / total)) for w in shares]
    current, out = [0] * len(weights), []
    for _ in range(sum(weights)):
        current = [c + w for c, w in zip(current, weights)]
        best = current.index(max(current))
        current[best] -= sum(weights)
        out.append(best)
    return out


def template_request(spans: int, seed: int = 1, service: str | None = None) -> ExportTraceServiceRequest:
    """One Export call of simulated Plano traffic, as Plano sends it: ``spans`` spans of one
    ``service`` (by default the one with the most spans), ending now."""
    groups, _ = _service_spans(spans, seed)
    return _shifted(export_request(groups[service or next(iter(groups))]))


def _shifted(req: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    now_ns = time.time_ns() // 1_000_000_000 * 1_000_000_000
    shift = now_ns - max(s.end_time_unix_nano for s in _spans_of(req))
    for s in _spans_of(req):
        s.start_time_unix_nano += shift
        s.end_time_unix_nano += shift
    return req


def _spans_of(req: ExportTraceServiceRequest) -> list:
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


class _Template:
    """One serialized request, and where its ids stand in the bytes."""

    def __init__(self, req: ExportTraceServiceRequest):
        body = req.SerializeToString()
        # Every id, wherever it stands (a span's own, its children's parent, its trace's other
        # spans), gets the same fresh bytes in a copy.
        ids = dict.fromkeys(i for s in _spans_of(req) for i in (s.trace_id, s.span_id, s.parent_span_id) if i)
        dst, src, offset = [], [], 0
        for ident in ids:
            at = body.find(ident)
            while at >= 0:
                dst.append(np.arange(at, at + len(ident)))
                src.append(np.arange(offset, offset + len(ident)))
                at = body.find(ident, at + len(ident))
            offset += len(ident)
        self.body = np.frombuffer(body, dtype=np.uint8)
        self.dst, self.src, self.fresh = np.concatenate(dst), np.concatenate(src), offset

    def make(self) -> bytes:
        out = self.body.copy()
        out[self.dst] = np.frombuffer(os.urandom(self.fresh), dtype=np.uint8)[self.src]
        return out.tobytes()


class RequestFactory:
    """Serialized Export calls of simulated Plano traffic, ``spans`` spans each, with fresh ids.

    Plano sends one Export call per service, so the factory holds a template per service and
    takes turns between them in proportion to the services' shares of the traffic. Each template
    is serialized once; each copy overwrites every id in place (one numpy scatter), so making a
    512-span request costs tens of microseconds and the load generator leaves the CPU to the
    server it measures. (A span's parent is in another service's request: the copies' trees are
    not linked.)
    """

    def __init__(self, spans: int, seed: int = 1):
        groups, seen = _service_spans(spans, seed)
        self.spans = spans
        self.services = list(groups)
        self._templates = [_Template(_shifted(export_request(g))) for g in groups.values()]
        self._turns = _turns([seen[svc] for svc in self.services])
        self._next = 0

    def make(self) -> bytes:
        template = self._templates[self._turns[self._next]]
        self._next = (self._next + 1) % len(self._turns)
        return template.make()


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
    # Made before the clock starts: a factory simulates traffic until each of Plano's 7 services
    # has a batch of spans (~1 s of CPU), and the workers' made one after the other on the event
    # loop took 8 of a 20 s run's seconds, sending nothing meanwhile.
    factories = [RequestFactory(batch, seed=w + 1) for w in range(concurrency)]
    start = time.perf_counter()
    deadline = start + duration if duration else None
    budget = [spans if spans is not None else float("inf")]

    async def worker(w: int) -> None:
        factory = factories[w]
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
