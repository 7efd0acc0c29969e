"""The LLM Usage dashboard in a real browser (Debian's Chromium through Playwright) against a real
server holding an hour of simulated Plano traffic: the top bar built from /api/v1/dashboards, the
twelve panels with the API's series, units, the estimated cost marked, URL state and the
drill-downs. Screenshots go to test-output/ (look at them)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from playwright.sync_api import Page, expect

from conftest import grpc_export
from planoscope.demo.simulate import Simulation, export_requests

OUT = Path(__file__).resolve().parents[2] / "test-output"


@pytest.fixture(scope="module")
def live(module_server_factory, tmp_path_factory):
    """A server with the last hour of simulated traffic (seed 3)."""
    srv = module_server_factory(tmp_path_factory.mktemp("ui-llm"))
    now = int(time.time())
    spans = (span for t in Simulation(rate=4, seed=3).traces(now - 3600, now) for span in t.spans)
    for req in export_requests(spans):
        assert grpc_export(srv.grpc_target, req).partial_success.rejected_spans == 0
    return srv


def _open(page: Page, srv, query: str) -> None:
    page.goto(srv.web_url + "/" + query)
    page.wait_for_selector("body[data-loaded]", timeout=20_000)


def _api(srv, path: str, **params) -> dict | list:
    r = srv.get(path + ("?" + urlencode(params, doseq=True) if params else ""))
    assert r.status_code == 200, r.text
    return r.json()


def _legend(page: Page, panel: str) -> list[str]:
    return [t.strip() for t in page.locator(f'[data-panel="{panel}"] .legend tbody td:first-child').all_inner_texts()]


def _shown(name: str) -> str:
    """A series name as the legend shows it: an estimated cost with its badge, 🚩 as an icon."""
    name = name.replace("\U0001f6a9", "").strip()
    return name.removesuffix(" (estimated)") + (" estimated" if name.endswith(" (estimated)") else "")


def test_the_top_bar_lists_the_dashboards_and_switches_in_place(live, page):
    _open(page, live, "?range=15m&refresh=off")
    tabs = page.locator("nav.tabs a")
    expect(tabs).to_have_text(["Requests Overview", "LLM Usage", "Brightstaff", "Traces", "Sessions", "Alerts"])
    assert tabs.nth(2).get_attribute("title") == "Brightstaff (Plano dataplane)"  # the Grafana dashboard's title
    assert tabs.nth(4).get_attribute("href") == "sessions"  # the sessions page's slot
    expect(tabs.nth(0)).to_have_attribute("aria-current", "page")
    before = page.locator("body").get_attribute("data-loaded")
    tabs.nth(1).click()
    expect(page.locator("body")).not_to_have_attribute("data-loaded", before)
    expect(page).to_have_url(re.compile(r"dashboard=llm-usage"))
    assert "range=15m" in page.url  # the range stays
    expect(page.locator("#dashboard-title")).to_have_text("Plano - LLM Usage")
    expect(page).to_have_title("Plano - LLM Usage · planoscope")
    expect(tabs.nth(1)).to_have_attribute("aria-current", "page")
    assert page.locator(".panel").count() == 12
    page.reload()  # the dashboard is in the URL
    page.wait_for_selector("body[data-loaded]")
    expect(page.locator("#dashboard-title")).to_have_text("Plano - LLM Usage")
    expect(page.locator('#range button[data-range="15m"]')).to_have_attribute("aria-pressed", "true")
    tabs.nth(0).click()
    expect(page.locator(".panel")).to_have_count(6)
    assert "dashboard=" not in page.url and "range=15m" in page.url


def test_every_llm_panel_renders_the_apis_series(live, page):
    _open(page, live, "?dashboard=llm-usage&range=1h&refresh=off")
    page.mouse.move(0, 0)
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "llm-usage.png"), full_page=True)
    board = _api(live, "/api/v1/dashboards")[1]
    infos = {p["id"]: p for p in _api(live, "/api/v1/panels", dashboard="llm-usage")}
    # Plano's 🚩 is drawn as an icon (a browser may have no emoji font).
    titles = [infos[i]["title"] for i in board["panels"]]
    shown = [t.strip() for t in page.locator(".panel h2").all_inner_texts()]
    assert shown == [t.replace("\U0001f6a9", "").strip() for t in titles]
    expect(page.locator('[data-panel="llm_signals_quality"] h2 svg.flag-icon')).to_have_count(1)
    step = page.locator("body").get_attribute("data-step")
    start, end = page.locator("body").get_attribute("data-range").split(",")  # the page's hour
    for pid in board["panels"]:
        info = infos[pid]
        data = _api(live, f"/api/v1/panels/{pid}", start=start, end=end, step=step)
        assert data["series"], pid
        panel = page.locator(f'[data-panel="{pid}"]')
        if info["kind"] == "timeseries":
            assert panel.locator("canvas").count() >= 1, pid
            assert sorted(_legend(page, pid)) == sorted(_shown(s["name"]) for s in data["series"]), pid
        elif info["display"] == "bars":
            assert panel.locator(".bar-row").count() == len(data["series"]), pid
        else:
            routes = [s["name"] for s in data["series"] if "measure" not in s["labels"]]
            assert panel.locator("tbody td.name").all_inner_texts() == routes
    # Units: dollars, tokens per second, percentages, on the rows of the legends and tables.
    cost = page.locator('[data-panel="llm_cost_per_hour"] .legend tbody tr').first.locator("td").nth(2)
    assert re.fullmatch(r"\$\d[\d,]*(\.\d+)?", cost.inner_text()), cost.inner_text()
    tps = page.locator('[data-panel="llm_tokens_per_second"] .legend tbody tr').first.locator("td").nth(2)
    assert re.fullmatch(r"\d+(\.\d+)?k? tok/s", tps.inner_text()), tps.inner_text()
    share = page.locator('[data-panel="llm_route_share"] td[data-measure="share"]').first
    assert re.fullmatch(r"\d+(\.\d+)?%", share.inner_text()), share.inner_text()
    expect(page.locator('[data-panel="llm_route_share"] thead')).to_contain_text("p95")
    expect(page.locator('[data-panel="llm_signals_quality"] .legend')).to_contain_text("flagged")


def test_estimated_cost_is_marked_as_estimated(live, page):
    _open(page, live, "?dashboard=llm-usage&range=1h&refresh=off")
    end = time.time()
    data = _api(live, "/api/v1/panels/llm_cost_per_hour", start=end - 3600, end=end)
    estimated = [s for s in data["series"] if s["labels"]["cost_source"] == "estimated"]
    assert estimated  # the simulator's calls without a session carry tokens and no cost
    rows = page.locator('[data-panel="llm_cost_per_hour"] .legend tbody tr')
    marked = rows.filter(has=page.locator(".est"))
    expect(marked).to_have_count(len(estimated))
    assert all(r.locator(".swatch.dashed").count() == 1 for r in marked.all())  # drawn dashed
    expect(page.locator('[data-panel="llm_cost_total"] .bars-total')).to_contain_text("estimated")
    bars = page.locator('[data-panel="llm_cost_total"] .bar-row.estimated')
    expect(bars.first.locator(".est")).to_have_text("estimated")
    over = page.locator('[data-panel="llm_cost_per_hour"] .u-over')
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    tip = page.locator("#tooltip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("$")
    expect(tip.locator(".est").first).to_have_text("estimated")
    page.screenshot(path=str(OUT / "llm-usage-tooltip.png"))


def test_drill_down_from_the_route_table_a_chart_point_and_a_session(live, page):
    _open(page, live, "?dashboard=llm-usage&range=1h&refresh=off")
    link = page.locator('[data-panel="llm_route_share"] td.name a', has_text="code_generation")
    link.click()
    expect(page).to_have_url(re.compile(r"/traces\?"))
    page.wait_for_selector("body[data-loaded]")
    q = parse_qs(urlparse(page.url).query)
    assert q["route"] == ["code_generation"] and q["llm"] == ["true"]
    expect(page.locator('.filter-chip[data-filter="route"]')).to_contain_text("route = code_generation")
    rng = {"start": float(q["from"][0]), "end": float(q["to"][0])}
    want = _api(live, "/api/v1/traces", **rng, route="code_generation", llm="true", sort="duration", order="desc")
    assert want["total"] > 0
    ids = [a.get_attribute("data-trace-id") for a in page.locator(".trace-row").all()]
    assert ids == [t["trace_id"] for t in want["traces"]]
    # Removing the chip searches without it.
    page.locator('.filter-chip[data-filter="route"] button').click()
    expect(page).not_to_have_url(re.compile(r"route="))
    expect(page.locator('.filter-chip[data-filter="route"]')).to_have_count(0)

    _open(page, live, "?dashboard=llm-usage&range=1h&refresh=off")
    # A point of the time to first token chart: one model's calls in that step.
    over = page.locator('[data-panel="llm_ttft_ms"] .u-over')
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.97)
    expect(page.locator("#tooltip")).to_be_visible()
    page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.97)
    expect(page).to_have_url(re.compile(r"/traces\?"))
    page.wait_for_selector("body[data-loaded]")
    q = parse_qs(urlparse(page.url).query)
    assert len(q["model"]) == 1 and q["llm"] == ["true"]
    assert float(q["to"][0]) - float(q["from"][0]) == pytest.approx(15)  # one step of the 1 h range
    page.screenshot(path=str(OUT / "llm-usage-drilldown.png"))

    _open(page, live, "?dashboard=llm-usage&range=1h&refresh=off")
    bar = page.locator('[data-panel="llm_sessions_top"] .bar-row').first
    session = bar.locator(".bar-name").inner_text().split()[0]
    bar.click()
    page.wait_for_selector("body[data-loaded]")
    q = parse_qs(urlparse(page.url).query)
    assert q["session"] == [session]
    want = _api(live, "/api/v1/traces", start=q["from"][0], end=q["to"][0], session=session, llm="true")
    assert want["total"] > 0
    assert [a.get_attribute("data-trace-id") for a in page.locator(".trace-row").all()] == [
        t["trace_id"] for t in want["traces"]
    ]
