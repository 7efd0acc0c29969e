"""The rule evaluator: each group of the rule files evaluated every ``interval`` through the PromQL
engine over the stored samples, in a worker thread (an evaluation is CPU and store work: it never
holds the event loop, and ingest's acknowledgements do not wait on it).

What a group's evaluation makes is written as samples through the writer, as scraped samples are,
with target ``RULES_TARGET`` (``StoredSamples`` reads their labels whole): a recording rule's
series, and an alerting rule's ``ALERTS`` and ``ALERTS_FOR_STATE``; a series a rule made at the
previous evaluation and not at this one gets a staleness marker, as Prometheus writes. So a query
sees them as it would on Prometheus, Grafana included, and the next start restores its alerts
from ``ALERTS_FOR_STATE`` (``state.py``). Within one evaluation a rule sees what the rules before
it in the group made (``Overlay``). What a group reads from the store is kept from one evaluation
to the next and topped up (``sliding.py``).

The alerts that need sending (firing, re-sent every ``resend_delay_s``; resolved, for 15 minutes) go
to every sender (``notifier.py``) as Prometheus hands them to its notifier, without waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..ingest.writer import SpanWriter
from ..promql import STALE_NAN, Engine, Limits, Matcher, MemoryStorage, PromQLError
from ..promql.panels import PanelSeries
from ..promql.samples import RULES_TARGET, StoredSamples
from ..promql.values import METRIC_NAME, Scalar, Vector
from ..scrape.scraper import SCHEMA
from ..store import SpanStore, StoreError
from .rules import Group, Rule
from .sliding import SlidingSamples
from .state import ALERTS_FOR_STATE, FIRING, OUTAGE_TOLERANCE_MS, Alert, AlertingRule, Labels, labels_key

log = logging.getLogger("planoscope.alerting")

RESEND_DELAY_S = 60.0  # Prometheus's --rules.alert.resend-delay


@dataclass
class RuleStatus:
    """A rule and what its last evaluation did, for the API."""

    rule: Rule
    alerting: AlertingRule | None = None
    health: str = "unknown"  # ok, err, unknown (not evaluated yet)
    last_error: str = ""
    last_evaluation: float = 0.0  # unix s
    evaluation_s: float = 0.0
    last_series: set[Labels] = field(default_factory=set)  # what it wrote last time, for stale markers


@dataclass
class GroupStatus:
    group: Group
    interval_s: float
    rules: list[RuleStatus]
    last_evaluation: float = 0.0
    evaluation_s: float = 0.0
    evaluations: int = 0
    failures: int = 0  # rule evaluations that failed
    cpu_s: float = 0.0  # CPU its evaluations took on the rules' thread, in all
    samples: SlidingSamples = field(default_factory=SlidingSamples)  # what its rules read, kept between evaluations


class Overlay:
    """A Queryable for one evaluation of a group: the stored samples and those the evaluation made
    so far, as one."""

    def __init__(self, base, extra: MemoryStorage):
        self.base, self.extra = base, extra

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int):
        merged: dict[Labels, tuple[dict, np.ndarray, np.ndarray]] = {}
        for labels, ts, vs in [
            *self.base.select(matchers, start_ms, end_ms),
            *self.extra.select(matchers, start_ms, end_ms),
        ]:
            key = labels_key(labels)
            if key in merged:
                _, t0, v0 = merged[key]
                ts, vs = np.concatenate([t0, ts]), np.concatenate([v0, vs])
                order = np.argsort(ts, kind="stable")
                ts, vs = ts[order], vs[order]
                last = np.ones(len(ts), bool)
                last[:-1] = ts[1:] != ts[:-1]
                ts, vs = ts[last], vs[last]
            merged[key] = (dict(labels), ts, vs)
        return list(merged.values())


class RuleEvaluator:
    """Async context manager evaluating ``groups`` (one task each) every group's interval or
    ``interval_s``; ``senders`` get the alerts to send. ``instances`` gives the scrape targets'
    ``instance`` labels (``Scraper.instances``)."""

    def __init__(
        self,
        groups: Sequence[Group],
        store: SpanStore,
        writer: SpanWriter,
        interval_s: float = 15.0,
        senders: Sequence = (),
        instances: Callable[[], Mapping[str, str]] = dict,
        limits: Limits | None = None,
        external_url: str = "",
        resend_delay_s: float = RESEND_DELAY_S,
    ):
        self.resend_delay_ms = int(resend_delay_s * 1000)
        self.store, self.writer, self.senders = store, writer, list(senders)
        self.instances, self.limits, self.external_url = instances, limits or Limits(), external_url
        self.groups = [
            GroupStatus(
                g,
                (g.interval_ms / 1000) if g.interval_ms else interval_s,
                [RuleStatus(r, AlertingRule(r) if r.kind == "alert" else None) for r in g.rules],
            )
            for g in groups
        ]
        self.engine = Engine(limits=self.limits)
        self._tasks: list[asyncio.Task] = []
        self._pool: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> RuleEvaluator:
        # Threads of their own: evaluations never take the ones the API's queries run on, and a stop
        # waits for the one in flight before the store closes under it.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rules")
        self._tasks = [asyncio.create_task(self._loop(g), name=f"rules {g.group.name}") for g in self.groups]
        return self

    async def __aexit__(self, *exc) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._pool.shutdown, wait=True)

    def alerts(self) -> list[tuple[RuleStatus, Alert]]:
        """Every pending, firing (and recently resolved) alert with its rule."""
        return [(r, a) for g in self.groups for r in g.rules if r.alerting for a in list(r.alerting.active.values())]

    async def _loop(self, g: GroupStatus) -> None:
        next_at = time.monotonic()
        while True:
            try:
                await self.evaluate(g)
            except Exception:  # never the end of alerting: the next evaluation tries again
                log.exception("evaluation of rule group %s failed", g.group.name)
            next_at += g.interval_s
            now = time.monotonic()
            if next_at < now:  # an evaluation slower than the interval: skip the missed ones, as Prometheus
                next_at = now + g.interval_s - (now - next_at) % g.interval_s
            await asyncio.sleep(next_at - now)

    async def evaluate(self, g: GroupStatus, ts: int | None = None) -> None:
        """One evaluation of group ``g`` at ``ts`` (unix ms; now): rules in a thread, then their
        samples written and the alerts to send handed to the senders."""
        ts = ts if ts is not None else int(time.time() * 1000)
        started = time.perf_counter()
        samples, to_send = await asyncio.wrap_future(self._pool.submit(self._evaluate, g, ts))
        if samples:
            try:
                await self.writer.write_samples(_table(samples, ts))
            except Exception as e:  # the store's trouble: the alerts still go out
                log.warning("could not store %d samples of rule group %s: %s", len(samples), g.group.name, e)
        g.last_evaluation, g.evaluation_s = ts / 1000, time.perf_counter() - started
        g.evaluations += 1
        if to_send:
            for sender in self.senders:
                sender.send(to_send)

    def _evaluate(self, g: GroupStatus, ts: int) -> tuple[list[tuple[dict, float]], list[dict]]:
        cpu = time.thread_time()
        try:
            return self._evaluate_rules(g, ts)
        finally:
            g.cpu_s += time.thread_time() - cpu

    def _evaluate_rules(self, g: GroupStatus, ts: int) -> tuple[list[tuple[dict, float]], list[dict]]:
        made = MemoryStorage()
        g.samples.evaluating(StoredSamples(self.store, self.instances(), self.limits))
        queryable = Overlay(PanelSeries(g.samples, self.store, self.limits.max_series), made)
        samples: list[tuple[dict, float]] = []
        to_send: list[dict] = []
        for r in g.rules:
            t0 = time.perf_counter()
            try:
                out = self._rule(r, queryable, ts)
            except (PromQLError, StoreError, ValueError) as e:
                r.health, r.last_error = "err", " ".join(str(e).split())
                g.failures += 1
                out = []
                log.warning("rule %s of group %s: %s", r.rule.name, g.group.name, r.last_error)
            else:
                r.health, r.last_error = "ok", ""
            r.last_evaluation, r.evaluation_s = ts / 1000, time.perf_counter() - t0
            if r.health == "ok":  # a failed evaluation ends no series: as Prometheus, it writes nothing
                keys = {labels_key(ls) for ls, _ in out}
                out += [(dict(k), STALE_NAN) for k in r.last_series - keys]
                r.last_series = keys
            for labels, v in out:
                made.add(labels, [ts], [v])
            samples += out
            if r.alerting:
                _log_changes(r.alerting, ts)
                to_send += self._to_send(g, r.alerting, ts)
        return samples, to_send

    def _rule(self, r: RuleStatus, queryable, ts: int) -> list[tuple[dict, float]]:
        value = self.engine.instant_query(queryable, r.rule.expr, ts)
        if isinstance(value, Scalar):
            vector = [({}, value.v)]
        elif isinstance(value, Vector):
            vector = [(dict(s.labels), s.v) for s in value.samples]
        else:
            raise ValueError(f"the expression gives a {type(value).__name__.lower()}, not an instant vector")
        limit = next(g.group.limit for g in self.groups if r in g.rules)
        if limit and len(vector) > limit:
            raise ValueError(f"exceeded limit of {limit} with {len(vector)} series")
        if r.alerting is None:
            out = [({**labels, **r.rule.labels, METRIC_NAME: r.rule.name}, v) for labels, v in vector]
            if len({labels_key(ls) for ls, _ in out}) < len(out):
                raise ValueError("vector contains metrics with the same labelset after applying rule labels")
            return out
        for_state = None if r.alerting.restored else self._for_state(r.rule.name, queryable.base, ts)
        return r.alerting.evaluate(vector, ts, for_state)

    def _for_state(self, alertname: str, queryable: StoredSamples, ts: int) -> dict[Labels, tuple[int, float]]:
        """The stored ``ALERTS_FOR_STATE`` of an alert still active when planoscope stopped: labels →
        (its last sample's time, activeAt s). One whose last sample is a staleness marker had
        resolved (or gone) before: it is not restored, as in Prometheus."""
        matchers = [Matcher(METRIC_NAME, "=", ALERTS_FOR_STATE), Matcher("alertname", "=", alertname)]
        found = {}
        for labels, tss, vs in queryable.select(matchers, ts - OUTAGE_TOLERANCE_MS, ts - 1):
            if len(vs) and not np.isnan(vs[-1]):
                found[labels_key({k: v for k, v in labels.items() if k != METRIC_NAME})] = (int(tss[-1]), float(vs[-1]))
        return found

    def _to_send(self, g: GroupStatus, rule: AlertingRule, ts: int) -> list[dict]:
        """As Prometheus's ``sendAlerts``: the alerts due, ``endsAt`` their resolution or, while
        firing, 4 resend intervals ahead (a planoscope that stops lets them expire)."""
        delta = max(self.resend_delay_ms, int(g.interval_s * 1000))
        out = []
        for a in rule.active.values():
            if not a.needs_sending(ts, self.resend_delay_ms):
                continue
            a.last_sent_at, a.valid_until = ts, ts + 4 * delta
            out.append(
                {
                    "labels": dict(a.labels),
                    "annotations": dict(a.annotations),
                    "startsAt": iso(a.active_at),
                    "endsAt": iso(a.resolved_at or a.valid_until),
                    "generatorURL": self.generator_url(rule.rule),
                }
            )
        return out

    # --- prometheus-client Collector, as Prometheus's own prometheus_rule_* and notifications ---
    def collect(self):
        runs = CounterMetricFamily(
            "planoscope_rule_group_iterations", "Evaluations of a rule group", labels=["rule_group"]
        )
        failed = CounterMetricFamily(
            "planoscope_rule_evaluation_failures", "Rule evaluations that failed", labels=["rule_group"]
        )
        took = GaugeMetricFamily(
            "planoscope_rule_group_last_duration_seconds",
            "Duration of a group's last evaluation",
            labels=["rule_group"],
        )
        cpu = CounterMetricFamily(
            "planoscope_rule_group_cpu_seconds",
            "CPU a group's evaluations took on the rules' thread (its store reads' own threads aside)",
            labels=["rule_group"],
        )
        for g in self.groups:
            key = [f"{g.group.file};{g.group.name}"]
            runs.add_metric(key, g.evaluations)
            cpu.add_metric(key, g.cpu_s)
            failed.add_metric(key, g.failures)
            took.add_metric(key, g.evaluation_s)
        sent = CounterMetricFamily(
            "planoscope_notifications_sent", "Alerts or notifications delivered", labels=["receiver"]
        )
        errors = CounterMetricFamily("planoscope_notifications_failed", "Deliveries that failed", labels=["receiver"])
        for sender in self.senders:
            sent.add_metric([sender.url], sender.sent)
            errors.add_metric([sender.url], sender.failed)
        return [runs, failed, took, cpu, *((sent, errors) if self.senders else ())]

    def generator_url(self, rule: Rule) -> str:
        from urllib.parse import quote

        base = self.external_url.rstrip("/")
        return f"{base}/prometheus/graph?g0.expr={quote(rule.query, safe='')}&g0.tab=1" if base else ""


def _log_changes(rule: AlertingRule, ts: int) -> None:
    """An alert that starts firing or stops, in the log (a demo's console shows them)."""
    for t in rule.history:
        if t.t == ts and FIRING in (t.before, t.after):
            labels = ", ".join(f'{k}="{v}"' for k, v in sorted(t.labels.items()) if k != "alertname")
            alert = rule.active.get(labels_key(t.labels))
            summary = alert.annotations.get("summary", "") if alert else ""
            verb = "firing" if t.after == FIRING else "resolved"
            log.info("alert %s %s {%s}%s", rule.rule.name, verb, labels, f": {summary}" if summary else "")


def iso(ms: int) -> str:
    """RFC 3339 with milliseconds, UTC, as Alertmanager's API takes times."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _table(samples: Iterable[tuple[dict, float]], ts: int) -> pa.Table:
    at = datetime.fromtimestamp(ts / 1000, UTC).replace(tzinfo=None)
    rows = list(samples)
    return pa.table(
        [
            pa.array([at] * len(rows), pa.timestamp("us")),
            pa.array([RULES_TARGET] * len(rows)),
            pa.array([ls[METRIC_NAME] for ls, _ in rows], pa.string()),
            pa.array(
                [
                    json.dumps({k: v for k, v in sorted(ls.items()) if k != METRIC_NAME}, separators=(",", ":"))
                    for ls, _ in rows
                ],
                pa.string(),
            ),
            pa.array([v for _, v in rows], pa.float64()),
        ],
        schema=SCHEMA,
    )
