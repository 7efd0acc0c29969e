"""Prometheus's alert state machine, evaluation by evaluation: pending for ``for``, firing, resolved
(after ``keep_firing_for``), kept 15 minutes as resolved; the ``ALERTS``/``ALERTS_FOR_STATE``
samples each evaluation makes; what is due to be sent; the restore from ``ALERTS_FOR_STATE``."""

from __future__ import annotations

import textwrap

from planoscope.alerting.rules import load_file
from planoscope.alerting.state import FIRING, INACTIVE, PENDING, AlertingRule, labels_key

S = 1000


def _rule(tmp_path, for_="30s", keep="0s", labels="{severity: page}"):
    path = tmp_path / "r.yml"
    path.write_text(
        textwrap.dedent(
            f"""
            groups:
              - name: g
                rules:
                  - alert: Hot
                    expr: temp > 1
                    for: {for_}
                    keep_firing_for: {keep}
                    labels: {labels}
                    annotations: {{summary: "{{{{ $labels.room }}}} is {{{{ $value }}}}"}}
            """
        )
    )
    return AlertingRule(load_file(str(path))[0].rules[0])


def _states(rule):
    return {a.labels["room"]: a.state for a in rule.active.values()}


def test_pending_then_firing_then_resolved_and_forgotten(tmp_path):
    rule = _rule(tmp_path)
    hot = [({"__name__": "temp", "room": "a"}, 5.0)]
    out = rule.evaluate(hot, 0)
    assert _states(rule) == {"a": PENDING}
    labels = {"alertname": "Hot", "room": "a", "severity": "page"}
    assert out == [
        ({**labels, "__name__": "ALERTS", "alertstate": "pending"}, 1.0),
        ({**labels, "__name__": "ALERTS_FOR_STATE"}, 0.0),
    ]
    rule.evaluate(hot, 29 * S)
    assert _states(rule) == {"a": PENDING}
    out = rule.evaluate(hot, 30 * S)
    assert _states(rule) == {"a": FIRING} and out[0][0]["alertstate"] == "firing"
    [alert] = rule.active.values()
    assert alert.annotations == {"summary": "a is 5"} and alert.active_at == 0 and alert.fired_at == 30 * S
    assert rule.evaluate([], 45 * S) == []
    assert _states(rule) == {"a": INACTIVE} and alert.resolved_at == 45 * S
    rule.evaluate([], 45 * S + 15 * 60 * S)
    assert rule.active  # still told as resolved for 15 minutes
    rule.evaluate([], 46 * S + 15 * 60 * S)
    assert not rule.active
    assert [(t.before, t.after) for t in rule.history] == [(INACTIVE, PENDING), (PENDING, FIRING), (FIRING, INACTIVE)]


def test_a_pending_alert_that_goes_is_dropped_and_starts_over(tmp_path):
    rule = _rule(tmp_path)
    hot = [({"room": "a"}, 5.0)]
    rule.evaluate(hot, 0)
    rule.evaluate([], 10 * S)
    assert not rule.active
    rule.evaluate(hot, 20 * S)
    [alert] = rule.active.values()
    assert alert.active_at == 20 * S and alert.state == PENDING


def test_keep_firing_for(tmp_path):
    rule = _rule(tmp_path, for_="0s", keep="1m")
    hot = [({"room": "a"}, 5.0)]
    rule.evaluate(hot, 0)
    assert _states(rule) == {"a": FIRING}
    out = rule.evaluate([], 30 * S)
    assert _states(rule) == {"a": FIRING} and out[0][0]["alertstate"] == "firing"
    rule.evaluate(hot, 40 * S)  # back: the keep_firing_for clock starts again when it goes
    rule.evaluate([], 50 * S)
    rule.evaluate([], 109 * S)
    assert _states(rule) == {"a": FIRING}
    rule.evaluate([], 110 * S)
    assert _states(rule) == {"a": INACTIVE}


def test_what_is_due_for_sending(tmp_path):
    rule = _rule(tmp_path, for_="0s")
    t0 = 1_700_000_000 * S
    rule.evaluate([({"room": "a"}, 5.0)], t0)
    [alert] = rule.active.values()
    assert alert.needs_sending(t0, 60 * S)  # never sent
    alert.last_sent_at = t0
    assert not alert.needs_sending(t0 + 60 * S, 60 * S) and alert.needs_sending(t0 + 60 * S + 1, 60 * S)
    alert.last_sent_at = t0 + 61 * S
    rule.evaluate([], t0 + 70 * S)
    assert alert.needs_sending(t0 + 70 * S, 60 * S)  # resolved since last sent: at once


def test_restore_keeps_a_firing_alerts_active_at_and_a_pending_ones_clock(tmp_path):
    rule = _rule(tmp_path, for_="10m")
    firing = {"alertname": "Hot", "room": "a", "severity": "page"}
    pending = {"alertname": "Hot", "room": "b", "severity": "page"}
    gone = {"alertname": "Hot", "room": "c", "severity": "page"}
    down_at, now = 1_000_000 * S, 1_000_000 * S + 120 * S  # stopped 2 minutes
    stored = {
        labels_key(firing): (down_at, (down_at - 15 * 60 * S) / 1000),  # active 15 min when stopped
        labels_key(pending): (down_at, (down_at - 4 * 60 * S) / 1000),  # pending 4 min of 10
        labels_key(gone): (down_at, (down_at - 60 * 60 * S) / 1000),
    }
    out = rule.evaluate([({"room": "a"}, 5.0), ({"room": "b"}, 5.0)], now, stored)
    alerts = {a.labels["room"]: a for a in rule.active.values()}
    assert alerts["a"].state == FIRING and alerts["a"].active_at == down_at - 15 * 60 * S
    assert alerts["b"].state == PENDING and now - alerts["b"].active_at == 4 * 60 * S
    assert "c" not in alerts  # no longer active: nothing to restore
    assert {ls["room"]: ls["alertstate"] for ls, _ in out if ls["__name__"] == "ALERTS"} == {"a": FIRING, "b": PENDING}
    rule.evaluate([({"room": "a"}, 5.0), ({"room": "b"}, 5.0)], now + 6 * 60 * S)
    assert alerts["b"].state == FIRING  # 4 + 6 minutes pending


def test_restore_ignores_state_older_than_the_outage_tolerance(tmp_path):
    rule = _rule(tmp_path, for_="10m")
    labels = {"alertname": "Hot", "room": "a", "severity": "page"}
    now = 10_000_000 * S
    rule.evaluate([({"room": "a"}, 5.0)], now, {labels_key(labels): (now - 61 * 60 * S, 0.0)})
    [alert] = rule.active.values()
    assert alert.active_at == now and alert.state == PENDING


def test_the_stored_for_state_of_an_alert_that_had_resolved_is_not_restored():
    from planoscope.alerting.evaluator import RuleEvaluator
    from planoscope.promql import STALE_NAN, MemoryStorage

    stored = MemoryStorage()
    firing = {"__name__": "ALERTS_FOR_STATE", "alertname": "Hot", "room": "a"}
    resolved = {**firing, "room": "b"}
    stored.add(firing, [1000 * S, 1015 * S], [900.0, 900.0])
    stored.add(resolved, [1000 * S, 1015 * S], [800.0, STALE_NAN])  # resolved at 1015 s
    found = RuleEvaluator([], None, None)._for_state("Hot", stored, 1100 * S)
    assert found == {labels_key({"alertname": "Hot", "room": "a"}): (1015 * S, 900.0)}
