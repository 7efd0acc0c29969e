"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real server
holding an hour of simulated Plano traffic. Screenshots go to test-output/ (look at them)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from playwright.sync_api import Page, expect

from conftest import grpc_export, pb_request, pb_span
from planoscope.demo.simulate import Simulation, export_requests
from support.ports import free_port

OUT = Path(__file__).resolve().parents[2] / "test-output"


@pytest.fixture(scope="module")
def live(module_server_factory, tmp_path_factory):
    """A server with the last hour of simulated traffic (seed 3), and the API's own view of it."""
    srv = module_server_factory(tmp_path_factory.mktemp("ui"))
    now = int(time.time())
    spans = (span for t in Simulation(rate=4, seed=3).traces(now - 3600, now) for span in t.spans)
    for req in export_requests(spans):
        assert grpc_export(srv.grpc_target, req).partial_success.rejected_spans == 0
    return srv


def _open(page: Page, srv, query: str = "") -> None:
    page.goto(srv.web_url + "/" + query)
    page.wait_for_selector("body[data-loaded]", timeout=15_000)


def _legend(page: Page, panel: str) -> list[str]:
    return page.locator(f'[data-panel="{panel}"] .legend tbody td:first-child').all_inner_texts()


def _api_names(srv, panel: str, query: str) -> list[str]:
    """The API's series names as the legend shows them (LLM calls that failed before dispatch
    have no model: their series is shown as "(no model)")."""
    return [s["name"] or "(no model)" for s in srv.get(f"/api/v1/panels/{panel}?{query}").json()["series"]]


def test_all_six_panels_render_with_their_series(live, page):
    _open(page, live)
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "dashboard.png"), full_page=True)
    titles = page.locator(".panel h2").all_inner_texts()
    assert titles == [
        "LLM Requests / sec by Model",
        "Agent Requests / sec by Agent",
        "Total LLM Requests / sec",
        "Rate-Limited Requests / sec",
        "LLM Request Latency p50 / p95 / p99 by Model",
        "Cumulative Request Count by Model",
    ]
    step = page.locator("body").get_attribute("data-step")
    start, end = page.locator("body").get_attribute("data-range").split(",")  # the page's hour
    q = f"start={start}&end={end}&step={step}"
    for panel in ("llm_requests_per_second", "agent_requests_per_second", "llm_latency_ms"):
        names = _legend(page, panel)
        assert names and sorted(names) == sorted(_api_names(live, panel, q)), panel
        assert page.locator(f'[data-panel="{panel}"] canvas').count() >= 1
    assert _legend(page, "total_requests_per_second") == ["llm", "agent", "orchestrator"]
    assert {"p50", "p95", "p99"} == {n.split()[0] for n in _legend(page, "llm_latency_ms")}
    tiles = page.locator('[data-panel="llm_cumulative_requests"] .stat .label').all_inner_texts()
    assert sorted(tiles) == sorted(_api_names(live, "llm_cumulative_requests", f"end={end}"))
    expect(page.locator('[data-panel="rate_limited_per_second"] .notice')).to_contain_text("Envoy")
    assert page.locator("#empty").is_hidden()


