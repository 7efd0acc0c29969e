"""The LLM Usage dashboard's panels against numbers computed here, independently, from a known set of
LLM calls sent as Plano sends them (reference/plano-telemetry: plano(llm) spans named
``POST /v1/chat/completions openai/gpt-4o``, ``... gpt-4o -> openai/gpt-4o-mini 🚩``, ``llm`` before
dispatch; ints, doubles and strings as typed there) and as other senders do (OpenTelemetry GenAI,
OpenInference), next to spans that are not LLM calls (routing, Envoy's outbound hop with its
string "429"). Every panel's series, exactly; the stat panels over (start, end]; the drill-downs
find the traces of exactly the calls behind a series."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from conftest import grpc_export, pb_request, pb_span
from support.clickhouse_fixtures import STORES, serve_on

STEP = 60
BASE = 1_700_000_040  # a whole multiple of STEP
START, END = BASE, BASE + 600
N_POINTS = 11
FLAG = " \U0001f6a9"
PROVIDER = {
    "openai/gpt-4o": "openai",
    "openai/gpt-4o-mini": "openai",
    "anthropic/claude-sonnet-4-20250514": "anthropic",
}
ALIASES = {"gpt-4o": "openai/gpt-4o-mini", "smart": "anthropic/claude-sonnet-4-20250514"}
ROUTES = ["code_generation", "summarization", None]
QUALITIES = ["excellent", "good", "neutral", "poor", "severe"]
SESSIONS = [f"conv-{i:02d}" for i in range(14)]
# USD per million tokens (input, output, cached input) of the calls sent without a cost. gpt-4o's
# are genai-prices' (the table the estimate reads, as the issue quotes it); the others are given
# to the server as llm_prices overrides, so the test does not depend on the rest of the table.
# OpenInference's claude-haiku is in neither: its calls have no estimated cost.
PRICES = {
    "openai/gpt-4o": (2.5, 10.0, 1.25),
    "openai/gpt-4o-mini": (0.2, 0.8, 0.1),
    "anthropic/claude-sonnet-4-20250514": (3.0, 15.0, 0.3),
    "gpt-4o-mini": (0.2, 0.8, 0.1),
}
OVERRIDES = [f"{m}={i:g}/{o:g}/{c:g}" for m, (i, o, c) in PRICES.items() if m != "openai/gpt-4o"]


@dataclass
class Call:
    """One LLM call as sent, and what the panels should make of it."""

    trace_id: bytes
    start_ns: int
    duration_ns: int
    service: str = "plano(llm)"
    model: str | None = None
    provider: str | None = None
    requested: str | None = None
    status: int | None = None
    ttft_ms: float | None = None
    tokens: dict = field(default_factory=dict)  # input, output, cached_input, reasoning
    cost: float | None = None
    route: str | None = None
    session: str | None = None
    quality: str | None = None
    flagged: bool = False
    failure: str | None = None
    error_status: bool = False

    @property
    def k(self) -> int:
        return -(-(self.start_ns - START * 10**9) // (STEP * 10**9))

    @property
    def ms(self) -> float:
        return self.duration_ns / 1e6

    @property
    def estimated(self) -> float | None:
        """What the price table says the call cost, when it has tokens and no sent cost: the
        uncached input, the cached input and the output, each at its price."""
        if self.cost is not None or not self.tokens or self.model not in PRICES:
            return None
        i, o, c = PRICES[self.model]
        cached = self.tokens.get("cached_input", 0)
        return ((self.tokens["input"] - cached) * i + cached * c + self.tokens["output"] * o) / 1e6

    def costs(self) -> dict[str, float]:
        """By cost source: what the call cost."""
        out = {"sent": self.cost, "estimated": self.estimated}
        return {k: v for k, v in out.items() if v is not None}


def _quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (DuckDB's quantile_cont, numpy's default)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _make_calls(rng: random.Random) -> list[Call]:
    calls = []
    for i in range(420):
        # Some before the range's first step (never counted), some in step 0 (per-step panels only).
        start_ns = (BASE + rng.randrange(-100, 600)) * 10**9 + rng.randrange(10**9)
        if i < 12:  # exactly on step boundaries: counted in the step they end
            start_ns = (BASE + STEP * rng.randrange(0, 11)) * 10**9
        c = Call(trace_id=rng.randbytes(16), start_ns=start_ns, duration_ns=rng.randrange(200, 9000) * 10**6)
        outcome = rng.choices(["ok", "429", "503", "before_dispatch"], [80, 9, 5, 3])[0]
        if outcome == "before_dispatch":
            c.failure = "before_dispatch"
            calls.append(c)
            continue
        c.requested = rng.choice([*PROVIDER, *ALIASES, "openai/gpt-4o-mini"])
        c.model = ALIASES.get(c.requested, c.requested)
        if rng.random() < 0.15 and c.requested == c.model:  # the router picked another model
            c.model = rng.choice([m for m in PROVIDER if m != c.requested])
        c.provider = PROVIDER[c.model]
        c.route = rng.choice(ROUTES)
        c.session = rng.choice([*SESSIONS, None])
        c.quality = rng.choice(QUALITIES)
        c.flagged = c.quality in ("poor", "severe") and rng.random() < 0.7
        c.ttft_ms = float(rng.randrange(80, min(2500, c.duration_ns // 10**6)))
        if outcome == "ok":
            c.status = 200
            prompt = rng.randrange(50, 6000)
            c.tokens = {"input": prompt, "output": rng.randrange(0, 900)}
            if c.provider == "openai":
                c.tokens["cached_input"] = rng.choice([0, 0, prompt // 2, prompt - 10])
                c.tokens["reasoning"] = rng.randrange(0, 300)
            elif rng.random() < 0.5:
                c.tokens["cached_input"] = prompt // 3
            if c.session and rng.random() < 0.7:  # Plano prices a call only with a session
                c.cost = round(rng.uniform(0.0001, 0.05), 6)
        else:
            c.status = int(outcome)
            c.failure = outcome if outcome == "429" else "5xx"
        calls.append(c)
    # Other senders' LLM calls: OpenTelemetry GenAI (TTFT in seconds) and OpenInference.
    for i in range(40):
        start_ns = (BASE + rng.randrange(1, 600)) * 10**9
        c = Call(
            trace_id=rng.randbytes(16),
            start_ns=start_ns,
            duration_ns=rng.randrange(1000, 4000) * 10**6,
            service="support-bot",
            model="gpt-4o-mini",
            provider="openai",
            requested="gpt-4o-mini",
            ttft_ms=rng.choice([0.25, 0.5, 0.75]) * 1000,
            tokens={"input": rng.randrange(10, 900), "output": rng.randrange(1, 400)},
            session=rng.choice(SESSIONS),
        )
        if i % 5 == 0:  # the SDK set status ERROR, no HTTP status
            c.error_status, c.failure, c.tokens = True, "error_status", {}
        if i % 2:  # OpenInference: cost sent as llm.cost.total, or none (and no price table knows the model)
            c.service, c.model, c.provider, c.requested = "rag-app", "claude-haiku", "anthropic", "claude-haiku"
            c.ttft_ms = None
            c.cost = None if c.error_status or i % 4 == 1 else round(rng.uniform(0.001, 0.01), 6)
        calls.append(c)
    return calls


def _plano_span(c: Call, span_id: bytes) -> Span:
    if c.failure == "before_dispatch":
        return pb_span(c.trace_id, span_id, "llm", c.start_ns, c.start_ns + c.duration_ns, attrs={"component": "llm"})
    name = f"POST /v1/chat/completions {c.requested}" + (f" -> {c.model}" if c.requested != c.model else "")
    attrs: list[tuple] = [
        ("component", "llm"),
        ("http.method", "POST"),
        ("llm.temperature", "0.7"),
        ("llm.model", c.model),
        ("llm.provider", c.provider),
    ]
    if c.route:
        attrs.append(("plano.route.name", c.route))
    if c.session:
        attrs.append(("plano.session_id", c.session))
    attrs += [
        ("http.status_code", c.status),
        ("llm.time_to_first_token", int(c.ttft_ms)),
        ("llm.duration_ms", c.duration_ns // 10**6),
    ]
    if c.tokens:
        attrs += [
            ("llm.usage.prompt_tokens", c.tokens["input"]),
            ("llm.usage.completion_tokens", c.tokens["output"]),
            ("llm.usage.total_tokens", c.tokens["input"] + c.tokens["output"]),
        ]
        if "cached_input" in c.tokens:
            attrs.append(("llm.usage.cached_input_tokens", c.tokens["cached_input"]))
        if "reasoning" in c.tokens:
            attrs.append(("llm.usage.reasoning_tokens", c.tokens["reasoning"]))
        attrs.append(("llm.model", c.model.split("/")[1] + "-2024-08-06"))  # the upstream's: the first one wins
    if c.cost is not None:
        attrs += [("llm.usage.input_cost_usd", c.cost / 2), ("llm.usage.output_cost_usd", c.cost / 2)]
        attrs.append(("llm.usage.total_cost_usd", c.cost))
    attrs += [("signals.quality", c.quality), ("signals.quality_score", 0.5), ("signals.turn_count", 3)]
    return pb_span(
        c.trace_id, span_id, name + (FLAG if c.flagged else ""), c.start_ns, c.start_ns + c.duration_ns, attrs=attrs
    )


def _other_sender_span(c: Call, span_id: bytes) -> Span:
    if c.service == "support-bot":  # OpenTelemetry GenAI semantic conventions
        attrs: dict = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": c.model,
            "gen_ai.provider.name": c.provider,
            "gen_ai.conversation.id": c.session,
            "gen_ai.response.time_to_first_chunk": c.ttft_ms / 1000,
        }
        if c.tokens:
            attrs |= {"gen_ai.usage.input_tokens": c.tokens["input"], "gen_ai.usage.output_tokens": c.tokens["output"]}
    else:  # OpenInference
        attrs = {
            "openinference.span.kind": "LLM",
            "llm.model_name": c.model,
            "llm.provider": c.provider,
            "session.id": c.session,
        }
        if c.tokens:
            attrs |= {"llm.token_count.prompt": c.tokens["input"], "llm.token_count.completion": c.tokens["output"]}
        if c.cost is not None:
            attrs["llm.cost.total"] = c.cost
    status = Status.STATUS_CODE_ERROR if c.error_status else Status.STATUS_CODE_UNSET
    return pb_span(
        c.trace_id, span_id, "chat " + c.model, c.start_ns, c.start_ns + c.duration_ns, kind=Span.SPAN_KIND_CLIENT,
        attrs=attrs, status_code=status, status_message="upstream timeout" if c.error_status else "",
    )  # fmt: skip


@pytest.fixture(scope="module", params=STORES)
def calls(request, module_server_factory, tmp_path_factory):
    """A server holding the calls (each its own trace, with spans that are not LLM calls), and the calls."""
    rng = random.Random(17)
    calls = _make_calls(rng)
    by_service = defaultdict(list)
    for c in calls:
        call_id = rng.randbytes(8)
        if c.service == "plano(llm)":
            by_service["plano(llm)"].append(_plano_span(c, call_id))
            if c.failure != "before_dispatch":
                routing = pb_span(
                    c.trace_id, rng.randbytes(8), "routing", c.start_ns + 1000, c.start_ns + 90_000, parent=call_id,
                    attrs={"component": "routing", "model.requested": c.requested, "route.selected_model": "none"},
                )  # fmt: skip
                outbound = pb_span(
                    c.trace_id, rng.randbytes(8), "POST api.openai.com/v1/chat/completions", c.start_ns + 100_000,
                    c.start_ns + c.duration_ns - 1000, parent=call_id, kind=Span.SPAN_KIND_SERVER,
                    attrs={"component": "proxy", "http.status_code": str(c.status), "upstream_cluster": c.provider},
                    status_code=Status.STATUS_CODE_ERROR if c.status >= 500 else Status.STATUS_CODE_UNSET,
                )  # fmt: skip
                by_service["plano(routing)"].append(routing)
                by_service["plano(outbound)"].append(outbound)
        else:
            by_service[c.service].append(_other_sender_span(c, call_id))
    prices = [a for o in OVERRIDES for a in ("--llm-prices", o)]
    srv = serve_on(request, module_server_factory, tmp_path_factory.mktemp("llm"), *prices)
    for service, spans in by_service.items():
        for i in range(0, len(spans), 200):
            resp = grpc_export(srv.grpc_target, pb_request(({"service.name": service}, spans[i : i + 200])))
            assert resp.partial_success.rejected_spans == 0
    srv.settled()
    return srv, calls


def _panel(srv, panel_id: str, **params) -> dict:
    r = srv.get(
        f"/api/v1/panels/{panel_id}?"
        + "&".join(f"{k}={v}" for k, v in {"start": START, "end": END, "step": STEP, **params}.items())
    )
    assert r.status_code == 200, r.text
    return r.json()


def _in_steps(calls: list[Call]) -> list[Call]:
    return [c for c in calls if 0 <= c.k < N_POINTS]


def _in_range(calls: list[Call]) -> list[Call]:
    """The calls a stat panel counts: (start, end]."""
    return [c for c in calls if 1 <= c.k < N_POINTS]


def _by_name(data: dict) -> dict[str, dict]:
    names = [s["name"] for s in data["series"]]
    assert len(names) == len(set(names)), names
    return {s["name"]: s for s in data["series"]}


def _ts(k: int) -> float:
    return START + k * STEP


# --- the panels ------------------------------------------------------------------------------------


def test_the_dashboards_are_listed_with_their_panels(calls):
    srv, _ = calls
    boards = srv.get("/api/v1/dashboards").json()
    assert [b["id"] for b in boards[2:]] == ["brightstaff"]  # the Grafana ones: tests/grafana/test_dashboards.py
    assert boards[:2] == [
        {
            "id": "requests-overview",
            "title": "Plano - Requests Overview",
            "panels": [
                "llm_requests_per_second",
                "agent_requests_per_second",
                "total_requests_per_second",
                "rate_limited_per_second",
                "llm_latency_ms",
                "llm_cumulative_requests",
            ],
            "source": "builtin",
        },
        {
            "id": "llm-usage",
            "title": "Plano - LLM Usage",
            "panels": [
                "llm_cost_total",
                "llm_sessions_top",
                "llm_route_share",
                "llm_model_selection",
                "llm_tokens_per_second",
                "llm_cost_per_hour",
                "llm_ttft_ms",
                "llm_output_tokens_per_second",
                "llm_failure_ratio",
                "llm_upstream_429_per_second",
                "llm_prompt_cache_ratio",
                "llm_signals_quality",
            ],
            "source": "builtin",
        },
    ]
    infos = srv.get("/api/v1/panels?dashboard=llm-usage").json()
    assert [p["id"] for p in infos] == boards[1]["panels"]
    assert all(p["dashboard"] == "llm-usage" and p["drilldown"] for p in infos)
    everything = srv.get("/api/v1/panels").json()
    assert [p["id"] for p in everything] == [pid for b in boards for pid in b["panels"]]
    by_id = {p["id"]: p for p in infos}
    assert by_id["llm_route_share"]["display"] == "table"
    assert [m["id"] for m in by_id["llm_route_share"]["measures"]] == ["share", "latency_p95_ms", "failure_ratio"]
    assert (
        by_id["llm_cost_per_hour"]["unit"] == "currencyUSD"
        and by_id["llm_tokens_per_second"]["unit"] == "suffix: tok/s"
    )
    assert "gen_ai_client_token_usage_sum" in by_id["llm_tokens_per_second"]["promql"][0]
    assert "planoscope_llm_cost_usd_total" in by_id["llm_cost_per_hour"]["promql"][0]
    assert "gen_ai_client_operation_time_to_first_chunk_seconds_bucket" in by_id["llm_ttft_ms"]["promql"][0]
    # Every panel of the dashboard in one refresh: the same as each on its own (sums of floats
    # up to their order, which DuckDB's parallel scans do not fix).
    board = srv.get(f"/api/v1/dashboard?id=llm-usage&start={START}&end={END}&step={STEP}").json()
    assert board["dashboard"] == "llm-usage" and board["title"] == "Plano - LLM Usage"
    assert [p["id"] for p in board["panels"]] == boards[1]["panels"]
    for p in board["panels"]:
        alone = _panel(srv, p["id"])
        assert {**p, "series": None} == {**alone, "series": None}, p["id"]
        assert [(s["name"], s["labels"]) for s in p["series"]] == [(s["name"], s["labels"]) for s in alone["series"]]
        for s, a in zip(p["series"], alone["series"], strict=True):
            assert [t for t, _ in s["points"]] == [t for t, _ in a["points"]], (p["id"], s["name"])
            assert [v for _, v in s["points"]] == pytest.approx([v for _, v in a["points"]], rel=1e-12), p["id"]
    assert srv.get("/api/v1/dashboard?id=nope").status_code == 404
    assert srv.get("/api/v1/panels?dashboard=nope").status_code == 404


def test_tokens_per_second_integrate_to_what_was_sent(calls):
    srv, all_calls = calls
    data = _panel(srv, "llm_tokens_per_second")
    assert data["unit"] == "suffix: tok/s" and "truncated" not in data
    want: dict[tuple, Counter] = defaultdict(Counter)
    for c in _in_steps(all_calls):
        for kind, n in c.tokens.items():
            want[(c.model, kind)][c.k] += n
    got = {(s["labels"]["llm_model"], s["labels"]["kind"]): s for s in data["series"]}
    assert set(got) == set(want)
    for (model, kind), per_k in want.items():
        s = got[(model, kind)]
        assert s["name"] == f"{model} {kind}"
        assert [t for t, _ in s["points"]] == [_ts(k) for k in range(N_POINTS)]
        assert [v for _, v in s["points"]] == [per_k.get(k, 0) / STEP for k in range(N_POINTS)]
        assert sum(round(v * STEP) for _, v in s["points"]) == sum(per_k.values())  # exactly the tokens sent
    assert ("openai/gpt-4o", "reasoning") in got and ("anthropic/claude-sonnet-4-20250514", "reasoning") not in got
    assert ("gpt-4o-mini", "input") in got and ("claude-haiku", "output") in got  # GenAI, OpenInference


def test_cost_per_hour_and_total_by_model_and_source(calls):
    """The cost sent and the estimated cost, apart: Plano sends a cost only with a session and a
    price source; the others are estimated from the price table, and a model the table does not
    know has none."""
    srv, all_calls = calls
    per_hour = _panel(srv, "llm_cost_per_hour")
    want: dict[tuple, Counter] = defaultdict(Counter)
    for c in _in_steps(all_calls):
        for source, usd in c.costs().items():
            want[(c.model, source)][c.k] += usd
    got = {(s["labels"]["llm_model"], s["labels"]["cost_source"]): s for s in per_hour["series"]}
    assert set(got) == set(want)
    assert ("openai/gpt-4o", "estimated") in got and ("openai/gpt-4o", "sent") in got
    assert ("claude-haiku", "sent") in got and ("claude-haiku", "estimated") not in got  # unknown: no cost
    assert any(c.model == "claude-haiku" and c.tokens and c.cost is None for c in all_calls)
    for (model, source), per_k in want.items():
        assert got[(model, source)]["name"] == (f"{model} (estimated)" if source == "estimated" else model)
        values = [v for _, v in got[(model, source)]["points"]]
        assert values == pytest.approx([per_k.get(k, 0) * 3600 / STEP for k in range(N_POINTS)], rel=1e-12)
        assert sum(values) * STEP / 3600 == pytest.approx(sum(per_k.values()), rel=1e-12)

    total = _panel(srv, "llm_cost_total")
    want_total = Counter()
    for c in _in_range(all_calls):
        for source, usd in c.costs().items():
            want_total[(c.model, source)] += usd
    got_total = {(s["labels"]["llm_model"], s["labels"]["cost_source"]): s["points"] for s in total["series"]}
    assert got_total == {key: [[END, pytest.approx(usd, rel=1e-12)]] for key, usd in want_total.items()}
    # One gpt-4o call priced by hand at genai-prices' $2.50 / $1.25 cached / $10 per million tokens.
    one = next(c for c in all_calls if c.model == "openai/gpt-4o" and c.estimated and c.tokens.get("cached_input"))
    t = one.tokens
    assert one.estimated == pytest.approx(
        ((t["input"] - t["cached_input"]) * 2.5 + t["cached_input"] * 1.25 + t["output"] * 10) / 1e6
    )


def test_time_to_first_token_quantiles_are_exact(calls):
    srv, all_calls = calls
    data = _panel(srv, "llm_ttft_ms")
    values: dict[tuple, list] = defaultdict(list)
    for c in _in_steps(all_calls):
        if c.ttft_ms is not None:
            values[(c.model, c.k)].append(c.ttft_ms)
    got = {(s["labels"]["quantile"], s["labels"]["llm_model"]): dict(s["points"]) for s in data["series"]}
    assert {m for _, m in got} == {m for m, _ in values}
    assert "claude-haiku" not in {m for _, m in got}  # OpenInference sent no time to first token
    for (model, k), xs in values.items():
        for q in (0.5, 0.95, 0.99):
            assert got[(str(q), model)][_ts(k)] == pytest.approx(_quantile(xs, q), rel=1e-12)
    for (_q, model), points in got.items():  # a point only in the steps the model had calls with TTFT
        assert set(points) == {_ts(k) for m, k in values if m == model}
    assert "p95 openai/gpt-4o" in {s["name"] for s in data["series"]}
    gen_ai = [c.ttft_ms for c in _in_steps(all_calls) if c.service == "support-bot"]
    assert set(gen_ai) <= {250.0, 500.0, 750.0}  # gen_ai.response.time_to_first_chunk, seconds, in ms


def test_output_tokens_per_second_is_the_median_per_call(calls):
    srv, all_calls = calls
    data = _panel(srv, "llm_output_tokens_per_second")
    speeds: dict[tuple, list] = defaultdict(list)
    for c in _in_steps(all_calls):
        # A response that was not streamed arrives whole at its first chunk: only streamed ones count.
        if c.tokens.get("output") and c.ttft_ms is not None and c.ms - c.ttft_ms >= 100:
            speeds[(c.model, c.k)].append(c.tokens["output"] / ((c.ms - c.ttft_ms) / 1000))
    got = {s["labels"]["llm_model"]: dict(s["points"]) for s in data["series"]}
    assert all(set(s["labels"]) == {"llm_model"} and s["name"] == s["labels"]["llm_model"] for s in data["series"])
    assert set(got) == {m for m, _ in speeds}
    for (model, k), xs in speeds.items():
        assert got[model][_ts(k)] == pytest.approx(_quantile(xs, 0.5), rel=1e-12)
    assert sum(len(p) for p in got.values()) == len(speeds)


def test_failure_ratio_per_model_and_class(calls):
    srv, all_calls = calls
    data = _panel(srv, "llm_failure_ratio")
    per_model = Counter((c.model or "", c.k) for c in _in_steps(all_calls))
    per_step = Counter(c.k for c in _in_steps(all_calls))
    failed = Counter((c.model or "", c.failure, c.k) for c in _in_steps(all_calls) if c.failure)
    classes = {(m, f) for m, f, _ in failed}
    got = {(s["labels"]["llm_model"], s["labels"]["class"]): dict(s["points"]) for s in data["series"]}
    assert set(got) == classes
    assert {f for _, f in classes} == {"429", "5xx", "before_dispatch", "error_status"}
    for (model, f), points in got.items():
        # Calls without a model (failed before dispatch) are a share of all calls; the others of their model's.
        calls_in = per_step if model == "" else {k: n for (m, k), n in per_model.items() if m == model}
        assert points == pytest.approx({_ts(k): failed[(model, f, k)] / n for k, n in calls_in.items()}, rel=1e-12)
    names = {s["name"] for s in data["series"]}
    assert "(no model) before_dispatch" in names and "openai/gpt-4o 429" in names


def test_upstream_429s_per_model_and_provider(calls):
    srv, all_calls = calls
    data = _panel(srv, "llm_upstream_429_per_second")
    want: dict[tuple, Counter] = defaultdict(Counter)
    for c in _in_steps(all_calls):
        if c.failure == "429":
            want[(c.model, c.provider)][c.k] += 1
    got = {(s["labels"]["llm_model"], s["labels"]["llm_provider"]): s for s in data["series"]}
    assert set(got) == set(want)  # Envoy's outbound spans carry "429" too: they are not LLM calls
    for key, per_k in want.items():
        assert [v for _, v in got[key]["points"]] == [per_k.get(k, 0) / STEP for k in range(N_POINTS)]
    assert got[("openai/gpt-4o", "openai")]["name"] == "openai/gpt-4o"


def test_route_share_with_p95_latency_and_failure_ratio(calls):
    srv, all_calls = calls
    data = _panel(srv, "llm_route_share")
    in_range = _in_range(all_calls)
    by_route = defaultdict(list)
    for c in in_range:
        by_route[c.route or ""].append(c)
    got = defaultdict(dict)
    for s in data["series"]:
        assert s["points"][0][0] == END
        got[s["labels"]["route"]][s["labels"].get("measure", "calls")] = s["points"][0][1]
    assert set(got) == set(by_route)
    for route, cs in by_route.items():
        assert got[route]["calls"] == len(cs)
        assert got[route]["share"] == pytest.approx(len(cs) / len(in_range), rel=1e-12)
        assert got[route]["latency_p95_ms"] == pytest.approx(_quantile([c.ms for c in cs], 0.95), rel=1e-12)
        assert got[route]["failure_ratio"] == pytest.approx(sum(1 for c in cs if c.failure) / len(cs), rel=1e-12)
    calls_order = [s["labels"]["route"] for s in data["series"] if "measure" not in s["labels"]]
    assert calls_order == sorted(by_route, key=lambda r: (-len(by_route[r]), r))  # most calls first


def test_model_selection_pairs(calls):
    srv, all_calls = calls
    data = _panel(srv, "llm_model_selection")
    want = Counter((c.requested, c.model) for c in _in_range(all_calls) if c.requested)
    got = {(s["labels"]["requested_model"], s["labels"]["resolved_model"]): s["points"] for s in data["series"]}
    assert got == {pair: [[END, n]] for pair, n in want.items()}
    assert ("gpt-4o", "openai/gpt-4o-mini") in got  # POST ... gpt-4o -> openai/gpt-4o-mini (🚩 or not)
    assert [s["name"] for s in data["series"]][0] == "{} → {}".format(*max(want, key=lambda p: (want[p], p)))
    assert all(p[0] != p[1] or p[0] in PROVIDER or p[0] in {"gpt-4o-mini", "claude-haiku"} for p in got)


def test_prompt_cache_ratio(calls):
    srv, all_calls = calls
    data = _panel(srv, "llm_prompt_cache_ratio")
    cached, prompt = defaultdict(Counter), defaultdict(Counter)
    reporting = set()
    for c in _in_steps(all_calls):
        if "input" in c.tokens:
            prompt[c.model][c.k] += c.tokens["input"]
            cached[c.model][c.k] += c.tokens.get("cached_input", 0)
        if "cached_input" in c.tokens:
            reporting.add(c.model)
    got = {s["labels"]["llm_model"]: dict(s["points"]) for s in data["series"]}
    assert set(got) == reporting and "gpt-4o-mini" not in got  # GenAI's calls here report no cache reads
    for model in reporting:
        assert got[model] == pytest.approx({_ts(k): cached[model][k] / n for k, n in prompt[model].items()}, rel=1e-12)


def test_signals_quality_and_share_flagged(calls):
    srv, all_calls = calls
    data = _panel(srv, "llm_signals_quality")
    steps_ = _in_steps(all_calls)
    quality = defaultdict(Counter)
    for c in steps_:
        if c.quality:
            quality[c.quality][c.k] += 1
    names = [s["name"] for s in data["series"]]
    assert names == [q for q in QUALITIES if q in quality] + ["🚩 flagged"]
    for s in data["series"][:-1]:
        assert s["labels"] == {"quality": s["name"]}
        assert [v for _, v in s["points"]] == [quality[s["name"]].get(k, 0) for k in range(N_POINTS)]
    flagged = data["series"][-1]
    assert flagged["labels"] == {"measure": "flagged"}
    plano = Counter(c.k for c in steps_ if c.service == "plano(llm)")
    hits = Counter(c.k for c in steps_ if c.flagged)
    assert dict(flagged["points"]) == pytest.approx({_ts(k): hits[k] / n for k, n in plano.items()}, rel=1e-12)


def test_top_sessions_by_cost(calls):
    srv, all_calls = calls
    data = _panel(srv, "llm_sessions_top")
    cost, estimated = Counter(), set()
    for c in _in_range(all_calls):
        if c.session and c.costs():
            cost[c.session] += sum(c.costs().values())
            if c.estimated is not None:
                estimated.add(c.session)
    top = sorted(cost, key=lambda s: (-cost[s], s))[:10]
    assert [s["name"] for s in data["series"]] == top
    for s in data["series"]:
        flag = "true" if s["name"] in estimated else "false"
        assert s["labels"] == {"session_id": s["name"], "cost_estimated": flag}
        assert s["points"][0][0] == END and s["points"][0][1] == pytest.approx(cost[s["name"]], rel=1e-12)
    assert data["truncated"] == {"shown": 10, "total": len(cost), "label": "session_id", "other": "none"}


@pytest.mark.parametrize("store", STORES)
def test_more_models_than_drawn_fold_into_other(store, request, module_server_factory, tmp_path_factory):
    """The top models by calls are drawn by every per-model panel, the rest as other: summed for
    tokens, the quantiles of all their calls together for TTFT."""
    # A database of its own on ClickHouse: the module's holds the other tests' calls.
    env = {"PLANOSCOPE_STORE": request.getfixturevalue("clickhouse_database").url} if store == "clickhouse" else None
    srv = module_server_factory(tmp_path_factory.mktemp("fold"), "--max-series-per-panel", "2", env=env)
    rng = random.Random(5)
    weights = {"openai/gpt-4o": 30, "openai/gpt-4o-mini": 20, "groq/llama": 5, "gemini/flash": 4, "x/y": 3}
    spans, sent = [], []
    for model, n in weights.items():
        for _ in range(n):
            start_ns = (BASE + rng.randrange(1, 600)) * 10**9
            ttft, prompt = rng.randrange(50, 900), rng.randrange(1, 500)
            sent.append((model, start_ns, ttft, prompt))
            attrs = {"llm.model": model, "http.status_code": 200, "llm.time_to_first_token": ttft}
            attrs["llm.usage.prompt_tokens"] = prompt
            name = f"POST /v1/chat/completions {model}"
            spans.append(pb_span(rng.randbytes(16), rng.randbytes(8), name, start_ns, start_ns + 10**9, attrs=attrs))
    grpc_export(srv.grpc_target, pb_request(({"service.name": "plano(llm)"}, spans)))
    rest = [s for s in sent if s[0] not in ("openai/gpt-4o", "openai/gpt-4o-mini")]
    tokens = _panel(srv, "llm_tokens_per_second")
    assert [s["name"] for s in tokens["series"]] == ["openai/gpt-4o input", "openai/gpt-4o-mini input", "other input"]
    assert tokens["series"][2]["labels"] == {"other": "true", "kind": "input"}
    assert sum(v for _, v in tokens["series"][2]["points"]) * STEP == sum(s[3] for s in rest)
    assert tokens["truncated"] == {"shown": 2, "total": 5, "label": "llm_model", "other": "summed"}
    ttft = _panel(srv, "llm_ttft_ms", start=BASE, end=BASE + 600, step=600)
    assert ttft["truncated"]["other"] == "together"
    other = {s["labels"]["quantile"]: s["points"] for s in ttft["series"] if s["labels"].get("other")}
    assert other == {
        str(q): [[BASE + 600, pytest.approx(_quantile([s[2] for s in rest], q))]] for q in (0.5, 0.95, 0.99)
    }


# --- the drill-downs ----------------------------------------------------------------------------


def _traces(srv, params: dict) -> set[str]:
    found, offset = set(), 0
    while True:
        q = {**params, "limit": 500, "offset": offset}
        r = srv.get("/api/v1/traces?" + "&".join(f"{k}={v}" for k, v in q.items()))
        assert r.status_code == 200, r.text
        body = r.json()
        found |= {t["trace_id"] for t in body["traces"]}
        offset += 500
        if offset >= body["total"]:
            return found


def _drill(info: dict, series: dict, start: float, end: float) -> dict:
    """The trace search a series drills down to, as the UI builds it (app.js drillUrl)."""
    dd = info["drilldown"]
    p = {"start": start, "end": end, "in_flight": "true", **dd.get("filters", {})}
    for label, name in dd.get("labels", {}).items():
        value = series["labels"].get(label)
        if value:
            p[name] = value
        elif label in series["labels"]:
            p |= dd.get("unset", {}).get(label, {})
    p |= dd.get("series", {}).get(series["name"], {})
    return p


def _ids(calls: list[Call]) -> set[str]:
    return {c.trace_id.hex() for c in calls}


@pytest.mark.parametrize(
    "panel_id, pick, matches",
    [
        ("llm_tokens_per_second", lambda s: s["name"] == "openai/gpt-4o cached_input", lambda c: c.model == "openai/gpt-4o"),
        ("llm_cost_per_hour", lambda s: s["name"] == "openai/gpt-4o-mini", lambda c: c.model == "openai/gpt-4o-mini" and c.cost is not None),
        ("llm_cost_per_hour", lambda s: s["name"] == "openai/gpt-4o (estimated)", lambda c: c.model == "openai/gpt-4o" and c.estimated is not None),
        ("llm_cost_total", lambda s: s["name"] == "claude-haiku", lambda c: c.model == "claude-haiku" and c.cost is not None),
        ("llm_ttft_ms", lambda s: s["name"] == "p99 gpt-4o-mini", lambda c: c.model == "gpt-4o-mini"),
        ("llm_failure_ratio", lambda s: s["name"] == "openai/gpt-4o 429", lambda c: c.model == "openai/gpt-4o" and c.failure == "429"),
        ("llm_failure_ratio", lambda s: s["name"] == "(no model) before_dispatch", lambda c: c.failure == "before_dispatch"),
        ("llm_failure_ratio", lambda s: s["name"] == "gpt-4o-mini error_status", lambda c: c.model == "gpt-4o-mini" and c.failure == "error_status"),
        ("llm_upstream_429_per_second", lambda s: s["labels"].get("llm_provider") == "anthropic", lambda c: c.provider == "anthropic" and c.failure == "429"),
        ("llm_route_share", lambda s: s["name"] == "summarization", lambda c: c.route == "summarization"),
        ("llm_model_selection", lambda s: s["name"] == "gpt-4o → openai/gpt-4o-mini", lambda c: (c.requested, c.model) == ("gpt-4o", "openai/gpt-4o-mini")),
        ("llm_prompt_cache_ratio", lambda s: s["name"] == "anthropic/claude-sonnet-4-20250514", lambda c: c.model == "anthropic/claude-sonnet-4-20250514"),
        ("llm_signals_quality", lambda s: s["name"] == "poor", lambda c: c.quality == "poor"),
        ("llm_signals_quality", lambda s: s["name"] == "🚩 flagged", lambda c: c.flagged),
        ("llm_sessions_top", lambda s: True, None),
        ("llm_output_tokens_per_second", lambda s: s["name"] == "openai/gpt-4o", lambda c: c.model == "openai/gpt-4o"),
    ],
)  # fmt: skip
def test_every_panel_drills_down_to_its_calls_traces(calls, panel_id, pick, matches):
    srv, all_calls = calls
    info = {p["id"]: p for p in srv.get("/api/v1/panels?dashboard=llm-usage").json()}[panel_id]
    data = _panel(srv, panel_id)
    series = next(s for s in data["series"] if pick(s))
    if matches is None:  # the costliest session
        matches = lambda c, s=series["labels"]["session_id"]: c.session == s  # noqa: E731
    # The whole range from a legend row or a tile; one step from a point of a chart (the busiest).
    ranges = [(START, END)]
    if data["kind"] == "timeseries":
        k = Counter(c.k for c in _in_range(all_calls) if matches(c)).most_common(1)[0][0]
        ranges.append((_ts(k) - STEP, _ts(k)))
    for start, end in ranges:
        want = _ids([c for c in all_calls if matches(c) and start * 10**9 < c.start_ns <= end * 10**9])
        assert want, (panel_id, start)
        assert _traces(srv, _drill(info, series, start, end)) == want, (panel_id, start)
    if "failed" in info["drilldown"]:  # the failed calls of the series
        failed = _ids([c for c in all_calls if matches(c) and c.failure and START * 10**9 < c.start_ns <= END * 10**9])
        assert _traces(srv, _drill(info, series, START, END) | info["drilldown"]["failed"]) == failed


def test_bad_llm_search_filters_are_clear_400s(calls):
    srv, _ = calls
    r = srv.get(f"/api/v1/traces?start={START}&end={END}&cost=guessed")
    assert r.status_code == 400 and "cost must be one of sent, estimated" in r.json()["detail"]
    r = srv.get(f"/api/v1/traces?start={START}&end={END}&route=a'%20OR%201=1%20--")
    assert r.status_code == 200 and r.json()["total"] == 0  # a value, never SQL


# --- the same panels as PromQL series: planoscope_panel (exact rules, Grafana) ----------------------


def _promql(srv, path: str, **params) -> dict:
    r = srv.get(f"/prometheus/api/v1/{path}?{urlencode(params)}")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_a_panel_is_a_promql_series_with_its_exact_values(calls):
    srv, all_calls = calls
    # An instant query at END over a 10-minute window: each model's exact p95 time to first token
    # of the calls in (START, END], what a rule on it compares.
    query = 'planoscope_panel{panel="llm_ttft_ms", quantile="0.95", window="10m"}'
    got = {s["metric"]["llm_model"]: s for s in _promql(srv, "query", query=query, time=END)["result"]}
    values = defaultdict(list)
    for c in _in_range(all_calls):
        if c.ttft_ms is not None:
            values[c.model].append(c.ttft_ms)
    assert set(got) == set(values)
    for model, xs in values.items():
        assert float(got[model]["value"][1]) == pytest.approx(_quantile(xs, 0.95), rel=1e-12)
        assert got[model]["metric"] == {
            "__name__": "planoscope_panel",
            "panel": "llm_ttft_ms",
            "window": "10m",
            "quantile": "0.95",
            "llm_model": model,
        }
    # A range query at the panel's own step (window 1m, the default): the panel's points, and
    # none in a step the panel has none for (no lookback carrying the step before over).
    want = {
        (s["labels"]["quantile"], s["labels"]["llm_model"]): dict(s["points"])
        for s in _panel(srv, "llm_ttft_ms")["series"]
    }
    ranged = _promql(
        srv, "query_range", query='planoscope_panel{panel="llm_ttft_ms"}', start=START, end=END, step=STEP
    )["result"]
    assert {(s["metric"]["window"], s["metric"]["panel"]) for s in ranged} == {("1m", "llm_ttft_ms")}
    got = {(s["metric"]["quantile"], s["metric"]["llm_model"]): s["values"] for s in ranged}
    assert set(got) == set(want)
    for key, points in want.items():
        assert {t: float(v) for t, v in got[key]} == pytest.approx(points, rel=1e-12), key
    # A stat panel: one sample, at the end, over the window before it.
    cost = _promql(srv, "query", query='sum(planoscope_panel{panel="llm_cost_total", window="10m"})', time=END)
    sent = sum(v for c in _in_range(all_calls) for v in c.costs().values())
    assert float(cost["result"][0]["value"][1]) == pytest.approx(sent, rel=1e-9)


def test_panel_series_are_listed_and_a_bad_window_is_a_clear_error(calls):
    srv, _ = calls
    assert "planoscope_panel" in _promql(srv, "label/__name__/values")
    listed = _promql(
        srv, "series", **{"match[]": 'planoscope_panel{panel="llm_prompt_cache_ratio"}', "start": START, "end": END}
    )
    assert listed and {s["panel"] for s in listed} == {"llm_prompt_cache_ratio"}
    assert {"llm_model", "window"} <= set(listed[0])
    r = srv.get("/prometheus/api/v1/query?" + urlencode({"query": 'planoscope_panel{window="5 min"}', "time": END}))
    assert r.status_code == 422 and r.json()["errorType"] == "execution"
    assert 'window="5 min" is not a duration' in r.json()["error"]
