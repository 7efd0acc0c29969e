"""When each alert was pending and firing over a time range, for the charts' annotations: read from
the stored ``ALERTS`` series (so they outlive restarts and cover any range, as Grafana's
Prometheus annotations do) and merged with the evaluator's live alerts.

Each ``ALERTS{alertname, alertstate, …}`` series is a run of samples, one per evaluation, ended
by the staleness marker the evaluator writes when the alert leaves that state. A run is one
interval: from its first sample (the range's start, if earlier) to its marker; a run without one
(planoscope stopped, or the rule is gone) ends at its last sample, and a gap of more than the
lookback (5 minutes, as Prometheus's) between two samples splits it. An interval still going on
per the live state has no end, and starts when the live alert became pending or firing (before the
range, or before a restart) if that is earlier; a live alert whose samples are not stored yet is
added.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..promql import Matcher, Queryable
from ..promql.values import METRIC_NAME
from .state import ALERTS, FIRING, PENDING, Alert, labels_key

LOOKBACK_MS = 300_000  # Prometheus's --query.lookback-delta: a sample counts this long without a marker


@dataclass
class Interval:
    """An alert in ``state`` (pending or firing) from ``start_ms`` to ``end_ms`` (None: still)."""

    labels: dict[str, str]  # alertname included
    state: str
    start_ms: int
    end_ms: int | None


def alert_intervals(
    queryable: Queryable, start_ms: int, end_ms: int, live: Iterable[Alert] = (), now_ms: int | None = None
) -> list[Interval]:
    """The pending and firing intervals of every alert within ``[start_ms, end_ms]``, by start.
    ``queryable`` bounds what it loads (``LimitExceeded``, as for any query); ``live``: the
    evaluator's alerts at ``now_ms`` (default: now), going on until then."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out: list[Interval] = []
    # From a lookback earlier: an alert that went on into the range has samples there (its marker may
    # be the only one in the range).
    for labels, ts, vs in queryable.select([Matcher(METRIC_NAME, "=", ALERTS)], max(0, start_ms - LOOKBACK_MS), end_ms):
        state = labels.get("alertstate")
        if state not in (PENDING, FIRING):
            continue
        alert = {k: v for k, v in labels.items() if k not in (METRIC_NAME, "alertstate")}
        runs = _runs(ts.tolist(), vs.tolist())
        out += [Interval(alert, state, max(a, start_ms), b) for a, b in runs if b >= start_ms]
    if now_ms >= start_ms:
        _merge_live(out, [a for a in live if a.state in (PENDING, FIRING)], end_ms)
    return sorted(out, key=lambda i: (i.start_ms, i.labels.get("alertname", ""), sorted(i.labels.items())))


def _runs(ts: list[int], vs: list[float]) -> list[tuple[int, int]]:
    """(first sample, marker or last sample) of each run of samples."""
    runs, first, last = [], None, None
    for t, v in zip(ts, vs):
        if math.isnan(v):  # a staleness marker: the alert left this state at this evaluation
            if first is not None:
                runs.append((first, t))
            first = last = None
            continue
        if first is not None and t - last > LOOKBACK_MS:
            runs.append((first, last))
            first = None
        first = t if first is None else first
        last = t
    if first is not None:
        runs.append((first, last))
    return runs


def _merge_live(out: list[Interval], live: list[Alert], end_ms: int) -> None:
    """The live alerts' intervals are still going on: the stored run that is their latest loses its
    end (and takes the live start if earlier); one with no stored run is added."""
    latest: dict[tuple, Interval] = {}
    for i in out:
        key = (labels_key(i.labels), i.state)
        if key not in latest or i.start_ms > latest[key].start_ms:
            latest[key] = i
    for a in live:
        since = a.fired_at if a.state == FIRING else a.active_at
        if since > end_ms:
            continue
        found = latest.get((labels_key(a.labels), a.state))
        if found is None:
            out.append(Interval(dict(a.labels), a.state, since, None))
        elif found.end_ms is None or found.end_ms >= since:
            found.start_ms, found.end_ms = min(found.start_ms, since), None
        else:  # became pending or firing again since its stored run ended, not stored yet
            out.append(Interval(dict(a.labels), a.state, since, None))
