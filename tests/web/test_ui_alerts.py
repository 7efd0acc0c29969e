"""The Alerts page in a real browser (Debian's Chromium through Playwright): a serve scraping a
gauge target every 0.5 s with rules evaluated every second (tests/support/alerting.py); the page
shows what GET /api/v1/alerts says (the firing and pending alerts with their labels, value and
summary, every rule with its state, the state changes) and every page's Alerts tab counts the
firing alerts. Screenshot: test-output/alerts.png."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

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
