"""The trace explorer's API: search with every filter against expectations computed here from the
simulated spans themselves, trace look-up in the OTLP/JSON shape (round-tripped through a second
server), and the 4xx answers to bad ids and filters; on each store (the DuckDB file, ClickHouse)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from unittest.mock import ANY

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from conftest import grpc_export, key_values, pb_request, pb_span, py_value, read_spans, typed
from planoscope.demo.simulate import Simulation, export_requests
from planoscope.ingest.decode import value_str
from support.clickhouse_fixtures import STORES, serve_on

BASE = 1_760_000_000  # the simulated traffic covers [BASE, BASE + SECONDS)
SECONDS = 90
MARGIN_S = 600


@dataclass
class S:
    trace: str
    span: str
    parent: str
    service: str
    name: str
    start: int  # ns
    end: int
    error: bool
    attrs: dict[str, str] = field(default_factory=dict)  # the string forms (what filters match)
    sent: list[KeyValue] = field(default_factory=list)  # the attributes as sent, typed, in order

    def __post_init__(self):
        self.sent = self.sent or key_values(self.attrs)


def _str(v) -> str:
    """An AnyValue as the store renders it (doubles in the ES6 number format)."""
    return value_str(v)


def _attrs(kvs) -> dict[str, str]:
    """Attributes as the store reads them: a key Plano repeats (llm.model) keeps its first value."""
    out: dict[str, str] = {}
    for a in kvs:
        out.setdefault(a.key, _str(a.value))
    return out


def failure_class(s: S) -> str | None:
    """What Plano means by a failed span, written here independently of the store's macro: an
    HTTP status >= 400 (429, then 5xx, then 4xx), else an LLM call that failed before dispatch,
    else status ERROR."""
    raw = s.attrs.get("http.status_code", s.attrs.get("http.response.status_code"))
    code = int(float(raw)) if raw is not None and re.fullmatch(r"\d+(\.\d*)?", raw) else None
    if code == 429:
        return "429"
    if code is not None and code >= 500:
        return "5xx"
    if code is not None and code >= 400:
        return "4xx"
    if s.service == "plano(llm)" and s.name == "llm":
        return "before_dispatch"
    return "error_status" if s.error else None


CLASSES = ("429", "4xx", "5xx", "before_dispatch", "error_status")


def _spans(traces) -> list[S]:
    out = []
    for t in traces:
        for service, sp in t.spans:
            out.append(
                S(
                    sp.trace_id.hex(),
                    sp.span_id.hex(),
                    sp.parent_span_id.hex(),
                    service,
                    sp.name,
                    sp.start_time_unix_nano,
                    sp.end_time_unix_nano,
                    sp.status.code == 2,
                    _attrs(sp.attributes),
                    list(sp.attributes),
                )
            )
    return out


# Hand-made traces: an orphan (its parent never arrives), two ids sharing their last 8 bytes
# (the same TraceKey), and a 64-bit id padded to 128 bits as Zipkin and Jaeger clients send.
ORPHAN = "0badc0de" * 4
TWIN_A = "aaaaaaaaaaaaaaaa" + "1234567890abcdef"
TWIN_B = "bbbbbbbbbbbbbbbb" + "1234567890abcdef"
PADDED = "0000000000000000" + "feedfacecafebeef"
EXTRA_AT = BASE + 45


def _extra() -> list[S]:
    t = EXTRA_AT * 10**9
    return [
        S(
            ORPHAN,
            "00000000000000c1",
            "00000000000000a1",
            "plano(llm)",
            "orphan child",
            t,
            t + 5_000_000,
            False,
            {"llm.model": "gpt-4o", "orphan": "yes"},
        ),
        S(
            ORPHAN,
            "00000000000000c2",
            "00000000000000c1",
            "plano(routing)",
            "orphan grandchild",
            t + 1_000_000,
            t + 2_000_000,
            False,
            {},
        ),
        S(TWIN_A, "000000000000000a", "", "twin", "twin a", t + 7, t + 1_000_007, False, {"twin": "a"}),
        S(TWIN_B, "000000000000000b", "", "twin", "twin b", t + 8, t + 2_000_008, True, {"twin": "b"}),
        S(PADDED, "00000000000000d1", "", "zipkin", "padded id", t + 9, t + 3_000_009, False, {}),
    ]


def _send(target: str, spans: list[S]) -> None:
    by_service = defaultdict(list)
    for s in spans:
        by_service[s.service].append(
            pb_span(
                bytes.fromhex(s.trace),
                bytes.fromhex(s.span),
                s.name,
                s.start,
                s.end,
                parent=bytes.fromhex(s.parent),
                attrs=s.attrs,
                status_code=2 if s.error else 0,
            )
        )
    for service, group in by_service.items():
        resp = grpc_export(target, pb_request(({"service.name": service}, group)))
        assert resp.partial_success.rejected_spans == 0


@pytest.fixture(scope="module", params=STORES)
def explorer(request, module_server_factory, tmp_path_factory):
    srv = serve_on(request, module_server_factory, tmp_path_factory.mktemp("traces"))
    traces = Simulation(rate=3, seed=12).traces(BASE, BASE + SECONDS)  # a window with 429s and 5xx
    sim_spans = sorted((s for t in traces for s in t.spans), key=lambda s: s[1].end_time_unix_nano)
    for req in export_requests(sim_spans, 256):
        assert grpc_export(srv.grpc_target, req).partial_success.rejected_spans == 0
    extra = _extra()
    _send(srv.grpc_target, extra)
    srv.settled()
    return srv, _spans(traces) + extra


# --- the expectations, from the spans sent ----------------------------------------------------


def _matches(s: S, f: dict) -> bool:
    if not (f["start"] * 10**9 < s.start <= f["end"] * 10**9):
        return False
    checks = [
        ("service", s.service),
        ("name", s.name),
        ("model", s.attrs.get("llm.model")),
        ("agent", s.attrs.get("agent_id")),
    ]
    if any(k in f and f[k] != v for k, v in checks):
        return False
    if f.get("errors") and failure_class(s) is None:
        return False
    if f.get("failure") and failure_class(s) not in f["failure"]:
        return False
    if "min_ns" in f and s.end - s.start < f["min_ns"]:
        return False
    if "max_ns" in f and s.end - s.start > f["max_ns"]:
        return False
    for a in f.get("attr", []):
        key, eq, value = a.partition("=")
        if (s.attrs.get(key) != value) if eq else (key not in s.attrs):
            return False
    if f.get("llm") and not is_llm_call(s):
        return False
    requested, resolved = models(s)
    drill_downs = [
        ("provider", s.attrs.get("llm.provider")),
        ("route", s.attrs.get("plano.route.name")),
        ("session", s.attrs.get("plano.session_id")),
        ("quality", (s.attrs.get("signals.quality") or "").lower() or None),
        ("requested_model", requested),
        ("resolved_model", resolved),
    ]
    if any(k in f and f[k] != v for k, v in drill_downs):
        return False
    if f.get("flagged") and not (s.service == "plano(llm)" and s.name.endswith(" \U0001f6a9")):
        return False
    if f.get("cost") == "sent" and "llm.usage.total_cost_usd" not in s.attrs:
        return False
    return "trace_id" not in f or s.trace == f["trace_id"]


def is_llm_call(s: S) -> bool:
    """A span with a model or a token count, or a plano(llm) span (LLM_CONTRACT.md)."""
    return s.service == "plano(llm)" or any(
        k == "llm.model" or k.startswith("llm.usage.") and k.endswith("_tokens") for k in s.attrs
    )


def models(s: S) -> tuple[str | None, str | None]:
    """(requested, resolved): Plano names a call ``POST {path} {requested} -> {resolved}`` (and a
    flag) when the model changed; otherwise both are its model."""
    m = re.fullmatch(r"\S+ \S+ (\S+) -> (\S+)(?: \U0001f6a9)?", s.name)
    if s.service == "plano(llm)" and m:
        return m.group(1), m.group(2)
    return s.attrs.get("llm.model"), s.attrs.get("llm.model")


def expected(spans: list[S], sort: str = "start", desc: bool = True, **f) -> list[str]:
    """Matching trace ids in the API's order (ties broken by TraceKey then TraceId, ascending)."""
    hits = defaultdict(list)
    for s in spans:
        if _matches(s, f):
            hits[s.trace].append(s)
    key = (
        (lambda t: min(s.start for s in hits[t]))
        if sort == "start"
        else (lambda t: max(s.end - s.start for s in hits[t]))
    )
    sign = -1 if desc else 1
    return sorted(hits, key=lambda t: (sign * key(t), int(t[16:], 16), t))


