"""How Plano's spans leave Plano: the Export calls its emitters make, and ``Player``, which plays
a simulation in real time through them.

brightstaff's SDK batch processor queues a span when it ends and exports every ~5 s or as soon
as 512 are queued, one Export call per service (one ResourceSpans holding only
``service.name``, one ScopeSpans, scope ``brightstaff`` without a version). Envoy's tracer
flushes every 5 s or as soon as 5 spans are queued. So a span's parent, which ends after it,
arrives with it or later; a trace's root arrives last.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ..net.otlp import OtlpSender
from ..net.otlp import key_value as kv
from .spans import ENVOY_SERVICES, INBOUND, OUTBOUND

log = logging.getLogger("planoscope.simulate")

SCOPE = "brightstaff"  # brightstaff's tracer; Envoy's spans come without a scope
FLUSH_NS = 5_000_000_000


def export_request(spans: Iterable[tuple[str, Span]]) -> ExportTraceServiceRequest:
    """One Export call, as Plano's emitters make it: (service, span) pairs of one service, under
    a resource holding only ``service.name``."""
    spans = list(spans)
    services = {service for service, _ in spans}
    if len(services) != 1:
        raise ValueError(f"an Export call carries the spans of one service, not of {sorted(services)}")
    (service,) = services
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    scope = rs.scope_spans.add()
    if service not in ENVOY_SERVICES:
        scope.scope.name = SCOPE
    scope.spans.extend(span for _, span in spans)
    return req


# brightstaff sends a batch's services in its HashMap's order; the simulator sends them children
# first (of the services' usual nesting), one of those orders, so a parent never arrives first.
_CHILDREN_FIRST = {
    "plano(routing)": 0,
    "plano(filter)": 0,
    "plano(llm)": 1,
    "plano(agent)": 2,
    "plano(orchestrator)": 3,
}


def export_requests(spans: Iterable[tuple[str, Span]], max_spans: int = 512) -> Iterator[ExportTraceServiceRequest]:
    """The Export calls of ``spans`` (in the order given, e.g. by end time): batches of at most
    ``max_spans`` spans, each batch sent as one call per service, child services first."""
    it = iter(spans)
    while chunk := list(itertools.islice(it, max_spans)):
        by_service: dict[str, list] = {}
        for service, span in chunk:
            by_service.setdefault(service, []).append((service, span))
        for service in sorted(by_service, key=lambda s: _CHILDREN_FIRST.get(s, 4)):
            yield export_request(by_service[service])


@dataclass
class BatchProcessor:
    """One emitter's batch span processor: spans are queued as they end; the queue is exported
    when ``max_batch`` spans wait, and whatever waits every ``interval_ns`` (from the first span)."""

    name: str
    max_batch: int
    interval_ns: int = FLUSH_NS
    queue: list[tuple[str, Span]] = field(default_factory=list)
    next_ns: int | None = None

    def add(self, service: str, span: Span) -> list[ExportTraceServiceRequest]:
        if self.next_ns is None:
            self.next_ns = span.end_time_unix_nano + self.interval_ns
        self.queue.append((service, span))
        return self.drain() if len(self.queue) >= self.max_batch else []

    def fire(self) -> list[ExportTraceServiceRequest]:
        """The timer: export what waits, and set the next deadline."""
        self.next_ns += self.interval_ns
        return self.drain()

    def drain(self) -> list[ExportTraceServiceRequest]:
        queued, self.queue = self.queue, []
        return list(export_requests(queued, self.max_batch))


def plano_emitters() -> dict[str, BatchProcessor]:
    """Plano's three span emitters, by the services they send."""
    return {
        "brightstaff": BatchProcessor("brightstaff", 512),
        INBOUND: BatchProcessor("envoy " + INBOUND, 5),
        OUTBOUND: BatchProcessor("envoy " + OUTBOUND, 5),
    }


class OtlpExporter:
    """Sends requests over OTLP/gRPC (``HOST:PORT``) or OTLP/HTTP (``HOST:PORT`` or a URL),
    retrying what the server asks to be retried. Counts spans acknowledged, rejected, failed."""

    def __init__(self, target: str, protocol: str = "grpc", attempts: int = 6):
        self.target, self.protocol, self.attempts = target, protocol, attempts
        self.acknowledged = self.rejected = self.failed = self.retried = 0
        self._sender: OtlpSender | None = None

    async def __aenter__(self) -> OtlpExporter:
        self._sender = OtlpSender(self.target, self.protocol, gzip=False)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._sender.close()

    async def export(self, req: ExportTraceServiceRequest) -> bool:
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        body, backoff = req.SerializeToString(), 0.1
        for attempt in range(self.attempts):
            outcome, rejected = await self._sender.send(body)
            if outcome == "ok":
                self.acknowledged += n - rejected
                self.rejected += rejected
                return True
            if outcome != "retryable" or attempt == self.attempts - 1:
                break
            self.retried += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
        log.warning("export of %d simulated spans to %s failed: %s", n, self.target, outcome)
        self.failed += n
        return False


