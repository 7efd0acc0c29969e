"""The simulated Plano gateway: a simulated minute sent over real OTLP/gRPC to a real
``planoscope serve`` has Plano's span trees, services, attributes and proportions; the same seed
makes the same traffic; the fake Envoy endpoint parses as Prometheus text and counts the
simulated rate-limited requests.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter, defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import read_spans, spans_by_id
from planoscope.demo.envoy import BUCKETS, EnvoyStats, FakeEnvoyAdmin
from planoscope.demo.simulate import (
    AGENT,
    LISTENERS,
    LLM,
    MODELS,
    ROUTES,
    OtlpExporter,
    Player,
    Simulation,
    export_request,
    export_requests,
    parse_mix,
)

RATE, SEED = 40.0, 11
SERVICES = {"plano(llm)", "plano(routing)", "plano(orchestrator)", "plano(filter)", "plano(agent)"}
CHAT = "/v1/chat/completions"


def _body(traces) -> bytes:
    return export_request(span for t in traces for span in t.spans).SerializeToString()


class Clock:
    """A clock the test sets (Unix ns)."""

    def __init__(self, now_ns: int = 0):
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def envoy_families(stats: EnvoyStats) -> dict:
    """Serve ``stats`` on a real socket and parse the page with prometheus_client."""

    async def fetch() -> httpx.Response:
        async with FakeEnvoyAdmin(stats, "127.0.0.1:0") as envoy:
            async with httpx.AsyncClient(timeout=10) as client:
                return await client.get(envoy.url)

    r = asyncio.run(fetch())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(families: dict, name: str, labels: dict | None = None, sample: str | None = None) -> float:
    found = [
        s.value for s in families[name].samples if (sample is None or s.name == sample) and s.labels == (labels or {})
    ]
    assert len(found) == 1, (name, labels, families[name].samples)
    return found[0]


# --------------------------------------------------------------------------------------------
# A simulated minute in a real server
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minute(module_server_factory, tmp_path_factory):
    """One simulated minute at RATE requests/s, sent to a real server; its rows once stopped."""
    start_s = int(time.time()) // 60 * 60 - 180
    sim = Simulation(rate=RATE, seed=SEED)
    srv = module_server_factory(tmp_path_factory.mktemp("sim") / "data")
    clock = Clock(start_s * 1_000_000_000)  # Envoy sees the calls end as the simulated minute passes
    stats = EnvoyStats(clock)

    async def send():
        async with OtlpExporter(srv.grpc_target, "grpc") as exporter:
            traces = await Player(sim, exporter, stats).send_window(start_s, start_s + 60)
        return traces, exporter

    t0 = time.monotonic()
    traces, exporter = asyncio.run(send())
    send_s = time.monotonic() - t0
    srv.stop()
    rows = read_spans(srv.data_dir)
    clock.now_ns = max(t.end_ns for t in traces)
    return dict(sim=sim, start_s=start_s, traces=traces, exporter=exporter, rows=rows, stats=stats, send_s=send_s)


def trees(rows) -> dict[str, list[dict]]:
    by_trace = defaultdict(list)
    for r in rows:
        by_trace[r["TraceId"]].append(r)
    return by_trace


def children_of(rows) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in rows:
        if r["ParentSpanId"]:
            out[r["ParentSpanId"]].append(r)
    for kids in out.values():
        kids.sort(key=lambda r: r["Timestamp"])
    return out


def test_every_simulated_span_is_stored_once(minute):
    spans = [s for t in minute["traces"] for _, s in t.spans]
    exporter = minute["exporter"]
    assert exporter.acknowledged == len(spans) and exporter.rejected == 0 and exporter.failed == 0
    stored = spans_by_id(minute["rows"])
    assert set(stored) == {s.span_id.hex() for s in spans}
    assert minute["send_s"] < 20, f"sending a simulated minute took {minute['send_s']:.1f} s"


def test_services_and_span_names(minute):
    rows = minute["rows"]
    assert {r["ServiceName"] for r in rows} == SERVICES
    listeners = set(LISTENERS)
    agents = {a for _, ags in LISTENERS.values() for a in ags}
    filters = {f for _, ags in LISTENERS.values() for chain, _ in ags.values() for f in chain}
    for r in rows:
        svc, name, a = r["ServiceName"], r["SpanName"], r["SpanAttributes"]
        assert r["ScopeName"] == "brightstaff" and r["ResourceAttributes"]["service.name"] == svc
        if svc == "plano(llm)":
            assert name == f"POST {CHAT} {r['LlmModel']}"
        elif svc == "plano(routing)":
            assert name == f"POST {CHAT}"
        elif svc == "plano(orchestrator)":
            assert name in listeners and r["SelectionListener"] == name
        elif svc == "plano(agent)":
            assert name == f"{r['AgentId']} {CHAT}" and r["AgentId"] in agents
        else:
            assert name == f"POST /agents{CHAT} {a['filter_name']}" and a["filter_name"] in filters


def test_span_trees(minute):
    """Direct requests: plano(llm) with at most a plano(routing) child. Agent requests: an
    orchestrator whose children are each agent's filters then the agent, whose one child is its
    plano(llm). Children start and end within their parents; filters precede their agent."""
    shapes = Counter()
    for trace_id, rows in trees(minute["rows"]).items():
        by_id = {r["SpanId"]: r for r in rows}
        roots = [r for r in rows if not r["ParentSpanId"]]
        assert len(roots) == 1, trace_id
        root = roots[0]
        kids = children_of(rows)
        for r in rows:
            if r["ParentSpanId"]:
                p = by_id[r["ParentSpanId"]]  # the parent is in the same trace
                assert p["Timestamp"] <= r["Timestamp"], (p, r)
                assert r["Timestamp"] + r["Duration"] <= p["Timestamp"] + p["Duration"], (p, r)
        if root["ServiceName"] == "plano(llm)":
            below = [k["ServiceName"] for k in kids[root["SpanId"]]]
            assert below in ([], ["plano(routing)"]) and len(rows) == 1 + len(below), rows
            shapes["llm+routing" if below else "llm"] += 1
            continue
        assert root["ServiceName"] == "plano(orchestrator)"
        sequence = kids[root["SpanId"]]
        selected = root["SpanAttributes"]["selection.agents"].split(",")
        assert int(root["SpanAttributes"]["selection.agent_count"]) == len(selected)
        run = [k["AgentId"] for k in sequence if k["ServiceName"] == "plano(agent)"]
        assert run == selected[: len(run)] and run, (selected, run)
        if run != selected:  # the chain stopped at a failing agent
            assert (
                root["StatusCode"] == "Error"
                and by_id[next(k["SpanId"] for k in reversed(sequence))]["StatusCode"] == "Error"
            )
        listener = LISTENERS[root["SpanName"]][1]
        expected = []
        for agent in run:
            expected += [("plano(filter)", f) for f in listener[agent][0]] + [("plano(agent)", agent)]
        assert [(k["ServiceName"], k["AgentId"]) for k in sequence] == expected
        for k in sequence:
            below = kids[k["SpanId"]]
            if k["ServiceName"] == "plano(agent)":
                assert [b["ServiceName"] for b in below] == ["plano(llm)"]
                assert not kids[below[0]["SpanId"]]
                assert below[0]["LlmModel"] in dict(listener[k["AgentId"]][1])
            else:
                assert below == []
        shapes[f"orchestrator+{len(run)} agents"] += 1
    assert (
        shapes["llm"] and shapes["llm+routing"] and shapes["orchestrator+1 agents"] and shapes["orchestrator+2 agents"]
    ), shapes


def test_llm_attributes(minute):
    llm = [r for r in minute["rows"] if r["ServiceName"] == "plano(llm)"]
    for r in llm:
        a = r["SpanAttributes"]
        assert MODELS[r["LlmModel"]].provider == r["LlmProvider"]
        assert r["HttpMethod"] == "POST" and a["llm.operation_type"] == "chat"
        assert r["IsStreaming"] in (True, False)
        if r["HttpStatusCode"] == 200:
            assert r["StatusCode"] == "Unset"
            assert r["PromptTokens"] + r["CompletionTokens"] == r["TotalTokens"] > 0
            cost = float(a["llm.usage.input_cost_usd"]) + float(a["llm.usage.output_cost_usd"])
            assert r["CostUsd"] > 0 and math.isclose(r["CostUsd"], cost, rel_tol=1e-6, abs_tol=2e-8)
            assert a["signals.quality"] in ("Excellent", "Good", "Neutral", "Poor", "Severe")
            if r["IsStreaming"]:
                ttft = r["TimeToFirstTokenMs"]
                assert 0 < ttft < r["Duration"] / 1e6
                [event] = r["Events"]
                assert event["Name"] == "llm.time_to_first_token"
                assert r["Timestamp"] < event["Timestamp"] < r["Timestamp"] + r["Duration"]
            else:
                assert r["TimeToFirstTokenMs"] is None and r["Events"] == []
        else:
            assert r["HttpStatusCode"] in (429, 500, 502, 503)
            assert r["StatusCode"] == "Error" and r["StatusMessage"].startswith(str(r["HttpStatusCode"]))
            assert a["error"] == "true" and a["error.type"] and a["error.message"]
            assert r["TotalTokens"] is None and r["CostUsd"] is None
            assert (a["error.type"] == "RateLimitExceeded") == (r["HttpStatusCode"] == 429)


def test_routing_and_sessions(minute):
    rows = minute["rows"]
    by_id = {r["SpanId"]: r for r in rows}
    routing = [r for r in rows if r["ServiceName"] == "plano(routing)"]
    decisions = Counter()
    for r in routing:
        a, parent = r["SpanAttributes"], by_id[r["ParentSpanId"]]
        assert a["plano.route.name"] in ROUTES and a["routing.strategy"] == "preference"
        assert parent["SpanAttributes"]["plano.route.name"] == a["plano.route.name"]
        assert a["route.selected_model"] == parent["LlmModel"]
        assert float(a["routing.determination_ms"]) > 0
        if "plano.switch.decision" in a:
            assert a["plano.session_id"] == parent["SpanAttributes"]["plano.session_id"]
            decisions[a["plano.switch.decision"]] += 1
    assert set(decisions) == {"allowed", "retained"} and decisions["retained"] > decisions["allowed"]
    direct = [r for r in rows if r["ServiceName"] == "plano(llm)" and not r["ParentSpanId"]]
    sessions = Counter(r["SpanAttributes"].get("plano.session_id") for r in direct)
    with_session = sum(n for s, n in sessions.items() if s)
    assert 0.6 < with_session / len(direct) < 0.8
    assert max(n for s, n in sessions.items() if s) >= 3, "sessions should recur"
    assert 0.58 < len(routing) / len(direct) < 0.72


def test_proportions(minute):
    sim, traces, rows = minute["sim"], minute["traces"], minute["rows"]
    start = minute["start_s"]
    expected = sum(sim.intensity(s) for s in range(start, start + 60))
    assert abs(len(traces) - expected) < 5 * math.sqrt(expected), (len(traces), expected)
    roots = [r for r in rows if not r["ParentSpanId"]]
    assert len(roots) == len(traces)
    agent_share = sum(r["ServiceName"] == "plano(orchestrator)" for r in roots) / len(roots)
    assert abs(agent_share - 0.3) < 0.05, agent_share
    llm = [r for r in rows if r["ServiceName"] == "plano(llm)"]
    errors = Counter(r["HttpStatusCode"] for r in llm if r["HttpStatusCode"] != 200)
    assert 0.005 < sum(errors.values()) / len(llm) < 0.12, errors
    assert errors[429] > 0 and errors[500] + errors[502] + errors[503] > 0, errors
    streaming = sum(r["IsStreaming"] for r in llm) / len(llm)
    assert abs(streaming - 0.7) < 0.05, streaming
    assert len({r["LlmModel"] for r in llm}) == len(MODELS)
    assert {r["LlmProvider"] for r in llm} == {"openai", "anthropic", "groq", "gemini"}


def test_latencies_are_per_model_with_slow_tails(minute):
    ok = [r for r in minute["rows"] if r["ServiceName"] == "plano(llm)" and r["HttpStatusCode"] == 200]
    ttft = defaultdict(list)
    for r in ok:
        if r["TimeToFirstTokenMs"] is not None:
            ttft[r["LlmModel"]].append(r["TimeToFirstTokenMs"])
    med = {m: statistics.median(v) for m, v in ttft.items() if len(v) >= 20}
    assert med["llama-3.3-70b"] < med["gpt-4o-mini"] < med["claude-sonnet-4"] < med["o3-mini"], med
    durations = sorted(r["Duration"] / 1e6 for r in ok)
    p50, p99 = durations[len(durations) // 2], durations[int(len(durations) * 0.99)]
    assert p99 > 4 * p50 and durations[-1] > 10_000, (p50, p99, durations[-1])


def test_fake_envoy_counts_the_simulated_rate_limited_requests(minute):
    llm = [r for r in minute["rows"] if r["ServiceName"] == "plano(llm)"]
    fam = envoy_families(minute["stats"])
    assert fam["envoy_wasmcustom_ratelimited_rq"].type == "counter"
    assert value(fam, "envoy_wasmcustom_ratelimited_rq") == sum(r["HttpStatusCode"] == 429 for r in llm) > 0
    upstream = Counter((r["LlmProvider"], str(r["HttpStatusCode"])) for r in llm if r["HttpStatusCode"] != 429)
    served = {
        (s.labels["envoy_cluster_name"], s.labels["envoy_response_code"]): s.value
        for s in fam["envoy_cluster_upstream_rq"].samples
    }
    assert served == upstream  # a rate-limited request never reaches an upstream
    ok = [r for r in llm if r["HttpStatusCode"] == 200]
    streamed = [r for r in ok if r["IsStreaming"]]
    for name, n in (
        ("request_latency", len(ok)),
        ("input_sequence_length", len(ok)),
        ("output_sequence_length", len(ok)),
        ("tokens_per_second", len(ok)),
        ("time_to_first_token", len(streamed)),
        ("time_per_output_token", len(streamed)),
    ):
        f = fam["envoy_wasmcustom_" + name]
        assert f.type == "histogram"
        buckets = [s for s in f.samples if s.name.endswith("_bucket")]
        assert [s.labels["le"] for s in buckets] == [*(str(b) if b < 1 else str(int(b)) for b in BUCKETS), "+Inf"]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and counts[-1] == n == value(fam, f.name, sample=f.name + "_count")
    prompt = fam["envoy_wasmcustom_input_sequence_length"]
    assert value(fam, prompt.name, sample=prompt.name + "_sum") == sum(r["PromptTokens"] for r in ok)
    cumulative = [s.value for s in prompt.samples if s.name.endswith("_bucket")]
    assert cumulative == [sum(r["PromptTokens"] <= le for r in ok) for le in [*BUCKETS, math.inf]]
    assert value(fam, "envoy_wasmcustom_active_http_calls") == 0  # all over by the end
    assert value(fam, "envoy_server_live") == 1


def test_fake_envoy_counters_grow_with_simulated_time(minute):
    """Rendered as of times within the minute, the counter is the 429s that have happened by then
    and the gauge the calls in flight then."""
    start_ns = minute["start_s"] * 1_000_000_000
    clock = Clock(start_ns)
    stats = EnvoyStats(clock)
    calls = [c for t in minute["traces"] for c in t.calls]
    stats.track(calls)
    seen = []
    for at_s in (10, 30, 45):
        now = clock.now_ns = start_ns + at_s * 1_000_000_000
        fam = envoy_families(stats)
        limited = value(fam, "envoy_wasmcustom_ratelimited_rq")
        assert limited == sum(c.rate_limited and c.end_ns <= now for c in calls)
        assert value(fam, "envoy_wasmcustom_active_http_calls") == sum(c.start_ns <= now < c.end_ns for c in calls) > 0
        seen.append(limited)
    assert seen == sorted(seen) and seen[0] < seen[-1], seen


# --------------------------------------------------------------------------------------------
# Determinism and the shape of the rate (no server needed)
# --------------------------------------------------------------------------------------------


def test_same_seed_same_traffic():
    start = 1_760_000_000
    a = Simulation(rate=20, seed=5).traces(start, start + 10)
    b = Simulation(rate=20, seed=5).traces(start, start + 10)
    assert len(a) > 100 and _body(a) == _body(b)
    # a window is the same however it is cut: each second stands alone
    pieces = [t for s in range(start, start + 10) for t in Simulation(rate=20, seed=5).second(s)]
    assert _body(pieces) == _body(a)
    assert _body(Simulation(rate=20, seed=6).traces(start, start + 10)) != _body(a)
    assert _body(Simulation(rate=20, seed=5).traces(start + 10, start + 20)) != _body(a)
    ids = [s.span_id for t in a for _, s in t.spans]
    assert len(set(ids)) == len(ids) and all(any(i) for i in ids)


def test_requests_are_batched():
    traces = Simulation(rate=50, seed=1).traces(1_760_000_000, 1_760_000_010)
    spans = [s for t in traces for s in t.spans]
    reqs = list(export_requests(spans, max_spans=100))
    sizes = [sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans) for r in reqs]
    assert sum(sizes) == len(spans) and max(sizes) == 100 and len(reqs) == math.ceil(len(spans) / 100)
    for r in reqs:  # one resource per service within a request
        names = [rs.resource.attributes[0].value.string_value for rs in r.resource_spans]
        assert len(names) == len(set(names))


def test_rate_drifts_and_bursts_around_its_average():
    sim = Simulation(rate=5, seed=3)
    day = range(1_760_000_000 // 86400 * 86400, 1_760_000_000 // 86400 * 86400 + 86400)
    rates = [sim.intensity(s) for s in day]
    assert abs(statistics.fmean(rates) / 5 - 1) < 0.05
    bursting = [sim.burst(s) for s in day]
    in_burst = sum(b > 1 for b in bursting) / len(bursting)
    assert 0.02 < in_burst < 0.1 and 2.5 <= max(bursting) <= 5, in_burst
    ten_minutes = [statistics.fmean(rates[i : i + 600]) for i in range(0, len(rates), 600)]
    assert max(ten_minutes) / min(ten_minutes) > 1.5
    steady = Simulation(rate=5, seed=3, steady=True)
    assert {steady.intensity(s) for s in day[:3600]} == {5}
    n = sum(len(steady.second(s)) for s in day[:600])
    assert abs(n - 3000) < 5 * math.sqrt(3000), n


def test_mix():
    assert parse_mix("llm=0.7,agent=0.3") == pytest.approx({LLM: 0.7, AGENT: 0.3})
    assert parse_mix("agent=1, llm=3") == pytest.approx({LLM: 0.75, AGENT: 0.25})
    assert parse_mix("agent=2") == {LLM: 0.0, AGENT: 1.0}
    for bad in ("", "llm", "llm=x", "llm=-1", "llm=0", "chat=1", "llm=nan"):
        with pytest.raises(ValueError):
            parse_mix(bad)
    only_agents = Simulation(rate=20, mix=parse_mix("agent=1"), seed=2).traces(1_760_000_000, 1_760_000_005)
    assert only_agents and {t.kind for t in only_agents} == {AGENT}
