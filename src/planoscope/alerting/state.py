"""An alerting rule's alerts and Prometheus's state machine over them (rules/alerting.go):
each evaluation's result vector makes an alert per series, pending until it has been active for
``for``, then firing; an alert whose series is gone is resolved (kept ``keep_firing_for`` first if
it was firing) and kept 15 minutes as resolved so receivers learn of it; a pending one just goes.

Each evaluation gives the ``ALERTS{alertname, alertstate, …} 1`` and ``ALERTS_FOR_STATE{…} =
activeAt`` series of the pending and firing alerts. A restart finds its alerts again from the
stored ``ALERTS_FOR_STATE`` (``restore``): an alert still active at the first evaluation gets its
``activeAt`` back, so a firing alert fires again at once with the same ``activeAt`` and a pending
one keeps the time it had already been pending.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..promql.values import METRIC_NAME
from .rules import Rule
from .template import go_float

Labels = tuple[tuple[str, str], ...]
PENDING, FIRING, INACTIVE = "pending", "firing", "inactive"
RESOLVED_RETENTION_MS = 15 * 60_000  # as Prometheus: resolved alerts are re-sent this long
ALERTS, ALERTS_FOR_STATE = "ALERTS", "ALERTS_FOR_STATE"
OUTAGE_TOLERANCE_MS = 3_600_000  # Prometheus's --rules.alert.for-outage-tolerance
HISTORY = 100  # state changes kept per rule, for the UI


@dataclass(frozen=True)
class Transition:
    """An alert changed state at ``t`` (unix ms): ``before`` is ``inactive`` for a new one."""

    t: int
    labels: dict[str, str]
    before: str
    after: str
    value: float


def labels_key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


@dataclass
class Alert:
    """One alert of a rule: ``labels`` (alertname included), times in unix ms (0: never)."""

    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    active_at: int
    state: str = PENDING
    fired_at: int = 0
    resolved_at: int = 0
    last_sent_at: int = 0
    keep_firing_since: int = 0
    valid_until: int = 0

    def needs_sending(self, ts: int, resend_delay_ms: int) -> bool:
        """As Prometheus: firing and not sent for ``resend_delay_ms``, or resolved since last sent."""
        if self.state == PENDING:
            return False
        if not self.last_sent_at or self.resolved_at > self.last_sent_at:
            return True
        return self.last_sent_at + resend_delay_ms < ts


@dataclass
class AlertingRule:
    """A rule's alerts between evaluations, and what its last evaluation did."""

    rule: Rule
    external_labels: dict[str, str] = field(default_factory=dict)
    active: dict[Labels, Alert] = field(default_factory=dict)
    restored: bool = False
    history: deque[Transition] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def evaluate(
        self,
        result: list[tuple[Mapping[str, str], float]],
        ts: int,
        for_state: Mapping[Labels, tuple[int, float]] | None = None,
    ) -> list[tuple[dict[str, str], float]]:
        """Advance the alerts by one evaluation at ``ts`` whose vector is ``result``; returns the
        ``ALERTS`` and ``ALERTS_FOR_STATE`` samples (labels with ``__name__``, value) to store.
        ``for_state``: at the first evaluation after a start, what ``restore`` takes."""
        rule = self.rule
        seen: set[Labels] = set()
        for sample_labels, value in result:
            base = {k: v for k, v in sample_labels.items() if k != METRIC_NAME}
            labels = dict(base)
            for k, t in rule.label_templates.items():
                labels[k] = _expand(t, base, value, self.external_labels)
            labels = {k: v for k, v in labels.items() if v != ""}
            labels["alertname"] = rule.name
            annotations = {
                k: _expand(t, base, value, self.external_labels) for k, t in rule.annotation_templates.items()
            }
            key = labels_key(labels)
            if key in seen:
                raise ValueError("vector contains metrics with the same labelset after applying alert labels")
            seen.add(key)
            alert = self.active.get(key)
            if alert is not None and alert.state != INACTIVE:
                alert.value, alert.annotations, alert.labels = value, annotations, labels
                continue
            self.active[key] = Alert(labels, annotations, value, active_at=ts)
            self.history.append(Transition(ts, labels, INACTIVE, PENDING, value))
        if for_state is not None and not self.restored:
            self.restore(for_state, ts)
        out: list[tuple[dict[str, str], float]] = []
        for key, alert in list(self.active.items()):
            if key not in seen:
                keep = False
                if alert.state == FIRING and rule.keep_firing_for_ms > 0:
                    alert.keep_firing_since = alert.keep_firing_since or ts
                    keep = ts - alert.keep_firing_since < rule.keep_firing_for_ms
                if alert.state == PENDING or (alert.resolved_at and ts - alert.resolved_at > RESOLVED_RETENTION_MS):
                    del self.active[key]
                if alert.state != INACTIVE and not keep:
                    self.history.append(Transition(ts, alert.labels, alert.state, INACTIVE, alert.value))
                    alert.state, alert.resolved_at = INACTIVE, ts
                if not keep:
                    continue
            else:
                alert.keep_firing_since = 0
            if alert.state == PENDING and ts - alert.active_at >= rule.for_ms:
                alert.state, alert.fired_at = FIRING, ts
                self.history.append(Transition(ts, alert.labels, PENDING, FIRING, alert.value))
            if alert.state != INACTIVE:
                out.append(({**alert.labels, METRIC_NAME: ALERTS, "alertstate": alert.state}, 1.0))
                out.append(({**alert.labels, METRIC_NAME: ALERTS_FOR_STATE}, alert.active_at / 1000))
        return out

    def restore(self, for_state: Mapping[Labels, tuple[int, float]], ts: int) -> None:
        """After a restart, at the first evaluation: each active alert whose ``ALERTS_FOR_STATE``
        was stored (``labels → (time of its last sample ms, activeAt s)``, within the last hour)
        gets its ``activeAt`` back. Firing then (``for`` had passed when planoscope stopped): the same
        ``activeAt``, so it fires at once. Pending: ``activeAt`` moved on by the time planoscope was
        down, so the time already pending counts and the time nobody evaluated does not (Prometheus
        does this for rules whose ``for`` is at least its 10-minute grace period; here for all)."""
        self.restored = True
        for key, alert in self.active.items():
            stored = for_state.get(key)
            if stored is None or alert.state == INACTIVE:
                continue
            down_at, active_s = stored
            if not math.isfinite(active_s) or ts - down_at > OUTAGE_TOLERANCE_MS:
                continue
            active_at = round(active_s * 1000)
            if down_at - active_at < self.rule.for_ms:  # was pending: the clock paused while down
                active_at += ts - down_at
            alert.active_at = min(active_at, ts)

    def state(self) -> str:
        """The rule's state, as Prometheus's API gives it: firing if an alert fires, else pending if
        one is pending, else inactive."""
        states = {a.state for a in self.active.values()}
        return FIRING if FIRING in states else PENDING if PENDING in states else INACTIVE


def _expand(template, labels: Mapping[str, str], value: float, external: Mapping[str, str]) -> str:
    try:
        return template.expand(labels, value, external)
    except (ValueError, TypeError) as e:  # as Prometheus: the error in place of the text
        return f"<error expanding template: {e}>"


def format_value(v: float) -> str:
    """An alert's value as Prometheus's API writes it (Go's %e-or-%f shortest)."""
    return go_float(v)
