"""Simulated Plano gateway traffic, as real OTLP.

``Simulation`` is a Plano gateway's traffic as a pure function of (seed, second): the traces
that start within one wall-clock second are drawn from a generator seeded with both. So the
same seed replays the same traffic for the same time, any window can be made without making
what came before it, and sending a window twice sends the same span ids (stored once).
``Player`` plays a simulation in real time and exports each span once it has ended, as
Plano's batch span exporter does.

What is simulated follows Plano's source (DESIGN.md, "Plano's telemetry"):

- a direct LLM request: a ``plano(llm)`` span ``POST /v1/chat/completions <model>`` with usage,
  cost, streaming and time to first token; when routed, a ``plano(routing)`` child with the
  route's name and, within a session, the switch decision;
- an agent request: a ``plano(orchestrator)`` span named after its listener, with the selection,
  whose children are, per selected agent, its ``plano(filter)`` spans then a ``plano(agent)``
  span, whose child is the agent's ``plano(llm)`` call;
- log-normal latencies per model with slow tails; a few percent of errors (upstream 5xx, and
  429 from the rate limiter, more of them in bursts); bursts; a rate that drifts with the time
  of day and over tens of minutes.

Example::

    sim = Simulation(rate=5, seed=1)
    traces = sim.traces(start_s, start_s + 60)
    req = export_request(span for t in traces for span in t.spans)
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from ..net.otlp import OtlpSender
from ..net.otlp import key_value as kv

log = logging.getLogger("planoscope.simulate")

LLM, AGENT = "llm", "agent"
DEFAULT_MIX = {LLM: 0.7, AGENT: 0.3}
SCOPE = ("brightstaff", "0.4.2")
CHAT_PATH = "/v1/chat/completions"
AGENTS_PATH = "/agents/v1/chat/completions"
_INTERNAL = Span.SPAN_KIND_INTERNAL  # brightstaff's spans come from `tracing`, which sets no kind
_MS = 1_000_000


# ---------------------------------------------------------------------------------------------
# The gateway being simulated
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str
    provider: str
    ttft_ms: float  # median time to first token
    tokens_per_s: float  # median output speed
    input_usd_per_m: float
    output_usd_per_m: float
    weight: float  # share of direct requests that name this model
    sigma: float = 0.45  # spread of the log-normal time to first token
    reasoning: bool = False


MODELS = {
    m.name: m
    for m in (
        Model("gpt-4o", "openai", 550, 70, 2.5, 10.0, 0.28),
        Model("gpt-4o-mini", "openai", 380, 110, 0.15, 0.6, 0.24),
        Model("o3-mini", "openai", 2200, 150, 1.1, 4.4, 0.06, sigma=0.7, reasoning=True),
        Model("claude-sonnet-4", "anthropic", 900, 60, 3.0, 15.0, 0.18, sigma=0.5),
        Model("claude-3-5-haiku", "anthropic", 500, 100, 0.8, 4.0, 0.08),
        Model("llama-3.3-70b", "groq", 180, 280, 0.59, 0.79, 0.10, sigma=0.35),
        Model("gemini-2.0-flash", "gemini", 420, 160, 0.10, 0.40, 0.06),
    )
}
PROVIDERS = {  # provider: (upstream host, upstream path of a chat completion)
    "openai": ("api.openai.com", "/v1/chat/completions"),
    "anthropic": ("api.anthropic.com", "/v1/messages"),
    "groq": ("api.groq.com", "/openai/v1/chat/completions"),
    "gemini": ("generativelanguage.googleapis.com", "/v1beta/openai/chat/completions"),
}
ROUTES = {  # route name: (weight, ((model, weight), ...)) of Plano's preference-based routing
    "code_generation": (0.35, (("claude-sonnet-4", 0.6), ("gpt-4o", 0.3), ("o3-mini", 0.1))),
    "summarization": (0.25, (("gpt-4o-mini", 0.7), ("gemini-2.0-flash", 0.3))),
    "general_qa": (0.25, (("gpt-4o-mini", 0.5), ("llama-3.3-70b", 0.3), ("claude-3-5-haiku", 0.2))),
    "data_extraction": (0.15, (("gpt-4o", 0.6), ("gemini-2.0-flash", 0.4))),
}
LISTENERS = {  # listener: (weight, {agent: (filter chain, ((model, weight), ...))})
    "travel_booking_service": (
        0.6,
        {
            "weather_agent": (("input_guard",), (("gpt-4o-mini", 1.0),)),
            "flight_agent": (("input_guard", "query_rewriter"), (("gpt-4o", 0.8), ("claude-sonnet-4", 0.2))),
            "hotel_agent": (("input_guard", "query_rewriter"), (("claude-3-5-haiku", 1.0),)),
        },
    ),
    "customer_support": (
        0.4,
        {
            "billing_agent": (("pii_redactor",), (("gpt-4o", 1.0),)),
            "tech_support_agent": (("pii_redactor", "context_builder"), (("claude-sonnet-4", 0.7), ("o3-mini", 0.3))),
        },
    ),
}
PROMPTS = (
    "Refactor this function to use async/await and add type hints",
    "Summarize the attached quarterly report in five bullet points",
    "What is the weather in Lisbon this weekend?",
    "Find me a flight from SFO to JFK next Friday morning",
    "Extract the invoice number, date and total from this email",
    "Why was I charged twice for my subscription this month?",
    "Write a SQL query that returns the top ten customers by revenue",
    "Translate this paragraph into Spanish, keeping the tone formal",
    "My router keeps dropping the connection every few minutes",
    "Book a hotel near the conference center for three nights",
)
TOOLS = ("get_weather", "search_flights", "book_hotel", "lookup_invoice", "run_sql", "search_docs")
QUALITY = (("Excellent", 0.25), ("Good", 0.40), ("Neutral", 0.25), ("Poor", 0.07), ("Severe", 0.03))
SERVER_ERRORS = (
    (500, "UpstreamServerError", "upstream returned 500 Internal Server Error", 0.35),
    (502, "BadGateway", "upstream connect error or disconnect/reset before headers", 0.25),
    (503, "ServiceUnavailable", "upstream overloaded: no healthy upstream", 0.40),
)

# Shape of the rate.
SERVER_ERROR_RATE = 0.012
# Share of LLM calls rejected with 429: a floor (users over their own budget) plus a part that
# grows with the square of the load (load = rate now / average rate), so bursts get throttled.
RATE_LIMIT_FLOOR, RATE_LIMIT_LOAD, RATE_LIMIT_MAX = 0.005, 0.005, 0.12
SLOW_TAIL = 0.015  # share of calls that wait in an upstream queue: time to first token × 3–8
BURST_CHANCE, BURST_S, BURST_X = 0.3, (4.0, 16.0), (2.5, 5.0)  # per minute; duration; rate multiplier
# Bursts add to the average; the base rate is scaled down by their expected factor, so that
# ``rate`` is the long-run average.
_BURST_MEAN = 1 + BURST_CHANCE * (sum(BURST_S) / 2 / 60) * (sum(BURST_X) / 2 - 1)


# ---------------------------------------------------------------------------------------------
# What a simulation produces
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LlmCall:
    """One call through Envoy to an upstream LLM: what Envoy's stats count."""

    start_ns: int
    end_ns: int
    provider: str
    model: str
    status_code: int
    ttft_ms: float | None  # streaming successes only
    prompt_tokens: int
    completion_tokens: int

    @property
    def rate_limited(self) -> bool:
        return self.status_code == 429


