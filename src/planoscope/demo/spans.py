"""Plano's telemetry for one simulated gateway request (Plano 0.4.28+, as
``reference/plano-telemetry/README.md`` lists it from Plano's source):

- the spans: brightstaff's (kind INTERNAL, status never set, a span's service is its
  ``service.name.override``) and Envoy's (``plano(inbound)``, ``plano(outbound)``: kind SERVER,
  every attribute a string, ERROR only for a status >= 500);
- the calls through Envoy's listeners, which the fake Envoy's stats count (``EnvoyCall``);
- what brightstaff's ``/metrics`` records, and when (``Fact``).

``SpanBuilder`` makes these pieces from a seeded generator; ``Conditions`` are the gateway's
state that second (rate limiting, provider incidents). One ``plano(llm)`` call is built in
``llm_call.py``, whole requests (llm, agent, routing) in ``request.py``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from .gateway import (
    ARCH,
    Upstream,
)

LLM, AGENT, ROUTING = "llm", "agent", "routing"
INBOUND, OUTBOUND = "plano(inbound)", "plano(outbound)"
ENVOY_SERVICES = frozenset({INBOUND, OUTBOUND})
CHAT, MESSAGES, RESPONSES = "/v1/chat/completions", "/v1/messages", "/v1/responses"
AGENTS_CHAT, ROUTING_CHAT = "/agents" + CHAT, "/routing" + CHAT
FLAG = " \U0001f6a9"  # brightstaff appends it to a plano(llm) span's name when signals are concerning
MS = 1_000_000
_INTERNAL, _SERVER = Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_SERVER
UNKNOWN_MODELS = ("gpt-4", "openai/gpt-5-preview", "claude-3-opus")
SERVER_ERRORS = {  # provider: ((status, Envoy response flags, median ms, share), ...)
    "default": ((500, "-", 650, 0.35), (502, "-", 400, 0.2), (503, "UF", 40, 0.3), (503, "UH", 2, 0.15)),
    "anthropic": ((500, "-", 650, 0.2), (529, "-", 900, 0.4), (503, "UF", 40, 0.25), (503, "UH", 2, 0.15)),
}
SERVER_ERROR_RATE = 0.008  # 5xx share of upstream calls outside incidents
STREAM_ERROR_RATE = 0.003  # streams reset by the upstream mid-way, outside incidents
ROUTER_ERROR_RATE = 0.004  # Plano's router model failing
INCLUDE_USAGE = 0.65  # share of OpenAI-style streaming clients that ask for stream_options.include_usage


@dataclass(frozen=True)
class EnvoyCall:
    """One request through an Envoy listener, as Envoy's stats count it once it ends.

    ``wasm``: it went through the LLM listener (:12001) and Plano's llm_gateway filter, whose
    metrics it feeds; otherwise it is a hop to brightstaff (cluster ``bright_staff``).
    """

    start_ns: int
    end_ns: int
    cluster: str
    status_code: int
    wasm: bool = True
    rate_limited: bool = False  # answered 429 by the filter itself, before any upstream
    streaming: bool = False
    ttft_ms: int | None = None  # first streamed chunk, on the filter's clock (streaming successes)
    input_tokens: int = 0  # the filter's count of the prompt, before the rate-limit check
    output_tokens: int = 0  # usage, or a chars/4 estimate for a stream (0 for an error)
    completed: bool = True  # the stream reached its end (not reset)


@dataclass(frozen=True)
class Fact:
    """One update of brightstaff's ``/metrics`` at ``at_ns``: ``value`` added to the counter
    ``metric`` or observed by the histogram ``metric``, under ``labels``. An HTTP request's
    facts carry ``since_ns``, its start (the in-flight gauge)."""

    at_ns: int
    metric: str
    labels: tuple[tuple[str, str], ...]
    value: float = 1.0
    since_ns: int = 0


@dataclass
class Trace:
    """One gateway request: its spans as (service, span), its Envoy calls, its metric facts."""

    kind: str  # LLM, AGENT or ROUTING
    spans: list[tuple[str, Span]] = field(default_factory=list)
    calls: list[EnvoyCall] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)

    @property
    def end_ns(self) -> int:
        return max(s.end_time_unix_nano for _, s in self.spans)


@dataclass(frozen=True)
class Conditions:
    """The gateway's state during one second: extra failure shares per model or provider."""

    rate_limit_p: float = 0.006  # share of LLM calls the WASM rate limiter answers 429
    model_429: tuple[tuple[str, float], ...] = ()  # (model, extra 429 share) in an incident
    provider_5xx: tuple[tuple[str, float], ...] = ()  # (provider or "arch", 5xx share) in an outage
    provider_slow: tuple[tuple[str, float], ...] = ()  # (provider or "arch", latency factor)

    def limited(self, model: str) -> float:
        return min(0.9, self.rate_limit_p + dict(self.model_429).get(model, 0.0))

    def failing(self, provider: str) -> float:
        return dict(self.provider_5xx).get(provider, SERVER_ERROR_RATE if provider != "arch" else ROUTER_ERROR_RATE)

    def slow(self, provider: str) -> float:
        return dict(self.provider_slow).get(provider, 1.0)


