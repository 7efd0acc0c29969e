"""Alerting end to end, real parts only: a ``planoscope serve`` subprocess scraping a target whose
gauges the test sets (every 0.5 s), evaluating a rule file every second; Debian's Alertmanager;
a webhook receiver. An alert fires, reaches Alertmanager (which was down at first), is re-sent and
resolves; webhooks get Alertmanager's payload, grouped, repeated, retried after a refusal; a
restart keeps a firing alert firing with its activeAt and a pending one's clock; the rules' series
(ALERTS, ALERTS_FOR_STATE, a recording rule) are queryable and end with a staleness marker."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest

from conftest import grpc_export, now_base_ns, pb_request, pb_span
from planoscope.alerting.webhook import fingerprint
from support.alerting import RULES, Alertmanager, GaugeTarget, WebhookReceiver, free_port, serve, wait_for
from support.clickhouse_fixtures import STORES


@pytest.fixture
def target():
    t = GaugeTarget()
    yield t
    t.close()


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rooms.yml"
    path.write_text(RULES)
    return path


def _api(srv, path, **params):
    r = httpx.get(srv.web_url + path, params=params, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    return body["data"] if "status" in body else body


def _alerts(srv, name=None):
    return [a for a in _api(srv, "/prometheus/api/v1/alerts")["alerts"] if name in (None, a["labels"]["alertname"])]


def _query(srv, q):
    return [(r["metric"], r["value"][1]) for r in _api(srv, "/prometheus/api/v1/query", query=q)["result"]]


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _store_env(store, request):
    """On ClickHouse the rules' samples go to its planoscope_samples table and are read from there."""
    return {"PLANOSCOPE_STORE": request.getfixturevalue("clickhouse_database").url} if store == "clickhouse" else None


# Fails at every evaluation while two rooms are scraped (many-to-many matching).
BROKEN = """
  - name: broken
    rules:
      - alert: Broken
        expr: room_temp + on() room_temp
"""


@pytest.mark.parametrize("store", STORES)
def test_rules_alerts_and_their_series(server_factory, tmp_path, target, rules_file, store, request):
    target.values = {"a": 35.0, "b": 10.0}
    rules_file.write_text(RULES + BROKEN)
    srv = serve(server_factory, tmp_path, target, rules_file, env=_store_env(store, request))
    [hot] = wait_for(lambda: [a for a in _alerts(srv, "RoomHot") if a["state"] == "firing"], 30, "RoomHot firing")
    assert hot["labels"] == {"alertname": "RoomHot", "room": "a", "severity": "page"}
    assert hot["annotations"] == {"summary": "a is 35 degrees", "runbook": "open the window"}
    assert hot["value"] == "3.5e+01"

    groups = _api(srv, "/prometheus/api/v1/rules")["groups"]
    assert [(g["name"], g["file"], g["interval"]) for g in groups] == [
        ("rooms", str(rules_file), 1.0),
        ("broken", str(rules_file), 1.0),
    ]
    [broken] = groups[1]["rules"]
    assert (broken["health"], broken["state"], broken["alerts"]) == ("err", "inactive", [])
    assert "many-to-many" in broken["lastError"], broken["lastError"]
    record, room_hot, room_warm = groups[0]["rules"]
    assert (record["type"], record["name"], record["health"]) == ("recording", "room:temp:max", "ok")
    assert (room_hot["type"], room_hot["state"], room_hot["duration"], room_hot["health"]) == (
        "alerting",
        "firing",
        2.0,
        "ok",
    )
    assert room_hot["alerts"] == [hot] and room_hot["query"] == "room:temp:max > 30"
    assert (room_warm["state"], [a["state"] for a in room_warm["alerts"]]) == ("pending", ["pending"])
    assert [r["name"] for r in _api(srv, "/prometheus/api/v1/rules", type="record")["groups"][0]["rules"]] == [
        "room:temp:max"
    ]

    # The rules' series, as Prometheus would hold them: the recording rule's, ALERTS, ALERTS_FOR_STATE.
    assert _query(srv, "room:temp:max") == [
        ({"__name__": "room:temp:max", "room": "a"}, "35"),
        ({"__name__": "room:temp:max", "room": "b"}, "10"),
    ]
    assert _query(srv, 'ALERTS{alertname="RoomHot"}') == [
        ({"__name__": "ALERTS", "alertname": "RoomHot", "alertstate": "firing", "room": "a", "severity": "page"}, "1")
    ]
    [(_, active_at)] = _query(srv, 'ALERTS_FOR_STATE{alertname="RoomHot"}')
    assert float(active_at) == pytest.approx(_seconds(hot["activeAt"]), abs=0.001)
    assert _query(srv, 'up{job="rooms"}') == [
        ({"__name__": "up", "instance": f"127.0.0.1:{target.port}", "job": "rooms"}, "1")
    ]

    ui = _api(srv, "/api/v1/alerts")
    assert {r["name"]: r["state"] for r in ui["rules"] if r["type"] == "alerting"} == {
        "RoomHot": "firing",
        "RoomWarm": "pending",
        "Broken": "inactive",
    }
    assert [(t["from"], t["to"]) for t in ui["transitions"] if t["rule"] == "RoomHot"] == [
        ("pending", "firing"),
        ("inactive", "pending"),
    ]

    target.values = {"a": 10.0, "b": 10.0}
    wait_for(lambda: not _alerts(srv), 30, "the alerts to resolve")
    # A staleness marker ends the series at once (without it they would linger 5 minutes).
    wait_for(lambda: not _query(srv, "ALERTS"), 10, "ALERTS to end")
    assert _query(srv, "ALERTS_FOR_STATE") == []
    [resolved] = [a for a in _api(srv, "/api/v1/alerts")["alerts"] if a["rule"] == "RoomHot"]
    assert resolved["state"] == "inactive" and resolved["resolvedAt"] > resolved["firedAt"] > resolved["activeAt"]


