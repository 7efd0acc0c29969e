"""The simulated Plano gateway against ``reference/plano-telemetry/README.md`` (what Plano 0.4.28+
really sends): services, kinds, names, nesting, attribute types and presence rules, statuses,
the Export calls and their batching, the fake Envoy's and brightstaff's metrics against the spans
sent, determinism, and a simulated minute through a real ``planoscope serve``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import read_spans, spans_by_id
from planoscope.demo.brightstaff import BrightstaffStats, FakeBrightstaff
from planoscope.demo.envoy import BUCKETS, TTFT_BUCKETS, EnvoyStats, FakeEnvoyAdmin
from planoscope.demo.gateway import ALIASES, FILTERS, MODELS, PROVIDERS, ROUTES
from planoscope.demo.loadgen import RequestFactory, template_request
from planoscope.demo.simulate import (
    AGENT,
    LISTENERS,
    LLM,
    ROUTING,
    OtlpExporter,
    Player,
    Simulation,
    export_request,
    export_requests,
    parse_mix,
)

DATA = Path(__file__).parent / "data"  # copied from Plano (see NOTICE.md there)
RATE, SEED, START, WINDOW_S = 20.0, 11, 1_760_000_000, 240
BRIGHTSTAFF = {"plano(llm)", "plano(routing)", "plano(orchestrator)", "plano(filter)", "plano(agent)"}
ENVOY = {"plano(inbound)", "plano(outbound)"}
PATHS = "/v1/chat/completions|/v1/messages|/v1/responses"
NEVER = {
    "llm.is_streaming",
    "llm.operation_type",
    "llm.max_tokens",
    "llm.top_p",
    "http.upstream_target",
    "routing.strategy",
    "routing.upstream_endpoint",
    "routing.is_fallback",
    "routing.selection_reason",
    "error",
}
INTS = {
    "http.status_code",  # on brightstaff's spans; Envoy's are strings
    "llm.time_to_first_token",
    "llm.duration_ms",
    "llm.response_bytes",
    "llm.usage.prompt_tokens",
    "llm.usage.completion_tokens",
    "llm.usage.total_tokens",
    "llm.usage.cached_input_tokens",
    "llm.usage.cache_creation_tokens",
    "llm.usage.reasoning_tokens",
    "signals.turn_count",
    "plano.cache.idle_ms",
    "plano.session.switches",
    "plano.switch.candidate_warm_tokens",
    "routing.determination_ms",
    "selection.agent_count",
    "message_count",
    "bytes_len",
}
DOUBLES = {
    "llm.usage.input_cost_usd",
    "llm.usage.output_cost_usd",
    "llm.usage.total_cost_usd",
    "signals.quality_score",
    "signals.efficiency_score",
    "plano.session.total_cost_in_usd",
    "plano.session.overhead_pct",
    "plano.session.switch_spend_in_usd",
    "plano.session.baseline_in_usd",
    "plano.switch.cost_in_usd",
    "plano.switch.overhead_ceiling_in_usd",
}
BOOLS = {"plano.cache.warm"}
LAYERED = re.compile(r"^signals\.(interaction|execution|environment)\.\w+\.(count|severity)$")


# --------------------------------------------------------------------------------------------
# Reading spans
# --------------------------------------------------------------------------------------------


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind), kind


def pairs(span) -> list[tuple[str, object, str]]:
    """(key, value, oneof kind) of every attribute, repeats included."""
    return [(a.key, *_value(a.value)) for a in span.attributes]


def first(span) -> dict:
    """The attributes, the first of a repeated key winning (as planoscope and spanmetrics read them)."""
    out = {}
    for k, v, _ in pairs(span):
        out.setdefault(k, v)
    return out


def events(span) -> list[tuple[str, dict, int]]:
    return [(e.name, {a.key: _value(a.value)[0] for a in e.attributes}, e.time_unix_nano) for e in span.events]


class Window:
    """The traces of a simulated window, indexed."""

    def __init__(self, sim: Simulation, traces):
        self.sim, self.traces = sim, traces
        self.spans = [(svc, s) for t in traces for svc, s in t.spans]
        self.by_id = {s.span_id: (svc, s) for svc, s in self.spans}
        self.kids = defaultdict(list)
        for svc, s in self.spans:
            if s.parent_span_id:
                self.kids[s.parent_span_id].append((svc, s))

    def of(self, service: str) -> list:
        return [s for svc, s in self.spans if svc == service]

    def children(self, span, service: str | None = None) -> list:
        return [s for svc, s in self.kids[span.span_id] if service is None or svc == service]

    def dispatched(self) -> list:
        """plano(llm) spans whose request reached an upstream (they carry a status)."""
        return [s for s in self.of("plano(llm)") if "http.status_code" in first(s)]


@pytest.fixture(scope="module")
def window() -> Window:
    sim = Simulation(rate=RATE, seed=SEED)
    return Window(sim, sim.traces(START, START + WINDOW_S))


# --------------------------------------------------------------------------------------------
# Services, kinds, names
# --------------------------------------------------------------------------------------------


def test_services_and_kinds(window):
    assert {svc for svc, _ in window.spans} == BRIGHTSTAFF | ENVOY
    for svc, s in window.spans:
        assert s.kind == (s.SPAN_KIND_SERVER if svc in ENVOY else s.SPAN_KIND_INTERNAL), (svc, s.name)
        if svc in BRIGHTSTAFF:  # a brightstaff span's service is its service.name.override
            assert first(s)["service.name.override"] == svc


def test_span_names_per_service(window):
    llm = re.compile(rf"^POST ({PATHS}) (\S+)(?: -> (\S+))?( \U0001f6a9)?$")
    renamed = flagged = 0
    for svc, s in window.spans:
        a = first(s)
        if svc == "plano(llm)":
            if s.name == "llm":
                continue
            m = llm.match(s.name)
            assert m, s.name
            path, requested, resolved, flag = m.groups()
            assert path == a["http.path"] and (resolved or requested) == a["llm.model"] in MODELS
            if resolved:  # an alias, the router or the session router changed the model
                assert requested != resolved and (requested in ALIASES or requested in MODELS)
                renamed += 1
            flagged += bool(flag)
        elif svc == "plano(routing)":
            assert s.name == ("routing_decision" if "http.path" in a else "routing")  # /routing/* or under plano(llm)
        elif svc == "plano(orchestrator)":
            assert s.name in LISTENERS and a.get("selection.listener", s.name) == s.name
        elif svc == "plano(agent)":
            assert re.fullmatch(r"(\w+) /v1/chat/completions", s.name).group(1) == a["agent_id"]
        elif svc == "plano(filter)":
            assert re.fullmatch(r"execute_raw_filter \((\w+)\)", s.name).group(1) == a["filter_name"] in FILTERS
        elif svc == "plano(inbound)":
            assert s.name == "POST /v1/chat/completions"
        else:
            host_path = re.fullmatch(r"POST (\S+)", s.name).group(1)
            assert a["http.url"] == "https://" + host_path, (s.name, a["http.url"])
            assert host_path.split("/")[0] in {u.host for u in PROVIDERS.values()} | {"archfc.katanemo.dev"}
    assert renamed and flagged, (renamed, flagged)


def test_the_recorded_trace_has_the_simulated_shape(window):
    """success-trace.json, recorded from a real gateway, and a simulated agent trace of the same
    plan (one agent, two LLM calls) have the same tree of (service, name shape), and every key the
    recording has is on the simulated span of the same place."""

    def shape(svc, name):
        return (svc, re.sub(r"(?<=/v1/chat/completions) \S+$", " MODEL", re.sub(r"^\w+_agent ", "AGENT ", name)))

    OPTIONAL = {"llm.temperature"}  # sent by some clients only
    [recorded] = json.loads((DATA / "success-trace.json").read_text())["traces"]
    rec = {s["spanId"]: s for s in recorded["spans"]}

    def rec_tree(span_id):
        s = rec[span_id]
        kids = sorted((k for k in rec.values() if k["parentSpanId"] == span_id), key=lambda k: k["startTimeUnixNano"])
        return (
            shape(s["service"], s["name"]),
            {a["key"] for a in s["attributes"]},
            [rec_tree(k["spanId"]) for k in kids],
        )

    def sim_tree(svc, s):
        kids = sorted(window.kids[s.span_id], key=lambda k: k[1].start_time_unix_nano)
        return (shape(svc, s.name), set(first(s)), [sim_tree(*k) for k in kids])

    def same(r, m):
        assert r[0] == m[0]
        assert r[1] - OPTIONAL <= m[1], (r[0], r[1] - m[1])
        assert len(r[2]) == len(m[2]), (r[0], [k[0] for k in r[2]], [k[0] for k in m[2]])
        for a, b in zip(r[2], m[2]):
            same(a, b)

    root = next(s for s in recorded["spans"] if not s["parentSpanId"])
    want = rec_tree(root["spanId"])
    for svc, s in window.spans:
        if svc != "plano(inbound)":
            continue
        got = sim_tree(svc, s)
        orch = got[2][0]
        agents = [k for k in orch[2] if k[0][0] == "plano(agent)"]
        plain = all("\U0001f6a9" not in k[0][1] for a in agents for k in a[2])
        if len(orch[2]) == 2 and len(agents) == 1 and len(agents[0][2]) == 2 and plain:
            if all(len(llm[2]) == 2 and llm[2][0][0][0] == "plano(routing)" for llm in agents[0][2]):
                same(want, got)
                return
    pytest.fail("no simulated trace of the recorded plan")


# --------------------------------------------------------------------------------------------
# Nesting
# --------------------------------------------------------------------------------------------


def test_agent_traces_are_rooted_at_envoy_inbound(window):
    for t in window.traces:
        roots = [(svc, s) for svc, s in t.spans if not s.parent_span_id]
        assert len(roots) == 1, t.kind
        svc, root = roots[0]
        assert svc == {AGENT: "plano(inbound)", LLM: "plano(llm)", ROUTING: "plano(routing)"}[t.kind]
        if t.kind == AGENT:
            [orch] = window.children(root)
            assert window.by_id[orch.span_id][0] == "plano(orchestrator)"
            below = Counter(window.by_id[k.span_id][0] for k in window.children(orch))
            assert below["plano(outbound)"] == 1  # the agent-selection call
            [sel] = window.children(orch, "plano(outbound)")
            assert sel.name == "POST archfc.katanemo.dev/v1/chat/completions"
            assert set(below) <= {"plano(outbound)", "plano(filter)", "plano(agent)"}
            for agent in window.children(orch, "plano(agent)"):
                assert {window.by_id[k.span_id][0] for k in window.children(agent)} == {"plano(llm)"}
        for _, s in t.spans:  # a child starts and ends within its parent
            if s.parent_span_id:
                p = window.by_id[s.parent_span_id][1]
                assert p.start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano <= p.end_time_unix_nano


def test_an_outbound_span_under_every_llm_call_that_dispatched(window):
    for s in window.of("plano(llm)"):
        outbound = window.children(s, "plano(outbound)")
        if s.name == "llm":
            assert outbound == []
        else:
            [out] = outbound
            assert first(out)["http.status_code"] == str(first(s)["http.status_code"])
            assert first(out)["guid:x-request-id"] == first(s)["request_id"]
        assert set(Counter(window.by_id[k.span_id][0] for k in window.children(s))) <= {
            "plano(routing)",
            "plano(outbound)",
        }


def test_routing_sits_under_plano_llm_with_the_router_call_below_it(window):
    routing = [s for s in window.of("plano(routing)") if s.name == "routing"]
    called = 0
    for r in routing:
        assert window.by_id[r.parent_span_id][0] == "plano(llm)"
        kids = window.children(r)
        assert all(window.by_id[k.span_id][0] == "plano(outbound)" for k in kids) and len(kids) <= 1
        # The router model was called exactly when routing took time.
        assert bool(kids) == (first(r)["routing.determination_ms"] > 0), first(r)
        called += bool(kids)
    for s in window.of("plano(llm)"):  # routing on every valid request but a replayed tool turn
        invalid = any(e[1]["level"] == "WARN" for e in events(s) if s.name == "llm")
        assert len(window.children(s, "plano(routing)")) == (0 if invalid or "plano.routing.skipped" in first(s) else 1)
    assert 0 < called < len(routing)


# --------------------------------------------------------------------------------------------
# Attribute types and presence
# --------------------------------------------------------------------------------------------


def test_attribute_types(window):
    seen = set()
    for svc, s in window.spans:
        for k, _, kind in pairs(s):
            seen.add(k)
            if svc in ENVOY:
                assert kind == "string_value", (svc, k, kind)
            elif k in INTS or LAYERED.match(k):
                assert kind == "int_value", (k, kind)
            elif k in DOUBLES:
                assert kind == "double_value", (k, kind)
            elif k in BOOLS:
                assert kind == "bool_value", (k, kind)
            else:  # llm.temperature and selection.determination_ms among them
                assert kind == "string_value", (k, kind)
        for name, attrs, _ in events(s):
            if name == "llm.time_to_first_token":
                assert isinstance(attrs["llm.time_to_first_token"], int)
    assert (INTS | DOUBLES | BOOLS | {"llm.temperature", "selection.determination_ms"}) <= seen, (
        INTS | DOUBLES | BOOLS
    ) - seen
    assert all(
        re.fullmatch(r"\d+\.\d\d", first(s)["selection.determination_ms"])
        for s in window.of("plano(orchestrator)")
        if "selection.agents" in first(s)
    )


def test_costs_only_on_2xx_with_a_session(window):
    priced = unpriced_ok = 0
    for s in window.dispatched():
        a = first(s)
        costs = {k for k in a if k.endswith("_cost_usd")}
        if a["http.status_code"] == 200 and "plano.session_id" in a:
            assert costs == {"llm.usage.input_cost_usd", "llm.usage.output_cost_usd", "llm.usage.total_cost_usd"}
            assert math.isclose(
                a["llm.usage.total_cost_usd"],
                a["llm.usage.input_cost_usd"] + a["llm.usage.output_cost_usd"],
                abs_tol=1e-9,
            )
            priced += 1
        else:
            assert costs == set(), a
            unpriced_ok += a["http.status_code"] == 200
    assert priced and unpriced_ok


def test_tokens_only_with_usage(window):
    """No usage on an error or a reset stream; a streaming OpenAI-style call without
    include_usage has none either. With usage comes the upstream's model (not in an
    Anthropic-style stream)."""
    with_usage = without = 0
    for s in window.dispatched():
        a, evs = first(s), [e[0] for e in events(s)]
        tokens = {k for k in a if k.startswith("llm.usage.") and k.endswith("_tokens")}
        models = [v for k, v, _ in pairs(s) if k == "llm.model"]
        if a["http.status_code"] != 200 or "stream error" in evs:
            assert tokens == set() and len(models) == 1, a
            continue
        if tokens:
            with_usage += 1
            assert a["llm.usage.total_tokens"] == a["llm.usage.prompt_tokens"] + a["llm.usage.completion_tokens"] > 0
            assert len(models) == 2 or a["http.path"] == "/v1/messages"
        else:
            without += 1
            assert a["http.path"] == "/v1/chat/completions" and len(models) == 1
    assert with_usage and without


def test_repeated_keys(window):
    """service.name.override twice on a dispatched plano(llm); llm.model twice when the upstream
    reported its model: first provider/model, then the upstream's."""
    twice = 0
    for s in window.of("plano(llm)"):
        keys = Counter(k for k, _, _ in pairs(s))
        assert keys["service.name.override"] == (1 if s.name == "llm" else 2)
        models = [v for k, v, _ in pairs(s) if k == "llm.model"]
        if len(models) == 2:
            assert models[0] in MODELS and models[1] == MODELS[models[0]].reported != models[0]
            twice += 1
        assert all(n == 1 for k, n in keys.items() if k not in ("service.name.override", "llm.model")), keys
    assert twice


