"""Plano's LLM calls as brightstaff sends them (reference/plano-telemetry): ``plano(llm)`` spans,
kind INTERNAL, status UNSET, ``http.status_code`` an int, ``llm.time_to_first_token`` ms as an
int, ``llm.usage.*`` ints, the cost only with a session, ``llm.model`` (and
``service.name.override``) repeated; a call that failed before dispatch is named ``llm`` and has
neither model nor status code. Beside them the spans of the same requests that are not LLM calls
(the routing span, Envoy's outbound hop with its string status code), which the LLM metrics must
not count. Shared by the /metrics tests and the Grafana/Prometheus test."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import pb_request, pb_span

MS = 1_000_000
LLM = {"service.name": "plano(llm)"}
ROUTING = {"service.name": "plano(routing)"}
OUTBOUND = {"service.name": "plano(outbound)"}
PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Call:
    """One LLM call. ``model`` is ``provider/model`` (None: failed before dispatch); ``requested``
    an alias the router resolved to ``model``; ``usage`` the ``llm.usage.*`` ints sent."""

    model: str | None
    duration_ms: int
    status: int | None = 200
    ttft_ms: int | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost: float | None = None  # llm.usage.total_cost_usd: only with a session and a price source
    route: str | None = None
    requested: str | None = None
    upstream_model: str | None = None  # the second llm.model, as the upstream reported it

    @property
    def provider(self) -> str | None:
        return self.model.split("/", 1)[0] if self.model and "/" in self.model else None

    @property
    def failure(self) -> str | None:
        if self.status is None:
            return "before_dispatch" if self.model is None else None
        if self.status == 429:
            return "429"
        return "5xx" if self.status >= 500 else "4xx" if self.status >= 400 else None

    @property
    def name(self) -> str:
        if self.model is None:
            return "llm"
        return f"POST {PATH} {self.requested} -> {self.model}" if self.requested else f"POST {PATH} {self.model}"

    def attributes(self, n: int) -> list[tuple[str, object]]:
        a: list[tuple[str, object]] = [
            ("service.name.override", "plano(llm)"),
            ("component", "llm"),
            ("request_id", f"req-{n}"),
            ("http.method", "POST"),
            ("http.path", PATH),
            ("llm.temperature", "0.7"),
            ("llm.user_message_preview", "What is the weather in Paris?"),
        ]
        if self.model is not None:
            if self.route:
                a.append(("plano.route.name", self.route))
            a.append(("llm.model", self.model))
            if self.provider:
                a.append(("llm.provider", self.provider))
        if self.cost is not None:
            a.append(("plano.session_id", f"implicit:{n:016x}"))
        a.append(("service.name.override", "plano(llm)"))
        if self.status is not None:
            a.append(("http.status_code", self.status))
        if self.ttft_ms is not None:
            a.append(("llm.time_to_first_token", self.ttft_ms))
        if self.status is not None:
            a += [("llm.duration_ms", self.duration_ms), ("llm.response_bytes", 1843)]
        if self.upstream_model:
            a.append(("llm.model", self.upstream_model))
        a += [(f"llm.usage.{k}", v) for k, v in self.usage.items()]
        if self.cost is not None:
            a += [
                ("llm.usage.input_cost_usd", self.cost * 0.25),
                ("llm.usage.output_cost_usd", self.cost * 0.75),
                ("llm.usage.total_cost_usd", self.cost),
            ]
        if self.status is not None:
            a += [("signals.quality", "good"), ("signals.turn_count", 1)]
        return a

    def spans(self, n: int, start_ns: int) -> list[tuple[dict, Span]]:
        """The call's plano(llm) span and the request's spans that are not LLM calls, as
        (resource, span); ``n`` numbers the ids."""
        trace = n.to_bytes(16, "big")
        llm_id = (n << 8 | 1).to_bytes(8, "big")
        events = []
        if self.model is None:
            events.append(
                Span.Event(time_unix_nano=start_ns, name="unknown model requested: gpt-9")  # a WARN log event
            )
        llm = pb_span(
            trace,
            llm_id,
            self.name,
            start_ns,
            start_ns + self.duration_ms * MS,
            attrs=self.attributes(n),
            events=events,
        )
        out = [(LLM, llm)]
        if self.model is not None:
            routing = pb_span(
                trace,
                (n << 8 | 2).to_bytes(8, "big"),
                "routing",
                start_ns,
                start_ns + MS // 10,
                parent=llm_id,
                attrs={"component": "routing", "route.selected_model": "none", "routing.determination_ms": 0},
            )
            outbound = pb_span(
                trace,
                (n << 8 | 3).to_bytes(8, "big"),
                f"POST api.openai.com{PATH}",
                start_ns + MS,
                start_ns + self.duration_ms * MS,
                parent=llm_id,
                kind=Span.SPAN_KIND_SERVER,
                attrs={"component": "proxy", "http.status_code": str(self.status or 200), "upstream_cluster": "openai"},
            )
            out += [(ROUTING, routing), (OUTBOUND, outbound)]
        return out


def request(calls: list[tuple[int, Call]], start_ns: int):
    """One OTLP request of ``calls`` (numbered), one ResourceSpans per service as brightstaff sends."""
    by_service: dict[str, tuple[dict, list[Span]]] = {}
    for n, call in calls:
        for resource, span in call.spans(n, start_ns):
            by_service.setdefault(resource["service.name"], (resource, []))[1].append(span)
    return pb_request(*by_service.values())


GPT, CLAUDE = "openai/gpt-4o", "anthropic/claude-sonnet-4"
# A known mix: durations and TTFTs on and around the semconv bucket bounds (inclusive upper
# bounds), tokens on the token bounds, both failure kinds Plano's LLM span can show, a call that
# failed before dispatch, an alias, a stream without usage.
CALLS = [
    Call(
        GPT,
        1500,
        ttft_ms=320,
        usage={
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "cached_input_tokens": 1024,
            "reasoning_tokens": 0,
        },
        cost=0.0105,
        route="code_generation",
        upstream_model="gpt-4o-2024-08-06",
    ),
    Call(
        GPT,
        640,
        ttft_ms=85,
        usage={"prompt_tokens": 40, "completion_tokens": 17, "total_tokens": 57},
        route="code_generation",
    ),
    Call(GPT, 15, status=429, ttft_ms=12, route="code_generation"),
    Call(GPT, 2000, status=503, route="code_generation"),
    Call(
        CLAUDE,
        81_920,
        ttft_ms=1280,
        usage={
            "prompt_tokens": 5000,
            "completion_tokens": 800,
            "total_tokens": 5800,
            "cached_input_tokens": 4096,
            "reasoning_tokens": 256,
        },
        cost=0.027,
        route="fast",
        requested="fast-model",
    ),
    Call(CLAUDE, 100_000, ttft_ms=640),
    Call(None, 1, status=None),
]