def test_tooltip_shows_values_with_units_at_the_crosshair(live, page):
    _open(page, live)
    over = page.locator('[data-panel="llm_requests_per_second"] .u-over')
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    tip = page.locator("#tooltip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("req/s")
    page.screenshot(path=str(OUT / "dashboard-tooltip.png"))


def test_range_picker_changes_the_data_and_the_url(live, page):
    _open(page, live, "?range=1h")
    assert page.locator("body").get_attribute("data-step") == "15"
    before = page.locator("body").get_attribute("data-loaded")
    page.click('#range button[data-range="15m"]')
    expect(page.locator("body")).not_to_have_attribute("data-loaded", before)
    assert "range=15m" in page.url
    assert page.locator("body").get_attribute("data-step") == "5"
    expect(page.locator('#range button[data-range="15m"]')).to_have_attribute("aria-pressed", "true")
    page.click('#range button[data-range="7d"]')
    expect(page.locator("body")).to_have_attribute("data-step", "3600")


def test_custom_range_is_applied_and_shareable(live, page):
    _open(page, live)
    page.click('#range button[data-range="custom"]')
    expect(page.locator("#custom")).to_be_visible()
    assert "from=" in page.url and "to=" in page.url
    shared = page.url
    page.goto(shared)
    page.wait_for_selector("body[data-loaded]")
    expect(page.locator('#range button[data-range="custom"]')).to_have_attribute("aria-pressed", "true")


def test_refresh_button_and_auto_refresh_reload_the_data(live, page):
    _open(page, live, "?range=1h&refresh=off")
    assert page.locator("#auto-refresh").input_value() == "off"
    first = page.locator("body").get_attribute("data-loaded")
    page.click("#refresh-now")
    expect(page.locator("body")).not_to_have_attribute("data-loaded", first)
    second = page.locator("body").get_attribute("data-loaded")
    page.select_option("#auto-refresh", "5s")
    assert "refresh=5s" in page.url
    # The next automatic reload comes within one interval, with no click.
    expect(page.locator("body")).not_to_have_attribute("data-loaded", second, timeout=8_000)


def test_legend_click_toggles_a_series(live, page):
    _open(page, live)
    row = page.locator('[data-panel="llm_requests_per_second"] .legend tbody tr').first
    row.click()
    expect(row).to_have_class("off")
    row.click()
    expect(row).not_to_have_class("off")


def test_empty_store_tells_how_to_point_plano_here(server_factory, tmp_path, page):
    srv = server_factory(tmp_path / "empty")
    _open(page, srv)
    empty = page.locator("#empty")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("opentracing_grpc_endpoint")
    page.screenshot(path=str(OUT / "dashboard-empty.png"))


def test_rate_limited_panel_and_target_health(server_factory, tmp_path, page):
    """A scraped counter draws the rate-limited panel; the header shows each target's health."""
    from conftest import FakeTarget, _samples, _wait

    envoy = FakeTarget()
    try:
        refused = f"http://127.0.0.1:{free_port()}/stats/prometheus"
        srv = server_factory(
            tmp_path / "data", "--scrape", f"envoy={envoy.url},gone={refused}", "--scrape-interval", "0.2s"
        )
        for value in (3, 9, 20):
            envoy.counter = value
            _wait(lambda value=value: any(v == value for _, v in _samples(srv)), what=f"counter {value} scraped")
        _open(page, srv, "?range=5m")
        panel = page.locator('[data-panel="rate_limited_per_second"]')
        expect(panel.locator('.target[data-target="envoy"]')).to_contain_text("envoy up")
        expect(panel.locator('.target[data-target="gone"]')).to_contain_text("gone down: connection refused")
        assert panel.locator(".notice").count() == 0
        assert panel.locator("canvas").count() >= 1
        assert _legend(page, "rate_limited_per_second") == ["envoy"]
        OUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUT / "dashboard-scrape.png"), full_page=True)
    finally:
        envoy.close()


# --- the trace explorer ----------------------------------------------------------------------


def _api_traces(srv, **params) -> dict:
    r = srv.get("/api/v1/traces?" + urlencode(params, doseq=True))
    assert r.status_code == 200, r.text
    return r.json()


def _shown_ids(page: Page) -> list[str]:
    return [a.get_attribute("data-trace-id") for a in page.locator(".trace-row").all()]


def _range_of(page: Page) -> dict:
    q = parse_qs(urlparse(page.url).query)
    return {"start": float(q["from"][0]), "end": float(q["to"][0])}


def test_search_lists_the_apis_traces_and_filters_from_the_form(live, page):
    now = time.time()
    page.goto(f"{live.web_url}/traces?from={now - 3600}&to={now}")
    page.wait_for_selector("body[data-loaded]")
    want = _api_traces(live, start=now - 3600, end=now)
    assert want["total"] > 1000
    assert _shown_ids(page) == [t["trace_id"] for t in want["traces"]]
    expect(page.locator("#count")).to_contain_text(f"{want['total']:,} traces")
    assert page.locator("#scatter circle").count() == len(want["traces"])
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "traces-search.png"))

    page.select_option("#f-service", "plano(orchestrator)")
    expect(page).to_have_url(re.compile(r"service=plano%28orchestrator%29"))
    page.wait_for_function("document.querySelector('#results').getAttribute('aria-busy') === 'false'")
    want = _api_traces(live, start=now - 3600, end=now, service="plano(orchestrator)")
    expect(page.locator(".trace-row").first).to_have_attribute("data-trace-id", want["traces"][0]["trace_id"])
    assert _shown_ids(page) == [t["trace_id"] for t in want["traces"]]

    page.fill("#f-min", "2s")
    page.select_option("#f-sort", "duration:desc")
    page.wait_for_function("document.querySelector('#results').getAttribute('aria-busy') === 'false'")
    page.click("#f-submit")
    expect(page).to_have_url(re.compile(r"min_duration=2s"))
    want = _api_traces(
        live, start=now - 3600, end=now, service="plano(orchestrator)", min_duration="2s", sort="duration", order="desc"
    )
    expect(page.locator(".trace-row").first).to_have_attribute("data-trace-id", want["traces"][0]["trace_id"])
    assert _shown_ids(page) == [t["trace_id"] for t in want["traces"]]
    durations = [t["duration_ms"] for t in want["traces"]]
    assert durations and min(durations) >= 2000

    page.click("#next")  # the next page
    expect(page).to_have_url(re.compile(r"offset=20"))


