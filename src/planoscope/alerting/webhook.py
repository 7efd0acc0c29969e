"""Alerts to webhooks without an Alertmanager: grouped and sent as Alertmanager's webhook receiver
sends them, so whatever reads Alertmanager's webhooks reads these.

Each webhook takes the alerts the evaluator sends (as an Alertmanager would) and groups them by
the values of ``group_by`` labels. A new group is sent ``group_wait`` after its first alert (so
that alerts firing together arrive together); after that, a group is looked at every
``group_interval`` and sent when it changed (an alert fired or resolved) or when ``repeat_interval``
passed since it was last sent. A resolved alert is sent once, as resolved, and then forgotten.
A delivery that fails (refused, an HTTP error, a timeout) is tried again with backoff (1 s to 30 s)
with the group as it is then: nothing still current is lost, nothing stale is sent.

The body is Alertmanager's (version "4"): ``receiver``, ``status`` (firing if any alert of the
group fires), ``alerts`` (``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``,
``generatorURL``, ``fingerprint``), ``groupLabels``, ``commonLabels``, ``commonAnnotations``,
``externalURL``, ``version``, ``groupKey``, ``truncatedAlerts``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from .notifier import Backoff, Receiver, alert_key

log = logging.getLogger("planoscope.alerting")

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: Alertmanager's endsAt of a firing alert
RECEIVER = "planoscope"
_FNV_OFFSET, _FNV_PRIME = 14695981039346656037, 1099511628211


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (FNV-1a 64 over sorted names and values)."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for b in part.encode() + b"\xff":
                h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _parse_time(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass
class _Group:
    labels: dict[str, str]
    alerts: dict[tuple, dict] = field(default_factory=dict)
    due: float = 0.0  # monotonic time of the next look
    sent: frozenset = frozenset()  # (fingerprint, status) of what the receiver last got
    sent_at: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)


class Webhook(Receiver):
    """One webhook URL, with Alertmanager's grouping (durations in seconds)."""

    kind = "webhook"

    def __init__(
        self,
        url: str,
        group_by: list[str],
        group_wait: float = 30.0,
        group_interval: float = 300.0,
        repeat_interval: float = 14_400.0,
        external_url: str = "",
        timeout: float = 10.0,
    ):
        super().__init__(url, url, timeout)
        self.group_by = list(group_by)
        self.group_wait, self.group_interval, self.repeat_interval = group_wait, group_interval, repeat_interval
        self.external_url = external_url
        self.groups: dict[tuple, _Group] = {}

    def send(self, alerts: list[dict]) -> None:
        """Take ``alerts`` (Alertmanager's postable alerts) into their groups; never waits."""
        now, wall = time.monotonic(), time.time()
        for a in alerts:
            labels = a["labels"]
            key = tuple(labels.get(n, "") for n in self.group_by)
            group = self.groups.get(key)
            if _parse_time(a["endsAt"]) <= wall and (group is None or alert_key(a) not in group.alerts):
                continue  # resolved, and the receiver was told already (or never knew it fired)
            if group is None:
                group_labels = {n: labels[n] for n in self.group_by if labels.get(n)}
                group = self.groups[key] = _Group(group_labels, due=now + self.group_wait)
            group.alerts[alert_key(a)] = a
        self._wake.set()

    def group_key(self, group: _Group) -> str:
        """Alertmanager's: the route (the root, ``{}``) and the group's labels."""
        return "{}:{" + ",".join(f"{k}={_quote(v)}" for k, v in sorted(group.labels.items())) + "}"

    def payload(self, group: _Group, now: float | None = None) -> dict:
        """The webhook body for ``group`` as it is at unix time ``now``."""
        now = time.time() if now is None else now
        alerts = []
        for a in sorted(group.alerts.values(), key=lambda a: sorted(a["labels"].items())):
            resolved = _parse_time(a["endsAt"]) <= now
            alerts.append(
                {
                    "status": "resolved" if resolved else "firing",
                    "labels": a["labels"],
                    "annotations": a.get("annotations", {}),
                    "startsAt": a["startsAt"],
                    "endsAt": a["endsAt"] if resolved else ZERO_TIME,
                    "generatorURL": a.get("generatorURL", ""),
                    "fingerprint": fingerprint(a["labels"]),
                }
            )
        common = lambda field: dict(  # noqa: E731
            set.intersection(*(set(x[field].items()) for x in alerts)) if alerts else set()
        )
        return {
            "receiver": RECEIVER,
            "status": "firing" if any(x["status"] == "firing" for x in alerts) else "resolved",
            "alerts": alerts,
            "groupLabels": dict(sorted(group.labels.items())),
            "commonLabels": dict(sorted(common("labels").items())),
            "commonAnnotations": dict(sorted(common("annotations").items())),
            "externalURL": self.external_url,
            "version": "4",
            "groupKey": self.group_key(group),
            "truncatedAlerts": 0,
        }

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            for key, group in list(self.groups.items()):
                if group.due <= now:
                    await self._flush(key, group)
            due = min((g.due for g in self.groups.values()), default=None)
            self._wake.clear()
            wait = None if due is None else max(0.0, due - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def _flush(self, key: tuple, group: _Group) -> None:
        body = self.payload(group)
        state = frozenset((x["fingerprint"], x["status"]) for x in body["alerts"])
        now = time.monotonic()
        firing = body["status"] == "firing"
        if state == group.sent and not (firing and now - group.sent_at >= self.repeat_interval):
            group.due = now + self.group_interval
            self._forget_resolved(key, group, body)
            return
        try:
            r = await self._client.post(self.endpoint, json=body)
            if r.status_code // 100 != 2:
                raise httpx.HTTPStatusError(f"HTTP {r.status_code}", request=r.request, response=r)
        except httpx.HTTPError as e:
            self.failed += 1
            message = str(e) or type(e).__name__
            if message != self.last_error:
                log.warning("cannot notify webhook %s: %s", self.url, message)
            self.last_error = message
            group.due = time.monotonic() + group.backoff.failed()
            return
        if self.last_error:
            log.info("webhook %s takes notifications again", self.url)
        self.last_error = ""
        self.sent += 1
        group.backoff.reset()
        group.sent, group.sent_at = state, time.monotonic()
        group.due = group.sent_at + self.group_interval
        self._forget_resolved(key, group, body)

    def _forget_resolved(self, key: tuple, group: _Group, body: dict) -> None:
        """Resolved alerts the receiver was told of leave the group; an empty group goes."""
        told = {fp for fp, status in group.sent if status == "resolved"}
        for x in body["alerts"]:
            if x["status"] == "resolved" and x["fingerprint"] in told:
                k = alert_key(x)
                if group.alerts.get(k, {}).get("endsAt") == x["endsAt"]:
                    del group.alerts[k]
        if not group.alerts:
            del self.groups[key]
