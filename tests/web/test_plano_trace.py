"""A trace recorded from a real Plano gateway (tests/reference/success-trace.json), replayed as
brightstaff and Envoy send it: brightstaff over OTLP/gRPC, Envoy over OTLP/HTTP, one request per
service, each span exported when it ends (so children before parents, the root last). Then the
stored tree, the trace's summary, its in-flight state before the root came, and the dashboard's
numbers."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import grpc_export, http_export_pb, pb_request
from support.clickhouse_fixtures import STORES, serve_on

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "success-trace.json"  # see its README
SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "plano-telemetry" / "success-trace.json"
ENVOY = ("plano(inbound)", "plano(outbound)")  # Envoy's tracer; every other service is brightstaff's
TRACE_ID = "86f21585168a31a23578d77096cc143b"
SEARCH = {"start": 1770937690, "end": 1770937710}  # the trace started at 1770937700.18


def _recorded() -> list[dict]:
    (trace,) = json.loads(REFERENCE.read_text())["traces"]
    return trace["spans"]


def _otlp(s: dict) -> Span:
    """A span of planoai's JSON as OTLP: brightstaff's INTERNAL, Envoy's SERVER, status UNSET,
    attributes as recorded (repeated keys included)."""
    return Span(
        trace_id=bytes.fromhex(s["traceId"]),
        span_id=bytes.fromhex(s["spanId"]),
        parent_span_id=bytes.fromhex(s["parentSpanId"]),
        name=s["name"],
        kind=Span.SPAN_KIND_SERVER if s["service"] in ENVOY else Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=int(s["startTimeUnixNano"]),
        end_time_unix_nano=int(s["endTimeUnixNano"]),
        attributes=[json_format.ParseDict(a, KeyValue()) for a in s["attributes"]],
    )


def _exports(spans: list[dict]) -> list[tuple[str, list[Span]]]:
    """(service, spans) per export request, in the order they are sent: the spans in the order
    they ended, each run of one service in one request (both emitters export per service)."""
    out: list[tuple[str, list[Span]]] = []
    for s in sorted(spans, key=lambda s: int(s["endTimeUnixNano"])):
        if out and out[-1][0] == s["service"]:
            out[-1][1].append(_otlp(s))
        else:
            out.append((s["service"], [_otlp(s)]))
    return out


def _send(srv, service: str, spans: list[Span]) -> None:
    if service in ENVOY:
        resp = http_export_pb(srv.http_traces_url, pb_request(({"service.name": service}, spans, "", "")))
    else:  # brightstaff's resource holds only service.name; its scope is brightstaff, no version
        resp = grpc_export(srv.grpc_target, pb_request(({"service.name": service}, spans, "brightstaff", "")))
    assert resp.partial_success.rejected_spans == 0


def _search(srv, **params) -> dict:
    r = srv.get("/api/v1/traces?" + urlencode({**SEARCH, **params}))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module", params=STORES)
def plano(request, module_server_factory, tmp_path_factory):
    """The server after the replay, and what the search said just before the root arrived; on each store."""
    srv = serve_on(request, module_server_factory, tmp_path_factory.mktemp("plano"))
    requests = _exports(_recorded())
    assert [service for service, _ in requests][-1] == "plano(inbound)"  # the root ends last
    for service, spans in requests[:-1]:
        _send(srv, service, spans)
    before_root = (_search(srv), _search(srv, in_flight="true"))
    _send(srv, *requests[-1])
    return srv, before_root


def test_the_copy_is_the_shared_reference():
    if SHARED.is_file():  # a clean clone elsewhere has only the copy
        assert REFERENCE.read_bytes() == SHARED.read_bytes()


def test_children_are_sent_before_their_parents():
    spans = _recorded()
    order = [s.span_id.hex() for _, group in _exports(spans) for s in group]
    assert len(order) == 10 and len({s["service"] for s in spans}) == 6
    for s in spans:
        if s["parentSpanId"]:
            assert order.index(s["spanId"]) < order.index(s["parentSpanId"]), s["name"]


def _value(v: dict) -> str:
    """An OTLP/JSON AnyValue's scalar as text, whichever type field holds it."""
    (value,) = v.values()
    return str(value)