def _llm_span(doc: dict) -> dict | None:
    """The first span of an OTLP/JSON trace with an llm.model attribute."""
    spans = (s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"])
    return next((s for s in spans if any(a["key"] == "llm.model" for a in s["attributes"])), None)


def test_open_a_trace_expand_collapse_and_inspect_an_llm_span(live, page):
    now = time.time()
    # The traffic is simulated for the last hour before the fixture ran, so which agent traces
    # it holds depends on the clock: take the newest of the first page that reached a model
    # (some fail before dispatch).
    agents = _api_traces(live, start=now - 3600, end=now, service="plano(agent)", limit=20)["traces"]
    found = next(t for t in agents if _llm_span(live.get(f"/api/v1/traces/{t['trace_id']}").json()))
    page.goto(f"{live.web_url}/traces?from={now - 3600}&to={now}&service=plano(agent)&limit=20")
    page.wait_for_selector("body[data-loaded]")
    page.click(f'.trace-row[data-trace-id="{found["trace_id"]}"]')
    expect(page).to_have_url(re.compile(f"trace\\?id={found['trace_id']}"))
    page.wait_for_selector("body[data-loaded]")
    rows = page.locator(".wf-row")
    expect(rows).to_have_count(found["span_count"])
    expect(page.locator("#title")).to_contain_text(found["root_name"])
    assert page.locator(".wf-row.critical").count() >= 2  # the root and the child it waited on

    root = rows.first
    root.locator(".toggle").click()
    expect(rows).to_have_count(1)
    expect(root.locator(".hidden-count")).to_have_text(f"+{found['span_count'] - 1}")
    root.locator(".toggle").click()
    expect(rows).to_have_count(found["span_count"])

    llm = _llm_span(live.get(f"/api/v1/traces/{found['trace_id']}").json())
    model = next(a["value"]["stringValue"] for a in llm["attributes"] if a["key"] == "llm.model")
    page.click(f'.wf-row[data-span-id="{llm["spanId"]}"]')
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(detail.locator("#llm-summary")).to_contain_text(model)
    expect(detail.locator(".span-attrs")).to_contain_text("llm.provider")
    expect(detail.locator(".resource-attrs")).to_contain_text("service.name")
    assert f"span={llm['spanId']}" in page.url
    page.screenshot(path=str(OUT / "trace-view.png"))
    page.reload()  # the selected span is in the URL
    page.wait_for_selector("body[data-loaded]")
    expect(page.locator("#detail #llm-summary")).to_contain_text(model)


def test_a_span_whose_parent_never_arrived_is_shown(live, page):
    now = time.time_ns()
    orphan = pb_span(
        "5" * 32, "6" * 16, "lonely child", now - 10**9, now, parent="7" * 16, attrs={"llm.model": "gpt-4o"}
    )
    assert (
        grpc_export(
            live.grpc_target, pb_request(({"service.name": "plano(llm)"}, [orphan]))
        ).partial_success.rejected_spans
        == 0
    )
    page.goto(f"{live.web_url}/trace?id={'5' * 32}")
    page.wait_for_selector("body[data-loaded]")
    row = page.locator(".wf-row")
    expect(row).to_have_count(1)
    expect(row.locator(".badge.warn")).to_contain_text("parent missing")
    expect(page.locator("#meta")).to_contain_text("parent spans missing")


def test_trace_id_box_and_unknown_trace(live, page):
    now = time.time()
    tid = _api_traces(live, start=now - 3600, end=now, limit=1)["traces"][0]["trace_id"]
    page.goto(f"{live.web_url}/traces")
    page.wait_for_selector("body[data-loaded]")
    page.fill("#f-trace-id", "not-an-id")
    page.press("#f-trace-id", "Enter")
    expect(page.locator("#error")).to_contain_text("32 hex digits")
    page.fill("#f-trace-id", tid.upper())
    page.press("#f-trace-id", "Enter")
    expect(page).to_have_url(re.compile(f"trace\\?id={tid}"))
    page.wait_for_selector("body[data-loaded]")
    assert page.locator(".wf-row").count() >= 1
    page.allowed_errors.append("404 (Not Found)")  # the browser logs the API's 404
    page.goto(f"{live.web_url}/trace?id={'9' * 32}")
    page.wait_for_selector("body[data-loaded]")
    expect(page.locator("#error")).to_contain_text("no span of trace")


def test_drill_down_from_a_panel_point_to_its_traces(live, page):
    _open(page, live, "?range=1h&refresh=off")
    # Hide the calls without a model (failed before dispatch): the point clicked is a model's.
    page.locator('[data-panel="llm_requests_per_second"] .legend tbody tr', has_text="(no model)").click()
    over = page.locator('[data-panel="llm_requests_per_second"] .u-over')
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.95)
    expect(page.locator("#tooltip")).to_be_visible()
    page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.95)
    expect(page).to_have_url(re.compile(r"/traces\?"))
    page.wait_for_selector("body[data-loaded]")
    q = parse_qs(urlparse(page.url).query)
    assert q["service"] == ["plano(llm)"] and len(q["model"]) == 1
    rng = _range_of(page)
    assert rng["end"] - rng["start"] == pytest.approx(15)  # one step of the 1 h range
    want = _api_traces(live, **rng, service="plano(llm)", model=q["model"][0])
    assert want["total"] > 0
    assert _shown_ids(page) == [t["trace_id"] for t in want["traces"]]
    assert all(q["model"][0] in t["models"] for t in want["traces"])
    page.screenshot(path=str(OUT / "traces-drilldown.png"))