def summary(spans: list[S], trace_id: str) -> dict:
    mine = [s for s in spans if s.trace == trace_id]
    roots = [s for s in mine if not s.parent]
    root = min(roots or mine, key=lambda s: s.start)
    tokens = [int(s.attrs["llm.usage.total_tokens"]) for s in mine if "llm.usage.total_tokens" in s.attrs]
    costs = [float(s.attrs["llm.usage.total_cost_usd"]) for s in mine if "llm.usage.total_cost_usd" in s.attrs]
    start = min(s.start for s in mine)
    failed = [failure_class(s) for s in mine if failure_class(s)]
    orchestrators = sorted((s for s in mine if s.service == "plano(orchestrator)"), key=lambda s: s.start)
    return {
        "trace_id": trace_id,
        "span_count": len(mine),
        "error_count": len(failed),
        "failures": {c: failed.count(c) for c in CLASSES},
        "root_service": root.service,
        "root_name": root.name,
        "has_root": bool(roots),
        # A rootless trace is in flight for IN_FLIGHT_S after its newest span arrived: when this
        # runs depends on the machine (tests/query/test_in_flight.py checks both sides).
        "in_flight": False if roots else ANY,
        "listener": orchestrators[0].attrs.get("selection.listener", orchestrators[0].name) if orchestrators else None,
        "agents": sorted({s.attrs["agent_id"] for s in mine if "agent_id" in s.attrs and s.service != "plano(filter)"}),
        "services": sorted({s.service for s in mine}),
        "models": sorted({s.attrs["llm.model"] for s in mine if "llm.model" in s.attrs}),
        "tokens": sum(tokens) if tokens else None,
        "cost_usd": pytest.approx(sum(costs)) if costs else None,
        "start": pytest.approx(start / 1e9, abs=1e-6),
        "duration_ms": pytest.approx((max(s.end for s in mine) - start) / 1e6, abs=1e-3),
    }