@dataclass(frozen=True)
class Session:
    """A conversation the session router knows: its id and the model it is anchored on."""

    id: str  # an x-model-affinity value, or implicit:<16 hex>
    anchor: str
    route: str | None
    user: str | None = None  # its plano.distinct_id: a conversation is one user's


def lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return rng.lognormvariate(math.log(median), sigma)


def pick(rng: random.Random, weighted) -> str:
    items = list(weighted.items()) if isinstance(weighted, dict) else list(weighted)
    return rng.choices([k for k, _ in items], [w for _, w in items])[0]


def uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{8 + int(h[16], 16) % 4:x}{h[17:20]}-{h[20:]}"


def preview(text: str) -> str:
    """brightstaff's ``truncate_message(text, 50)``."""
    return text if len(text) <= 50 else text[:50] + "..."


def _fill(repeated, pairs) -> None:
    """Append OTLP attributes to ``repeated`` (in place: ~3x faster than building KeyValues)."""
    add = repeated.add
    for k, v in pairs:
        value = add(key=k).value
        if isinstance(v, bool):
            value.bool_value = v
        elif isinstance(v, int):
            value.int_value = v
        elif isinstance(v, float):
            value.double_value = v
        else:
            value.string_value = v


def span_event(at_ns: int, name: str, pairs) -> Span.Event:
    ev = Span.Event(time_unix_nano=at_ns, name=name)
    _fill(ev.attributes, pairs)
    return ev


def _labels(**kw) -> tuple[tuple[str, str], ...]:
    return tuple(kw.items())


def log_event(at_ns: int, message: str, level: str, module: str, line: int, fields: list) -> Span.Event:
    """A ``tracing`` log line recorded on the span, as tracing-opentelemetry makes it an event."""
    attrs = [
        ("level", level),
        ("target", module),
        ("code.file.path", "crates/" + module.replace("::", "/src/", 1).replace("::", "/") + ".rs"),
        ("code.module.name", module),
        ("code.line.number", line),
        *fields,
    ]
    return span_event(at_ns, message, attrs)


