"""Failures and traces in flight in a real browser (Debian's Chromium through Playwright): the
waterfall's marks and classes, the trace list's entry, agents, models and failure badges, the
failure picker, the in-flight toggle and the dashboard's "failed" drill-down. The marks come from
the API's one definition (GET /api/v1/traces/{id}/failures), so they are checked against it.
Screenshots go to test-output/."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from playwright.sync_api import Page, expect

from conftest import grpc_export, http_export_pb, pb_request, pb_span
from planoscope.demo.simulate import Simulation, export_requests
from support.clickhouse_fixtures import STORES, serve_on

OUT = Path(__file__).resolve().parents[2] / "test-output"
FAILED = "fa11ed00" * 4
SERVER, INTERNAL = 2, 1
# (service, span id, parent, name, kind, attrs, status, message): an agent request whose first
# LLM call was rate limited, the second failed upstream, the third never found its model.
SPANS = [
    ("plano(inbound)", "01" * 8, "", "POST /v1/chat/completions", SERVER, {"http.status_code": "200"}, 0, ""),
    (
        "plano(orchestrator)",
        "02" * 8,
        "01" * 8,
        "travel_booking_service",
        INTERNAL,
        {"selection.listener": "travel_booking_service"},
        0,
        "",
    ),
    (
        "plano(agent)",
        "03" * 8,
        "02" * 8,
        "weather_agent /v1/chat/completions",
        INTERNAL,
        {"agent_id": "weather_agent"},
        0,
        "",
    ),
    (
        "plano(llm)",
        "04" * 8,
        "03" * 8,
        "POST /v1/chat/completions openai/gpt-4o",
        INTERNAL,
        {"llm.model": "openai/gpt-4o", "http.status_code": 429},
        0,
        "",
    ),
    (
        "plano(outbound)",
        "05" * 8,
        "04" * 8,
        "POST api.openai.com/v1/chat/completions",
        SERVER,
        {"http.status_code": "429"},
        0,
        "",
    ),
    (
        "plano(llm)",
        "06" * 8,
        "03" * 8,
        "POST /v1/chat/completions anthropic/claude-sonnet-4",
        INTERNAL,
        {"llm.model": "anthropic/claude-sonnet-4", "http.status_code": 503},
        0,
        "",
    ),
    (
        "plano(outbound)",
        "07" * 8,
        "06" * 8,
        "POST api.anthropic.com/v1/messages",
        SERVER,
        {"http.status_code": "503"},
        2,
        "upstream connect error",
    ),
    ("plano(llm)", "08" * 8, "03" * 8, "llm", INTERNAL, {"component": "llm"}, 0, ""),
    ("plano(routing)", "09" * 8, "04" * 8, "routing", INTERNAL, {"route.selected_model": "none"}, 0, ""),
]
WANT = {"04" * 8: "429", "05" * 8: "429", "06" * 8: "5xx", "07" * 8: "5xx", "08" * 8: "before_dispatch"}


def _depth(span_id: str) -> int:
    parent = next(s[2] for s in SPANS if s[1] == span_id)
    return 0 if not parent else 1 + _depth(parent)


def _send(srv, start_ns: int) -> None:
    """Each span in a request of its own when it ends, as Plano exports: children first; a parent
    starts before and ends after its children."""
    for i, (service, span_id, parent, name, kind, attrs, status, message) in enumerate(
        sorted(SPANS, key=lambda s: -_depth(s[1]))
    ):
        depth = _depth(span_id)
        span = pb_span(
            FAILED,
            span_id,
            name,
            start_ns + depth * 10**6 + i * 10**5,
            start_ns + (10 - depth) * 100 * 10**6,
            parent=parent,
            kind=kind,
            attrs=attrs,
            status_code=status,
            status_message=message,
        )
        req = pb_request(({"service.name": service}, [span]))
        if kind == SERVER:
            assert http_export_pb(srv.http_traces_url, req).partial_success.rejected_spans == 0
        else:
            assert grpc_export(srv.grpc_target, req).partial_success.rejected_spans == 0


@pytest.fixture(scope="module", params=STORES)
def srv(request, module_server_factory, tmp_path_factory):
    """Ten minutes of simulated Plano traffic, and the hand-made failing agent trace a minute ago; on each store."""
    srv = serve_on(request, module_server_factory, tmp_path_factory.mktemp("ui-failures"))
    now = int(time.time())
    spans = (span for t in Simulation(rate=2, seed=7).traces(now - 600, now - 5) for span in t.spans)
    for req in export_requests(spans):
        assert grpc_export(srv.grpc_target, req).partial_success.rejected_spans == 0
    srv.failed_at = now - 60
    _send(srv, srv.failed_at * 10**9)
    srv.settled()
    return srv


def _api(srv, path: str, **params):
    r = srv.get(path + ("?" + urlencode(params, doseq=True) if params else ""))
    assert r.status_code == 200, r.text
    return r.json()


def _range(srv) -> dict:
    return {"from": srv.failed_at - 600, "to": srv.failed_at + 120}


def _loaded(page: Page) -> None:
    page.wait_for_selector("body[data-loaded]", timeout=15_000)
    page.wait_for_function("document.querySelector('#results')?.getAttribute('aria-busy') !== 'true'")


def test_the_waterfall_marks_failed_spans_with_their_class(srv, page):
    page.goto(f"{srv.web_url}/trace?id={FAILED}")
    page.wait_for_selector("body[data-loaded]")
    assert _api(srv, f"/api/v1/traces/{FAILED}/failures").keys() == WANT.keys()  # the one definition
    rows = page.locator(".wf-row")
    expect(rows).to_have_count(len(SPANS))
    marked = {
        r.get_attribute("data-span-id"): r.get_attribute("data-failure") for r in page.locator(".wf-row.error").all()
    }
    assert marked == WANT
    for span_id, badge in (("04" * 8, "429"), ("07" * 8, "5xx"), ("08" * 8, "pre-dispatch")):
        expect(page.locator(f'.wf-row[data-span-id="{span_id}"] .fail-badge')).to_have_text(badge)
    for span_id in {s[1] for s in SPANS} - WANT.keys():  # the root, the orchestrator, the agent, routing
        assert page.locator(f'.wf-row[data-span-id="{span_id}"] .fail-badge').count() == 0
    expect(page.locator("#failed-count")).to_have_text("5")
    expect(page.locator("#meta")).to_contain_text("2 ×429")

    detail = page.locator("#detail #failure")
    for span_id, why in (
        ("04" * 8, "HTTP 429 (rate limited)"),
        ("07" * 8, "HTTP 503 (server error); status ERROR: upstream connect error"),
        ("08" * 8, "failed before dispatch (no model)"),
    ):
        page.click(f'.wf-row[data-span-id="{span_id}"]')
        expect(detail).to_contain_text(why)
    page.click(f'.wf-row[data-span-id="{"09" * 8}"]')
    expect(page.locator("#detail")).to_be_visible()
    assert detail.count() == 0
    page.click(f'.wf-row[data-span-id="{"07" * 8}"]')
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "trace-failures.png"))


def test_the_list_shows_the_entry_agents_models_and_failure_classes(srv, page):
    # Up to just after the failing trace: the list's first page (the 20 newest) holds it, however
    # many of the simulation's weather_agent traces came after it.
    window = {"from": srv.failed_at - 600, "to": srv.failed_at + 5}
    page.goto(f"{srv.web_url}/traces?" + urlencode({**window, "agent": "weather_agent"}))
    _loaded(page)
    want = _api(srv, "/api/v1/traces", start=window["from"], end=window["to"], agent="weather_agent")
    assert [a.get_attribute("data-trace-id") for a in page.locator(".trace-row").all()] == [
        t["trace_id"] for t in want["traces"]
    ]
    row = page.locator(f'.trace-row[data-trace-id="{FAILED}"]')
    expect(row.locator(".line1 .svc")).to_have_text("travel_booking_service")
    expect(row.locator(".entry-root")).to_have_text("plano(inbound) POST /v1/chat/completions")
    expect(row.locator(".chip.agent")).to_have_text(["weather_agent"])
    expect(row.locator(".chip:not(.agent)")).to_have_text(["anthropic/claude-sonnet-4", "openai/gpt-4o"])
    badges = {b.get_attribute("data-failure"): b.inner_text() for b in row.locator(".badge.error").all()}
    assert badges == {"429": "429 ×2", "5xx": "5xx ×2", "before_dispatch": "pre-dispatch"}
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "traces-failures.png"))


def test_the_failure_picker_searches_by_class(srv, page):
    page.goto(f"{srv.web_url}/traces?" + urlencode(_range(srv)))
    _loaded(page)
    rng = {"start": _range(srv)["from"], "end": _range(srv)["to"]}
    for value, params in (
        ("429", {"failure": "429"}),
        ("any", {"errors": "true"}),
        ("before_dispatch", {"failure": "before_dispatch"}),
    ):
        page.select_option("#f-failure", value)
        expect(page).to_have_url(re.compile("&" + urlencode(params)))
        _loaded(page)
        want = _api(srv, "/api/v1/traces", **rng, **params)
        assert want["total"] > 0, value
        expect(page.locator(".trace-row")).to_have_count(len(want["traces"]))
        assert [a.get_attribute("data-trace-id") for a in page.locator(".trace-row").all()] == [
            t["trace_id"] for t in want["traces"]
        ]
        assert all(t["error_count"] > 0 for t in want["traces"])
    # Several classes in a URL (an API link) come back in the picker and the search.
    page.goto(f"{srv.web_url}/traces?" + urlencode({**_range(srv), "failure": ["429", "5xx"]}, doseq=True))
    _loaded(page)
    assert page.locator("#f-failure").input_value() == "429,5xx"
    want = _api(srv, "/api/v1/traces", **rng, failure=["429", "5xx"])
    expect(page.locator("#count")).to_contain_text(f"{want['total']:,} trace")


def test_traces_in_flight_are_behind_a_toggle(srv, page):
    """The children of a request still running arrive first: its trace is left out of the list
    (a toggle says how many) until its root arrives."""
    now = time.time_ns()
    flying = "f1" * 16
    child = pb_span(flying, "f2" * 8, "flying child", now - 10**9, now - 5 * 10**8, parent="f3" * 8)
    assert (
        grpc_export(
            srv.grpc_target, pb_request(({"service.name": "plano(llm)"}, [child]))
        ).partial_success.rejected_spans
        == 0
    )
    query = {"from": now / 1e9 - 60, "to": now / 1e9 + 60, "name": "flying child"}
    page.goto(f"{srv.web_url}/traces?" + urlencode(query))
    _loaded(page)
    expect(page.locator(".trace-row")).to_have_count(0)
    toggle = page.locator("#in-flight")
    expect(toggle).to_have_text("1 trace in flight — show")
    toggle.click()
    expect(page).to_have_url(re.compile(r"in_flight=true"))
    row = page.locator(f'.trace-row[data-trace-id="{flying}"]')
    expect(row.locator(".badge.in-flight")).to_have_text("in flight")
    expect(toggle).to_have_text("hide 1 in flight")
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "traces-in-flight.png"))

    root = pb_span(flying, "f3" * 8, "POST /v1/chat/completions openai/gpt-4o", now - 2 * 10**9, now)
    assert (
        grpc_export(
            srv.grpc_target, pb_request(({"service.name": "plano(llm)"}, [root]))
        ).partial_success.rejected_spans
        == 0
    )
    page.goto(f"{srv.web_url}/traces?" + urlencode(query))
    _loaded(page)
    expect(page.locator(f'.trace-row[data-trace-id="{flying}"]')).to_have_count(1)
    assert page.locator(".badge.in-flight").count() == 0
    assert toggle.is_hidden()


def test_the_dashboard_drills_down_to_a_models_failed_calls(srv, page):
    page.goto(f"{srv.web_url}/?range=15m&refresh=off")
    page.wait_for_selector("body[data-loaded]")
    row = page.locator('[data-panel="llm_requests_per_second"] .legend tbody tr').filter(
        has=page.locator("td:first-child", has_text=re.compile(r"^openai/gpt-4o$"))
    )
    expect(row).to_have_count(1)
    link = row.locator("a.failed")
    q = parse_qs(urlparse(link.get_attribute("href")).query)
    assert q["service"] == ["plano(llm)"] and q["errors"] == ["true"] and q["model"] == ["openai/gpt-4o"]
    row.hover()  # the links show on hover
    link.click()
    expect(page).to_have_url(re.compile(r"/traces\?"))
    _loaded(page)
    assert page.locator("#f-failure").input_value() == "any"
    q = parse_qs(urlparse(page.url).query)
    drill = {"start": q["from"][0], "end": q["to"][0], "service": "plano(llm)", "model": "openai/gpt-4o"}
    want = _api(srv, "/api/v1/traces", **drill, errors="true")
    # the page shows the newest 20; the simulated traffic after the hand-made trace may fill them
    assert FAILED in [t["trace_id"] for t in _api(srv, "/api/v1/traces", **drill, errors="true", limit=500)["traces"]]
    assert [a.get_attribute("data-trace-id") for a in page.locator(".trace-row").all()] == [
        t["trace_id"] for t in want["traces"]
    ]