def test_alertmanager_gets_the_alert_once_up_sees_it_resent_and_resolved(server_factory, tmp_path, target, rules_file):
    port = free_port()
    target.values = {"a": 35.0}
    srv = serve(
        server_factory,
        tmp_path,
        target,
        rules_file,
        "--alertmanager-url",
        f"http://127.0.0.1:{port}",
        "--alert-resend-delay",
        "2s",
    )
    wait_for(lambda: _alerts(srv, "RoomHot") and _alerts(srv, "RoomHot")[0]["state"] == "firing", 30, "RoomHot firing")
    # Alertmanager was down while the alert started firing: it gets it once it is up.
    am = Alertmanager(tmp_path / "am", port)
    try:
        [got] = wait_for(
            lambda: [a for a in am.alerts() if a["labels"]["alertname"] == "RoomHot"], 60, "the alert in Alertmanager"
        )
        assert got["labels"] == {"alertname": "RoomHot", "room": "a", "severity": "page"}
        assert got["annotations"] == {"summary": "a is 35 degrees", "runbook": "open the window"}
        assert got["status"]["state"] == "active" and got["fingerprint"] == fingerprint(got["labels"])
        [hot] = _alerts(srv, "RoomHot")
        assert _seconds(got["startsAt"]) == pytest.approx(_seconds(hot["activeAt"]), abs=0.001)
        assert got["generatorURL"].startswith(srv.web_url + "/prometheus/graph?g0.expr=")
        # Re-sent while firing: each resend moves endsAt (4 resend delays ahead) on.
        ends = _seconds(got["endsAt"])
        assert ends > time.time()
        wait_for(lambda: _seconds(am.alerts()[0]["endsAt"]) > ends + 1, 30, "the alert to be re-sent")
        target.values = {"a": 10.0}
        wait_for(
            lambda: not [a for a in am.alerts() if a["labels"]["alertname"] == "RoomHot"],
            30,
            "Alertmanager to see it resolved",
        )
    finally:
        am.close()


