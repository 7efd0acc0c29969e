"""The panels each rule and alert concerns on ``GET /api/v1/alerts``, and the alerts' pending and
firing intervals on ``GET /api/v1/alerts/annotations``, on a real ``planoscope serve`` scraping a
gauge target every 0.5 s and evaluating its rules every second: read from the stored ``ALERTS``
series, so a resolved alert's interval and a firing one's start survive a restart; bounded by the
PromQL limits."""

from __future__ import annotations

import httpx
import pytest

from support.alerting import GaugeTarget, serve, wait_for

RULES = """
groups:
  - name: annotated
    rules:
      - alert: Always
        expr: vector(1)
        labels: {severity: page}
        annotations: {panel: "llm_ttft_ms"}
      - alert: Waiting
        expr: vector(1)
        for: 1h
      - alert: RoomHot
        expr: room_temp > 30
        annotations: {panel: "llm_latency_ms, brightstaff:5", summary: "{{ $labels.room }} is hot"}
"""
GONE = """
      - alert: Gone
        expr: vector(1)
        annotations: {panel: "llm_cost_total"}
"""


def _get(srv, path, status=200, **params):
    r = httpx.get(srv.web_url + path, params=params, timeout=30)
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()


def _annotations(srv, **params) -> dict[str, list[dict]]:
    by_rule: dict[str, list[dict]] = {}
    for a in _get(srv, "/api/v1/alerts/annotations", **params)["annotations"]:
        by_rule.setdefault(a["rule"], []).append(a)
    return by_rule


def test_panels_and_intervals_of_the_alerts_survive_a_restart(server_factory, tmp_path):
    target = GaugeTarget()
    target.values = {"a": 35.0}
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES + GONE)
    try:
        srv = serve(server_factory, tmp_path, target, rules)
        wait_for(lambda: "RoomHot" in _annotations(srv) and "Gone" in _annotations(srv), 30, "RoomHot to fire")

        view = _get(srv, "/api/v1/alerts")
        assert {r["name"]: r["panels"] for r in view["rules"]} == {
            "Always": ["llm_ttft_ms"],
            "Waiting": [],
            "RoomHot": ["llm_latency_ms", "brightstaff:5"],
            "Gone": ["llm_cost_total"],
        }
        assert {a["rule"]: a["panels"] for a in view["alerts"]} == {
            "Always": ["llm_ttft_ms"],
            "Waiting": [],
            "RoomHot": ["llm_latency_ms", "brightstaff:5"],
            "Gone": ["llm_cost_total"],
        }

        target.values = {"a": 10.0}  # RoomHot resolves: its interval ends with the staleness marker
        wait_for(lambda: _annotations(srv)["RoomHot"][0]["end"] is not None, 30, "RoomHot to resolve")
        found = _annotations(srv)
        [hot] = found["RoomHot"]
        assert hot["state"] == "firing"
        assert hot["labels"] == {
            "alertname": "RoomHot",
            "room": "a",
            "job": "rooms",
            "instance": f"127.0.0.1:{target.port}",
        }
        assert hot["panels"] == ["llm_latency_ms", "brightstaff:5"]
        assert 0 < hot["end"] - hot["start"] < 30
        [always] = found["Always"]
        assert always["state"] == "firing" and always["end"] is None and always["panels"] == ["llm_ttft_ms"]
        assert always["labels"] == {"alertname": "Always", "severity": "page"}
        [waiting] = found["Waiting"]
        assert waiting["state"] == "pending" and waiting["end"] is None and waiting["panels"] == []
        # A range that ends before RoomHot fired does not have it; one over its end does.
        assert "RoomHot" not in _annotations(srv, start=hot["start"] - 60, end=hot["start"] - 0.001)
        # One that starts between its last sample and its marker: the part within the range.
        [tail] = _annotations(srv, start=hot["end"] - 0.5, end=hot["end"] + 5)["RoomHot"]
        assert (tail["start"], tail["end"]) == (pytest.approx(hot["end"] - 0.5, abs=0.001), hot["end"])

        # Restarted without the rule Gone: what was stored is still there; Always fires on, one interval.
        rules.write_text(RULES)
        srv.stop()
        srv.start()
        wait_for(
            lambda: [a for a in _get(srv, "/api/v1/alerts")["alerts"] if a["rule"] == "Always"], 30, "an evaluation"
        )
        after = _annotations(srv)
        assert after["RoomHot"] == [hot]
        assert [(a["start"], a["end"]) for a in after["Always"]] == [(always["start"], None)]
        [gone] = after["Gone"]
        assert gone["end"] is not None and gone["end"] > gone["start"]
        assert gone["panels"] == []  # no rule of that name now: nothing says which panels
    finally:
        target.close()


def test_a_range_with_too_many_alert_series_is_refused_with_a_clear_error(server_factory, tmp_path):
    target = GaugeTarget()
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES + GONE)
    try:
        srv = serve(server_factory, tmp_path, target, rules, "--promql-max-series", "2")
        wait_for(lambda: len(_get(srv, "/api/v1/alerts")["alerts"]) == 3, 30, "three alerts")
        wait_for(lambda: _get_status(srv) == 422, 30, "the store to hold their three series")
        body = _get(srv, "/api/v1/alerts/annotations", 422)
        assert "too many series" in body["detail"] and "shorter range" in body["detail"]
        assert "end" in _get(srv, "/api/v1/alerts/annotations", 400, start=100, end=50)["detail"]
        assert _get(srv, "/api/v1/alerts")["alerts"]  # the server goes on
    finally:
        target.close()


def _get_status(srv) -> int:
    return httpx.get(srv.web_url + "/api/v1/alerts/annotations", timeout=30).status_code