def test_drill_down_from_latency_legend_and_stat_tile(live, page):
    _open(page, live, "?range=1h&refresh=off")
    # The first model's row (calls that failed before dispatch have no model to drill to).
    rows = page.locator('[data-panel="llm_latency_ms"] .legend tbody tr')
    row = rows.filter(has=page.locator('td.drill a[href*="model="]')).first
    href = row.locator("td.drill a:not(.failed)").get_attribute("href")
    q = parse_qs(urlparse(href).query)
    assert q["service"] == ["plano(llm)"] and q["sort"] == ["duration"] and q["order"] == ["desc"]
    assert q["model"][0] in row.locator("td").first.inner_text()
    # The calls without a model drill to those that failed before dispatch (a span named llm).
    unset = page.locator('[data-panel="llm_cumulative_requests"] a.stat').filter(has_text="(no model)")
    q = parse_qs(urlparse(unset.get_attribute("href")).query)
    assert q["failure"] == ["before_dispatch"] and "model" not in q
    found = _api_traces(live, start=q["from"][0], end=q["to"][0], service="plano(llm)", failure="before_dispatch")
    assert found["total"] > 0 and all(t["failures"]["before_dispatch"] for t in found["traces"])
    tile = page.locator('[data-panel="llm_cumulative_requests"] a.stat').filter(has_not_text="(no model)").first
    model = tile.locator(".label").inner_text()
    tile.click()
    expect(page).to_have_url(re.compile(r"/traces\?"))
    page.wait_for_selector("body[data-loaded]")
    q = parse_qs(urlparse(page.url).query)
    assert q["model"] == [model] and q["service"] == ["plano(llm)"]
    want = _api_traces(live, **_range_of(page), service="plano(llm)", model=model)
    assert _shown_ids(page) == [t["trace_id"] for t in want["traces"]] and want["total"] > 0


