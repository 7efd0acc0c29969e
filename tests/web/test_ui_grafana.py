"""Plano's brightstaff dashboard drawn built in, in a real browser (Debian's Chromium through
Playwright): ``planoscope demo`` scrapes its fake brightstaff and Envoy every second, and the
third tab draws the Grafana dashboard's 15 panels under its 4 rows through the PromQL engine.
The API's numbers are checked against the raw stored samples; the page against the API.
Screenshot: test-output/brightstaff.png."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from playwright.sync_api import Page, expect

from conftest import _wait

OUT = Path(__file__).resolve().parents[2] / "test-output"
ROWS = ["HTTP RED", "LLM upstream", "Routing service", "Process & Envoy link"]
# Panels of failures only: a few minutes of the simulated traffic may have none (its incidents
# follow the wall clock).
MAY_BE_EMPTY = {"LLM upstream errors by provider / class"}
LOOKBACK_S = 300  # Prometheus's: an instant selector takes the last sample up to 5 minutes old


def _api(srv, path: str, **params):
    r = srv.get(path + ("?" + urlencode(params) if params else ""))
    assert r.status_code == 200, r.text
    return r.json()


def _board(srv, **params) -> dict:
    return _api(srv, "/api/v1/dashboard", id="brightstaff", **params)


@pytest.fixture(scope="module")
def demo(module_demo_factory, tmp_path_factory):
    """The demo, once every panel of the brightstaff dashboard has data (~10 s of scrapes)."""
    # Without planoscope's own /metrics: thousands of series a second at this interval, and no
    # panel of this dashboard reads them.
    srv = module_demo_factory(
        tmp_path_factory.mktemp("bs"),
        "--rate",
        "5",
        "--seed",
        "3",
        "--scrape-interval",
        "1s",
        "--scrape-self-metrics",
        "",
    )

    missing: list[str] = []

    def drawn() -> bool:
        panels = [p for p in _board(srv, start=time.time() - 60, step=1)["panels"] if p["kind"] != "row"]
        assert not [p["notice"] for p in panels if "notice" in p]  # every query answered
        missing[:] = [p["title"] for p in panels if not p["series"] and p["title"] not in MAY_BE_EMPTY]
        return not missing and len(panels[0]["series"][0]["points"]) >= 10

    try:
        _wait(drawn, 180, "every brightstaff panel to have data")
    except AssertionError as e:
        raise AssertionError(f"{e}; without data: {missing}") from None
    return srv


def test_the_brightstaff_dashboard_is_listed_and_answers_from_the_samples(demo):
    (info,) = [b for b in _api(demo, "/api/v1/dashboards") if b["id"] == "brightstaff"]
    assert (info["title"], info["source"], len(info["panels"])) == ("Brightstaff (Plano dataplane)", "grafana", 19)
    # Ending before the scrapes that may still be on their way in (a sample carries its scrape's
    # start time, and is read once committed): every query below reads the same samples.
    end = time.time() - 5
    start = end - 600
    board = _board(demo, start=start, end=end, step=5)
    by_title = {p["title"]: p for p in board["panels"]}

    # In-flight requests: sum by (handler) of a gauge, each step the last sample within the
    # lookback; recomputed here from the raw stored samples.
    raw = _api(demo, "/api/v1/metrics/brightstaff_http_in_flight_requests/samples", start=start - LOOKBACK_S, end=end)
    panel = by_title["In-flight requests by handler"]
    handlers = sorted({s["labels"]["handler"] for s in raw["series"]})
    assert [s["name"] for s in panel["series"]] == handlers
    for series in panel["series"]:
        mine = [s["points"] for s in raw["series"] if s["labels"]["handler"] == series["name"]]
        for t, v in series["points"]:
            want = 0.0
            for points in mine:
                before = [p for p in points if t - LOOKBACK_S < p[0] <= t + 1e-6]
                want += before[-1][1] if before else 0.0
            assert v == pytest.approx(want), (series["name"], t)

    # Two panels with the same PromQL in other words agree: brightstaff's RPS summed over its
    # handlers is the link panel's "brightstaff served".
    rps = by_title["Rate — brightstaff RPS by handler"]["series"]
    served = next(s for s in by_title["Envoy → brightstaff link health"]["series"] if s["name"] == "brightstaff served")
    summed = {}
    for s in rps:
        for t, v in s["points"]:
            summed[t] = summed.get(t, 0.0) + v
    assert served["points"] and all(v == pytest.approx(summed[t]) for t, v in served["points"])

    # A stat is one point per series at the range's end, a ratio here.
    (rate,) = by_title["Errors — brightstaff 5xx rate"]["series"]
    assert rate["name"] == "5xx rate" and len(rate["points"]) == 1 and rate["points"][0][0] == end
    assert 0 <= rate["points"][0][1] <= 1


def test_the_page_draws_the_rows_and_every_panel_as_the_api_answers(demo, page: Page):
    asked = []  # the range the page drew, to ask the API the same (the data moves on meanwhile)
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/dashboard?" in r.url else None)
    page.goto(f"{demo.web_url}/?dashboard=brightstaff&range=15m&refresh=off")
    page.wait_for_selector("body[data-loaded]", timeout=20_000)
    expect(page.locator("#dashboard-title")).to_have_text("Brightstaff (Plano dataplane)")
    expect(page.locator(".row-heading")).to_have_text(ROWS)
    expect(page.locator(".panel")).to_have_count(15)
    infos = {p["id"]: p for p in _api(demo, "/api/v1/panels", dashboard="brightstaff") if p["kind"] != "row"}
    drawn_range = parse_qs(urlparse(asked[-1]).query)  # the last load is the one drawn
    board = _board(demo, start=drawn_range["start"][0], end=drawn_range["end"][0])
    drawn = {p["id"]: p for p in board["panels"]}
    for panel_id, info in infos.items():
        el = page.locator(f'.panel[data-panel="{panel_id}"]')
        expect(el.locator("h2")).to_have_text(info["title"])
        assert el.locator(".notice").count() == 0, info["title"]
        if not drawn[panel_id]["series"] and info["title"] in MAY_BE_EMPTY:
            continue  # drawn as "No data in this range"
        assert el.locator(".nodata").count() == 0, info["title"]
        if info["kind"] == "timeseries":
            expect(el.locator("canvas")).to_have_count(1)
            assert el.locator(".legend tbody tr, .legend li").count() >= 1, info["title"]
    # The stat's tile takes its threshold's colour (Grafana's green below 1 %, yellow, red from 5 %).
    errors = next(p for p in infos.values() if p["title"] == "Errors — brightstaff 5xx rate")
    value = drawn[errors["id"]]["series"][0]["points"][0][1]
    want = "#73bf69" if value < 0.01 else "#fade2a" if value < 0.05 else "#f2495c"
    tile = page.locator(f'.panel[data-panel="{errors["id"]}"] .stat')
    assert tile.evaluate("e => e.style.getPropertyValue('--c')") == want
    # The info tooltip says the PromQL the panel draws.
    rps = next(p for p in infos.values() if p["title"] == "Rate — brightstaff RPS by handler")
    info_title = page.locator(f'.panel[data-panel="{rps["id"]}"] .info').get_attribute("title")
    assert "PromQL: sum by (handler) (rate(brightstaff_http_requests_total[1m]))" in info_title
    OUT.mkdir(exist_ok=True)
    page.mouse.move(0, 0)
    page.screenshot(path=str(OUT / "brightstaff.png"), full_page=True)