class SpanBuilder:
    """The pieces every simulated request is made of (its spans, brightstaff's facts, Envoy's
    calls), drawn from one seeded generator: ``request.Builder`` makes whole requests of them."""

    def __init__(self, rng: random.Random, conditions: Conditions, session):
        self.rng, self.cond, self._session = rng, conditions, session

    # --- primitives ---------------------------------------------------------------------------
    def _id(self, n: int) -> bytes:
        while True:
            b = self.rng.randbytes(n)
            if any(b):
                return b

    def _span(
        self,
        tr: Trace,
        service: str,
        trace_id: bytes,
        parent: bytes,
        name: str,
        start_ns: int,
        end_ns: int,
        attrs: list,
        *,
        span_id: bytes | None = None,
        events: list | None = None,
    ) -> Span:
        envoy = service in ENVOY_SERVICES
        error = envoy and int(dict(attrs).get("http.status_code", "0")) >= 500
        span = Span(
            trace_id=trace_id,
            span_id=span_id or self._id(8),
            parent_span_id=parent,
            name=name,
            kind=_SERVER if envoy else _INTERNAL,
            start_time_unix_nano=start_ns,
            end_time_unix_nano=end_ns,
            events=events or [],
            status=Status(code=Status.STATUS_CODE_ERROR) if error else Status(),
        )
        _fill(span.attributes, attrs)
        tr.spans.append((service, span))
        return span

    def _fact(self, tr: Trace, at_ns: int, metric: str, value: float = 1.0, since_ns: int = 0, **labels) -> None:
        tr.facts.append(Fact(at_ns, metric, _labels(**labels), value, since_ns))

    def _http(self, tr: Trace, handler: str, status: int, start_ns: int, answered_ns: int) -> None:
        """brightstaff's RED metrics for one request (recorded when its handler returns, i.e. with
        the response headers), and Envoy's hop to brightstaff that carried it."""
        cls = f"{status // 100}xx"
        self._fact(
            tr,
            answered_ns,
            "brightstaff_http_requests_total",
            1,
            start_ns,
            handler=handler,
            method="POST",
            status_class=cls,
        )
        self._fact(
            tr,
            answered_ns,
            "brightstaff_http_request_duration_seconds",
            (answered_ns - start_ns) / 1e9,
            handler=handler,
        )
        tr.calls.append(EnvoyCall(start_ns - MS // 4, answered_ns + MS // 4, "bright_staff", status, wasm=False))

    def _envoy(self, rid: str, url: str, ua: str, cluster: str, status: int, flags: str, sizes: tuple, peer: str):
        """Envoy's span attributes: all strings, in Envoy's order."""
        return [
            ("node_id", ""),
            ("zone", ""),
            ("guid:x-request-id", rid),
            ("http.url", url),
            ("http.method", "POST"),
            ("downstream_cluster", "-"),
            ("user_agent", ua),
            ("http.protocol", "HTTP/1.1"),
            ("peer.address", peer),
            ("request_size", str(sizes[0])),
            ("response_size", str(sizes[1])),
            ("component", "proxy"),
            ("upstream_cluster", cluster),
            ("upstream_cluster.name", cluster),
            ("http.status_code", str(status)),
            ("response_flags", flags),
        ]

    def _outbound(self, tr, trace_id, parent, rid, up: Upstream, ua, start_ns, end_ns, status, flags, sizes) -> None:
        attrs = self._envoy(rid, f"https://{up.host}{up.path}", ua, up.cluster, status, flags, sizes, "127.0.0.1")
        self._span(tr, OUTBOUND, trace_id, parent, f"POST {up.host}{up.path}", start_ns, end_ns, attrs)

    def _arch_call(self, tr, trace_id, parent, rid, start_ns, median_ms, prompt_tokens) -> tuple[int, int]:
        """A call to Plano's own model (agent selection or preference routing) through the LLM
        listener: its outbound span and Envoy call; returns (end ns, status)."""
        rng = self.rng
        status, flags = 200, "-"
        if rng.random() < self.cond.failing("arch"):
            status, flags = rng.choice(((503, "UF"), (503, "UH"), (500, "-")))
        ms = lognormal(rng, median_ms * self.cond.slow("arch"), 0.35) if status == 200 or flags == "-" else 20.0
        end_ns = start_ns + int(ms * MS)
        sizes = (prompt_tokens * 4 + rng.randint(200, 600), rng.randint(280, 420) if status == 200 else 95)
        self._outbound(tr, trace_id, parent, rid, ARCH, "-", start_ns, end_ns, status, flags, sizes)
        out = rng.randint(8, 40) if status == 200 else 0
        tr.calls.append(
            EnvoyCall(start_ns, end_ns, ARCH.cluster, status, input_tokens=prompt_tokens, output_tokens=out)
        )
        return end_ns, status

    # --- the session router ------------------------------------------------------------------