def test_webhooks_get_alertmanagers_payload_grouped_repeated_and_retried(server_factory, tmp_path, target, rules_file):
    hook = WebhookReceiver()
    target.values = {"a": 35.0, "b": 40.0}
    srv = serve(
        server_factory,
        tmp_path,
        target,
        rules_file,
        "--alert-webhook",
        hook.url + "/s3cr3t-t0ken",  # as Slack's and others' webhook URLs hold their secret
        "--alert-group-wait",
        "1s",
        "--alert-group-interval",
        "1s",
        "--alert-repeat-interval",
        "5s",
    )
    try:
        first = wait_for(
            lambda: [b for b in hook.bodies() if b["groupLabels"] == {"alertname": "RoomHot"}], 30, "a notification"
        )[0]
        assert {k: v for k, v in first.items() if k != "alerts"} == {
            "receiver": "planoscope",
            "status": "firing",
            "groupLabels": {"alertname": "RoomHot"},
            "commonLabels": {"alertname": "RoomHot", "severity": "page"},
            "commonAnnotations": {"runbook": "open the window"},
            "externalURL": srv.web_url,
            "version": "4",
            "groupKey": '{}:{alertname="RoomHot"}',
            "truncatedAlerts": 0,
        }
        # Both rooms fire at the same evaluation: one notification holds both (grouped by alertname).
        assert [(a["labels"]["room"], a["status"], a["endsAt"]) for a in first["alerts"]] == [
            ("a", "firing", "0001-01-01T00:00:00Z"),
            ("b", "firing", "0001-01-01T00:00:00Z"),
        ]
        assert first["alerts"][1]["annotations"] == {"summary": "b is 40 degrees", "runbook": "open the window"}
        assert first["alerts"][0]["fingerprint"] == fingerprint(first["alerts"][0]["labels"])

        def room_hot():
            return [(t, b) for t, b in hook.received if b["groupLabels"] == {"alertname": "RoomHot"}]

        # Nothing changes: the group is sent again after repeat_interval, not every group_interval.
        wait_for(lambda: len(room_hot()) >= 2, 30, "the repeat")
        (t1, _), (t2, second) = room_hot()[:2]
        assert 4.0 <= t2 - t1 <= 9.0, t2 - t1
        assert [a["status"] for a in second["alerts"]] == ["firing", "firing"]

        # The receiver refuses; b resolves meanwhile: retried until it takes it, with the group as it is then.
        seen = len(room_hot())
        hook.status = 500
        target.values = {"a": 35.0, "b": 10.0}
        wait_for(lambda: hook.refused >= 2, 30, "two refused attempts")
        hook.status = 200
        after = wait_for(lambda: room_hot()[seen:], 60, "the retried notification")
        body = after[0][1]
        assert body["status"] == "firing"
        assert [(a["labels"]["room"], a["status"]) for a in body["alerts"]] == [("a", "firing"), ("b", "resolved")]
        assert body["alerts"][1]["endsAt"] != "0001-01-01T00:00:00Z"

        # a resolves too: a resolved notification, then the group is done (b is not told twice).
        target.values = {"a": 10.0, "b": 10.0}
        last = wait_for(
            lambda: [b for _, b in room_hot() if b["status"] == "resolved"], 30, "the resolved notification"
        )[0]
        assert [(a["labels"]["room"], a["status"]) for a in last["alerts"]] == [("a", "resolved")]
        # What /metrics and the log say of the receiver: counts, and its URL without the secret.
        metrics = srv.metrics()
        receiver = {"receiver": f"http://127.0.0.1:{hook.port}"}
        assert metrics.value("planoscope_notifications_sent_total", receiver) == len(hook.received)
        assert metrics.value("planoscope_notifications_failed_total", receiver) == hook.refused
        log = "\n".join(srv.lines("out") + srv.lines("err"))  # what planoscope wrote, not its command line
        assert "s3cr3t" not in srv.metrics_text() and "s3cr3t" not in log
        assert f"cannot notify webhook http://127.0.0.1:{hook.port}: HTTP 500" in log
    finally:
        hook.close()


@pytest.mark.parametrize("store", STORES)
def test_a_restart_keeps_firing_and_pending_alerts(server_factory, tmp_path, target, rules_file, store, request):
    # Room a: RoomHot firing and RoomWarm pending when planoscope stops. Room b: RoomHot fired and
    # resolved before the stop, and is hot again after the start: a new alert.
    target.values = {"a": 35.0, "b": 35.0}
    srv = serve(server_factory, tmp_path, target, rules_file, env=_store_env(store, request))

    def hot(room):
        return [a for a in _alerts(srv, "RoomHot") if a["labels"]["room"] == room]

    wait_for(lambda: [a for a in hot("b") if a["state"] == "firing"], 30, "RoomHot firing for b")
    target.values = {"a": 35.0, "b": 10.0}
    wait_for(lambda: not hot("b"), 30, "RoomHot resolved for b")

    def warm():
        [w] = _alerts(srv, "RoomWarm")
        last = _seconds(_api(srv, "/prometheus/api/v1/rules")["groups"][0]["lastEvaluation"])
        return w, last - _seconds(w["activeAt"])

    wait_for(lambda: warm()[1] >= 4.0, 30, "RoomWarm pending 4 s")
    [hot_before] = hot("a")
    assert hot_before["state"] == "firing"
    warm_before, pending_before = warm()
    srv.stop()
    target.values = {"a": 35.0, "b": 31.0}  # b hot again while planoscope is down
    started = time.time()
    srv.start()
    wait_for(lambda: hot("a") and hot("b"), 30, "the first evaluation")
    [hot_after] = hot("a")
    assert hot_after["state"] == "firing" and hot_after["activeAt"] == hot_before["activeAt"]
    [b_after] = hot("b")
    assert b_after["state"] == "pending" and _seconds(b_after["activeAt"]) >= started
    [warm_after] = [w for w in _alerts(srv, "RoomWarm") if w["labels"]["room"] == "a"]
    pending_after = _seconds(_api(srv, "/prometheus/api/v1/rules")["groups"][0]["lastEvaluation"]) - _seconds(
        warm_after["activeAt"]
    )
    assert warm_after["state"] == "pending"
    # The pending clock went on from where it was (what it was, plus at most two evaluations), up
    # to the 1 µs a time read back from its text can round by (4.0010001659 before, 4.0009999275
    # after failed a clean run on ClickHouse: the same instant, rounded the other way).
    assert pending_before - 1e-6 <= pending_after <= pending_before + 2.5, (pending_before, pending_after)


