"""What Plano means by a failed call (reference/plano-telemetry: brightstaff never sets a span
status; Envoy sets ERROR only for >= 500): each case sent as Plano (or another sender) sends it,
then found or not by the trace search's errors and failure filters, counted in the summary, and
explained per span by /api/v1/traces/{id}/failures, with its class."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import grpc_export, http_export_pb, now_base_ns, pb_request, pb_span
from support.clickhouse_fixtures import STORES, serve_on

SERVER, INTERNAL = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_INTERNAL
ERROR = 2
LLM_NAME = "POST /v1/chat/completions openai/gpt-4o"
UPSTREAM = "POST api.openai.com/v1/chat/completions"


# case: (trace id, [(service, span id, parent, name, kind, attrs, status, message)], {span id: (class, reason)})
def _cases() -> dict[str, tuple[str, list, dict]]:
    return {
        # The WASM filter answers 429 itself: an int on plano(llm), a string on Envoy's span, both UNSET.
        "rate limited": (
            "a1" * 16,
            [
                ("plano(outbound)", "a2" * 8, "a3" * 8, UPSTREAM, SERVER, {"http.status_code": "429"}, 0, ""),
                (
                    "plano(llm)",
                    "a3" * 8,
                    "",
                    LLM_NAME,
                    INTERNAL,
                    {"llm.model": "openai/gpt-4o", "http.status_code": 429},
                    0,
                    "",
                ),
            ],
            {"a2" * 8: ("429", "HTTP 429 (rate limited)"), "a3" * 8: ("429", "HTTP 429 (rate limited)")},
        ),
        # An upstream 503: Envoy's span ERROR (>= 500), brightstaff's UNSET with the int.
        "upstream 503": (
            "b1" * 16,
            [
                (
                    "plano(outbound)",
                    "b2" * 8,
                    "b3" * 8,
                    UPSTREAM,
                    SERVER,
                    {"http.status_code": "503", "response_flags": "UF"},
                    ERROR,
                    "upstream connect error",
                ),
                (
                    "plano(llm)",
                    "b3" * 8,
                    "",
                    LLM_NAME,
                    INTERNAL,
                    {"llm.model": "openai/gpt-4o", "http.status_code": 503},
                    0,
                    "",
                ),
            ],
            {
                "b2" * 8: ("5xx", "HTTP 503 (server error); status ERROR: upstream connect error"),
                "b3" * 8: ("5xx", "HTTP 503 (server error)"),
            },
        ),
        # An unknown model: brightstaff's span is just "llm", no status code, no model.
        "before dispatch": (
            "c1" * 16,
            [
                (
                    "plano(llm)",
                    "c2" * 8,
                    "",
                    "llm",
                    INTERNAL,
                    {"component": "llm", "http.path": "/v1/chat/completions"},
                    0,
                    "",
                )
            ],
            {"c2" * 8: ("before_dispatch", "failed before dispatch (no model)")},
        ),
        "success": (
            "d1" * 16,
            [
                ("plano(outbound)", "d2" * 8, "d3" * 8, UPSTREAM, SERVER, {"http.status_code": "200"}, 0, ""),
                (
                    "plano(llm)",
                    "d3" * 8,
                    "",
                    LLM_NAME,
                    INTERNAL,
                    {"llm.model": "openai/gpt-4o", "http.status_code": 200},
                    0,
                    "",
                ),
            ],
            {},
        ),
        # Any other sender, with the stable HTTP semantic conventions' key.
        "semconv 404": (
            "e1" * 16,
            [("checkout", "e2" * 8, "", "GET /cart", SERVER, {"http.response.status_code": 404}, 0, "")],
            {"e2" * 8: ("4xx", "HTTP 404 (client error)")},
        ),
        "error status only": (
            "f1" * 16,
            [("worker", "f2" * 8, "", "process", INTERNAL, {"job": "x"}, ERROR, "boom")],
            {"f2" * 8: ("error_status", "status ERROR: boom")},
        ),
    }


CASES = _cases()


@pytest.fixture(scope="module", params=STORES)
def failures(request, module_server_factory, tmp_path_factory):
    """Every case sent children first, brightstaff's spans over gRPC, the rest over OTLP/HTTP; on each store."""
    srv = serve_on(request, module_server_factory, tmp_path_factory.mktemp("failures"))
    base = now_base_ns()
    for i, (trace_id, spans, _) in enumerate(CASES.values()):
        start = base + i * 10**9
        for depth, (service, span_id, parent, name, kind, attrs, status, message) in enumerate(spans):
            span = pb_span(
                trace_id,
                span_id,
                name,
                start + (len(spans) - depth) * 1000,
                start + 5 * 10**8 - depth,  # the child ends first
                parent=parent,
                kind=kind,
                attrs=attrs,
                status_code=status,
                status_message=message,
            )
            req = pb_request(({"service.name": service}, [span]))
            if service.startswith("plano(") and kind == INTERNAL:
                assert grpc_export(srv.grpc_target, req).partial_success.rejected_spans == 0
            else:
                assert http_export_pb(srv.http_traces_url, req).partial_success.rejected_spans == 0
    return srv, {"start": base / 1e9 - 1, "end": base / 1e9 + len(CASES) + 1}