def test_time_to_first_token_on_every_response_with_a_body(window):
    """TTFT (int ms) on every dispatched call, errors included, and its event at the stream's end."""
    statuses = Counter()
    for s in window.dispatched():
        a = first(s)
        statuses[a["http.status_code"]] += 1
        assert (
            0
            <= a["llm.time_to_first_token"]
            <= a["llm.duration_ms"]
            < (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6
        )
        assert a["llm.response_bytes"] > 0
        evs = {name: (attrs, at) for name, attrs, at in events(s)}
        attrs, at = evs["llm.time_to_first_token"]
        assert attrs == {"llm.time_to_first_token": a["llm.time_to_first_token"]}
        assert at == evs["streaming completed"][1] and at >= s.start_time_unix_nano + a["llm.duration_ms"] * 1_000_000
    assert statuses[200] and statuses[429] and sum(n for c, n in statuses.items() if c >= 500), statuses


def test_failures_before_dispatch(window):
    """Named ``llm``: no status, no model, and a WARN event (on the span, or on its routing child
    when the router failed: route.selected_model unknown)."""
    failed = [s for s in window.of("plano(llm)") if s.name == "llm"]
    causes = Counter()
    for s in failed:
        a = first(s)
        assert "http.status_code" not in a and "llm.model" not in a and "llm.provider" not in a
        warns = [e for e in events(s) if e[1]["level"] == "WARN"]
        routing = window.children(s, "plano(routing)")
        if warns:
            causes[warns[0][0]] += 1
            assert routing == []
        else:
            [r] = routing
            assert first(r)["route.selected_model"] == "unknown"
            assert [e[1]["level"] for e in events(r)] == ["WARN"]
            causes["router"] += 1
    assert causes["model not found in configured providers"] and causes["router"], causes
    dispatched_unknown = [
        r
        for r in window.of("plano(routing)")
        if first(r).get("route.selected_model") == "unknown" and window.by_id[r.parent_span_id][1].name != "llm"
    ]
    assert dispatched_unknown == []


def test_signals(window):
    flagged = 0
    for s in window.dispatched():
        a, flag = first(s), s.name.endswith(" \U0001f6a9")
        assert a["signals.quality"] in ("excellent", "good", "neutral", "poor", "severe")
        assert 0 <= a["signals.quality_score"] <= 1 and 0 <= a["signals.efficiency_score"] <= 1
        layered = {k: v for k, v in a.items() if LAYERED.match(k)}
        assert all(v > 0 for v in layered.values())  # only non-zero groups are emitted
        counts = {
            k.removeprefix("signals.").removesuffix(".count"): v for k, v in layered.items() if k.endswith(".count")
        }
        sig = [(name, attrs) for name, attrs, _ in events(s) if name.startswith("signal.")]
        assert Counter(".".join(name.split(".")[1:3]) for name, _ in sig) == Counter(counts)
        for name, attrs in sig:
            assert (
                name == "signal." + attrs["signal.type"]
                and 0 < attrs["signal.confidence"] < 1
                and attrs["signal.snippet"]
            )
        concerning = (
            a["signals.quality"] in ("poor", "severe")
            or counts.get("interaction.disengagement", 0) > 0
            or counts.get("interaction.stagnation", 0) > 2
            or counts.get("execution.failure", 0) > 0
            or counts.get("execution.loops", 0) > 0
        )
        assert flag == concerning
        flagged += flag
    assert 0 < flagged < len(window.dispatched()) / 4


def test_log_events(window):
    for s in window.dispatched():
        done = [attrs for name, attrs, _ in events(s) if name == "streaming completed"]
        assert len(done) == 1
        assert done[0]["level"] == "INFO" and done[0]["target"] == "brightstaff::streaming"
        assert isinstance(done[0]["code.line.number"], int) and done[0]["code.file.path"].endswith(".rs")
        assert done[0]["total_bytes"] == first(s)["llm.response_bytes"]


def test_sessions_and_routes(window):
    sessions, switch = Counter(), Counter()
    for s in window.of("plano(llm)") + window.of("plano(routing)"):
        a = first(s)
        if "plano.session_id" in a:
            assert re.fullmatch(r"conv-[0-9a-f]{12}|implicit:[0-9a-f]{16}", a["plano.session_id"])
            sessions[a["plano.session_id"].split(":")[0].split("-")[0]] += 1
        if "plano.cache.warm" in a:
            assert s.name == "llm" or "plano.session.total_cost_in_usd" in a
            if "plano.switch.decision" in a:
                switch[a["plano.switch.decision"]] += 1
                assert ("plano.switch.counterfactual_route" in a) == (a["plano.switch.decision"] == "retained")
        if "plano.route.name" in a:
            assert a["plano.route.name"] in ROUTES
        if s.name == "routing":
            assert a["route.selected_model"] in set(MODELS) | {"none", "unknown"}
            assert isinstance(a["routing.determination_ms"], int)
        if "plano.distinct_id" in a:
            assert re.fullmatch(r"user_\d+", a["plano.distinct_id"])
    assert sessions["conv"] and sessions["implicit"] and set(switch) == {"allowed", "retained"}, (sessions, switch)
    selected = Counter(first(r)["route.selected_model"] for r in window.of("plano(routing)") if r.name == "routing")
    assert selected["none"] and selected["unknown"] and len(selected) > 4, selected


def test_sessions_are_conversations_of_one_user(window):
    """A session (plano.session_id, on the plano(llm) span as brightstaff sets it) is a
    conversation: several turns, in several traces, each with the user message's preview; its
    plano.distinct_id, when the client sends one, is the same on every turn."""
    turns, traces, users = Counter(), defaultdict(set), defaultdict(set)
    for t in window.traces:
        for svc, s in t.spans:
            a = first(s)
            if svc != "plano(llm)":
                assert "plano.session_id" not in a, (svc, s.name)
                continue
            if "plano.session_id" not in a:
                continue
            sid = a["plano.session_id"]
            turns[sid] += 1
            traces[sid].add(s.trace_id)
            users[sid].add(a.get("plano.distinct_id"))
            if s.name != "llm":  # failed before dispatch: nothing was read from the request yet
                assert a["llm.user_message_preview"] and len(a["llm.user_message_preview"]) <= 53
    long = [sid for sid, n in turns.items() if len(traces[sid]) >= 3]
    assert len(long) > len(turns) / 2, (len(long), len(turns))
    assert all(len(u) == 1 for u in users.values()), [u for u in users.values() if len(u) > 1][:3]
    with_user = sum(1 for u in users.values() if None not in u)
    assert 0.3 < with_user / len(users) < 0.9, with_user / len(users)


def test_rate_limited_calls(window):
    """The WASM filter answers 429 itself: the outbound span carries "429" and flags RL; plano(llm)
    429 as an int, with TTFT, duration, bytes and signals but no usage."""
    limited = [s for s in window.dispatched() if first(s)["http.status_code"] == 429]
    assert limited
    for s in limited:
        a = first(s)
        [out] = window.children(s, "plano(outbound)")
        o = first(out)
        assert (o["http.status_code"], o["response_flags"], out.status.code) == ("429", "RL", 0)
        assert s.status.code == 0
        assert {"llm.time_to_first_token", "llm.duration_ms", "llm.response_bytes", "signals.quality"} <= set(a)
        assert not any(k.startswith("llm.usage.") for k in a)


def test_upstream_5xx(window):
    failed = [s for s in window.dispatched() if first(s)["http.status_code"] >= 500]
    assert failed
    for s in failed:
        [out] = window.children(s, "plano(outbound)")
        assert out.status.code == out.status.STATUS_CODE_ERROR and s.status.code == 0
        assert first(out)["http.status_code"] == str(first(s)["http.status_code"])


def test_statuses(window):
    """brightstaff never sets a status; Envoy sets ERROR for >= 500 only."""
    errors = 0
    for svc, s in window.spans:
        if svc in BRIGHTSTAFF:
            assert s.status.code == 0 and s.status.message == ""
        else:
            assert (s.status.code == s.status.STATUS_CODE_ERROR) == (int(first(s)["http.status_code"]) >= 500)
            errors += s.status.code == s.status.STATUS_CODE_ERROR
    inbound = Counter(int(first(s)["http.status_code"]) // 100 for s in window.of("plano(inbound)"))
    assert errors and inbound[2] and inbound[4] and inbound[5], inbound


def test_never_emitted_keys_never_appear(window):
    for _, s in window.spans:
        keys = {k for k, _, _ in pairs(s)}
        assert not keys & NEVER and not any(k.startswith(("error.", "gen_ai.")) for k in keys), keys & NEVER
        # A log event's fields are its own (warn!(error = ...) makes an event attribute "error").
        assert not {k for _, attrs, _ in events(s) for k in attrs} & (NEVER - {"error"})


# --------------------------------------------------------------------------------------------
# Export calls and batching
# --------------------------------------------------------------------------------------------


class Recorder:
    """An exporter that keeps what it is given, in order."""

    def __init__(self):
        self.requests = []

    async def export(self, req) -> bool:
        self.requests.append(req)
        return True


def _check_export(req) -> str:
    """One ResourceSpans holding only service.name, one ScopeSpans: brightstaff's scope without a
    version, or none for Envoy. Returns the service."""
    [rs] = req.resource_spans
    [attr] = rs.resource.attributes
    assert attr.key == "service.name"
    service = attr.value.string_value
    [ss] = rs.scope_spans
    assert (ss.scope.name, ss.scope.version) == (("", "") if service in ENVOY else ("brightstaff", ""))
    return service


def test_an_export_call_per_service(window):
    spans = sorted(window.spans[:3000], key=lambda p: p[1].end_time_unix_nano)
    reqs = list(export_requests(spans, max_spans=500))
    assert sum(len(r.resource_spans[0].scope_spans[0].spans) for r in reqs) == len(spans)
    for r in reqs:
        _check_export(r)
    with pytest.raises(ValueError, match="one service"):
        export_request(window.spans[:50])


def test_the_player_sends_as_plano_batches(window):
    """Envoy's exports hold at most 5 spans, brightstaff's 512; a parent is never sent before a
    child of the same emitter; a span goes out once it has ended and at most ~5 s later."""
    sim = Simulation(rate=RATE, seed=SEED)
    rec = Recorder()
    player = Player(sim, rec)
    traces = sim.traces(START, START + 60)
    player.enqueue(traces)
    sent_at: dict[bytes, tuple[int, int]] = {}  # span id: (export index, second advanced to)
    for second in range(START, START + 90):
        for req in player.advance(second * 1_000_000_000):
            rec.requests.append(req)
            for s in req.resource_spans[0].scope_spans[0].spans:
                assert s.end_time_unix_nano <= second * 1_000_000_000
                sent_at[s.span_id] = (len(rec.requests), second)
    for s in (s for t in traces for _, s in t.spans):  # all out, none later than its end + 5 s + the step
        assert sent_at[s.span_id][1] * 1_000_000_000 - s.end_time_unix_nano < 6_000_000_000
    sizes = defaultdict(list)
    for r in rec.requests:
        sizes[_check_export(r)].append(len(r.resource_spans[0].scope_spans[0].spans))
    assert max(sizes["plano(outbound)"]) == 5 and max(sizes["plano(inbound)"]) <= 5
    assert max(max(v) for k, v in sizes.items() if k in BRIGHTSTAFF) <= 512
    emitter = {svc: ("brightstaff" if svc in BRIGHTSTAFF else svc) for svc in BRIGHTSTAFF | ENVOY}
    service_of = {s.span_id: svc for t in traces for svc, s in t.spans}
    same = 0
    for svc, s in ((svc, s) for t in traces for svc, s in t.spans):
        if s.parent_span_id and emitter[service_of[s.parent_span_id]] == emitter[svc]:
            assert sent_at[s.parent_span_id][0] >= sent_at[s.span_id][0]
            same += 1
    assert same > 1000


def test_send_window_sends_the_same_requests_as_playing_it(window):
    sim = Simulation(rate=5, seed=SEED)
    a, b = Recorder(), Recorder()
    traces = asyncio.run(Player(sim, a).send_window(START, START + 30))
    player = Player(sim, b)
    player.enqueue(traces)
    b.requests += player.advance(max(t.end_ns for t in traces)) + player.drain()
    assert [r.SerializeToString() for r in a.requests] == [r.SerializeToString() for r in b.requests]


# --------------------------------------------------------------------------------------------
# The fake brightstaff and Envoy against the spans
# --------------------------------------------------------------------------------------------


class Clock:
    """A clock the test sets (Unix ns)."""

    def __init__(self, now_ns: int = 0):
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def scrape(served) -> dict:
    """Serve a fake on a real socket, fetch its page and parse it with prometheus_client:
    {sample name: [(labels, value)]}."""

    async def fetch() -> httpx.Response:
        async with served as endpoint:
            async with httpx.AsyncClient(timeout=10) as client:
                return await client.get(endpoint.url)

    r = asyncio.run(fetch())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    out = defaultdict(list)
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def total(samples: dict, name: str, **match) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == x for k, x in match.items()))


