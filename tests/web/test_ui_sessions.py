"""The Sessions pages in a real browser (Debian's Chromium driven by Playwright) against a real
server holding an hour of simulated Plano traffic, plus a GenAI app's conversation sent without a
cost: what they show is what the API answers. Screenshots go to test-output/ (look at them)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlparse

import pytest
from playwright.sync_api import Page, expect

from conftest import grpc_export, pb_request, pb_span
from planoscope.demo.simulate import Simulation, export_requests
from support.clickhouse_fixtures import STORES, serve_on

VIEWPORT = {"width": 1440, "height": 900}  # the page fixture's (tests/conftest.py)
OUT = Path(__file__).resolve().parents[2] / "test-output"
GENAI = "support chat/7 ü"  # a slash, a space, non-ASCII: URL-encoded in the page's path


@pytest.fixture(scope="module", params=STORES)
def live(request, module_server_factory, tmp_path_factory):
    srv = serve_on(request, module_server_factory, tmp_path_factory.mktemp("ui-sessions"))
    now = int(time.time())
    # 2 requests a second: ~800 sessions in the hour, pages of 50 to click through
    spans = (span for t in Simulation(rate=2, seed=3).traces(now - 3600, now) for span in t.spans)
    for req in export_requests(spans):
        assert grpc_export(srv.grpc_target, req).partial_success.rejected_spans == 0
    t0 = (now - 120) * 10**9
    chats = [
        pb_span(
            f"{i + 1:032x}",
            f"{i + 1:016x}",
            "chat gpt-4o",
            t0 + i * 30 * 10**9,
            t0 + i * 30 * 10**9 + 2 * 10**9,
            attrs={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.conversation.id": GENAI,
                "gen_ai.usage.input_tokens": 100_000 * (i + 1),  # the costliest: on the first page
                "gen_ai.usage.output_tokens": 100,
            },
        )
        for i in range(3)
    ]
    assert (
        grpc_export(srv.grpc_target, pb_request(({"service.name": "chat-app"}, chats))).partial_success.rejected_spans
        == 0
    )
    srv.now = now
    srv.settled()
    return srv


def _open(page: Page, srv, path: str) -> None:
    page.goto(srv.web_url + path)
    page.wait_for_selector("body[data-loaded]", timeout=15_000)


def _reload_done(page: Page, before: str | None) -> None:
    expect(page.locator("body")).not_to_have_attribute("data-loaded", before or "")
    expect(page.locator("#results")).to_have_attribute("aria-busy", "false")


def _api(srv, page: Page | None = None, **params) -> dict:
    """The API's answer for the range the page asked for (a relative range moves on), or the last hour."""
    if page is not None:
        start, end = page.locator("body").get_attribute("data-range").split(",")
    else:
        end = time.time()
        start = end - 3600
    r = srv.get("/api/v1/sessions?" + urlencode({"start": start, "end": end, **params}))
    assert r.status_code == 200, r.text
    return r.json()


def _usd(v: float) -> str:
    """common.js's fmtCost."""
    return f"${v:.2f}" if v >= 1 else f"${v:.3f}" if v >= 0.01 else f"${v:.5f}"


def _rows(page: Page) -> list[str]:
    return page.locator("#rows tr").evaluate_all("rows => rows.map(r => r.dataset.sessionId)")


def test_the_list_shows_the_apis_sessions_sorted_and_paged(live, page):
    _open(page, live, "/sessions?range=1h")
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "sessions.png"))
    api = _api(live, page)
    assert api["total"] > 100 and _rows(page) == [s["session_id"] for s in api["sessions"]]
    expect(page.locator("#count")).to_have_text(f"{api['total']:,} sessions · showing 1–50")
    first = api["sessions"][0]
    row = page.locator("#rows tr").first
    expect(row.locator("td").nth(4)).to_have_text(str(first["llm_calls"]))
    expect(row.locator(".cost")).to_have_text(_usd(first["cost_usd"]))
    expect(page.locator('th[data-sort="cost"]')).to_have_attribute("aria-sort", "descending")
    expect(page.locator(".pager .prev").first).to_be_disabled()

    before = page.locator("body").get_attribute("data-loaded")
    page.click('th[data-sort="calls"]')
    _reload_done(page, before)
    assert parse_qs(urlparse(page.url).query)["sort"] == ["calls"]
    assert _rows(page) == [s["session_id"] for s in _api(live, page, sort="calls")["sessions"]]

    before = page.locator("body").get_attribute("data-loaded")
    page.locator("#next-foot").click()
    _reload_done(page, before)
    assert parse_qs(urlparse(page.url).query)["offset"] == ["50"]
    assert _rows(page) == [s["session_id"] for s in _api(live, page, sort="calls", offset=50)["sessions"]]
    expect(page.locator("#count-foot")).to_contain_text("showing 51–100")

    page.go_back()  # the URL holds the state
    page.wait_for_function("!location.search.includes('offset')")
    expect(page.locator("#count")).to_contain_text("showing 1–50")