def test_a_panel_with_more_series_than_it_draws_says_so(server_factory, tmp_path, page):
    srv = server_factory(tmp_path / "d", "--max-series-per-panel", "5")
    base = (int(time.time()) - 900) * 10**9
    spans = [
        pb_span(
            (i + 1).to_bytes(16, "big"),
            (i + 1).to_bytes(8, "big"),
            "chat",
            base + i * 10**9,
            base + i * 10**9 + (i % 7 + 1) * 50_000_000,
            attrs={"llm.model": f"model-{i % 60:02d}"},
        )
        for i in range(240)
    ]
    grpc_export(srv.grpc_target, pb_request(({"service.name": "plano(llm)"}, spans)))
    agents = [pb_span(b"\xaa" * 16, b"\xab" * 8, "a", base, base + 10**6, attrs={"agent_id": "weather"})]
    grpc_export(srv.grpc_target, pb_request(({"service.name": "plano(agent)"}, agents)))
    _open(page, srv)
    llm = page.locator('[data-panel="llm_requests_per_second"]')
    expect(llm.locator(".truncated")).to_have_text("top 5 of 60 models; the rest summed as other")
    assert _legend(page, "llm_requests_per_second") == [f"model-{i:02d}" for i in range(5)] + ["other"]
    # "other" stands for 55 models: no single search behind it, so no traces link on its row.
    assert llm.locator(".legend tbody tr").last.locator("a").count() == 0
    assert llm.locator(".legend tbody tr").first.locator("a").all_text_contents() == ["traces ↗", "failed ↗"]
    latency = page.locator('[data-panel="llm_latency_ms"] .truncated')
    expect(latency).to_have_text("top 5 of 60 models; the rest together as other")
    tiles = page.locator('[data-panel="llm_cumulative_requests"] .stat .label').all_inner_texts()
    assert tiles == [f"model-{i:02d}" for i in range(5)] + ["other"]
    assert page.locator('[data-panel="agent_requests_per_second"] .truncated').is_hidden()
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "dashboard-truncated.png"), full_page=True)


def test_the_trace_view_shows_attribute_values_by_type(live, page):
    """A number or a bool is shown as one (its own colour, no quotes, the type on hover), not as
    a string that looks like it: Plano's plano(llm) sends http.status_code 429 as an int where
    Envoy sends "429"; arrays and maps are spelled out; a repeated key shows every value."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    from conftest import any_value

    now = time.time_ns()
    attrs = [
        ("llm.model", "openai/gpt-4o"),
        ("http.status_code", 429),
        ("envoy.status", "429"),
        ("llm.usage.total_cost_usd", 0.0123),
        ("llm.usage.total_tokens", 1545),
        ("ratio", 2.0),
        ("plano.cache.warm", True),
        ("tools", [1, 2.5, "x", False]),
        ("limits", {"rpm": 60, "tier": "pro"}),
        ("blob", b"\x00\x01\xfe"),
        ("nothing", None),
        ("llm.model", "gpt-4o-2024-08-06"),
    ]
    span = pb_span("4" * 32, "5" * 16, "POST /v1/chat/completions openai/gpt-4o", now - 10**9, now)
    span.attributes.extend(KeyValue(key=k, value=any_value(v)) for k, v in attrs)
    req = pb_request(
        ({"service.name": "plano(llm)", "host.cores": 8}, [span]),
    )
    req.resource_spans[0].scope_spans[0].scope.attributes.add(key="scope.k", value=AnyValue(int_value=7))
    assert grpc_export(live.grpc_target, req).partial_success.rejected_spans == 0
    page.goto(f"{live.web_url}/trace?id={'4' * 32}&span={'5' * 16}")
    page.wait_for_selector("body[data-loaded]")
    table = page.locator("#detail .span-attrs")
    expect(table).to_be_visible()

    def cell(key: str):
        return table.locator(f'xpath=./tbody/tr[th[text()="{key}"]]/td')

    expect(cell("http.status_code").locator(".v-num[title=int]")).to_have_text("429")
    expect(cell("envoy.status")).to_have_text("429")
    assert cell("envoy.status").locator(".v-num").count() == 0  # a string, shown as text
    expect(cell("llm.usage.total_cost_usd").locator(".v-num[title=double]")).to_have_text("0.0123")
    expect(cell("ratio").locator(".v-num[title=double]")).to_have_text("2")
    expect(cell("plano.cache.warm").locator(".v-bool")).to_have_text("true")
    expect(cell("tools")).to_have_text('[1, 2.5, "x", false]')
    expect(cell("limits").locator("table.nested")).to_contain_text("rpm")
    expect(cell("limits").locator("table.nested .v-num")).to_have_text("60")
    expect(cell("blob").locator(".v-bytes")).to_have_text("AAH+")
    expect(cell("nothing").locator(".v-empty")).to_have_text("(empty)")
    assert cell("llm.model").all_inner_texts() == ["openai/gpt-4o", "gpt-4o-2024-08-06"]
    expect(page.locator("#detail .resource-attrs .v-num")).to_have_text("8")
    expect(page.locator("#detail .scope-attrs")).to_contain_text("scope.k")
    expect(page.locator("#llm-summary")).to_contain_text("1545")
    page.screenshot(path=str(OUT / "trace-typed-attributes.png"))
