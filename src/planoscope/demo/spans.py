"""Plano's telemetry for one simulated gateway request (Plano 0.4.28+, as
``reference/plano-telemetry/README.md`` lists it from Plano's source):

- the spans: brightstaff's (kind INTERNAL, status never set, a span's service is its
  ``service.name.override``) and Envoy's (``plano(inbound)``, ``plano(outbound)``: kind SERVER,
  every attribute a string, ERROR only for a status >= 500);
- the calls through Envoy's listeners, which the fake Envoy's stats count (``EnvoyCall``);
- what brightstaff's ``/metrics`` records, and when (``Fact``).

``Builder`` makes one request's ``Trace`` from a seeded generator; ``Conditions`` are the
gateway's state that second (rate limiting, provider incidents).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from .gateway import (
    ALIASES,
    ARCH,
    DEFAULT_MODEL,
    FILTERS,
    INBOUND_USER_AGENTS,
    LISTENERS,
    MODELS,
    PROMPTS,
    PROVIDERS,
    QUALITY,
    ROUTES,
    SIGNALS,
    TENANTS,
    TOOLS,
    USER_AGENTS,
    Model,
    Upstream,
)

LLM, AGENT, ROUTING = "llm", "agent", "routing"
INBOUND, OUTBOUND = "plano(inbound)", "plano(outbound)"
ENVOY_SERVICES = frozenset({INBOUND, OUTBOUND})
CHAT, MESSAGES, RESPONSES = "/v1/chat/completions", "/v1/messages", "/v1/responses"
AGENTS_CHAT, ROUTING_CHAT = "/agents" + CHAT, "/routing" + CHAT
FLAG = " \U0001f6a9"  # brightstaff appends it to a plano(llm) span's name when signals are concerning
_MS = 1_000_000
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


@dataclass
class _Call:
    """How one plano(llm) request ended."""

    end_ns: int
    first_byte_ns: int
    status: int | None  # None: failed before dispatch
    response_bytes: int = 0

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 400


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


def _event(at_ns: int, name: str, pairs) -> Span.Event:
    ev = Span.Event(time_unix_nano=at_ns, name=name)
    _fill(ev.attributes, pairs)
    return ev


def _labels(**kw) -> tuple[tuple[str, str], ...]:
    return tuple(kw.items())


def _log(at_ns: int, message: str, level: str, module: str, line: int, fields: list) -> Span.Event:
    """A ``tracing`` log line recorded on the span, as tracing-opentelemetry makes it an event."""
    attrs = [
        ("level", level),
        ("target", module),
        ("code.file.path", "crates/" + module.replace("::", "/src/", 1).replace("::", "/") + ".rs"),
        ("code.module.name", module),
        ("code.line.number", line),
        *fields,
    ]
    return _event(at_ns, message, attrs)


class Builder:
    """Makes the traces of one second from that second's generator."""

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
        tr.calls.append(EnvoyCall(start_ns - _MS // 4, answered_ns + _MS // 4, "bright_staff", status, wasm=False))

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
        end_ns = start_ns + int(ms * _MS)
        sizes = (prompt_tokens * 4 + rng.randint(200, 600), rng.randint(280, 420) if status == 200 else 95)
        self._outbound(tr, trace_id, parent, rid, ARCH, "-", start_ns, end_ns, status, flags, sizes)
        out = rng.randint(8, 40) if status == 200 else 0
        tr.calls.append(
            EnvoyCall(start_ns, end_ns, ARCH.cluster, status, input_tokens=prompt_tokens, output_tokens=out)
        )
        return end_ns, status

    # --- the session router ------------------------------------------------------------------
    def _session_router(self, tr: Trace, at_ns: int, session: Session, candidate: str, route: str | None):
        """Plano's session router: the binding lookup, warmth, the routing budget and the switch
        gate. Returns (model, route, span attributes)."""
        rng = self.rng
        hit = rng.random() < 0.8
        warm = hit and rng.random() < 0.85
        self._fact(tr, at_ns, "brightstaff_session_cache_events_total", outcome="hit" if hit else "miss")
        idle = (
            int(min(290_000, lognormal(rng, 40_000, 0.9))) if warm else (rng.randint(300_000, 3_000_000) if hit else 0)
        )
        switches = rng.randint(0, 3) if warm else 0
        baseline = round(rng.uniform(0.002, 0.06), 6) if warm else 0.0
        spend = round(baseline * rng.uniform(0, 0.15), 6)
        total = round(rng.uniform(0.001, 0.4), 6) if hit else 0.0
        attrs: list = [("plano.cache.warm", warm), ("plano.cache.idle_ms", idle)]
        attrs += [
            ("plano.session.overhead_pct", round(100 * spend / baseline, 3) if baseline else 0.0),
            ("plano.session.switch_spend_in_usd", spend),
            ("plano.session.baseline_in_usd", baseline),
            ("plano.session.switches", switches),
            ("plano.session.total_cost_in_usd", total),
        ]
        model = candidate
        if warm:
            if candidate == session.anchor:
                decision, reason = "allowed", "same_anchor"
            else:
                cost = round(rng.uniform(-0.003, 0.012), 6)
                ceiling = round(0.2 * baseline, 6)  # routing_budget.max_switch_spend_pct: 20
                if cost <= 0:
                    decision, reason = "allowed", "free"
                elif spend + cost <= ceiling:
                    decision, reason = "allowed", "within_cap"
                else:
                    decision, reason = "retained", "over_cap"
                warm_tokens = rng.choice((0, 0, rng.randint(500, 20_000)))
                attrs += [
                    ("plano.switch.cost_in_usd", cost),
                    ("plano.switch.candidate_warm_tokens", warm_tokens),
                    ("plano.switch.overhead_ceiling_in_usd", ceiling),
                    ("plano.switch.decision", decision),
                ]
                if decision == "retained":
                    attrs.append(
                        ("plano.switch.counterfactual_route", f"{candidate} ({route})" if route else candidate)
                    )
                    model, route = session.anchor, session.route
            self._fact(tr, at_ns, "brightstaff_session_switch_decisions_total", decision=decision, reason=reason)
        self._fact(tr, at_ns, "brightstaff_session_cache_events_total", outcome="store")
        return model, route, attrs

    # --- signals ------------------------------------------------------------------------------
    def _signals(self, turns: int, at_ns: int) -> tuple[list, list, bool]:
        """brightstaff's signal report: attributes, ``signal.*`` events, whether it is concerning."""
        rng = self.rng
        quality = pick(rng, [(q, w) for q, w, _ in QUALITY])
        lo, hi = next(r for q, _, r in QUALITY if q == quality)
        bad = quality in ("poor", "severe")
        chances = {  # group: chance of at least one instance
            "interaction.misalignment": 0.6 if bad else 0.08,
            "interaction.stagnation": 0.45 if bad else 0.04,
            "interaction.disengagement": (0.6 if quality == "severe" else 0.25) if bad else 0.005,
            "interaction.satisfaction": 0.02 if bad else (0.5 if quality in ("excellent", "good") else 0.1),
            "execution.failure": 0.3 if bad else 0.01,
            "execution.loops": 0.2 if bad else 0.005,
            "environment.exhaustion": 0.2 if bad else 0.01,
        }
        attrs: list = [
            ("signals.quality", quality),
            ("signals.quality_score", round(rng.uniform(lo, hi), 3)),
            ("signals.turn_count", turns),
            ("signals.efficiency_score", round(rng.uniform(0.3, 0.7) if bad else rng.uniform(0.6, 1.0), 3)),
        ]
        events, counts = [], {}
        for group, chance in chances.items():
            n = 0
            while rng.random() < (chance if n == 0 else 0.3) and n < 6:
                n += 1
            if not n:
                continue
            counts[group] = n
            attrs += [(f"signals.{group}.count", n), (f"signals.{group}.severity", (n + 1) // 2)]  # 1-2: 1, 3-6: 2-3
            for _ in range(n):
                kind, snippet = rng.choice(SIGNALS[group])
                ev = [("signal.type", kind), ("signal.message_index", rng.randrange(max(1, turns)))]
                ev += [("signal.confidence", round(rng.uniform(0.55, 0.98), 3)), ("signal.snippet", snippet)]
                events.append(_event(at_ns, f"signal.{kind}", ev))
        concerning = (
            bad
            or counts.get("interaction.disengagement", 0) > 0
            or counts.get("interaction.stagnation", 0) > 2
            or counts.get("execution.failure", 0) > 0
            or counts.get("execution.loops", 0) > 0
        )
        return attrs, events, concerning

    # --- one plano(llm) request ---------------------------------------------------------------
    def llm_call(
        self,
        tr: Trace,
        trace_id: bytes,
        parent: bytes,
        start_ns: int,
        *,
        rid: str,
        requested: str,
        path: str = CHAT,
        prefs: bool = False,
        session: Session | None = None,
        tools: tuple[str, ...] = (),
        streaming: bool = True,
        tool_turn: bool = False,
        prompt: str = "",
        turns: int = 1,
        context: tuple[float, float] = (700, 1.0),
        completion: tuple[float, float] = (150, 0.75),
        tenant: str | None = None,
        user: str | None = None,
        ua: str = "OpenAI/Python 1.82.0",
    ) -> _Call:
        """One request to Plano's LLM listener (:12000): the ``plano(llm)`` span from
        ``start_ns`` and below it ``plano(routing)`` (with the router model's ``plano(outbound)``
        when preferences came with the request) and the upstream call's ``plano(outbound)``."""
        rng = self.rng
        span_id = self._id(8)
        attrs: list = [
            ("component", "llm"),
            ("request_id", rid),
            ("http.method", "POST"),
            ("http.path", path),
            ("service.name.override", "plano(llm)"),
        ]
        if tenant:
            attrs.append(("tenant.id", tenant))
        if user:
            attrs.append(("plano.distinct_id", user))
        cursor = start_ns + int(lognormal(rng, 0.4, 0.5) * _MS)

        # Phase 1: parse and validate. A model Plano does not know fails here.
        resolved = ALIASES.get(requested, requested)
        if resolved not in MODELS or rng.random() < 0.002:
            if resolved not in MODELS:
                warn = _log(
                    cursor,
                    "model not found in configured providers",
                    "WARN",
                    "brightstaff::handlers::llm",
                    611,
                    [("model", resolved)],
                )
            else:
                warn = _log(
                    cursor,
                    "failed to parse request JSON",
                    "WARN",
                    "brightstaff::handlers::llm",
                    593,
                    [("error", "EOF while parsing a value at line 1 column 2048")],
                )
            end = cursor + int(rng.uniform(0.1, 0.5) * _MS)
            self._span(tr, "plano(llm)", trace_id, parent, "llm", start_ns, end, attrs, span_id=span_id, events=[warn])
            self._http(tr, "llm_chat", 400, start_ns, end)
            return _Call(end, end, None)
        temperature = rng.choice((None, None, "0", "0.1", "0.2", "0.7", "1"))
        if temperature is not None:
            attrs.append(("llm.temperature", temperature))
        if tools:
            attrs.append(("llm.tools", "\n".join(f"{t}(...)" for t in tools)))
        attrs.append(("llm.user_message_preview", preview(prompt)))
        if session:
            attrs.append(("plano.session_id", session.id))

        # Phase 3: routing (skipped on a tool-result turn of a session: the prior decision is replayed).
        candidate, route = resolved, None
        if tool_turn and session:
            attrs.append(("plano.routing.skipped", "not_user_turn"))
            self._fact(tr, cursor, "brightstaff_router_skips_total", reason="not_user_turn")
            cursor += int(rng.uniform(0.05, 0.3) * _MS)
        else:
            r_start = cursor
            r_attrs = [
                ("component", "routing"),
                ("http.method", "POST"),
                ("http.target", path),
                ("model.requested", requested),
                ("model.alias_resolved", resolved),
                ("service.name.override", "plano(routing)"),
            ]
            r_id, r_events, failed = self._id(8), [], False
            if prefs:  # the router model ranks the request's preferences
                call_start = r_start + int(rng.uniform(0.3, 1.5) * _MS)
                call_end, status = self._arch_call(
                    tr, trace_id, r_id, rid, call_start, 170, int(lognormal(rng, 900, 0.5))
                )
                r_end = call_end + int(rng.uniform(0.1, 0.8) * _MS)
                if status != 200:
                    selected, failed = "unknown", True
                    r_events.append(
                        _log(
                            call_end,
                            "upstream returned error response",
                            "WARN",
                            "brightstaff::router::http",
                            93,
                            [("status", status), ("message", "upstream unavailable"), ("body_size", 95)],
                        )
                    )
                elif rng.random() < 0.22:
                    selected = "none"  # no preference matched: the requested model stays
                else:
                    route = pick(rng, {r: w for r, (w, _) in ROUTES.items()})
                    selected = candidate = pick(rng, ROUTES[route][1])
            else:  # no preferences: nothing to rank
                r_end = r_start + int(rng.uniform(0.05, 0.4) * _MS)
                selected = "none"
            took = r_end - r_start
            r_attrs += [("routing.determination_ms", took // _MS), ("route.selected_model", selected)]
            self._span(
                tr,
                "plano(routing)",
                trace_id,
                span_id,
                "routing",
                r_start,
                r_end,
                r_attrs,
                span_id=r_id,
                events=r_events,
            )
            self._fact(
                tr,
                r_end,
                "brightstaff_router_decisions_total",
                route="llm",
                selected_model=selected,
                fallback="false" if selected not in ("none", "unknown") else "true",
            )
            self._fact(tr, r_end, "brightstaff_router_decision_duration_seconds", took / 1e9, route="llm")
            cursor = r_end + int(rng.uniform(0.05, 0.5) * _MS)
            if failed:  # routing failed: answered 500 before dispatch
                end = cursor + int(rng.uniform(0.1, 0.4) * _MS)
                self._span(tr, "plano(llm)", trace_id, parent, "llm", start_ns, end, attrs, span_id=span_id)
                self._http(tr, "llm_chat", 500, start_ns, end)
                return _Call(end, end, None)
        model = candidate
        if session:
            model, route, s_attrs = self._session_router(tr, cursor, session, candidate, route)
            attrs += s_attrs
            cursor += int(lognormal(rng, 0.3, 0.5) * _MS)
        if route:
            attrs.append(("plano.route.name", route))
        m = MODELS[model]
        attrs += [("llm.model", model), ("llm.provider", m.provider)]
        name = f"POST {path} {requested}" if requested == model else f"POST {path} {requested} -> {model}"
        send_ns = cursor + int(lognormal(rng, 1.2, 0.5) * _MS)
        return self._dispatch(
            tr,
            trace_id,
            parent,
            span_id,
            start_ns,
            send_ns,
            attrs,
            name,
            m,
            path,
            streaming,
            session,
            tools,
            turns,
            context,
            completion,
            rid,
            ua,
        )

    def _dispatch(
        self,
        tr,
        trace_id,
        parent,
        span_id,
        start_ns,
        send_ns,
        attrs,
        name,
        m: Model,
        path,
        streaming,
        session,
        tools,
        turns,
        context,
        completion,
        rid,
        ua,
    ) -> _Call:
        """Phase 4: the upstream call through Envoy's LLM listener, and the response side."""
        rng, cond = self.rng, self.cond
        up = PROVIDERS[m.provider]
        prompt_tokens = int(min(120_000, lognormal(rng, *context))) + 12 + 40 * len(tools)
        input_tokens = int(prompt_tokens * rng.uniform(0.88, 0.98))  # the filter counts message text only
        env_start = send_ns + int(rng.uniform(0.2, 1.0) * _MS)
        r = rng.random()
        limited = r < cond.limited(m.name)
        server_error = not limited and r < cond.limited(m.name) + cond.failing(m.provider)
        reset, share = False, 1.0
        flags, completion_tokens = "-", 0
        if limited:  # Plano's WASM filter answers itself: no upstream
            status, flags = 429, "RL"
            env_end = env_start + int(lognormal(rng, 3, 0.4) * _MS)
            first = env_end + int(rng.uniform(0.1, 0.6) * _MS)
            end = first + int(rng.uniform(0.05, 0.3) * _MS)
            body = rng.randint(150, 220)
        elif server_error:
            errors = SERVER_ERRORS.get(m.provider, SERVER_ERRORS["default"])
            status, flags, median, _ = rng.choices(errors, [e[3] for e in errors])[0]
            env_end = env_start + int(lognormal(rng, median, 0.7) * _MS)
            first = env_end + int(rng.uniform(0.1, 0.6) * _MS)
            end = first + int(rng.uniform(0.05, 0.3) * _MS)
            body = rng.randint(90, 400)
        else:
            status = 200
            slow = cond.slow(m.provider)
            ttft = lognormal(rng, m.ttft_ms * slow, m.sigma)
            if rng.random() < 0.01:  # queued at the provider
                ttft = min(12_000.0, ttft * rng.uniform(2, 4))
            completion_tokens = int(min(4096, lognormal(rng, *completion))) + 1
            gen_ms = completion_tokens / (m.tokens_per_s / slow * lognormal(rng, 1, 0.2)) * 1000
            if streaming and rng.random() < STREAM_ERROR_RATE * (8 if cond.failing(m.provider) > 0.1 else 1):
                reset, flags, share = True, "UR", rng.uniform(0.1, 0.8)
                gen_ms *= share
            if streaming:
                first = env_start + int(ttft * _MS)
                env_end = first + int(gen_ms * _MS)
                end = env_end + int(rng.uniform(0.2, 1.5) * _MS)
                body = int(completion_tokens * rng.uniform(80, 100) * share) + 400
            else:
                env_end = env_start + int((ttft + gen_ms) * _MS)
                first = env_end + int(rng.uniform(0.1, 0.6) * _MS)
                end = first + int(rng.uniform(0.05, 0.5) * _MS)
                body = completion_tokens * 4 + rng.randint(450, 700)
        request_size = prompt_tokens * 4 + rng.randint(200, 900)
        self._outbound(tr, trace_id, span_id, rid, up, ua, env_start, env_end, status, flags, (request_size, body))
        span_end = end + int(rng.uniform(0.1, 0.8) * _MS)

        # What brightstaff records once the response is in (ObservableStreamProcessor.on_complete).
        attrs += [("http.status_code", status), ("service.name.override", "plano(llm)")]
        ttft_ms, duration_ms = (first - send_ns) // _MS, (end - send_ns) // _MS
        attrs += [("llm.time_to_first_token", ttft_ms), ("llm.duration_ms", duration_ms), ("llm.response_bytes", body)]
        usage = self._usage(status, reset, streaming, path, m, session, prompt_tokens, completion_tokens)
        attrs += usage
        if status == 200 and session:  # priced only with a session and the catalog's rates
            u = dict(usage)
            cached = u.get("llm.usage.cached_input_tokens", 0)
            prompt = u.get("llm.usage.prompt_tokens", 0)
            cost_in = round(((prompt - cached) * m.input_usd_per_m + cached * m.cached_usd_per_m) / 1e6, 9)
            cost_out = round(u.get("llm.usage.completion_tokens", 0) * m.output_usd_per_m / 1e6, 9)
            attrs += [
                ("llm.usage.input_cost_usd", cost_in),
                ("llm.usage.output_cost_usd", cost_out),
                ("llm.usage.total_cost_usd", round(cost_in + cost_out, 9)),
            ]
        s_attrs, s_events, concerning = self._signals(turns, end)
        attrs += s_attrs
        events = [_event(end, "llm.time_to_first_token", [("llm.time_to_first_token", ttft_ms)])]
        if reset:
            events.insert(
                0,
                _log(
                    end,
                    "stream error",
                    "WARN",
                    "brightstaff::streaming",
                    578,
                    [
                        ("service", "plano(llm)"),
                        ("error", "Error receiving chunk: connection reset"),
                        ("duration_ms", duration_ms),
                    ],
                ),
            )
        events += s_events
        events.append(
            _log(
                end,
                "streaming completed",
                "INFO",
                "brightstaff::streaming",
                556,
                [
                    ("service", "plano(llm)"),
                    ("total_bytes", body),
                    ("chunk_count", max(1, body // 90) if streaming else 1),
                    ("duration_ms", duration_ms),
                    ("time_to_first_token_ms", f"Some({ttft_ms})"),
                ],
            )
        )
        self._span(
            tr,
            "plano(llm)",
            trace_id,
            parent,
            name + (FLAG if concerning else ""),
            start_ns,
            span_end,
            attrs,
            span_id=span_id,
            events=events,
        )
        self._llm_facts(tr, m, status, reset, send_ns, first, end, dict(usage), session)
        answered = first if streaming or status != 200 else end
        self._http(tr, "llm_chat", status, start_ns, answered)
        output = (
            0 if status != 200 else (int(completion_tokens * rng.uniform(0.8, 1.2)) if streaming else completion_tokens)
        )
        tr.calls.append(
            EnvoyCall(
                env_start,
                env_end,
                up.cluster,
                status,
                rate_limited=limited,
                streaming=streaming,
                ttft_ms=(first - env_start) // _MS if streaming and status == 200 else None,
                input_tokens=input_tokens,
                output_tokens=max(1, output) if status == 200 else 0,
                completed=not reset,
            )
        )
        return _Call(span_end, first, status, body)

    def _usage(self, status, reset, streaming, path, m: Model, session, prompt, completion) -> list:
        """The usage block brightstaff finds in the response, as span attributes (none on errors,
        a reset stream, or an OpenAI-style stream without ``include_usage``); the upstream's model
        comes with it except in an Anthropic-style stream."""
        rng = self.rng
        if status != 200 or reset or (streaming and path == CHAT and rng.random() >= INCLUDE_USAGE):
            return []
        out = [
            ("llm.usage.prompt_tokens", prompt),
            ("llm.usage.completion_tokens", completion),
            ("llm.usage.total_tokens", prompt + completion),
        ]
        warm = session is not None and rng.random() < 0.6
        cached = int(prompt * rng.uniform(0.4, 0.9)) if warm and prompt >= 1024 else 0
        if m.provider == "openai" or cached:
            out.append(("llm.usage.cached_input_tokens", cached))
        if m.provider == "anthropic" and not cached and session is not None and prompt >= 1024 and rng.random() < 0.5:
            out.append(("llm.usage.cache_creation_tokens", int(prompt * rng.uniform(0.6, 0.95))))
        if m.provider == "openai":
            out.append(("llm.usage.reasoning_tokens", int(completion * rng.uniform(0.3, 0.8)) if m.reasoning else 0))
        if not (streaming and path == MESSAGES):
            out.append(("llm.model", m.reported))
        return out

    def _llm_facts(self, tr, m: Model, status, reset, send_ns, first_ns, end_ns, usage: dict, session) -> None:
        """brightstaff_llm_* for one upstream call: TTFT at the first byte, the rest at its end."""
        p, mod = m.provider, m.short
        self._fact(
            tr,
            first_ns,
            "brightstaff_llm_time_to_first_token_seconds",
            (first_ns - send_ns) / 1e9,
            provider=p,
            model=mod,
        )
        self._fact(
            tr,
            end_ns,
            "brightstaff_llm_upstream_requests_total",
            provider=p,
            model=mod,
            status_class=f"{status // 100}xx",
            error_class="stream" if reset else "none",
        )
        self._fact(
            tr, end_ns, "brightstaff_llm_upstream_duration_seconds", (end_ns - send_ns) / 1e9, provider=p, model=mod
        )
        kinds = (
            ("prompt", "llm.usage.prompt_tokens"),
            ("completion", "llm.usage.completion_tokens"),
            ("cache_read", "llm.usage.cached_input_tokens"),
            ("cache_write", "llm.usage.cache_creation_tokens"),
        )
        for kind, key in kinds:
            if key in usage:
                self._fact(tr, end_ns, "brightstaff_llm_tokens_total", usage[key], provider=p, model=mod, kind=kind)
        if "llm.usage.prompt_tokens" in usage:
            hit = (
                usage.get("llm.usage.cached_input_tokens", 0) > 0 or usage.get("llm.usage.cache_creation_tokens", 0) > 0
            )
            self._fact(
                tr,
                end_ns,
                "brightstaff_prompt_cache_requests_total",
                provider=p,
                model=mod,
                outcome="hit" if hit else "miss",
            )
        else:
            self._fact(tr, end_ns, "brightstaff_llm_tokens_usage_missing_total", provider=p, model=mod)
        if status == 200 and session:  # the response refreshes the session's binding
            self._fact(tr, end_ns, "brightstaff_session_binding_events_total", event="refresh")
            self._fact(tr, end_ns, "brightstaff_session_cache_events_total", outcome="store")

    # --- request kinds ------------------------------------------------------------------------
    def _who(self) -> tuple[str | None, str | None]:
        rng = self.rng
        tenant = rng.choice(TENANTS) if rng.random() < 0.5 else None
        user = f"user_{rng.randint(1000, 1400)}" if rng.random() < 0.6 else None
        return tenant, user

    def llm_request(self, start_ns: int, second: int) -> Trace:
        """A direct request to the LLM listener, rooted at ``plano(llm)`` (Envoy does not trace
        that listener)."""
        rng, tr = self.rng, Trace(LLM)
        session = self._session(rng, second) if rng.random() < 0.8 else None
        prefs = rng.random() < 0.55
        r = rng.random()
        if r < 0.008:
            requested = rng.choice(UNKNOWN_MODELS)
        elif r < 0.12:
            requested = rng.choice(list(ALIASES))
        elif prefs:
            requested = DEFAULT_MODEL
        elif session and r < 0.75:
            requested = session.anchor  # a client keeps naming its conversation's model
        else:
            requested = pick(rng, {m.name: m.weight for m in MODELS.values()})
        model = MODELS.get(ALIASES.get(requested, requested))
        path = CHAT
        if model and model.provider == "anthropic" and rng.random() < 0.35:
            path = MESSAGES
        elif model and model.provider == "openai" and rng.random() < 0.05:
            path = RESPONSES
        tenant, user = self._who()
        if session:  # the client sends its user's header with every turn of a conversation, or never
            user = session.user
        prompt = rng.choice(PROMPTS)
        tools = tuple(rng.sample(TOOLS, rng.randint(1, 3))) if rng.random() < 0.15 else ()
        self.llm_call(
            tr,
            self._id(16),
            b"",
            start_ns,
            rid=uuid(rng),
            requested=requested,
            path=path,
            prefs=prefs,
            session=session,
            tools=tools,
            streaming=rng.random() < 0.7,
            prompt=prompt,
            turns=rng.randint(1, 14),
            tenant=tenant,
            user=user,
            ua=rng.choice(USER_AGENTS),
        )
        return tr

    def agent_request(self, start_ns: int, second: int) -> Trace:
        """A request to an agent listener: Envoy's ``plano(inbound)`` root, the orchestrator (named
        after the listener) with its agent-selection call, then per selected agent its filters and
        its ``plano(agent)`` span, under which the agent's LLM calls come back through Plano."""
        rng, tr = self.rng, Trace(AGENT)
        trace_id, rid = self._id(16), uuid(rng)
        inbound_id, orch_id = self._id(8), self._id(8)
        listener = pick(rng, {name: w for name, (w, _) in LISTENERS.items()})
        agents = LISTENERS[listener][1]
        tenant, _ = self._who()
        prompt = rng.choice(PROMPTS)
        orch_start = start_ns + int(rng.uniform(0.3, 1.5) * _MS)
        o_attrs: list = [
            ("component", "orchestrator"),
            ("request_id", rid),
            ("http.method", "POST"),
            ("http.path", AGENTS_CHAT),
            ("service.name.override", "plano(orchestrator)"),
        ]
        if tenant:
            o_attrs.append(("tenant.id", tenant))
        o_events: list = []
        sel_start = orch_start + int(lognormal(rng, 2.5, 0.5) * _MS)
        sel_end, sel_status = self._arch_call(tr, trace_id, orch_id, rid, sel_start, 230, int(lognormal(rng, 700, 0.4)))
        cursor = sel_end + int(rng.uniform(0.3, 1.5) * _MS)
        status, answered, response_bytes = 200, None, 0
        if sel_status != 200:
            status = 500
            o_events.append(
                _log(
                    sel_end,
                    "agent selection failed",
                    "WARN",
                    "brightstaff::handlers::agents::selector",
                    77,
                    [("error", f"orchestrator model returned {sel_status}")],
                )
            )
        else:
            selected = rng.sample(list(agents), 2 if len(agents) > 1 and rng.random() < 0.15 else 1)
            o_attrs += [
                ("selection.listener", listener),
                ("selection.agent_count", len(selected)),
                ("selection.agents", ",".join(selected)),
                ("selection.determination_ms", f"{(cursor - sel_start) / _MS + rng.uniform(0.5, 3):.2f}"),
            ]
            messages = rng.randint(1, 12)
            session = self._session(rng, second, implicit=True) if rng.random() < 0.6 else None
            for agent_id in selected:
                agent = agents[agent_id]
                blocked = None
                for f in agent.filters:
                    f_start = cursor + int(rng.uniform(0.2, 1.0) * _MS)
                    cursor = f_start + int(lognormal(rng, 35, 0.5) * _MS)
                    url, reject = FILTERS[f]
                    f_attrs = [
                        ("agent_id", f),
                        ("agent_url", url),
                        ("filter_name", f),
                        ("bytes_len", 260 + 180 * messages),
                        ("service.name.override", "plano(filter)"),
                    ]
                    self._span(
                        tr, "plano(filter)", trace_id, orch_id, f"execute_raw_filter ({f})", f_start, cursor, f_attrs
                    )
                    if rng.random() < reject:
                        blocked = f
                        break
                if blocked:
                    status, answered = 400, cursor
                    o_events.append(
                        _log(
                            cursor,
                            "client error from agent",
                            "WARN",
                            "brightstaff::handlers::agents::orchestrator",
                            80,
                            [("agent", blocked), ("status", "400"), ("body", '{"error":"request blocked"}')],
                        )
                    )
                    break
                a_start, a_id = cursor + int(rng.uniform(0.3, 1.5) * _MS), self._id(8)
                cursor = a_start + int(lognormal(rng, 12, 0.5) * _MS)
                n_calls = pick(rng, ((1, 0.4), (2, 0.45), (3, 0.15)))
                model = pick(rng, agent.models)
                anchored = replace(session, anchor=model, route=None) if session else None
                failed = False
                for i in range(n_calls):
                    last = i == n_calls - 1
                    call = self.llm_call(
                        tr,
                        trace_id,
                        a_id,
                        cursor,
                        rid=rid,
                        requested=model,
                        session=anchored,
                        tools=agent.tools,
                        streaming=last and rng.random() < 0.8,
                        tool_turn=i > 0,
                        prompt=prompt,
                        turns=messages + 2 * i,
                        context=(1400, 0.6),
                        completion=(150, 0.7) if last else (45, 0.5),
                        tenant=tenant,
                        ua="AsyncOpenAI/Python 2.17.0",
                    )
                    cursor = call.end_ns
                    if call.failed:
                        failed, status, answered = True, 500, call.end_ns  # the agent gives up with a 500
                        break
                    if last:
                        answered, response_bytes = call.first_byte_ns, call.response_bytes
                    else:
                        cursor += int(lognormal(rng, 150, 0.8) * _MS)  # the agent runs the tool
                cursor += int(lognormal(rng, 6, 0.5) * _MS)
                a_attrs = [
                    ("agent_id", agent_id),
                    ("message_count", messages),
                    ("service.name.override", "plano(agent)"),
                ]
                if tenant:
                    a_attrs.append(("tenant.id", tenant))
                self._span(
                    tr, "plano(agent)", trace_id, orch_id, f"{agent_id} {CHAT}", a_start, cursor, a_attrs, span_id=a_id
                )
                messages += 1
                if failed:
                    break
        orch_end = cursor + int(rng.uniform(0.2, 1.5) * _MS)
        self._span(
            tr,
            "plano(orchestrator)",
            trace_id,
            inbound_id,
            listener,
            orch_start,
            orch_end,
            o_attrs,
            span_id=orch_id,
            events=o_events,
        )
        end = orch_end + int(rng.uniform(0.1, 0.8) * _MS)
        sizes = (rng.randint(120, 2400), response_bytes or rng.randint(90, 400))
        i_attrs = self._envoy(
            rid,
            "https://localhost" + CHAT,
            rng.choice(INBOUND_USER_AGENTS),
            "bright_staff",
            status,
            "-",
            sizes,
            "172.18.0.1",
        )
        self._span(tr, INBOUND, trace_id, b"", f"POST {CHAT}", start_ns, end, i_attrs, span_id=inbound_id)
        self._http(tr, "agent_chat", status, orch_start, answered or orch_end)
        return tr

    def routing_request(self, start_ns: int, second: int) -> Trace:
        """A request to ``/routing/v1/chat/completions``: Plano decides the model, the client calls it."""
        rng, tr = self.rng, Trace(ROUTING)
        trace_id, rid, span_id = self._id(16), uuid(rng), self._id(8)
        tenant, _ = self._who()
        attrs: list = [
            ("component", "routing"),
            ("request_id", rid),
            ("http.method", "POST"),
            ("http.path", ROUTING_CHAT),
            ("service.name.override", "plano(routing)"),
        ]
        if tenant:
            attrs.append(("tenant.id", tenant))
        session = self._session(rng, second) if rng.random() < 0.7 else None
        cursor = start_ns + int(lognormal(rng, 0.5, 0.5) * _MS)
        status, route, model, events = 200, None, "none", []
        call_start = cursor
        call_end, call_status = self._arch_call(
            tr, trace_id, span_id, rid, call_start, 170, int(lognormal(rng, 900, 0.5))
        )
        cursor = call_end + int(rng.uniform(0.1, 0.6) * _MS)
        if call_status != 200:
            outcome, status, selected = "policy_error", 500, "unknown"
            events.append(
                _log(
                    cursor,
                    "routing decision failed",
                    "WARN",
                    "brightstaff::handlers::routing_service",
                    355,
                    [("error", "Failed to determine route: upstream unavailable")],
                )
            )
        else:
            if rng.random() < 0.8:
                route = pick(rng, {r: w for r, (w, _) in ROUTES.items()})
                model = pick(rng, ROUTES[route][1])
            selected = model
            if session:
                model, route, s_attrs = self._session_router(tr, cursor, session, model, route)
                attrs += s_attrs
            outcome = "no_candidates" if model == "none" else "decision_served"
            events.append(
                _log(
                    cursor,
                    "routing decision completed",
                    "INFO",
                    "brightstaff::handlers::routing_service",
                    333,
                    [
                        ("primary_model", model),
                        ("total_models", 1 if model == "none" else 2),
                        ("route", f'Some("{route}")' if route else "None"),
                        ("pinned", False),
                        ("switched", False),
                    ],
                )
            )
        self._fact(
            tr,
            call_end,
            "brightstaff_router_decisions_total",
            route="routing",
            selected_model=selected,
            fallback="false" if selected not in ("none", "unknown") else "true",
        )
        self._fact(
            tr, call_end, "brightstaff_router_decision_duration_seconds", (call_end - call_start) / 1e9, route="routing"
        )
        end = cursor + int(rng.uniform(0.1, 0.5) * _MS)
        self._fact(tr, end, "brightstaff_routing_service_requests_total", outcome=outcome)
        self._span(
            tr,
            "plano(routing)",
            trace_id,
            b"",
            "routing_decision",
            start_ns,
            end,
            attrs,
            span_id=span_id,
            events=events,
        )
        self._http(tr, "routing_decision", status, start_ns, end)
        return tr
