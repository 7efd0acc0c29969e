"""The rules and their alerts: ``/prometheus/api/v1/rules`` and ``/prometheus/api/v1/alerts`` in
Prometheus's JSON (Grafana's alert list reads them), and for planoscope's UI ``/api/v1/alerts``
(every rule with its state, last evaluation and error; the alerts, resolved ones included; the
last state changes; the panels each concerns) and ``/api/v1/alerts/annotations`` (when each alert
was pending and firing over a range, for the charts)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ...alerting.evaluator import RuleEvaluator, RuleStatus
from ...alerting.intervals import alert_intervals
from ...alerting.panels import concerned_panels
from ...alerting.state import INACTIVE, Alert
from ...promql import LimitExceeded
from ..deps import DashboardsDep, End, Start, promql_series, time_range

router = APIRouter(tags=["alerts"])


def _time(unix_s: float) -> str:
    """RFC 3339 as Prometheus's API writes times (Go's time.Time: nanoseconds, UTC); 0: Go's zero time."""
    if not unix_s:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _value(v: float) -> str:
    """Go's strconv.FormatFloat(v, 'e', -1, 64), as Prometheus's API writes an alert's value."""
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return np.format_float_scientific(v, unique=True, trim="-")


def _alert(a: Alert) -> dict:
    return {
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state,
        "activeAt": _time(a.active_at / 1000),
        "value": _value(a.value),
    }


def _rule(r: RuleStatus) -> dict:
    rule = r.rule
    out = {"name": rule.name, "query": rule.query, "labels": rule.labels}
    if r.alerting is not None:
        active = [a for a in r.alerting.active.values() if a.state != INACTIVE]
        out = {
            "state": r.alerting.state(),
            **out,
            "duration": rule.for_ms / 1000,
            "keepFiringFor": rule.keep_firing_for_ms / 1000,
            "annotations": rule.annotations,
            "alerts": [_alert(a) for a in active],
        }
    return {
        **out,
        "health": r.health,
        "lastError": r.last_error,
        "evaluationTime": r.evaluation_s,
        "lastEvaluation": _time(r.last_evaluation),
        "type": "alerting" if r.alerting is not None else "recording",
    }


def _evaluator(request: Request) -> RuleEvaluator | None:
    return request.app.state.rules


@router.get("/prometheus/api/v1/rules")
def rules(request: Request, type: str | None = None) -> JSONResponse:
    """The rule groups and their rules as Prometheus's ``/api/v1/rules`` (``type``: alert or record)."""
    if type not in (None, "", "alert", "record"):
        return JSONResponse(
            {"status": "error", "errorType": "bad_data", "error": f'unsupported type "{type}"'}, status_code=400
        )
    ev = _evaluator(request)
    groups = []
    for g in ev.groups if ev else []:
        chosen = [_rule(r) for r in g.rules if not type or (type == "alert") == (r.alerting is not None)]
        groups.append(
            {
                "name": g.group.name,
                "file": g.group.file,
                "rules": chosen,
                "interval": g.interval_s,
                "limit": g.group.limit,
                "evaluationTime": g.evaluation_s,
                "lastEvaluation": _time(g.last_evaluation),
            }
        )
    return JSONResponse({"status": "success", "data": {"groups": groups}})


@router.get("/prometheus/api/v1/alerts")
def alerts(request: Request) -> JSONResponse:
    """The pending and firing alerts, as Prometheus's ``/api/v1/alerts``."""
    ev = _evaluator(request)
    active = [_alert(a) for _, a in (ev.alerts() if ev else []) if a.state != INACTIVE]
    return JSONResponse({"status": "success", "data": {"alerts": active}})


@router.get("/api/v1/alerts")
def alerts_view(request: Request, dashboards: DashboardsDep) -> dict:
    """For the UI: ``rules`` (each with its group, file, state, health, last evaluation and the
    ``panels`` it concerns), ``alerts`` (pending, firing and resolved in the last 15 minutes, with
    value, since when and ``panels``) and ``transitions`` (the last state changes, newest first)."""
    ev = _evaluator(request)
    out_rules, out_alerts, changes = [], [], []
    for g in ev.groups if ev else []:
        for r in g.rules:
            panels = concerned_panels(r.rule, dashboards)
            out_rules.append({"group": g.group.name, "file": g.group.file, **_rule(r), "panels": panels})
            if r.alerting is None:
                continue
            for a in r.alerting.active.values():
                out_alerts.append(
                    {
                        "rule": r.rule.name,
                        **_alert(a),
                        "value": a.value,
                        "firedAt": _time(a.fired_at / 1000),
                        "resolvedAt": _time(a.resolved_at / 1000),
                        "panels": concerned_panels(r.rule, dashboards, a.labels, a.annotations),
                    }
                )
            changes += [
                {
                    "rule": r.rule.name,
                    "time": _time(t.t / 1000),
                    "labels": t.labels,
                    "from": t.before,
                    "to": t.after,
                    "value": t.value,
                }
                for t in r.alerting.history
            ]
    changes.sort(key=lambda c: c["time"], reverse=True)
    return {"rules": out_rules, "alerts": out_alerts, "transitions": changes[:200]}


@router.get("/api/v1/alerts/annotations")
def annotations(request: Request, dashboards: DashboardsDep, start: Start = None, end: End = None) -> JSONResponse:
    """When each alert was ``pending`` and ``firing`` within the range, for the charts: ``rule``,
    ``labels``, ``state``, ``start`` and ``end`` (unix s; ``end`` null while it goes on; ``start``
    no earlier than the range's, except for one going on: since when) and the ``panels`` it
    concerns. From the stored ``ALERTS`` series and the live alerts; a range whose series are too
    many for the PromQL limits is refused (422)."""
    start, end, _ = time_range(start, end)
    ev = _evaluator(request)
    rules: dict[str, list] = {}
    for g in ev.groups if ev else []:
        for r in g.rules:
            if r.alerting is not None:
                rules.setdefault(r.rule.name, []).append(r.rule)
    live = [a for _, a in ev.alerts()] if ev else []
    try:
        found = alert_intervals(promql_series(request), round(start * 1000), round(end * 1000), live)
    except LimitExceeded as e:
        return JSONResponse(
            {"detail": f"the alerts of this range are too many to read ({e}): choose a shorter range"},
            status_code=422,
        )
    out = []
    for i in found:
        name = i.labels.get("alertname", "")
        panels = {p for rule in rules.get(name, ()) for p in concerned_panels(rule, dashboards, i.labels)}
        out.append(
            {
                "rule": name,
                "labels": i.labels,
                "state": i.state,
                "start": i.start_ms / 1000,
                "end": None if i.end_ms is None else i.end_ms / 1000,
                "panels": [p for p in dashboards.panels if p in panels],
            }
        )
    return JSONResponse({"start": start, "end": end, "annotations": out})