def _search(srv, **params) -> dict:
    r = httpx.get(srv.web_url + "/api/v1/traces", params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


# Every search lists the traces in flight too: the hand-made orphan's root never comes, and for
# IN_FLIGHT_S after it arrived it is in flight (left out by default).
FULL = {"start": BASE - 1, "end": BASE + SECONDS + 60, "in_flight": "true"}
MID = {"start": BASE + 20, "end": BASE + 50}

# (name, API parameters, expectation parameters): every filter, alone and combined.
CASES = [
    ("everything", {}, {}),
    ("part of the range", {**MID}, {**MID}),
    ("service", {"service": "plano(agent)"}, {"service": "plano(agent)"}),
    (
        "span name",
        {"name": "POST /v1/chat/completions openai/gpt-4o"},
        {"name": "POST /v1/chat/completions openai/gpt-4o"},
    ),
    ("model", {"model": "openai/gpt-4o"}, {"model": "openai/gpt-4o"}),
    ("agent", {"agent": "billing_agent"}, {"agent": "billing_agent"}),
    ("errors only", {"errors": "true"}, {"errors": True}),
    ("failure 429", {"failure": "429"}, {"failure": ["429"]}),
    ("failure 5xx", {"failure": "5xx"}, {"failure": ["5xx"]}),
    ("failure 4xx", {"failure": "4xx"}, {"failure": ["4xx"]}),
    ("failure before dispatch", {"failure": "before_dispatch"}, {"failure": ["before_dispatch"]}),
    ("failure error status", {"failure": "error_status"}, {"failure": ["error_status"]}),
    ("two failure classes", {"failure": ["429", "before_dispatch"]}, {"failure": ["429", "before_dispatch"]}),
    (
        "failed LLM calls of a model",
        {"model": "openai/gpt-4o", "errors": "true"},
        {"model": "openai/gpt-4o", "errors": True},
    ),
    ("min duration", {"min_duration": "2s"}, {"min_ns": 2_000_000_000}),
    ("max duration", {"max_duration": "150ms"}, {"max_ns": 150_000_000}),
    (
        "duration between",
        {"min_duration": "0.5s", "max_duration": "900000us"},
        {"min_ns": 500_000_000, "max_ns": 900_000_000},
    ),
    ("attribute value", {"attr": "http.status_code=429"}, {"attr": ["http.status_code=429"]}),
    ("attribute bool", {"attr": "plano.cache.warm=false"}, {"attr": ["plano.cache.warm=false"]}),
    ("attribute present", {"attr": "llm.usage.cached_input_tokens"}, {"attr": ["llm.usage.cached_input_tokens"]}),
    (
        "two attributes",
        {"attr": ["llm.provider=anthropic", "plano.session_id"]},
        {"attr": ["llm.provider=anthropic", "plano.session_id"]},
    ),
    (
        "combined",
        {"service": "plano(llm)", "model": "anthropic/claude-sonnet-4-20250514", "min_duration": "1s", **MID},
        {"service": "plano(llm)", "model": "anthropic/claude-sonnet-4-20250514", "min_ns": 10**9, **MID},
    ),
    # The LLM Usage panels' drill-downs.
    ("LLM calls", {"llm": "true"}, {"llm": True}),
    ("provider", {"provider": "anthropic"}, {"provider": "anthropic"}),
    ("route", {"route": "code_generation"}, {"route": "code_generation"}),
    ("session", {"session": "conv-1f59135c19d2"}, {"session": "conv-1f59135c19d2"}),
    ("quality", {"quality": "poor"}, {"quality": "poor"}),
    ("requested model", {"requested_model": "openai/gpt-4o-mini"}, {"requested_model": "openai/gpt-4o-mini"}),
    ("resolved model", {"resolved_model": "openai/gpt-4o"}, {"resolved_model": "openai/gpt-4o"}),
    ("flagged", {"flagged": "true"}, {"flagged": True}),
    ("a cost sent", {"cost": "sent", "provider": "openai"}, {"cost": "sent", "provider": "openai"}),
    ("nothing matches", {"model": "no-such-model"}, {"model": "no-such-model"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_filter_finds_exactly_the_matching_traces(explorer, case):
    srv, spans = explorer
    _, params, want = case
    params = {**FULL, "limit": 500, **params}
    f = {**FULL, **want}
    ids = expected(spans, **f)
    got = _search(srv, **params)
    assert [t["trace_id"] for t in got["traces"]] == ids[:500]
    assert got["total"] == len(ids)
    if case[0] not in ("nothing matches",):
        assert ids, "the case must match something to mean anything"


def test_the_filters_cut_the_data_meaningfully(explorer):
    """Guard against a vacuous suite: each filter matches some but not all traces."""
    _, spans = explorer
    everything = len(expected(spans, **FULL))
    for name, _, want in CASES[1:-1]:
        n = len(expected(spans, **{**FULL, **want}))
        assert 0 < n < everything, name


def test_rows_summarise_the_whole_trace(explorer):
    srv, spans = explorer
    got = _search(srv, **FULL, limit=500)
    assert len(got["traces"]) > 200
    for row in got["traces"]:
        assert row == summary(spans, row["trace_id"])


def test_a_trace_is_summarised_beyond_the_range_that_matched(explorer):
    """An agent trace whose LLM span matched a narrow range still shows all its spans."""
    srv, spans = explorer
    agent_traces = {s.trace for s in spans if s.service == "plano(orchestrator)"}
    llm = next(s for s in spans if s.trace in agent_traces and s.service == "plano(llm)")
    start = llm.start / 1e9 - 0.0005
    got = _search(srv, start=start, end=start + 0.001, service="plano(llm)")
    row = next(t for t in got["traces"] if t["trace_id"] == llm.trace)
    assert row == summary(spans, llm.trace)
    assert row["span_count"] >= 4 and row["root_service"] == "plano(inbound)"  # Envoy's span is the root


@pytest.mark.parametrize("sort,order", [("start", "asc"), ("duration", "desc"), ("duration", "asc")])
def test_sort_orders(explorer, sort, order):
    srv, spans = explorer
    got = _search(srv, **FULL, sort=sort, order=order, service="plano(llm)", limit=500)
    ids = expected(spans, sort=sort, desc=order == "desc", **FULL, service="plano(llm)")
    assert [t["trace_id"] for t in got["traces"]] == ids


def test_longest_first_finds_the_slowest_llm_calls(explorer):
    srv, spans = explorer
    got = _search(srv, **FULL, service="plano(llm)", sort="duration", limit=5)
    slowest = sorted((s for s in spans if s.service == "plano(llm)"), key=lambda s: s.start - s.end)[:5]
    assert [t["trace_id"] for t in got["traces"]] == [s.trace for s in slowest]


def test_pages_cover_every_match_once(explorer):
    srv, spans = explorer
    ids = expected(spans, **FULL)
    pages, offset = [], 0
    while True:
        got = _search(srv, **FULL, limit=50, offset=offset)
        assert got["total"] == len(ids) and got["limit"] == 50 and got["offset"] == offset
        if not got["traces"]:
            break
        pages += [t["trace_id"] for t in got["traces"]]
        offset += 50
    assert pages == ids


def test_trace_id_filter_and_a_shared_trace_key(explorer):
    srv, spans = explorer
    for tid in (TWIN_A, TWIN_B, PADDED):
        got = _search(srv, **FULL, trace_id=tid.upper())
        assert [t["trace_id"] for t in got["traces"]] == [tid]
        assert got["traces"][0] == summary(spans, tid)
    both = _search(srv, **FULL, service="twin")
    assert {t["trace_id"] for t in both["traces"]} == {TWIN_A, TWIN_B} and both["total"] == 2


def test_orphan_spans_are_found_and_flagged(explorer):
    srv, spans = explorer
    got = _search(srv, **FULL, attr="orphan=yes")
    assert got["traces"] == [summary(spans, ORPHAN)]
    assert got["traces"][0]["has_root"] is False
    assert got["traces"][0]["root_name"] == "orphan child"


def test_facets_list_the_values_in_range(explorer):
    srv, spans = explorer
    r = httpx.get(srv.web_url + "/api/v1/traces/facets", params=FULL)
    assert r.status_code == 200, r.text
    facets = r.json()
    in_range = [s for s in spans if FULL["start"] * 10**9 < s.start <= FULL["end"] * 10**9]
    for facet, value_of in (
        ("service", lambda s: s.service),
        ("name", lambda s: s.name),
        ("model", lambda s: s.attrs.get("llm.model")),
        ("agent", lambda s: s.attrs.get("agent_id")),
        ("failure", failure_class),
    ):
        counts = defaultdict(int)
        for s in in_range:
            if value_of(s) is not None:
                counts[value_of(s)] += 1
        want = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        assert [(v["value"], v["spans"]) for v in facets[facet]] == want, facet


# --- one trace ------------------------------------------------------------------------------


def _otlp_spans(doc: dict) -> dict[str, tuple[str, dict]]:
    """spanId → (service.name of its resource or None, span) of an OTLP/JSON document."""
    out = {}
    for rs in doc["resourceSpans"]:
        attrs = rs["resource"]["attributes"]
        service = next((a["value"]["stringValue"] for a in attrs if a["key"] == "service.name"), None)
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                out[sp["spanId"]] = (service, sp)
    return out


def test_get_trace_returns_every_span_as_otlp_json(explorer):
    srv, spans = explorer
    agent_trace = next(s.trace for s in spans if s.service == "plano(inbound)" and s.error)
    for tid in (agent_trace, ORPHAN, TWIN_A, PADDED):
        r = httpx.get(f"{srv.web_url}/api/v1/traces/{tid}")
        assert r.status_code == 200, r.text
        got = _otlp_spans(r.json())
        mine = {s.span: s for s in spans if s.trace == tid}
        assert set(got) == set(mine)
        for span_id, (service, sp) in got.items():
            s = mine[span_id]
            assert service == s.service
            assert sp["traceId"] == tid and sp["parentSpanId"] == s.parent and sp["name"] == s.name
            assert (int(sp["startTimeUnixNano"]), int(sp["endTimeUnixNano"])) == (s.start, s.end)
            assert sp["status"]["code"] == (2 if s.error else 0)
            # every attribute as sent: typed, in order, a repeated key repeated
            assert [json_format.ParseDict(a, KeyValue()) for a in sp["attributes"]] == s.sent


def test_get_trace_round_trips_through_another_server(explorer, server_factory, tmp_path):
    """What GET /api/v1/traces/{id} returns is an OTLP/JSON export request another OTLP
    receiver accepts, and stores span for span as the first server did."""
    srv, spans = explorer
    tid = next(s.trace for s in spans if s.service == "plano(orchestrator)")
    doc = httpx.get(f"{srv.web_url}/api/v1/traces/{tid}").json()
    other = server_factory(tmp_path / "other")
    r = httpx.post(other.http_traces_url, json=doc)
    assert r.status_code == 200, r.text
    other.stop()
    copied = {r["SpanId"]: r for r in read_spans(other.data_dir)}
    mine = {s.span: s for s in spans if s.trace == tid}
    assert set(copied) == set(mine)
    for span_id, row in copied.items():
        s = mine[span_id]
        assert (row["TraceId"], row["ParentSpanId"], row["ServiceName"], row["SpanName"]) == (
            tid,
            s.parent,
            s.service,
            s.name,
        )
        assert (row["Timestamp"], row["Duration"]) == (s.start, s.end - s.start)
        first: dict = {}
        for kv in s.sent:
            first.setdefault(kv.key, py_value(kv.value))
        assert typed(row["SpanAttributes"]) == typed(first)
        assert row["LlmModel"] == s.attrs.get("llm.model")
        assert row["PromptTokens"] == (
            int(s.attrs["llm.usage.prompt_tokens"]) if "llm.usage.prompt_tokens" in s.attrs else None
        )
        assert row["StatusCode"] == ("Error" if s.error else "Unset")


@pytest.mark.parametrize(
    "path,status,needle",
    [
        ("/api/v1/traces/xyz", 400, "32 hex digits"),
        ("/api/v1/traces/" + "0" * 32, 400, "all-zero"),
        ("/api/v1/traces/" + "ab" * 17, 400, "32 hex digits"),
        ("/api/v1/traces/" + "12" * 16, 404, "no span of trace"),
        ("/api/v1/traces?min_duration=fast", 400, "min_duration"),
        ("/api/v1/traces?max_duration=-1s", 400, "max_duration"),
        ("/api/v1/traces?min_duration=2s&max_duration=1s", 400, "below min duration"),
        ("/api/v1/traces?sort=size", 400, "sort must be"),
        ("/api/v1/traces?order=sideways", 400, "order"),
        ("/api/v1/traces?limit=0", 400, "limit"),
        ("/api/v1/traces?limit=100000", 400, "limit"),
        ("/api/v1/traces?offset=-1", 400, "offset"),
        ("/api/v1/traces?attr==x", 400, "has no key"),
        ("/api/v1/traces?failure=500", 400, "not a failure class"),
        ("/api/v1/traces?failure=429&failure=oops", 400, "not a failure class"),
        ("/api/v1/traces/" + "0" * 32 + "/failures", 400, "all-zero"),
        ("/api/v1/traces/" + "12" * 16 + "/failures", 404, "no span of trace"),
        ("/api/v1/traces?trace_id=nope", 400, "32 hex digits"),
        ("/api/v1/traces?start=100&end=50", 400, "must be after"),
        ("/api/v1/traces?start=nan", 400, "finite"),
        ("/api/v1/traces/facets?start=100&end=50", 400, "must be after"),
    ],
)
def test_bad_ids_and_filters_are_clear_4xx(explorer, path, status, needle):
    srv, _ = explorer
    r = httpx.get(srv.web_url + path)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_a_store_from_before_the_trace_key_is_migrated_on_start(server_factory, tmp_path):
    """A data directory written before TraceKey existed gets the column, filled, when opened."""
    import duckdb

    from planoscope.store.duckdb import DB_FILE
    from planoscope.store.schema import duckdb_ddl

    data = tmp_path / "old"
    data.mkdir()
    old_ddl = "\n".join(line for line in duckdb_ddl().splitlines() if "TraceKey" not in line)
    con = duckdb.connect(str(data / DB_FILE))
    con.execute(old_ddl)
    ids = [PADDED, TWIN_A, "0123456789abcdef0123456789abcdef"]
    for i, tid in enumerate(ids):
        con.execute(
            "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName,"
            " ResourceAttributes, SpanAttributes, Duration, StatusCode, Events, Links, IngestedAt)"
            " VALUES (make_timestamp(?), ?, ?, '', 'old span', 'Internal', 'old', '{}', '{}', 1000, 'Unset',"
            " [], [], now())",
            [(BASE + i) * 10**6, tid, f"{i + 1:016x}"],
        )
    con.close()
    srv = server_factory(data)
    for tid in ids:
        r = httpx.get(f"{srv.web_url}/api/v1/traces/{tid}")
        assert r.status_code == 200, r.text
        assert _otlp_spans(r.json()).keys() == {f"{ids.index(tid) + 1:016x}"}
    srv.stop()
    rows = read_spans(data)
    assert {r["TraceId"]: r["TraceKey"] for r in rows} == {tid: int(tid[16:], 16) for tid in ids}


def test_the_protobuf_forwarding_sends_equals_protobufs_parse_of_the_json(tmp_path):
    """Forwarding builds protobuf straight from stored rows (protobuf's JSON parser is ~15x
    slower); it must be the message the OTLP/JSON document describes, events and links included."""
    import json
    from datetime import datetime

    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from planoscope.ingest.decode import Decoder, parse_json
    from planoscope.query.otlp import SPAN_SELECT, to_otlp_json, to_otlp_proto
    from planoscope.store import DuckDBStore

    store = DuckDBStore(tmp_path / "d")
    try:
        traces = Simulation(rate=3, seed=5).traces(BASE, BASE + 20)
        sim_spans = [s for t in traces for s in t.spans]
        for req in export_requests(sim_spans, 256):
            store.append_spans(Decoder().decode_protobuf(req.SerializeToString()).table, datetime(2026, 1, 1))
        extra = pb_span(
            b"\x42" * 16,
            b"\x43" * 8,
            "linked",
            BASE * 10**9,
            BASE * 10**9 + 5,
            parent=b"\x44" * 8,
            links=[
                Span.Link(
                    trace_id=b"\x45" * 16,
                    span_id=b"\x46" * 8,
                    trace_state="k=v",
                    attributes=key_values({"why": "retry"}),
                )
            ],
            status_code=2,
            status_message="bad",
            trace_state="a=b",
        )
        store.append_spans(
            Decoder()
            .decode_protobuf(pb_request(({"service.name": "x", "host": "h"}, [extra])).SerializeToString())
            .table,
            datetime(2026, 1, 1),
        )
        rows = store.query(f"{SPAN_SELECT} ORDER BY IngestedAt, Timestamp")
    finally:
        store.close()
    assert len(rows) == len(sim_spans) + 1
    assert any(r[15] for r in rows) and any(r[16] for r in rows)  # events and links are exercised
    for i in range(0, len(rows), 100):
        chunk = rows[i : i + 100]
        assert to_otlp_proto(chunk) == parse_json(json.dumps(to_otlp_json(chunk)).encode())