def _found(srv, rng, *pairs) -> set[str]:
    r = srv.get("/api/v1/traces?" + urlencode([*rng.items(), *pairs]))
    assert r.status_code == 200, r.text
    return {t["trace_id"] for t in r.json()["traces"]}


def _ids(*names: str) -> set[str]:
    return {CASES[n][0] for n in names}


def test_the_errors_filter_finds_every_failure_and_nothing_else(failures):
    srv, rng = failures
    assert _found(srv, rng) == _ids(*CASES)
    assert _found(srv, rng, ("errors", "true")) == _ids(
        "rate limited", "upstream 503", "before dispatch", "semconv 404", "error status only"
    )


@pytest.mark.parametrize(
    "classes,names",
    [
        (["429"], ["rate limited"]),
        (["5xx"], ["upstream 503"]),
        (["4xx"], ["semconv 404"]),
        (["before_dispatch"], ["before dispatch"]),
        (["error_status"], ["error status only"]),
        (["429", "5xx"], ["rate limited", "upstream 503"]),
    ],
)
def test_the_failure_filter_finds_its_classes(failures, classes, names):
    srv, rng = failures
    assert _found(srv, rng, *[("failure", c) for c in classes]) == _ids(*names)
    # With the errors filter too: the classes asked for, not every failure.
    assert _found(srv, rng, ("errors", "true"), *[("failure", c) for c in classes]) == _ids(*names)


def test_the_filters_hold_on_one_span(failures):
    """As every filter: the failed span must be the one of the service asked for."""
    srv, rng = failures
    assert _found(srv, rng, ("service", "plano(llm)"), ("errors", "true")) == _ids(
        "rate limited", "upstream 503", "before dispatch"
    )
    assert _found(srv, rng, ("service", "plano(outbound)"), ("failure", "before_dispatch")) == set()


@pytest.mark.parametrize("name", list(CASES))
def test_summaries_count_failed_spans_per_class(failures, name):
    srv, rng = failures
    trace_id, _, want = CASES[name]
    r = srv.get("/api/v1/traces?" + urlencode({**rng, "trace_id": trace_id}))
    (row,) = r.json()["traces"]
    classes = [c for c, _ in want.values()]
    assert row["error_count"] == len(want)
    assert row["failures"] == {c: classes.count(c) for c in ("429", "4xx", "5xx", "before_dispatch", "error_status")}


@pytest.mark.parametrize("name", list(CASES))
def test_each_failed_span_says_why(failures, name):
    srv, _ = failures
    trace_id, spans, want = CASES[name]
    r = srv.get(f"/api/v1/traces/{trace_id}/failures")
    assert r.status_code == 200, r.text
    codes = {
        span_id: attrs.get("http.status_code", attrs.get("http.response.status_code"))
        for _, span_id, _, _, _, attrs, _, _ in spans
    }
    assert r.json() == {
        span_id: {
            "class": cls,
            "http_status_code": None if codes[span_id] is None else int(codes[span_id]),
            "reason": reason,
        }
        for span_id, (cls, reason) in want.items()
    }


def test_the_span_status_label_of_the_span_metrics_stays_the_collectors(failures):
    """Only the search, counts and marks change: /metrics' status_code is the span status."""
    srv, _ = failures
    text = srv.get("/metrics").text
    llm_429 = [
        line
        for line in text.splitlines()
        if line.startswith("calls_total{") and 'service_name="plano(llm)"' in line and 'http_status_code="429"' in line
    ]
    assert llm_429 and all('status_code="STATUS_CODE_UNSET"' in line for line in llm_429)
    outbound_503 = [
        line
        for line in text.splitlines()
        if line.startswith("calls_total{")
        and 'service_name="plano(outbound)"' in line
        and 'http_status_code="503"' in line
    ]
    assert outbound_503 and all('status_code="STATUS_CODE_ERROR"' in line for line in outbound_503)


def test_the_rate_limited_panel_drills_down_to_the_429s(failures):
    srv, rng = failures
    panels = {p["id"]: p for p in srv.get("/api/v1/panels").json()}
    dd = panels["rate_limited_per_second"]["drilldown"]
    assert dd == {"filters": {"service": "plano(llm)", "failure": "429"}}
    assert _found(srv, rng, *dd["filters"].items()) == _ids("rate limited")
    # The LLM panels' "failed" drill-down: the failed LLM calls of a model.
    llm = panels["llm_requests_per_second"]["drilldown"]
    pairs = [*llm["filters"].items(), *llm["failed"].items(), (llm["labels"]["llm_model"], "openai/gpt-4o")]
    assert _found(srv, rng, *pairs) == _ids("rate limited", "upstream 503")
    assert "failed" not in panels["agent_requests_per_second"]["drilldown"]  # agents' status is never recorded