def test_the_list_by_user_and_range(live, page):
    user = next(s["user_id"] for s in _api(live, limit=500)["sessions"] if s["user_id"])
    _open(page, live, "/sessions?range=1h")
    before = page.locator("body").get_attribute("data-loaded")
    page.fill("#f-user", user)
    page.press("#f-user", "Enter")
    _reload_done(page, before)
    assert parse_qs(urlparse(page.url).query)["user"] == [user]
    want = _api(live, page, user=user)
    assert want["total"] >= 1 and _rows(page) == [s["session_id"] for s in want["sessions"]]
    assert set(page.locator("#rows a.user").all_inner_texts()) == {user}

    before = page.locator("body").get_attribute("data-loaded")
    page.click('#range button[data-range="5m"]')
    _reload_done(page, before)
    assert parse_qs(urlparse(page.url).query)["range"] == ["5m"]
    start, end = (float(x) for x in page.locator("body").get_attribute("data-range").split(","))
    assert end - start == pytest.approx(300)
    assert _rows(page) == [s["session_id"] for s in _api(live, page, user=user)["sessions"]]

    _open(page, live, "/sessions?" + urlencode({"range": "1h", "user": "nobody-at-all"}))
    expect(page.locator("#none")).to_be_visible()
    expect(page.locator("#table")).to_be_hidden()


def test_a_session_turn_by_turn_with_links_to_its_traces(live, page):
    _open(page, live, "/sessions?range=1h&sort=calls")
    sid = _api(live, page, sort="calls", limit=5)["sessions"][0]["session_id"]
    page.locator(f'#rows tr[data-session-id="{sid}"] td').nth(2).click()  # anywhere on the row
    page.wait_for_url(f"**/sessions/{quote(sid, safe='')}")
    page.wait_for_selector("body[data-loaded]")
    page.mouse.move(0, 0)
    page.screenshot(path=str(OUT / "session.png"), full_page=True)
    body = live.get("/api/v1/sessions/" + quote(sid, safe="")).json()
    calls = body["calls"]
    expect(page.locator("#title")).to_have_text(sid)
    traces = [c["trace_id"] for i, c in enumerate(calls) if i == 0 or calls[i - 1]["trace_id"] != c["trace_id"]]
    assert page.locator(".turn").evaluate_all("ts => ts.map(t => t.dataset.traceId)") == traces
    assert page.locator(".call-row").evaluate_all("rs => rs.map(r => r.dataset.spanId)") == [
        c["span_id"] for c in calls
    ]
    expect(page.locator("#m-turns")).to_contain_text(f"{len(traces)} · {len(calls)} LLM call")
    for i, c in enumerate(calls):
        row = page.locator(".call-row").nth(i)
        assert row.locator(".trace-link").get_attribute("href") == f"../trace?id={c['trace_id']}&span={c['span_id']}"
        if c["failure_class"]:
            expect(row.locator(".badge.error")).to_have_attribute("data-failure", c["failure_class"])
        if c["signals_quality"]:
            expect(row.locator(".chip.quality")).to_have_text(c["signals_quality"])
        expect(row.locator(".est")).to_have_count(1 if c["cost_estimated"] else 0)
        if c["requested_model"] != c["resolved_model"] and c["model"]:
            expect(row.locator(".model .arrow")).to_have_count(1)
    first_preview = next(c["user_message_preview"] for c in calls if c["user_message_preview"])
    expect(page.locator(".turn .bubble").first).to_have_text(first_preview)
    assert page.locator("#timeline rect.call:not(.band)").count() == len(calls)

    page.locator(".call-row .trace-link").first.click()
    page.wait_for_url("**/trace?id=*")
    page.wait_for_selector(".wf-row")
    expect(page.locator(f'.wf-row.selected[data-span-id="{calls[0]["span_id"]}"]')).to_have_count(1)


def test_estimated_cost_is_marked_and_odd_ids_work(live, page):
    body = live.get("/api/v1/sessions/" + quote(GENAI, safe="")).json()
    assert [c["cost_estimated"] for c in body["calls"]] == [True, True, True]
    _open(page, live, "/sessions?range=1h")
    expect(page.locator("#rows tr").first).to_have_attribute("data-session-id", GENAI)
    expect(page.locator("#rows tr").first.locator(".est")).to_have_count(1)
    page.locator(f'#rows tr[data-session-id="{GENAI}"] td.id a').click()
    page.wait_for_selector(".turn")
    assert urlparse(page.url).path == "/sessions/" + quote(GENAI, safe="")
    expect(page.locator("#title")).to_have_text(GENAI)
    expect(page.locator(".call-row .est")).to_have_count(3)
    expect(page.locator("#m-cost .est")).to_have_count(1)
    expect(page.locator("#m-tokens")).to_contain_text("600,000 / 300")
    page.screenshot(path=str(OUT / "session-estimated.png"))


def test_an_unknown_session_says_so(live, page):
    page.allowed_errors.append("404 (Not Found)")  # the browser logs the API's 404
    _open(page, live, "/sessions/no-such-session")
    expect(page.locator("#error")).to_contain_text("Could not load session no-such-session")
    expect(page.locator("#head")).to_be_hidden()
