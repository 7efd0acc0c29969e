"""Sessions (GET /api/v1/sessions, GET /api/v1/sessions/{id}) from known spans sent to a real
server: Plano's (the session id and user on each plano(llm) span; on a routing span only), an
OpenInference app's (session.id and user.id on the root CHAIN span, the tokens on its LLM
children) and a GenAI app's (gen_ai.conversation.id on the chat span). Every figure is exact."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import grpc_export, now_base_ns, pb_request, pb_span
from support.clickhouse_fixtures import STORES, serve_on

S = 10**9
CHAT = "POST /v1/chat/completions"
# The price table's estimate for gpt-4o (genai-prices: $2.50 per M input tokens, $1.25 per M
# cached input tokens, $10 per M output tokens), for the calls that came without a cost.
IN, CACHED, OUT = 2.50e-6, 1.25e-6, 10e-6


def gpt4o_estimate(prompt: int, completion: int, cached: int = 0) -> float:
    return (prompt - cached) * IN + cached * CACHED + completion * OUT


def _plano_llm(**attrs) -> dict:
    return {"component": "llm", "http.method": "POST", "http.path": "/v1/chat/completions", **attrs}


# (id, service, trace, span, parent, name, start s, duration s, attrs); start relative to BASE
# (a minute ago), the conversation's turns first.
SPANS = [
    # conv-a: Plano, user alice, four turns in the range and an old one two hours before.
    (
        "old",
        "plano(llm)",
        "a0" * 16,
        "a0" * 8,
        "",
        f"{CHAT} openai/gpt-4o-mini",
        -7200,
        0.5,
        _plano_llm(
            **{
                "llm.model": "openai/gpt-4o-mini",
                "plano.session_id": "conv-a",
                "plano.distinct_id": "alice",
                "http.status_code": 200,
                "llm.usage.prompt_tokens": 10,
                "llm.usage.completion_tokens": 5,
                "llm.usage.total_cost_usd": 0.00001,
                "llm.user_message_preview": "hi",
            },
        ),
    ),
    (
        "a1",
        "plano(llm)",
        "a1" * 16,
        "a1" * 8,
        "",
        f"{CHAT} openai/gpt-4o-mini -> openai/gpt-4o",
        -600,
        1.5,
        _plano_llm(
            **{
                "llm.model": "openai/gpt-4o",
                "llm.provider": "openai",
                "plano.session_id": "conv-a",
                "plano.distinct_id": "alice",
                "plano.route.name": "code_generation",
                "http.status_code": 200,
                "llm.time_to_first_token": 320,
                "llm.usage.prompt_tokens": 1200,
                "llm.usage.completion_tokens": 300,
                "llm.usage.cached_input_tokens": 200,
                "llm.usage.total_tokens": 1500,
                "llm.usage.total_cost_usd": 0.0071,
                "signals.quality": "good",
                "llm.user_message_preview": "Write a function that parses ISO-8601 dates and re...",
            },
        ),
    ),
    (
        "a2",
        "plano(llm)",
        "a2" * 16,
        "a2" * 8,
        "",
        f"{CHAT} openai/gpt-4o",
        -590,
        0.05,
        _plano_llm(
            **{
                "llm.model": "openai/gpt-4o",
                "plano.session_id": "conv-a",
                "plano.distinct_id": "alice",
                "plano.route.name": "code_generation",
                "http.status_code": 429,
                "llm.time_to_first_token": 40,
                "signals.quality": "neutral",
                "llm.user_message_preview": "again",
            },
        ),
    ),
    (
        "a3",
        "plano(llm)",
        "a3" * 16,
        "a3" * 8,
        "",
        f"{CHAT} openai/gpt-4o \U0001f6a9",
        -580,
        2.0,
        _plano_llm(
            **{
                "llm.model": "openai/gpt-4o",
                "plano.session_id": "conv-a",
                "plano.distinct_id": "alice",
                "plano.route.name": "code_generation",
                "http.status_code": 200,
                "llm.time_to_first_token": 410,
                "llm.usage.prompt_tokens": 2000,
                "llm.usage.completion_tokens": 500,
                "llm.usage.cached_input_tokens": 1000,
                "signals.quality": "poor",
                "llm.user_message_preview": "That is wrong, the dates come with a timezone",
            },
        ),
    ),
    # Failed before dispatch (the router failed): named llm, no model, the session already known.
    (
        "a4",
        "plano(llm)",
        "a4" * 16,
        "a4" * 8,
        "",
        "llm",
        -570,
        0.001,
        _plano_llm(**{"plano.session_id": "conv-a", "llm.user_message_preview": "hello?"}),
    ),
    # conv-b: one costly call of bob's.
    (
        "b1",
        "plano(llm)",
        "b1" * 16,
        "b1" * 8,
        "",
        f"{CHAT} anthropic/claude-sonnet-4",
        -560,
        3.0,
        _plano_llm(
            **{
                "llm.model": "anthropic/claude-sonnet-4",
                "llm.provider": "anthropic",
                "plano.session_id": "conv-b",
                "plano.distinct_id": "bob",
                "http.status_code": 200,
                "llm.usage.prompt_tokens": 10000,
                "llm.usage.completion_tokens": 2000,
                "llm.usage.total_cost_usd": 0.5,
            },
        ),
    ),
    # OpenInference: session.id and user.id on the root CHAIN span only, two LLM children.
    (
        "oi-root",
        "support-bot",
        "c1" * 16,
        "c0" * 8,
        "",
        "agent.run",
        -550,
        5.0,
        {"openinference.span.kind": "CHAIN", "session.id": "oi-session", "user.id": "carol"},
    ),
    (
        "oi1",
        "support-bot",
        "c1" * 16,
        "c1" * 8,
        "c0" * 8,
        "ChatCompletion",
        -549,
        1.0,
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.provider": "openai",
            "llm.token_count.prompt": 100,
            "llm.token_count.completion": 20,
            "llm.token_count.total": 120,
            "llm.token_count.prompt_details.cache_read": 50,
            "llm.cost.total": 0.0004,
        },
    ),
    (
        "oi2",
        "support-bot",
        "c1" * 16,
        "c2" * 8,
        "c0" * 8,
        "ChatCompletion",
        -547,
        1.0,
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.token_count.prompt": 300,
            "llm.token_count.completion": 40,
            "llm.cost.total": 0.0002,
        },
    ),
    # GenAI semantic conventions: the conversation id on the chat span; no cost sent.
    (
        "genai",
        "travel-agent",
        "d1" * 16,
        "d1" * 8,
        "",
        "chat gpt-4o",
        -540,
        1.0,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.conversation.id": "genai-conv",
            "gen_ai.usage.input_tokens": 400,
            "gen_ai.usage.output_tokens": 100,
        },
    ),
    # The session id on a routing span only, the tokens on the plano(llm) span of the trace.
    (
        "routed",
        "plano(llm)",
        "e1" * 16,
        "e1" * 8,
        "",
        f"{CHAT} openai/gpt-4o-mini",
        -530,
        1.0,
        _plano_llm(
            **{
                "llm.model": "openai/gpt-4o-mini",
                "http.status_code": 200,
                "llm.usage.prompt_tokens": 50,
                "llm.usage.completion_tokens": 10,
                "llm.usage.total_cost_usd": 0.003,
            },
        ),
    ),
    (
        "routing",
        "plano(routing)",
        "e1" * 16,
        "e2" * 8,
        "e1" * 8,
        "routing",
        -529.9,
        0.001,
        {"component": "routing", "model.requested": "openai/gpt-4o-mini", "plano.session_id": "routed"},
    ),
    # No session: never listed, however costly.
    (
        "lone",
        "plano(llm)",
        "f1" * 16,
        "f1" * 8,
        "",
        f"{CHAT} openai/gpt-4o",
        -520,
        1.0,
        _plano_llm(
            **{
                "llm.model": "openai/gpt-4o",
                "plano.distinct_id": "alice",
                "http.status_code": 200,
                "llm.usage.prompt_tokens": 1,
                "llm.usage.completion_tokens": 1,
                "llm.usage.total_cost_usd": 1.0,
            },
        ),
    ),
    # A session id on a span that is no LLM call, in a trace without one: no session.
    ("nocall", "worker", "f2" * 16, "f2" * 8, "", "process", -515, 1.0, {"session.id": "no-calls"}),
    # Any characters: a slash, a space, non-ASCII.
    (
        "odd",
        "plano(llm)",
        "f3" * 16,
        "f3" * 8,
        "",
        f"{CHAT} openai/gpt-4o-mini",
        -510,
        0.2,
        _plano_llm(
            **{
                "llm.model": "openai/gpt-4o-mini",
                "plano.session_id": "tenant/42 ü?#",
                "http.status_code": 200,
                "llm.usage.prompt_tokens": 20,
                "llm.usage.completion_tokens": 2,
                "llm.usage.total_cost_usd": 0.001,
            },
        ),
    ),
]
BY_ID = {s[0]: s for s in SPANS}
ODD = "tenant/42 ü?#"
A3_ESTIMATE = gpt4o_estimate(2000, 500, cached=1000)
GENAI_ESTIMATE = gpt4o_estimate(400, 100)


@pytest.fixture(scope="module", params=STORES)
def srv(request, module_server_factory, tmp_path_factory):
    """Every span sent, children before their parents, one Export call per service; on each store."""
    server = serve_on(request, module_server_factory, tmp_path_factory.mktemp("sessions"))
    base = now_base_ns()
    by_service: dict[str, list] = {}
    for _, service, trace, span, parent, name, at, dur, attrs in SPANS:
        start = base + int(at * S)
        by_service.setdefault(service, []).append(
            pb_span(
                trace, span, name, start, start + int(dur * S), parent=parent, kind=Span.SPAN_KIND_INTERNAL, attrs=attrs
            )
        )
    for service, spans in by_service.items():
        r = grpc_export(server.grpc_target, pb_request(({"service.name": service}, spans[::-1])))
        assert r.partial_success.rejected_spans == 0
    server.base_s = base / S
    server.settled()
    return server


def _start(srv, id_: str) -> float:
    return srv.base_s + BY_ID[id_][6]


def _end(srv, id_: str) -> float:
    return _start(srv, id_) + BY_ID[id_][7]


def _list(srv, **params) -> dict:
    params.setdefault("start", srv.base_s - 3600)
    params.setdefault("end", srv.base_s + 60)
    r = srv.get("/api/v1/sessions?" + urlencode(params))
    assert r.status_code == 200, r.text
    return r.json()


def _ids(body: dict) -> list[str]:
    return [s["session_id"] for s in body["sessions"]]


def test_list_sorted_by_cost_with_exact_figures(srv):
    body = _list(srv)
    assert body["total"] == 6 and body["limit"] == 50 and body["offset"] == 0
    assert _ids(body) == ["conv-b", "conv-a", "routed", "genai-conv", ODD, "oi-session"]
    got = {s["session_id"]: s for s in body["sessions"]}
    a = got["conv-a"]
    assert a == {
        "session_id": "conv-a",
        "first_seen": pytest.approx(_start(srv, "a1"), abs=1e-6),
        "last_seen": pytest.approx(max(_end(srv, i) for i in ("a1", "a2", "a3", "a4")), abs=1e-6),
        "llm_calls": 4,  # the old turn is outside the range
        "models": ["openai/gpt-4o"],
        "routes": ["code_generation"],
        "input_tokens": 3200,
        "output_tokens": 800,
        "cached_input_tokens": 1200,
        "cost_usd": pytest.approx(0.0071 + A3_ESTIMATE, rel=1e-9),  # sent + estimated
        "cost_estimated": True,
        "failures": 2,  # the 429 and the one that failed before dispatch
        "user_id": "alice",
    }
    b = got["conv-b"]
    assert (b["cost_usd"], b["cost_estimated"], b["failures"], b["user_id"]) == (0.5, False, 0, "bob")
    assert (b["input_tokens"], b["output_tokens"], b["cached_input_tokens"]) == (10000, 2000, None)
    assert b["models"] == ["anthropic/claude-sonnet-4"] and b["routes"] == []
    # OpenInference: the calls take the root's session and user.
    oi = got["oi-session"]
    assert (oi["llm_calls"], oi["input_tokens"], oi["output_tokens"], oi["cached_input_tokens"]) == (2, 400, 60, 50)
    assert oi["cost_usd"] == pytest.approx(0.0006, rel=1e-9) and oi["cost_estimated"] is False
    assert oi["user_id"] == "carol" and oi["models"] == ["gpt-4o-mini"]
    assert oi["first_seen"] == pytest.approx(_start(srv, "oi1"), abs=1e-6)
    # GenAI: estimated only.
    g = got["genai-conv"]
    assert (g["llm_calls"], g["input_tokens"], g["output_tokens"], g["models"]) == (1, 400, 100, ["gpt-4o"])
    assert g["cost_usd"] == pytest.approx(GENAI_ESTIMATE, rel=1e-9) and g["cost_estimated"] is True
    # The routing span's session id gives the trace's LLM call to the session.
    r = got["routed"]
    assert (r["llm_calls"], r["cost_usd"], r["input_tokens"], r["user_id"]) == (1, 0.003, 50, None)


def test_list_sorted_by_last_seen_and_by_calls(srv):
    assert _ids(_list(srv, sort="last_seen")) == [ODD, "routed", "genai-conv", "oi-session", "conv-b", "conv-a"]
    # Ties on the number of calls: the most recent first.
    assert _ids(_list(srv, sort="calls")) == ["conv-a", "oi-session", ODD, "routed", "genai-conv", "conv-b"]


def test_list_pages(srv):
    pages = [_list(srv, sort="last_seen", limit=2, offset=o) for o in (0, 2, 4, 6, 600)]
    assert [_ids(p) for p in pages] == [[ODD, "routed"], ["genai-conv", "oi-session"], ["conv-b", "conv-a"], [], []]
    assert [(p["total"], p["limit"], p["offset"]) for p in pages] == [
        (6, 2, 0),
        (6, 2, 2),
        (6, 2, 4),
        (6, 2, 6),
        (6, 2, 600),
    ]


def test_list_by_user(srv):
    assert _ids(_list(srv, user="alice")) == ["conv-a"]  # not her call without a session
    assert _ids(_list(srv, user="carol")) == ["oi-session"]  # user.id on the OpenInference root
    empty = _list(srv, user="nobody")
    assert (empty["sessions"], empty["total"]) == ([], 0)
    paged = _list(srv, user="bob", offset=1)
    assert (paged["sessions"], paged["total"]) == ([], 1)


def test_list_counts_the_calls_of_the_range(srv):
    wide = {s["session_id"]: s for s in _list(srv, start=srv.base_s - 3 * 3600)["sessions"]}
    assert (wide["conv-a"]["llm_calls"], wide["conv-a"]["input_tokens"]) == (5, 3210)
    assert wide["conv-a"]["first_seen"] == pytest.approx(_start(srv, "old"), abs=1e-6)
    # Only the calls of conv-b's second: conv-b alone.
    one = _list(srv, start=_start(srv, "b1") - 0.5, end=_start(srv, "b1") + 0.5)
    assert _ids(one) == ["conv-b"] and one["total"] == 1
    nothing = _list(srv, start=srv.base_s - 5 * 3600, end=srv.base_s - 4 * 3600)
    assert (nothing["sessions"], nothing["total"]) == ([], 0)


def _session(srv, sid: str):
    return srv.get("/api/v1/sessions/" + quote(sid, safe=""))


def test_one_session_turn_by_turn(srv):
    r = _session(srv, "conv-a")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["session_id"], body["user_id"]) == ("conv-a", "alice")
    calls = body["calls"]
    assert [c["span_id"] for c in calls] == ["a0" * 8, "a1" * 8, "a2" * 8, "a3" * 8, "a4" * 8]  # time order, all
    assert [c["trace_id"] for c in calls] == [BY_ID[i][2] for i in ("old", "a1", "a2", "a3", "a4")]
    assert calls[1] == {
        "trace_id": "a1" * 16,
        "span_id": "a1" * 8,
        "start": pytest.approx(_start(srv, "a1"), abs=1e-6),
        "model": "openai/gpt-4o",
        "requested_model": "openai/gpt-4o-mini",
        "resolved_model": "openai/gpt-4o",
        "route": "code_generation",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cached_input_tokens": 200,
        "cost_usd": 0.0071,
        "cost_estimated": False,
        "ttft_ms": 320.0,
        "duration_ms": pytest.approx(1500.0),
        "status_code": 200,
        "failure_class": None,
        "signals_quality": "good",
        "flagged": False,
        "user_message_preview": "Write a function that parses ISO-8601 dates and re...",
    }
    rate_limited, flagged, before = calls[2], calls[3], calls[4]
    assert (rate_limited["status_code"], rate_limited["failure_class"], rate_limited["ttft_ms"]) == (429, "429", 40.0)
    assert (rate_limited["cost_usd"], rate_limited["cost_estimated"], rate_limited["input_tokens"]) == (
        None,
        False,
        None,
    )
    assert (flagged["flagged"], flagged["signals_quality"], flagged["cost_estimated"]) == (True, "poor", True)
    assert flagged["cost_usd"] == pytest.approx(A3_ESTIMATE, rel=1e-9)
    assert (flagged["requested_model"], flagged["resolved_model"]) == ("openai/gpt-4o", "openai/gpt-4o")
    assert (before["model"], before["failure_class"], before["status_code"]) == (None, "before_dispatch", None)
    assert before["user_message_preview"] == "hello?" and before["duration_ms"] == pytest.approx(1.0)


def test_one_session_from_other_senders_and_by_trace(srv):
    oi = _session(srv, "oi-session").json()
    assert oi["user_id"] == "carol"
    assert [(c["span_id"], c["model"], c["input_tokens"], c["cached_input_tokens"]) for c in oi["calls"]] == [
        ("c1" * 8, "gpt-4o-mini", 100, 50),
        ("c2" * 8, "gpt-4o-mini", 300, None),
    ]
    genai = _session(srv, "genai-conv").json()
    assert [(c["model"], c["output_tokens"], c["cost_estimated"]) for c in genai["calls"]] == [("gpt-4o", 100, True)]
    routed = _session(srv, "routed").json()
    assert [(c["span_id"], c["cost_usd"]) for c in routed["calls"]] == [("e1" * 8, 0.003)]
    odd = _session(srv, ODD)
    assert odd.status_code == 200 and odd.json()["session_id"] == ODD and len(odd.json()["calls"]) == 1


def test_unknown_session_is_404(srv):
    for sid in ("nope", "no-calls", "conv-"):
        r = _session(srv, sid)
        assert r.status_code == 404, (sid, r.text)
        assert sid in r.json()["detail"]


@pytest.mark.parametrize(
    "query, needle",
    [
        ("sort=bogus", "sort must be one of cost, last_seen, calls"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("offset=-1", "offset"),
        ("limit=ten", "limit"),
        ("start=100&end=50", "end (50.0) must be after start (100.0)"),
        ("start=nan&end=50", "finite"),
        ("user=", "user must not be empty"),
    ],
)
def test_bad_parameters_are_400(srv, query, needle):
    r = srv.get("/api/v1/sessions?" + query)
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]


def test_overlong_session_id_is_400(srv):
    r = _session(srv, "x" * 1025)
    assert r.status_code == 400 and "1024" in r.json()["detail"]