class Player:
    """Plays ``sim`` through ``exporter`` as Plano's emitters would send it: each second's
    traces are made as the clock reaches it, each span goes to its emitter's batch processor
    when it ends, and the processors' exports are sent in the order they happen. The traces
    are handed to ``envoy`` (``EnvoyStats``) and ``brightstaff`` (``BrightstaffStats``) if given.

    Example::

        async with OtlpExporter("127.0.0.1:4317") as exporter:
            await Player(Simulation(rate=5), exporter).run(stop_event)
    """

    def __init__(
        self,
        sim,
        exporter: OtlpExporter,
        envoy=None,
        brightstaff=None,
        *,
        clock: Callable[[], int] = time.time_ns,
        flush_s: float = 0.25,
    ):
        self.sim, self.exporter, self.clock, self.flush_s = sim, exporter, clock, flush_s
        self.sinks = [s for s in (envoy, brightstaff) if s is not None]
        self.traces = 0
        self.emitters = plano_emitters()
        self._ended: list[tuple[int, int, str, Span]] = []  # heap by end time
        self._seq = itertools.count()

    def enqueue(self, traces: list, track: bool = True) -> None:
        """Hand ``traces`` to the emitters (each span once it ends) and, if ``track``, to the stats."""
        self.traces += len(traces)
        for trace in traces:
            for service, span in trace.spans:
                heapq.heappush(self._ended, (span.end_time_unix_nano, next(self._seq), service, span))
        if track:
            for sink in self.sinks:
                sink.track(traces)

    def _emitter(self, service: str) -> BatchProcessor:
        return self.emitters.get(service) or self.emitters["brightstaff"]

    def advance(self, now_ns: int) -> list[ExportTraceServiceRequest]:
        """The exports of everything that happens up to ``now_ns``, in the order it happens:
        spans ending (queued; a full queue is exported) and the processors' timers firing."""
        out: list[ExportTraceServiceRequest] = []
        while True:
            span_at = self._ended[0][0] if self._ended and self._ended[0][0] <= now_ns else None
            timers = [p for p in self.emitters.values() if p.next_ns is not None and p.next_ns <= now_ns]
            timer = min(timers, key=lambda p: p.next_ns, default=None)
            if timer is not None and (span_at is None or timer.next_ns < span_at):
                out += timer.fire()
            elif span_at is not None:
                _, _, service, span = heapq.heappop(self._ended)
                out += self._emitter(service).add(service, span)
            else:
                return out

    def drain(self) -> list[ExportTraceServiceRequest]:
        """What every processor holds, as a shutdown flushes it."""
        return [req for p in self.emitters.values() for req in p.drain()]

    async def _send(self, requests: list[ExportTraceServiceRequest]) -> None:
        for req in requests:
            await self.exporter.export(req)

    async def send_window(self, start_s: int, end_s: int) -> list:
        """Make the traces that start within ``[start_s, end_s)`` and send all of their spans now,
        batched as Plano's emitters would have sent them over that time."""
        traces = self.sim.traces(start_s, end_s)
        self.enqueue(traces)
        await self._send(self.advance(max((t.end_ns for t in traces), default=0)) + self.drain())
        return traces

    async def run(self, stop: asyncio.Event, backfill_s: float = 0) -> None:
        """Play until ``stop`` is set, after first sending the last ``backfill_s`` seconds of traffic."""
        live_s = self.clock() // 1_000_000_000
        next_s = live_s - int(backfill_s)
        while True:
            now = self.clock()
            while next_s <= now // 1_000_000_000 and not stop.is_set():  # Ctrl-C ends a backfill too
                # A backfilled past was never seen by this Envoy or brightstaff, whose counters
                # start now: counting it would show as one burst at the first scrape.
                self.enqueue(self.sim.second(next_s), track=next_s >= live_s)
                next_s += 1
                if len(self._ended) >= 4096:  # backfilling: send as we go, up to what is made
                    await self._send(self.advance(next_s * 1_000_000_000))
            await self._send(self.advance(now))
            try:
                await asyncio.wait_for(stop.wait(), self.flush_s)
                break
            except TimeoutError:
                pass
        # On shutdown the processors flush what has ended; calls still in flight are lost, as in Plano.
        await self._send(self.advance(self.clock()) + self.drain())