def test_receivers_that_hang_hold_up_nothing(server_factory, tmp_path, target, rules_file):
    hook = WebhookReceiver()
    hook.hang.set()  # takes the request and never answers while set
    target.values = {"a": 35.0}
    srv = serve(
        server_factory,
        tmp_path,
        target,
        rules_file,
        "--alert-webhook",
        hook.url,
        "--alertmanager-url",
        f"http://127.0.0.1:{hook.port}",
        "--alert-group-wait",
        "0s",
    )
    try:
        wait_for(lambda: hook.hung >= 2, 30, "both receivers to hang")  # the webhook and the Alertmanager
        for i in range(5):  # meanwhile: OTLP acknowledged, queries answered, rules evaluated
            t0 = time.monotonic()
            span = pb_span(bytes([i + 1]) * 16, bytes([i + 1]) * 8, "GET /", now_base_ns(), now_base_ns() + 1_000_000)
            grpc_export(srv.grpc_target, pb_request(({"service.name": "svc"}, [span])))
            assert _query(srv, 'ALERTS{alertname="RoomHot"}')
            assert time.monotonic() - t0 < 2.0
            time.sleep(0.5)
        first = _api(srv, "/prometheus/api/v1/rules")["groups"][0]["lastEvaluation"]
        wait_for(
            lambda: _api(srv, "/prometheus/api/v1/rules")["groups"][0]["lastEvaluation"] > first,
            10,
            "the next evaluation",
        )
        hook.hang.clear()
        wait_for(lambda: hook.bodies(), 60, "the webhook once it answers")
    finally:
        hook.close()


# An exact rule: a model's p95 time to first token over the last 10 minutes, as the LLM Usage
# panel computes it from the calls (planoscope_panel), not estimated from histogram buckets.
EXACT = """
groups:
  - name: exact
    rules:
      - alert: SlowFirstToken
        expr: planoscope_panel{panel="llm_ttft_ms", quantile="0.95", window="10m"} > 1000
        annotations:
          summary: "p95 TTFT of {{ $labels.llm_model }} is {{ $value }} ms"
"""


@pytest.mark.parametrize("store", STORES)
def test_an_exact_rule_fires_on_a_panels_value(server_factory, tmp_path, target, rules_file, store, request):
    rules_file.write_text(EXACT)
    srv = serve(server_factory, tmp_path, target, rules_file, env=_store_env(store, request))
    base = now_base_ns()
    ttfts = {"openai/gpt-4o": [100 * i for i in range(1, 21)], "openai/gpt-4o-mini": [100, 200, 300]}
    spans = [
        pb_span(
            bytes([n + 1]) * 16, bytes([n + 1]) * 8, f"POST /v1/chat/completions {model}", base + i * 10**9,
            base + i * 10**9 + 4 * 10**9,
            attrs={"llm.model": model, "http.status_code": 200, "llm.time_to_first_token": ttft},
        )
        for n, (model, ttft, i) in enumerate(
            (model, ttft, i) for model, values in ttfts.items() for i, ttft in enumerate(values)
        )
    ]  # fmt: skip
    grpc_export(srv.grpc_target, pb_request(({"service.name": "plano(llm)"}, spans)))
    # p95 of 100..2000 ms, linear between closest ranks: 1905 ms; gpt-4o-mini's (295 ms) stays quiet.
    [slow] = wait_for(lambda: [a for a in _alerts(srv, "SlowFirstToken") if a["state"] == "firing"], 30, "firing")
    assert slow["labels"] == {
        "alertname": "SlowFirstToken",
        "llm_model": "openai/gpt-4o",
        "panel": "llm_ttft_ms",
        "quantile": "0.95",
        "window": "10m",
    }
    assert slow["annotations"]["summary"] == "p95 TTFT of openai/gpt-4o is 1905 ms"
    assert len(_alerts(srv, "SlowFirstToken")) == 1