@pytest.fixture(scope="module")
def brightstaff(window) -> dict:
    clock = Clock(START * 1_000_000_000)
    stats = BrightstaffStats(clock)
    stats.track(window.traces)
    clock.now_ns = max(t.end_ns for t in window.traces) + 1
    return scrape(FakeBrightstaff(stats, "127.0.0.1:0"))


def test_fake_brightstaff_counts_the_calls_the_spans_show(window, brightstaff):
    b = brightstaff
    dispatched = window.dispatched()
    by_class = Counter(f"{first(s)['http.status_code'] // 100}xx" for s in dispatched)
    for cls, n in by_class.items():
        assert total(b, "brightstaff_llm_upstream_requests_total", status_class=cls) == n, cls
    reset = sum("stream error" in [e[0] for e in events(s)] for s in dispatched)
    assert total(b, "brightstaff_llm_upstream_requests_total", error_class="stream") == reset > 0
    assert total(b, "brightstaff_llm_upstream_duration_seconds_count") == len(dispatched)
    assert total(b, "brightstaff_llm_time_to_first_token_seconds_count") == len(dispatched)
    ttft = sum(first(s)["llm.time_to_first_token"] for s in dispatched) / 1000
    assert 0 <= total(b, "brightstaff_llm_time_to_first_token_seconds_sum") - ttft < len(dispatched) * 0.001
    for kind, key in (
        ("prompt", "prompt_tokens"),
        ("completion", "completion_tokens"),
        ("cache_read", "cached_input_tokens"),
        ("cache_write", "cache_creation_tokens"),
    ):
        assert (
            total(b, "brightstaff_llm_tokens_total", kind=kind)
            == sum(first(s).get("llm.usage." + key, 0) for s in dispatched)
            > 0
        ), kind
    with_usage = [s for s in dispatched if "llm.usage.prompt_tokens" in first(s)]
    assert total(b, "brightstaff_llm_tokens_usage_missing_total") == len(dispatched) - len(with_usage)
    assert total(b, "brightstaff_prompt_cache_requests_total") == len(with_usage)
    per_model = Counter((first(s)["llm.provider"], first(s)["llm.model"].split("/", 1)[1]) for s in dispatched)
    for (provider, model), n in per_model.items():
        assert total(b, "brightstaff_llm_upstream_requests_total", provider=provider, model=model) == n

    llm, inbound = window.of("plano(llm)"), window.of("plano(inbound)")
    decisions = [s for s in window.of("plano(routing)") if s.name == "routing_decision"]
    assert total(b, "brightstaff_http_requests_total", handler="llm_chat") == len(llm)
    assert total(b, "brightstaff_http_requests_total", handler="llm_chat", status_class="4xx") == sum(
        s.name == "llm" and bool(events(s)) or first(s).get("http.status_code") == 429 for s in llm
    )
    for cls in ("2xx", "4xx", "5xx"):
        n = sum(f"{int(first(s)['http.status_code']) // 100}xx" == cls for s in inbound)
        assert total(b, "brightstaff_http_requests_total", handler="agent_chat", status_class=cls) == n
    assert total(b, "brightstaff_http_requests_total", handler="routing_decision") == len(decisions)
    assert total(b, "brightstaff_http_request_duration_seconds_count") == len(llm) + len(inbound) + len(decisions)
    assert total(b, "brightstaff_http_in_flight_requests") == 0  # all over

    routing = [s for s in window.of("plano(routing)") if s.name == "routing"]
    for model, n in Counter(first(s)["route.selected_model"] for s in routing).items():
        assert total(b, "brightstaff_router_decisions_total", route="llm", selected_model=model) == n
    assert total(b, "brightstaff_router_decisions_total", route="llm", fallback="true") == sum(
        first(s)["route.selected_model"] in ("none", "unknown") for s in routing
    )
    assert total(b, "brightstaff_router_decisions_total", route="routing") == len(decisions)
    assert total(b, "brightstaff_routing_service_requests_total") == len(decisions)
    assert (
        total(b, "brightstaff_router_skips_total", reason="not_user_turn")
        == sum("plano.routing.skipped" in first(s) for s in llm)
        > 0
    )
    looked_up = [s for s in llm + decisions if "plano.cache.warm" in first(s)]
    assert total(b, "brightstaff_session_cache_events_total", outcome="hit") + total(
        b, "brightstaff_session_cache_events_total", outcome="miss"
    ) == len(looked_up)
    retained = sum(first(s).get("plano.switch.decision") == "retained" for s in looked_up)
    assert total(b, "brightstaff_session_switch_decisions_total", decision="retained") == retained > 0
    refreshed = sum("llm.usage.total_cost_usd" in first(s) for s in dispatched)
    assert total(b, "brightstaff_session_binding_events_total", event="refresh") == refreshed > 0
    assert total(b, "brightstaff_build_info", version="0.4.36") == 1
    assert total(b, "process_resident_memory_bytes") > 0 and total(b, "process_cpu_seconds_total") > 0


