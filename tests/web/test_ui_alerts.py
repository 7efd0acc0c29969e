"""The Alerts page in a real browser (Debian's Chromium through Playwright): a serve scraping a
gauge target every 0.5 s with rules evaluated every second (tests/support/alerting.py); the page
shows what GET /api/v1/alerts says (the firing and pending alerts with their labels, value and
summary, every rule with its state, the state changes) and every page's Alerts tab counts the
firing alerts; a dashboard marks the panels firing alerts concern and draws their pending and
firing intervals on the charts. Screenshots: test-output/alerts.png, dashboard-alerts.png."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from conftest import grpc_export
from planoscope.demo.simulate import Simulation, export_requests
from support.alerting import RULES, GaugeTarget, serve, wait_for

OUT = Path(__file__).resolve().parents[2] / "test-output"


@pytest.fixture
def rooms(server_factory, tmp_path):
    target = GaugeTarget()
    target.values = {"kitchen": 35.0, "hall": 25.0}  # kitchen: hot (fires after 2 s); both warm (pending 10 min)
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    srv = serve(server_factory, tmp_path, target, rules)
    yield srv, target, rules
    target.close()


def _alerts(srv) -> dict:
    r = srv.get("/api/v1/alerts")
    assert r.status_code == 200, r.text
    return r.json()


def test_the_page_shows_the_firing_and_pending_alerts_the_rules_and_the_changes(rooms, page: Page):
    srv, target, rules = rooms
    wait_for(lambda: any(a["state"] == "firing" for a in _alerts(srv)["alerts"]), 30, "RoomHot to fire")
    page.goto(f"{srv.web_url}/alerts")
    page.wait_for_selector("body[data-loaded]")
    body = _alerts(srv)
    active = [a for a in body["alerts"] if a["state"] in ("firing", "pending")]
    rows = page.locator("#active-rows tr")
    expect(rows).to_have_count(len(active))
    # Firing first: the hot kitchen; then the pending warm rooms, each with its labels.
    first = rows.nth(0)
    expect(first.locator(".alert-state")).to_have_text("firing")
    expect(first.locator("td.name")).to_have_text("RoomHot")
    expect(first.locator(".label-chip")).to_have_text(["room=kitchen", "severity=page"])
    expect(first.locator("td.summary")).to_contain_text("kitchen is 35 degrees")
    assert {rows.nth(i).locator("td.name").inner_text() for i in range(1, len(active))} == {"RoomWarm"}
    expect(page.locator(".alert-count.firing b")).to_have_text("1")
    # Every rule, under its group, the recording one marked.
    expect(page.locator("#rule-rows tr.group-row")).to_have_text([f"rooms {rules}"])
    names = [r["name"] for r in body["rules"]]
    expect(page.locator("#rule-rows tr[data-rule] td.name")).to_have_text(names)
    expect(page.locator('#rule-rows tr[data-rule="room:temp:max"] .alert-state')).to_have_text("record")
    expect(page.locator('#rule-rows tr[data-rule="RoomHot"] .alert-state')).to_have_text("firing")
    # The changes: the kitchen went inactive → pending → firing.
    changes = page.locator("#change-rows tr")
    assert changes.count() == len(body["transitions"]) >= 2
    # The Alerts tab counts the firing alerts, on the dashboards too.
    expect(page.locator('nav.tabs a[data-page="alerts"] .firing-badge')).to_have_text("1")
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "alerts.png"), full_page=True)
    page.goto(f"{srv.web_url}/?range=5m&refresh=off")
    page.wait_for_selector("body[data-loaded]")
    expect(page.locator('nav.tabs a[data-page="alerts"] .firing-badge')).to_have_text("1")

    # Cooled down: it resolves, and the page says nothing fires.
    target.values = {"kitchen": 15.0, "hall": 15.0}
    wait_for(lambda: not any(a["state"] in ("firing", "pending") for a in _alerts(srv)["alerts"]), 30, "all to resolve")
    page.goto(f"{srv.web_url}/alerts")
    page.wait_for_selector("body[data-loaded]")
    expect(page.locator("#active-none")).to_be_visible()
    expect(page.locator(".alert-count.firing b")).to_have_text("0")
    assert page.locator('nav.tabs a[data-page="alerts"] .firing-badge').count() == 0


def test_without_rules_the_page_says_how_to_load_them(server_factory, tmp_path, page: Page):
    srv = server_factory(tmp_path / "d")
    page.goto(f"{srv.web_url}/alerts")
    page.wait_for_selector("body[data-loaded]")
    expect(page.locator("#rules-none")).to_be_visible()
    expect(page.locator("#rules-none")).to_contain_text("--rules plano")
    expect(page.locator("#active-none")).to_be_visible()


# A firing alert about one model's series, a pending one, and one that fired and resolved, each
# linked to Requests Overview panels.
DASHBOARD_RULES = """
groups:
  - name: dashboard
    rules:
      - alert: GptSlow
        expr: vector(1)
        labels: {gen_ai_request_model: MODEL, severity: warning}
        annotations:
          panel: "llm_requests_per_second, llm_latency_ms"
          summary: "MODEL answers slowly"
      - alert: Warming
        expr: vector(1)
        for: 1h
        annotations: {panel: "llm_requests_per_second"}
      - alert: RoomHot
        expr: room_temp > 30
        annotations: {panel: "llm_requests_per_second"}
