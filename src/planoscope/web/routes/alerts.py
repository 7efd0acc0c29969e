"""The rules and their alerts: ``/prometheus/api/v1/rules`` and ``/prometheus/api/v1/alerts`` in
Prometheus's JSON (Grafana's alert list reads them), and ``/api/v1/alerts`` for planoscope's UI
(every rule with its state, last evaluation and error; the alerts, resolved ones included; the
last state changes)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ...alerting.evaluator import RuleEvaluator, RuleStatus
from ...alerting.state import INACTIVE, Alert

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
def alerts_view(request: Request) -> dict:
    """For the UI: ``rules`` (each with its group, file, state, health, last evaluation), ``alerts``
    (pending, firing and resolved in the last 15 minutes, with value and since when) and
    ``transitions`` (the last state changes, newest first)."""
    ev = _evaluator(request)
    out_rules, out_alerts, changes = [], [], []
    for g in ev.groups if ev else []:
        for r in g.rules:
            out_rules.append({"group": g.group.name, "file": g.group.file, **_rule(r)})
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