def test_the_stored_tree_is_the_recorded_one(plano):
    srv, _ = plano
    r = srv.get(f"/api/v1/traces/{TRACE_ID}")
    assert r.status_code == 200, r.text
    got = {}
    for rs in r.json()["resourceSpans"]:
        (service,) = [_value(a["value"]) for a in rs["resource"]["attributes"] if a["key"] == "service.name"]
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                got[sp["spanId"]] = (service, ss["scope"]["name"], sp)
    recorded = {s["spanId"]: s for s in _recorded()}
    assert got.keys() == recorded.keys()
    for span_id, (service, scope, sp) in got.items():
        s = recorded[span_id]
        assert service == s["service"] and sp["name"] == s["name"] and sp["parentSpanId"] == s["parentSpanId"]
        assert sp["kind"] == (2 if service in ENVOY else 1) and scope == ("" if service in ENVOY else "brightstaff")
        assert sp["status"]["code"] == 0
        assert (sp["startTimeUnixNano"], sp["endTimeUnixNano"]) == (s["startTimeUnixNano"], s["endTimeUnixNano"])
        assert [(a["key"], _value(a["value"])) for a in sp["attributes"]] == [
            (a["key"], _value(a["value"])) for a in s["attributes"]
        ]
    roots = [sp for _, _, sp in got.values() if not sp["parentSpanId"]]
    assert [(sp["name"], sp["kind"]) for sp in roots] == [("POST /v1/chat/completions", 2)]


def test_the_summary_names_the_entry_agents_and_models(plano):
    srv, _ = plano
    found = _search(srv)
    assert found["total"] == 1 and found["in_flight"] == 0
    assert found["traces"] == [
        {
            "trace_id": TRACE_ID,
            "start": pytest.approx(1770937700.183402),
            "duration_ms": pytest.approx(4210.72),
            "span_count": 10,
            "error_count": 0,
            "failures": {"429": 0, "4xx": 0, "5xx": 0, "before_dispatch": 0, "error_status": 0},
            "root_service": "plano(inbound)",
            "root_name": "POST /v1/chat/completions",
            "has_root": True,
            "in_flight": False,
            "listener": "travel_booking_service",
            "agents": ["weather_agent"],
            "services": [
                "plano(agent)",
                "plano(inbound)",
                "plano(llm)",
                "plano(orchestrator)",
                "plano(outbound)",
                "plano(routing)",
            ],
            "models": ["openai/gpt-4o-mini", "openai/gpt-5.2"],
            "tokens": None,
            "cost_usd": None,
        }
    ]
    # A successful trace: nothing failed, so the errors filter does not find it.
    assert _search(srv, errors="true")["total"] == 0
    assert srv.get(f"/api/v1/traces/{TRACE_ID}/failures").json() == {}


def test_before_its_root_arrived_the_trace_was_in_flight(plano):
    _, (hidden, shown) = plano
    assert hidden == {"traces": [], "total": 0, "in_flight": 1, "limit": 20, "offset": 0}
    (row,) = shown["traces"]
    assert shown["total"] == 1 and shown["in_flight"] == 1
    assert row["trace_id"] == TRACE_ID and row["span_count"] == 9
    assert row["in_flight"] is True and row["has_root"] is False
    assert row["listener"] == "travel_booking_service" and row["agents"] == ["weather_agent"]


def _panel(srv, panel: str, **params) -> list[dict]:
    r = srv.get(f"/api/v1/panels/{panel}?" + urlencode({"start": 1770937680, "end": 1770937740, "step": 30, **params}))
    assert r.status_code == 200, r.text
    return r.json()["series"]


def _counts(series: list[dict], step: float = 30) -> dict[str, float]:
    """Requests per series over the range: the per-second rates times the step."""
    return {s["name"]: round(sum(v for _, v in s["points"]) * step, 6) for s in series}


def test_the_dashboards_numbers(plano):
    srv, _ = plano
    models = {"openai/gpt-4o-mini": 1, "openai/gpt-5.2": 1}
    assert _counts(_panel(srv, "llm_requests_per_second")) == models
    assert _counts(_panel(srv, "agent_requests_per_second")) == {"weather_agent": 1}
    assert _counts(_panel(srv, "total_requests_per_second")) == {"llm": 2, "agent": 1, "orchestrator": 1}
    stat = {s["name"]: s["points"][-1][1] for s in _panel(srv, "llm_cumulative_requests")}
    assert stat == models
    # One call per model: each quantile is that call's duration.
    latency = {
        (s["labels"]["quantile"], s["labels"]["llm_model"]): [v for _, v in s["points"] if v is not None]
        for s in _panel(srv, "llm_latency_ms")
    }
    durations = {"openai/gpt-4o-mini": 574.500584, "openai/gpt-5.2": 1801.543918}
    assert latency.keys() == {(q, m) for q in ("0.5", "0.95", "0.99") for m in durations}
    for (_, model), values in latency.items():
        assert values == [pytest.approx(durations[model])]