"""


def _strip(page: Page, panel: str) -> list[list[int]]:
    """RGBA of the chart canvas's pixels along the top of the plot, its right-most 40 pixels
    (above every series: the y axis goes 10 % over the largest value)."""
    return page.evaluate(
        """(panel) => {
          const c = document.querySelector(`[data-panel="${panel}"] canvas`);
          const over = document.querySelector(`[data-panel="${panel}"] .u-over`);
          const px = devicePixelRatio, y = Math.round((over.offsetTop + 3) * px);
          const x = Math.round((over.offsetLeft + over.offsetWidth - 44) * px);
          const d = c.getContext("2d").getImageData(x, y, Math.round(40 * px), 1).data;
          const out = [];
          for (let i = 0; i < d.length; i += 4) out.push([d[i], d[i + 1], d[i + 2], d[i + 3]]);
          return out;
        }""",
        panel,
    )


def _busiest_model(traces: list, since_s: int) -> str:
    """The requested model (``provider/name``) of most LLM calls that start from ``since_s`` on:
    the simulation's mix per second is random, so a fixed model may be missing from the chart."""
    models = Counter(
        kv.value.string_value
        for t in traces
        for _, span in t.spans
        if span.start_time_unix_nano >= since_s * 1_000_000_000
        for kv in span.attributes
        if kv.key == "llm.model" and "/" in kv.value.string_value
    )
    return models.most_common(1)[0][0]