@dataclass
class Trace:
    """One gateway request: its spans as (service name, span), and its upstream LLM calls."""

    kind: str  # LLM or AGENT
    spans: list[tuple[str, Span]] = field(default_factory=list)
    calls: list[LlmCall] = field(default_factory=list)

    @property
    def end_ns(self) -> int:
        return max(s.end_time_unix_nano for _, s in self.spans)


def parse_mix(text: str) -> dict[str, float]:
    """``"llm=0.7,agent=0.3"`` → shares normalized to 1; a kind left out gets none."""
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep:
            raise ValueError(f"{part!r}: expected KIND=SHARE")
        try:
            shares[name] = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: the share is not a number") from None
    return normalize_mix(shares)


def normalize_mix(shares: dict[str, float]) -> dict[str, float]:
    """Shares of the request kinds, scaled to sum to 1; a kind left out gets none."""
    unknown = set(shares) - set(DEFAULT_MIX)
    if unknown:
        raise ValueError(f"unknown request kind {sorted(unknown)[0]!r} (known: {', '.join(DEFAULT_MIX)})")
    if any(not math.isfinite(v) or v < 0 for v in shares.values()):
        raise ValueError("shares must be zero or more")
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("at least one share must be above zero")
    return {k: shares.get(k, 0.0) / total for k in DEFAULT_MIX}