def _selectors(expr: str):
    """(metric, {label: (op, value)}) of each series selector of a PromQL expression."""
    for m in re.finditer(r"\b((?:brightstaff|envoy|process)_\w+)(\{([^}]*)\})?", expr):
        matchers = {}
        for lm in re.finditer(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"', m.group(3) or ""):
            matchers[lm.group(1)] = (lm.group(2), lm.group(3))
        yield m.group(1), matchers


def test_fake_brightstaff_feeds_every_panel_of_plano_dashboard(window, brightstaff):
    """Every series selector of Plano's brightstaff dashboard matches samples of the fakes, with
    the labels its ``by (...)`` groups on."""
    clock = Clock(START * 1_000_000_000)
    stats = EnvoyStats(clock)
    stats.track(window.traces)
    clock.now_ns = max(t.end_ns for t in window.traces) + 1
    pages = {**brightstaff, **scrape(FakeEnvoyAdmin(stats, "127.0.0.1:0"))}
    dashboard = json.loads((DATA / "brightstaff-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    assert len(panels) == 15
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"]
            grouped = {g.strip() for by in re.findall(r"by \(([^)]*)\)", expr) for g in by.split(",")} - {"le"}
            for metric, matchers in _selectors(expr):
                matchers.pop("job", None)  # the scrape target's label, not the endpoint's
                found = [
                    labels
                    for labels, _ in pages.get(metric, [])
                    if all(
                        (op == "=" and labels.get(k) == v)
                        or (op == "!=" and labels.get(k) != v)
                        or (op == "=~" and re.fullmatch(v, labels.get(k, "")))
                        for k, (op, v) in matchers.items()
                    )
                ]
                assert found, (panel["title"], metric, matchers)
                assert grouped <= set(found[0]), (panel["title"], grouped)


@pytest.fixture(scope="module")
def envoy(window) -> tuple[dict, list]:
    clock = Clock(START * 1_000_000_000)
    stats = EnvoyStats(clock)
    stats.track(window.traces)
    clock.now_ns = max(t.end_ns for t in window.traces) + 1
    return scrape(FakeEnvoyAdmin(stats, "127.0.0.1:0")), [c for t in window.traces for c in t.calls]


def test_fake_envoy_counts_the_calls_through_its_listeners(window, envoy):
    e, calls = envoy
    outbound = window.of("plano(outbound)")
    wasm = [c for c in calls if c.wasm]
    # One filter call per outbound span, the same cluster, status and times.
    assert sorted((c.start_ns, c.end_ns, c.cluster, c.status_code) for c in wasm) == sorted(
        (s.start_time_unix_nano, s.end_time_unix_nano, first(s)["upstream_cluster"], int(first(s)["http.status_code"]))
        for s in outbound
    )
    limited = [s for s in outbound if first(s)["http.status_code"] == "429"]
    assert total(e, "envoy_wasmcustom_ratelimited_rq_total") == len(limited) > 0
    served = Counter((first(s)["upstream_cluster"], first(s)["http.status_code"]) for s in outbound if s not in limited)
    # The parser names both cluster families ..._total: the per-code one has the code label.
    clusters = e["envoy_cluster_upstream_rq_total"]
    by_code = {
        (lb["envoy_cluster_name"], lb["envoy_response_code"]): v for lb, v in clusters if "envoy_response_code" in lb
    }
    started = {lb["envoy_cluster_name"]: v for lb, v in clusters if "envoy_response_code" not in lb}
    assert {k: v for k, v in by_code.items() if k[0] != "bright_staff"} == served  # a 429 never reaches an upstream
    for cluster, n in started.items():
        assert n == sum(v for k, v in by_code.items() if k[0] == cluster)
    hops = len(window.of("plano(llm)")) + len(window.of("plano(inbound)"))
    hops += sum(s.name == "routing_decision" for s in window.of("plano(routing)"))
    assert started["bright_staff"] == hops  # every request to brightstaff came through Envoy
    completed = [c for c in wasm if not c.rate_limited and c.completed]
    for name, n in (
        ("input_sequence_length", len(wasm)),  # counted before the rate-limit check
        ("request_latency", len(completed)),  # every upstream response, errors included
        ("output_sequence_length", len(completed)),
        ("time_per_output_token", sum(c.output_tokens > 0 for c in completed)),
        ("time_to_first_token", sum(c.streaming and c.status_code == 200 for c in completed)),
    ):
        buckets = [(lb["le"], v) for lb, v in e[f"envoy_wasmcustom_{name}_bucket"]]
        want = TTFT_BUCKETS if name == "time_to_first_token" else BUCKETS
        assert [le for le, _ in buckets] == [*map(str, want), "+Inf"], name
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and counts[-1] == n == total(e, f"envoy_wasmcustom_{name}_count") > 0, name
    assert total(e, "envoy_wasmcustom_request_latency_sum") == sum(
        (c.end_ns - c.start_ns) // 1_000_000 for c in completed
    )
    assert total(e, "envoy_wasmcustom_output_sequence_length_sum") == sum(c.output_tokens for c in completed)
    assert sum(c.output_tokens == 0 for c in completed) > 0  # the errors'
    assert total(e, "envoy_wasmcustom_active_http_calls") == 0


def test_fake_envoy_counters_grow_with_simulated_time(window):
    """Rendered as of times within the window, the counter is the 429s that have happened by then."""
    start_ns = START * 1_000_000_000
    clock = Clock(start_ns)
    stats = EnvoyStats(clock)
    stats.track(window.traces)
    calls = [c for t in window.traces for c in t.calls]
    seen = []
    for at_s in (30, 90, 200):
        now = clock.now_ns = start_ns + at_s * 1_000_000_000
        e = scrape(FakeEnvoyAdmin(stats, "127.0.0.1:0"))
        limited = total(e, "envoy_wasmcustom_ratelimited_rq_total")
        assert limited == sum(c.rate_limited and c.end_ns <= now for c in calls)
        seen.append(limited)
    assert seen == sorted(seen) and seen[0] < seen[-1], seen


# --------------------------------------------------------------------------------------------
# Proportions, latencies, incidents, determinism (no server)
# --------------------------------------------------------------------------------------------


def test_proportions(window):
    sim, traces = window.sim, window.traces
    expected = sum(sim.intensity(s) for s in range(START, START + WINDOW_S))
    assert abs(len(traces) - expected) < 5 * math.sqrt(expected), (len(traces), expected)
    kinds = Counter(t.kind for t in traces)
    assert abs(kinds[AGENT] / len(traces) - 0.3) < 0.04 and abs(kinds[ROUTING] / len(traces) - 0.05) < 0.02, kinds
    dispatched = window.dispatched()
    statuses = Counter(first(s)["http.status_code"] for s in dispatched)
    failed = sum(n for c, n in statuses.items() if c >= 400)
    assert 0.005 < failed / len(dispatched) < 0.15, statuses
    assert {first(s)["llm.model"] for s in dispatched} == set(MODELS)
    assert {first(s)["llm.provider"] for s in dispatched} == set(PROVIDERS)


def test_latencies_are_per_model_and_sensible():
    sim = Simulation(rate=10, seed=3, steady=True)
    durations, ttft = defaultdict(list), defaultdict(list)
    for svc, s in (p for t in sim.traces(START, START + 500) for p in t.spans):
        a = first(s) if svc == "plano(llm)" else {}
        if a.get("http.status_code") == 200:
            durations[a["llm.model"]].append(a["llm.duration_ms"])
            ttft[a["llm.model"]].append(a["llm.time_to_first_token"])
    med = {m: statistics.median(v) for m, v in ttft.items()}
    assert med["groq/llama-3.3-70b-versatile"] < med["openai/gpt-4o-mini"] < med["anthropic/claude-sonnet-4-20250514"]
    for model, v in durations.items():
        v.sort()
        p50, p99 = v[len(v) // 2], v[int(len(v) * 0.99)]
        assert p99 > 2.5 * p50 and p99 < 25_000, (model, p50, p99)  # a slow tail, not minutes


def test_incidents_come_every_few_minutes():
    for seed in range(4):
        sim = Simulation(rate=5, seed=seed)
        day0 = START // 86400 * 86400
        active = [bool(sim.incidents(s)) for s in range(day0, day0 + 86400, 5)]
        assert 0.2 < sum(active) / len(active) < 0.5
        gaps, run = [], 0
        for a in active:
            run = 0 if a else run + 5
            gaps.append(run)
        assert max(gaps) <= 8 * 60, max(gaps)  # never more than 8 minutes without one
        kinds = Counter(i.kind for s in range(day0, day0 + 86400, 60) for i in sim.incidents(s))
        assert set(kinds) == {"rate_limit", "outage", "slow"}


def test_an_incident_raises_its_failures():
    sim = Simulation(rate=20, seed=2)
    day0 = START // 86400 * 86400
    second = next(
        s
        for s in range(day0, day0 + 86400, 7)
        if any(i.kind == "outage" and i.target == "openai" for i in sim.incidents(s))
    )
    incident = next(i for i in sim.incidents(second) if i.kind == "outage")
    w = Window(sim, sim.traces(int(incident.start_s) + 1, int(incident.end_s)))
    openai = [first(s)["http.status_code"] for s in w.dispatched() if first(s)["llm.provider"] == "openai"]
    assert sum(c >= 500 for c in openai) / len(openai) > incident.level / 2


def _body(traces) -> bytes:
    return b"".join(r.SerializeToString() for r in export_requests(s for t in traces for s in t.spans))


def test_same_seed_same_traffic():
    a = Simulation(rate=20, seed=5).traces(START, START + 10)
    b = Simulation(rate=20, seed=5).traces(START, START + 10)
    assert len(a) > 100 and _body(a) == _body(b)
    assert [t.facts for t in a] == [t.facts for t in b] and [t.calls for t in a] == [t.calls for t in b]
    # a window is the same however it is cut: each second stands alone
    pieces = [t for s in range(START, START + 10) for t in Simulation(rate=20, seed=5).second(s)]
    assert _body(pieces) == _body(a)
    assert _body(Simulation(rate=20, seed=6).traces(START, START + 10)) != _body(a)
    assert _body(Simulation(rate=20, seed=5).traces(START + 10, START + 20)) != _body(a)
    ids = [s.span_id for t in a for _, s in t.spans]
    assert len(set(ids)) == len(ids) and all(any(i) for i in ids)


def test_rate_drifts_and_bursts_around_its_average():
    sim = Simulation(rate=5, seed=3)
    day = range(START // 86400 * 86400, START // 86400 * 86400 + 86400)
    rates = [sim.intensity(s) for s in day]
    assert abs(statistics.fmean(rates) / 5 - 1) < 0.05
    bursting = [sim.burst(s) for s in day]
    in_burst = sum(b > 1 for b in bursting) / len(bursting)
    assert 0.02 < in_burst < 0.1 and 2.5 <= max(bursting) <= 5, in_burst
    ten_minutes = [statistics.fmean(rates[i : i + 600]) for i in range(0, len(rates), 600)]
    assert max(ten_minutes) / min(ten_minutes) > 1.5
    steady = Simulation(rate=5, seed=3, steady=True)
    assert {steady.intensity(s) for s in day[:3600]} == {5} and not any(steady.incidents(s) for s in day[:3600])
    n = sum(len(steady.second(s)) for s in day[:600])
    assert abs(n - 3000) < 5 * math.sqrt(3000), n


def test_mix():
    assert parse_mix("llm=0.7,agent=0.3") == pytest.approx({LLM: 0.7, AGENT: 0.3, ROUTING: 0.0})
    assert parse_mix("agent=1, llm=3") == pytest.approx({LLM: 0.75, AGENT: 0.25, ROUTING: 0.0})
    assert parse_mix("routing=2") == {LLM: 0.0, AGENT: 0.0, ROUTING: 1.0}
    for bad in ("", "llm", "llm=x", "llm=-1", "llm=0", "chat=1", "llm=nan"):
        with pytest.raises(ValueError):
            parse_mix(bad)
    only_agents = Simulation(rate=20, mix=parse_mix("agent=1"), seed=2).traces(START, START + 5)
    assert only_agents and {t.kind for t in only_agents} == {AGENT}


def test_the_load_generator_sends_one_service_per_request():
    from planoscope.ingest.decode import Decoder

    factory = RequestFactory(30, seed=2)
    assert set(factory.services) == BRIGHTSTAFF | ENVOY
    seen, ids = Counter(), set()
    for _ in range(100):
        table = Decoder().decode_protobuf(factory.make()).table
        assert table.num_rows == 30
        [service] = set(table.column("ServiceName").to_pylist())
        seen[service] += 1
        ids |= set(table.column("SpanId").to_pylist())
    assert set(seen) == BRIGHTSTAFF | ENVOY and seen["plano(outbound)"] > seen["plano(agent)"]
    assert len(ids) == 3000  # fresh ids in every copy
    assert _check_export(template_request(20)) == factory.services[0]


# --------------------------------------------------------------------------------------------
# A simulated minute in a real server
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minute(module_server_factory, tmp_path_factory):
    """One simulated minute, sent to a real server as the Player batches it; its rows once stopped."""
    start_s = int(time.time()) // 60 * 60 - 180
    sim = Simulation(rate=RATE, seed=SEED)
    srv = module_server_factory(tmp_path_factory.mktemp("sim") / "data")

    async def send():
        async with OtlpExporter(srv.grpc_target, "grpc") as exporter:
            traces = await Player(sim, exporter).send_window(start_s, start_s + 60)
        return traces, exporter

    t0 = time.monotonic()
    traces, exporter = asyncio.run(send())
    send_s = time.monotonic() - t0
    srv.stop()
    return dict(traces=traces, exporter=exporter, rows=read_spans(srv.data_dir), send_s=send_s)


def test_a_simulated_minute_is_stored_once_and_typed(minute):
    spans = [s for t in minute["traces"] for _, s in t.spans]
    exporter = minute["exporter"]
    assert exporter.acknowledged == len(spans) and exporter.rejected == 0 and exporter.failed == 0
    stored = spans_by_id(minute["rows"])
    assert set(stored) == {s.span_id.hex() for s in spans}
    assert minute["send_s"] < 30, f"sending a simulated minute took {minute['send_s']:.1f} s"
    sent = {s.span_id.hex(): (svc, s) for t in minute["traces"] for svc, s in t.spans}
    for span_id, row in stored.items():
        svc, s = sent[span_id]
        assert row["ResourceAttributes"] == {"service.name": svc}
        assert (row["ScopeName"], row["ScopeVersion"]) == ("" if svc in ENVOY else "brightstaff", "")
        assert row["SpanKind"] == ("Server" if svc in ENVOY else "Internal")
        a = first(s)
        if svc == "plano(llm)" and "http.status_code" in a:  # the first llm.model wins, the int status is typed
            assert (row["LlmModel"], row["HttpStatusCode"]) == (a["llm.model"], a["http.status_code"])
            assert row["SpanAttributes"]["llm.model"] == a["llm.model"]


def test_a_live_demo_opens_with_a_rate_limit_storm_on_the_busiest_model():
    """So that Plano's 429 rule fires within minutes of a first look, whatever the seed."""
    t0 = 1_767_225_600
    plain, live = Simulation(rate=5, seed=3), Simulation(rate=5, seed=3, opening_at=t0)
    for s in (t0 + 30, t0 + 59, t0 + 241):
        assert live.conditions(s) == plain.conditions(s)
    for s in (t0 + 60, t0 + 150, t0 + 239):
        storm = dict(live.conditions(s).model_429)
        assert storm.get("openai/gpt-4o") == 0.45, s
    # The storm's 429s, in the spans: the busiest model's calls are rate-limited about half the time.
    calls = [
        first(sp) for t in live.traces(t0 + 90, t0 + 150) for svc, sp in t.spans
        if svc == "plano(llm)" and first(sp).get("llm.model") == "openai/gpt-4o"
    ]  # fmt: skip
    limited = sum(1 for a in calls if a.get("http.status_code") == 429)
    assert len(calls) > 20 and 0.3 < limited / len(calls) < 0.7, (len(calls), limited)