def test_a_dashboard_marks_the_panels_of_firing_alerts_and_draws_them_on_the_charts(server_factory, tmp_path, page):
    target = GaugeTarget()
    target.values = {"kitchen": 35.0}
    now = int(time.time())
    traces = Simulation(rate=2, seed=3).traces(now - 300, now)
    model = _busiest_model(traces, now - 15)
    rules = tmp_path / "rules.yml"
    rules.write_text(DASHBOARD_RULES.replace("MODEL", model))
    try:
        srv = serve(server_factory, tmp_path, target, rules)
        spans = (span for t in traces for span in t.spans)
        for req in export_requests(spans):
            assert grpc_export(srv.grpc_target, req).partial_success.rejected_spans == 0

        def hot() -> list[dict]:
            found = srv.get(f"/api/v1/alerts/annotations?start={now - 300}").json()["annotations"]
            return [a for a in found if a["rule"] == "RoomHot"]

        wait_for(lambda: hot() and (hot()[0]["end"] or time.time()) - hot()[0]["start"] >= 5, 30, "RoomHot 5 s")
        target.values = {"kitchen": 15.0}
        wait_for(lambda: hot()[0]["end"] is not None, 30, "RoomHot to resolve")
        reads = []
        page.on(
            "request",
            lambda r: (
                reads.append(r.url.split("?")[0].rsplit("/api/v1/", 1)[-1]) if "/api/v1/alerts" in r.url else None
            ),
        )
        # From a little before the first evaluation: the intervals are most of the chart.
        page.goto(f"{srv.web_url}/?from={now - 15}&to={int(time.time()) + 2}&refresh=off")
        page.wait_for_selector("body[data-loaded]")

        assert sorted(reads) == ["alerts", "alerts", "alerts/annotations"]  # the tab's badge, the panels, the charts

        # The header mark: the firing alerts that concern the panel (the pending one is not counted).
        requests, latency = (page.locator(f'[data-panel="{p}"]') for p in ("llm_requests_per_second", "llm_latency_ms"))
        for panel in (requests, latency):
            expect(panel.locator(".alert-mark.firing")).to_have_text("1")
            expect(panel).to_have_class(re.compile(r"\balerting\b"))
        expect(page.locator('[data-panel="agent_requests_per_second"] .alert-mark')).to_be_hidden()
        assert requests.locator(".alert-mark").get_attribute("href") == "alerts"
        requests.locator(".alert-mark").hover()
        tip = page.locator("#alert-tooltip")
        expect(tip).to_be_visible()
        expect(tip).to_contain_text("GptSlow")
        expect(tip).to_contain_text(f"{model} answers slowly")
        expect(tip).to_contain_text("Warming")
        expect(tip.locator(".label-chip")).to_have_text([f"gen_ai_request_model={model}", "severity=warning"])
        OUT.mkdir(exist_ok=True)
        box = requests.bounding_box()
        page.screenshot(path=str(OUT / "dashboard-alerts-mark.png"), clip={**box, "height": box["height"] / 2})

        # The annotations: a firing, a pending and a resolved region, each with its marker.
        expect(requests).to_have_attribute("data-annotations", "3")
        expect(latency).to_have_attribute("data-annotations", "1")
        marks = requests.locator(".ann-mark")
        assert sorted(
            zip(
                marks.evaluate_all("ms => ms.map(m => m.dataset.rule)"),
                marks.evaluate_all("ms => ms.map(m => m.dataset.state)"),
            )
        ) == [("GptSlow", "firing"), ("RoomHot", "firing"), ("Warming", "pending")]
        # Hovering the markers' strip lists the intervals at that point.
        strip = requests.locator(".ann-strip").bounding_box()
        resolved = requests.locator('.ann-mark[data-rule="RoomHot"]').bounding_box()
        page.mouse.move(resolved["x"] + resolved["width"] / 2, strip["y"] + strip["height"] / 2)
        entry = tip.locator(".ann-tip-alert", has_text="RoomHot")
        expect(entry.locator(".label-chip")).to_have_text(
            ["instance=" + target.url.split("/")[2], "job=rooms", "room=kitchen"]
        )
        expect(entry.locator(".ann-tip-time")).not_to_contain_text("now")
        page.mouse.move(strip["x"] + strip["width"] - 2, strip["y"] + strip["height"] / 2)
        expect(tip.locator(".ann-tip-head b")).to_have_text(["GptSlow", "Warming"])
        expect(tip.locator(".ann-tip-time").first).to_contain_text("→ now")
        page.screenshot(
            path=str(OUT / "dashboard-alerts-tooltip.png"),
            clip={**box, "width": box["width"] + 420, "height": box["height"] + 40},
        )
        # On the canvas: the going-on regions tint the plot's right edge red; not on a panel they do not concern.
        tinted = [
            p for p in _strip(page, "llm_requests_per_second") if p[3] > 0 and p[0] > p[1] + 20 and p[0] > p[2] + 20
        ]
        assert len(tinted) >= 30, _strip(page, "llm_requests_per_second")
        assert sum(1 for p in _strip(page, "agent_requests_per_second") if p[3] == 0) >= 30

        # A refresh reads them once more, for every panel.
        reads.clear()
        page.click("#refresh-now")
        expect(page.locator("body")).not_to_have_attribute(
            "data-loaded", page.locator("body").get_attribute("data-loaded")
        )
        assert sorted(reads) == ["alerts", "alerts/annotations"]

        # The series the firing alert is about (gen_ai_request_model is the span panels' llm_model).
        rows = requests.locator(".legend tbody tr.alerting")
        expect(rows).to_have_count(1)
        expect(rows.locator("td").first).to_have_text(model)
        page.mouse.move(0, 0)
        page.screenshot(path=str(OUT / "dashboard-alerts.png"), full_page=True)
        requests.screenshot(path=str(OUT / "dashboard-alerts-panel.png"))
    finally:
        target.close()