# ---------------------------------------------------------------------------------------------
# The simulation
# ---------------------------------------------------------------------------------------------


class Simulation:
    """Plano's traffic at ``rate`` requests (traces) per second on average.

    ``mix`` gives the share of each kind of request (``parse_mix``); ``steady`` turns off
    bursts and drift (a constant Poisson rate, for benchmarks). Seconds are Unix seconds.
    """

    def __init__(self, rate: float = 5.0, mix: dict[str, float] | None = None, seed: int = 0, steady: bool = False):
        if rate <= 0:
            raise ValueError("rate must be above zero")
        self.rate, self.seed, self.steady = rate, seed, steady
        self.mix = normalize_mix(mix or DEFAULT_MIX)
        self._phase = random.Random(f"{seed}:phase").uniform(0, 2 * math.pi)
        self._sessions = max(4, int(rate * 30))  # live sessions per 10-minute window

    def intensity(self, second: int) -> float:
        """Requests per second expected at ``second``."""
        if self.steady:
            return self.rate
        day = 1 + 0.25 * math.sin(2 * math.pi * (second % 86400 - 9 * 3600) / 86400)  # peaks at 15:00 UTC
        drift = 1 + 0.2 * math.sin(2 * math.pi * second / 1200 + self._phase)
        return self.rate / _BURST_MEAN * day * drift * self.burst(second)

    def burst(self, second: int) -> float:
        """The burst multiplier at ``second`` (1 outside bursts). At most one burst starts per minute."""
        if self.steady:
            return 1.0
        for minute in (second // 60, second // 60 - 1):
            burst = _burst(self.seed, minute)
            if burst and burst[0] <= second < burst[1]:
                return burst[2]
        return 1.0

    def second(self, second: int) -> list[Trace]:
        """The traces that start within ``[second, second + 1)``, in start order."""
        rng = random.Random(f"{self.seed}:{second}")
        lam = self.intensity(second)
        load = lam / self.rate
        draw = _Draw(self, rng, second, min(RATE_LIMIT_MAX, RATE_LIMIT_FLOOR + RATE_LIMIT_LOAD * load * load))
        traces = []
        t = rng.expovariate(lam)
        while t < 1.0:
            start_ns = second * 1_000_000_000 + int(t * 1e9)
            traces.append(draw.llm_request(start_ns) if rng.random() < self.mix[LLM] else draw.agent_request(start_ns))
            t += rng.expovariate(lam)
        return traces

    def traces(self, start_s: int, end_s: int) -> list[Trace]:
        """The traces that start within ``[start_s, end_s)``."""
        return [t for s in range(start_s, end_s) for t in self.second(s)]

    def session(self, rng: random.Random, second: int) -> tuple[str, str]:
        """A session of the current 10-minute window: (id, its pinned model)."""
        srng = random.Random(f"{self.seed}:session:{second // 600}:{rng.randrange(self._sessions)}")
        return _uuid(srng), _pick(srng, ROUTES[_pick(srng, {r: w for r, (w, _) in ROUTES.items()})][1])


@functools.lru_cache(maxsize=256)
def _burst(seed: int, minute: int) -> tuple[float, float, float] | None:
    """The burst that starts in ``minute``, if any: (start s, end s, rate multiplier)."""
    rng = random.Random(f"{seed}:burst:{minute}")
    if rng.random() >= BURST_CHANCE:
        return None
    start = minute * 60 + rng.uniform(0, 60)
    return start, start + rng.uniform(*BURST_S), rng.uniform(*BURST_X)


def _pick(rng: random.Random, weighted) -> str:
    items = list(weighted.items()) if isinstance(weighted, dict) else list(weighted)
    return rng.choices([k for k, _ in items], [w for _, w in items])[0]


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{8 + int(h[16], 16) % 4:x}{h[17:20]}-{h[20:]}"


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return rng.lognormvariate(math.log(median), sigma)


class _Draw:
    """Builds the traces of one second from that second's generator."""

    def __init__(self, sim: Simulation, rng: random.Random, second: int, rate_limit_p: float):
        self.sim, self.rng, self.second, self.rate_limit_p = sim, rng, second, rate_limit_p

    def _id(self, n: int) -> bytes:
        while True:
            b = self.rng.randbytes(n)
            if any(b):
                return b

    def _span(
        self,
        trace_id: bytes,
        parent: bytes,
        name: str,
        start_ns: int,
        end_ns: int,
        attrs: dict,
        error: str = "",
        span_id: bytes | None = None,
    ) -> Span:
        return Span(
            trace_id=trace_id,
            span_id=span_id or self._id(8),
            parent_span_id=parent,
            name=name,
            kind=_INTERNAL,
            start_time_unix_nano=start_ns,
            end_time_unix_nano=end_ns,
            attributes=[kv(k, v) for k, v in attrs.items()],
            status=Status(code=Status.STATUS_CODE_ERROR, message=error) if error else Status(),
        )

    # --- direct LLM requests --------------------------------------------------------------
    def llm_request(self, start_ns: int) -> Trace:
        rng, trace = self.rng, Trace(LLM)
        trace_id = self._id(16)
        session, pinned = self.sim.session(rng, self.second) if rng.random() < 0.7 else (None, None)
        route = switch = None
        if rng.random() < 0.65:  # routed by Plano's preference router
            route = _pick(rng, {r: w for r, (w, _) in ROUTES.items()})
            model = _pick(rng, ROUTES[route][1])
            if pinned is not None:
                switch = "retained" if rng.random() < 0.75 else "allowed"
                model = pinned if switch == "retained" else model
        else:
            model = _pick(rng, {m.name: m.weight for m in MODELS.values()})
        llm_span_id = self._id(8)
        upstream_ns = start_ns + int(_lognormal(rng, 0.6, 0.4) * _MS)
        routing = None
        if route is not None:
            routing_start = start_ns + int(rng.uniform(0.1, 1.0) * _MS)
            determination = _lognormal(rng, 120, 0.45)
            routing_end = routing_start + int(determination * _MS)
            fallback = rng.random() < 0.01
            attrs = {
                "component": "routing",
                "http.method": "POST",
                "http.target": CHAT_PATH,
                "routing.strategy": "preference",
                "routing.determination_ms": round(determination, 2),
                "routing.upstream_endpoint": PROVIDERS[MODELS[model].provider][0],
                "routing.is_fallback": fallback,
                "routing.selection_reason": "fallback: preferred model unavailable"
                if fallback
                else f"matched route {route}",
                "route.selected_model": model,
                "plano.route.name": route,
            }
            if session:
                attrs["plano.session_id"] = session
            if switch:
                attrs["plano.switch.decision"] = switch
            routing = (
                "plano(routing)",
                self._span(trace_id, llm_span_id, "POST " + CHAT_PATH, routing_start, routing_end, attrs),
            )
            upstream_ns = routing_end + int(_lognormal(rng, 0.4, 0.4) * _MS)
        span, call = self._llm_span(trace_id, b"", llm_span_id, start_ns, upstream_ns, model, session, route)
        trace.spans.append(("plano(llm)", span))
        if routing:
            trace.spans.append(routing)
        trace.calls.append(call)
        return trace

    def _llm_span(
        self,
        trace_id: bytes,
        parent: bytes,
        span_id: bytes,
        start_ns: int,
        upstream_ns: int,
        model_name: str,
        session: str | None,
        route: str | None,
    ) -> tuple[Span, LlmCall]:
        """A ``plano(llm)`` span from ``start_ns``; the upstream call starts at ``upstream_ns``."""
        rng, m = self.rng, MODELS[model_name]
        host, upstream_path = PROVIDERS[m.provider]
        streaming = rng.random() < 0.7
        attrs: dict = {
            "component": "llm",
            "request_id": _uuid(rng),
            "http.method": "POST",
            "http.path": CHAT_PATH,
            "http.target": CHAT_PATH,
            "http.upstream_target": upstream_path,
            "http.url": f"https://{host}{upstream_path}",
            "llm.model": m.name,
            "llm.provider": m.provider,
            "llm.operation_type": "chat",
            "llm.is_streaming": streaming,
        }
        if rng.random() < 0.5:
            attrs["llm.temperature"] = rng.choice((0.0, 0.2, 0.7, 1.0))
        max_tokens = rng.choice((512, 1024, 2048, 4096)) if rng.random() < 0.4 else None
        if max_tokens:
            attrs["llm.max_tokens"] = max_tokens
        if rng.random() < 0.1:
            attrs["llm.top_p"] = rng.choice((0.9, 0.95))
        if rng.random() < 0.15:
            attrs["llm.tools"] = "\n".join(f"{t}(...)" for t in rng.sample(TOOLS, rng.randint(1, 3)))
        prompt = rng.choice(PROMPTS)
        attrs["llm.user_message_preview"] = prompt if len(prompt) <= 50 else prompt[:50] + "..."
        if session:
            attrs["plano.session_id"] = session
        if route:
            attrs["plano.route.name"] = route

        r = rng.random()
        if r < self.rate_limit_p:
            status, err_type, err_msg = (
                429,
                "RateLimitExceeded",
                "Exceeded Ratelimit: token budget per minute exhausted",
            )
            upstream_ms = _lognormal(rng, 4, 0.5)  # rejected by Envoy's filter before any upstream
        elif r < self.rate_limit_p + SERVER_ERROR_RATE:
            status, err_type, err_msg = _pick_error(rng)
            upstream_ms = _lognormal(rng, 700, 0.9)
        else:
            status = 200
        prompt_tokens = int(min(120_000, _lognormal(rng, 900, 1.0))) + 12
        completion = ttft = None
        if status == 200:
            completion = int(min(max_tokens or 8192, _lognormal(rng, 220, 0.9))) + 1
            ttft = _lognormal(rng, m.ttft_ms, m.sigma)
            if rng.random() < SLOW_TAIL:
                ttft *= rng.uniform(3, 8)
            upstream_ms = ttft + completion / (m.tokens_per_s * _lognormal(rng, 1, 0.25)) * 1000
            cached = int(prompt_tokens * rng.uniform(0.3, 0.9)) if rng.random() < 0.3 else 0
            input_cost = (prompt_tokens - cached / 2) * m.input_usd_per_m / 1e6
            output_cost = completion * m.output_usd_per_m / 1e6
            attrs.update(
                {
                    "http.status_code": 200,
                    "llm.duration_ms": int(upstream_ms),
                    "llm.response_bytes": completion * (92 if streaming else 4) + rng.randint(300, 600),
                    "llm.usage.prompt_tokens": prompt_tokens,
                    "llm.usage.completion_tokens": completion,
                    "llm.usage.total_tokens": prompt_tokens + completion,
                }
            )
            if cached:
                attrs["llm.usage.cached_input_tokens"] = cached
            if m.provider == "anthropic" and rng.random() < 0.1:
                attrs["llm.usage.cache_creation_tokens"] = int(prompt_tokens * 0.8)
            if m.reasoning:
                attrs["llm.usage.reasoning_tokens"] = int(completion * rng.uniform(0.3, 0.8))
            attrs.update(
                {
                    "llm.usage.input_cost_usd": round(input_cost, 8),
                    "llm.usage.output_cost_usd": round(output_cost, 8),
                    "llm.usage.total_cost_usd": round(input_cost + output_cost, 8),
                    "signals.quality": _pick(rng, QUALITY),
                    "signals.turn_count": rng.randint(1, 12),
                    "signals.efficiency_score": round(rng.uniform(0.4, 1.0), 3),
                }
            )
        else:
            attrs.update(
                {
                    "http.status_code": status,
                    "llm.duration_ms": int(upstream_ms),
                    "error": True,
                    "error.type": err_type,
                    "error.message": err_msg,
                }
            )
        end_ns = upstream_ns + int(upstream_ms * _MS) + int(_lognormal(rng, 0.8, 0.5) * _MS)
        events = []
        if streaming and ttft is not None:
            attrs["llm.time_to_first_token"] = int(ttft)
            events.append(
                Span.Event(
                    time_unix_nano=upstream_ns + int(ttft * _MS),
                    name="llm.time_to_first_token",
                    attributes=[kv("llm.time_to_first_token", int(ttft))],
                )
            )
        span = self._span(
            trace_id,
            parent,
            f"POST {CHAT_PATH} {m.name}",
            start_ns,
            end_ns,
            attrs,
            "" if status == 200 else f"{status}: {err_msg}",
            span_id,
        )
        span.events.extend(events)
        call = LlmCall(
            upstream_ns, end_ns, m.provider, m.name, status, ttft if streaming else None, prompt_tokens, completion or 0
        )
        return span, call

    # --- agent requests --------------------------------------------------------------------
    def agent_request(self, start_ns: int) -> Trace:
        rng, trace = self.rng, Trace(AGENT)
        trace_id, root_id = self._id(16), self._id(8)
        listener = _pick(rng, {name: w for name, (w, _) in LISTENERS.items()})
        agents = LISTENERS[listener][1]
        selected = rng.sample(list(agents), 2 if len(agents) > 1 and rng.random() < 0.15 else 1)
        messages = rng.randint(1, 14)
        determination = _lognormal(rng, 230, 0.35)
        cursor = start_ns + int((1 + determination) * _MS)
        failure = ""
        for agent in selected:
            filters, models = agents[agent]
            for name in filters:
                f_start = cursor + int(rng.uniform(0.2, 1.0) * _MS)
                cursor = f_start + int(_lognormal(rng, 45, 0.5) * _MS)
                trace.spans.append(
                    (
                        "plano(filter)",
                        self._span(
                            trace_id,
                            root_id,
                            f"POST {AGENTS_PATH} {name}",
                            f_start,
                            cursor,
                            {"agent_id": name, "filter_name": name, "message_count": messages},
                        ),
                    )
                )
            a_start = cursor + int(rng.uniform(0.3, 1.5) * _MS)
            a_id = self._id(8)
            llm_start = a_start + int(_lognormal(rng, 12, 0.5) * _MS)
            llm, call = self._llm_span(
                trace_id, a_id, self._id(8), llm_start, llm_start + int(0.5 * _MS), _pick(rng, models), None, None
            )
            cursor = llm.end_time_unix_nano + int(_lognormal(rng, 8, 0.5) * _MS)
            if call.status_code != 200:
                failure = f"agent {agent}: upstream LLM returned {call.status_code}"
            a_attrs = {"agent_id": agent, "message_count": messages}
            if failure:
                a_attrs.update({"error": True, "error.type": "AgentError"})
            a_span = self._span(trace_id, root_id, f"{agent} {CHAT_PATH}", a_start, cursor, a_attrs, failure, a_id)
            trace.spans += [("plano(agent)", a_span), ("plano(llm)", llm)]
            trace.calls.append(call)
            messages += 1
            if failure:
                break  # the chain stops at the first failing agent
        root = self._span(
            trace_id,
            b"",
            listener,
            start_ns,
            cursor + int(rng.uniform(0.5, 3) * _MS),
            {
                "component": "orchestrator",
                "request_id": _uuid(rng),
                "http.method": "POST",
                "http.path": AGENTS_PATH,
                "selection.listener": listener,
                "selection.agent_count": len(selected),
                "selection.agents": ",".join(selected),
                "selection.determination_ms": f"{determination:.2f}",
            },
            failure,
            root_id,
        )
        trace.spans.insert(0, ("plano(orchestrator)", root))
        return trace


def _pick_error(rng: random.Random) -> tuple[int, str, str]:
    code, err_type, message, _ = rng.choices(SERVER_ERRORS, [e[3] for e in SERVER_ERRORS])[0]
    return code, err_type, message


# ---------------------------------------------------------------------------------------------
# OTLP
# ---------------------------------------------------------------------------------------------


def export_request(spans: Iterable[tuple[str, Span]]) -> ExportTraceServiceRequest:
    """One OTLP request of (service name, span) pairs: a resource per service, as Plano sends them."""
    req = ExportTraceServiceRequest()
    groups: dict[str, ScopeSpans] = {}
    for service, span in spans:
        scope = groups.get(service)
        if scope is None:
            rs = req.resource_spans.add()
            rs.resource.attributes.extend(
                [
                    kv("service.name", service),
                    kv("telemetry.sdk.language", "rust"),
                    kv("telemetry.sdk.name", "opentelemetry"),
                ]
            )
            scope = groups[service] = rs.scope_spans.add()
            scope.scope.name, scope.scope.version = SCOPE
        scope.spans.append(span)
    return req


def export_requests(spans: Iterable[tuple[str, Span]], max_spans: int = 512) -> Iterator[ExportTraceServiceRequest]:
    """``spans`` as requests of at most ``max_spans`` spans each."""
    it = iter(spans)
    while chunk := list(itertools.islice(it, max_spans)):
        yield export_request(chunk)


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
    """Plays ``sim`` in real time through ``exporter``: each second's traces are made as the
    clock reaches it, each span is exported once it has ended (every ``flush_s``), and each
    upstream call is handed to ``envoy`` (``EnvoyStats``) if given.

    Example::

        async with OtlpExporter("127.0.0.1:4317") as exporter:
            await Player(Simulation(rate=5), exporter).run(stop_event)
    """

    def __init__(
        self,
        sim: Simulation,
        exporter: OtlpExporter,
        envoy=None,
        *,
        clock: Callable[[], int] = time.time_ns,
        flush_s: float = 1.0,
        max_batch: int = 512,
    ):
        self.sim, self.exporter, self.envoy, self.clock = sim, exporter, envoy, clock
        self.flush_s, self.max_batch = flush_s, max_batch
        self.traces = 0
        self._pending: list[tuple[int, int, str, Span]] = []  # heap by end time
        self._seq = itertools.count()

    def _enqueue(self, traces: list[Trace], envoy: bool = True) -> None:
        self.traces += len(traces)
        for trace in traces:
            for service, span in trace.spans:
                heapq.heappush(self._pending, (span.end_time_unix_nano, next(self._seq), service, span))
            if envoy and self.envoy is not None:
                self.envoy.track(trace.calls)

    async def _flush(self, now_ns: int) -> None:
        ended = []
        while self._pending and self._pending[0][0] <= now_ns:
            _, _, service, span = heapq.heappop(self._pending)
            ended.append((service, span))
        for req in export_requests(ended, self.max_batch):
            await self.exporter.export(req)

    async def send_window(self, start_s: int, end_s: int) -> list[Trace]:
        """Make the traces that start within ``[start_s, end_s)`` and export all of their spans now."""
        traces = self.sim.traces(start_s, end_s)
        self._enqueue(traces)
        await self._flush(max(t.end_ns for t in traces) if traces else 0)
        return traces

    async def run(self, stop: asyncio.Event, backfill_s: float = 0) -> None:
        """Play until ``stop`` is set, after first sending the last ``backfill_s`` seconds of traffic."""
        live_s = self.clock() // 1_000_000_000
        next_s = live_s - int(backfill_s)
        while True:
            now = self.clock()
            while next_s <= now // 1_000_000_000:
                # A backfilled past was never seen by this Envoy, whose counters start now: counting
                # it would show as one burst of rate-limited requests at the first scrape.
                self._enqueue(self.sim.second(next_s), envoy=next_s >= live_s)
                next_s += 1
                if len(self._pending) >= 4 * self.max_batch:  # backfilling: send as we go
                    await self._flush(now)
            await self._flush(now)
            try:
                await asyncio.wait_for(stop.wait(), self.flush_s)
                break
            except TimeoutError:
                pass
        await self._flush(self.clock())  # what has ended; calls still in flight are lost, as in Plano
