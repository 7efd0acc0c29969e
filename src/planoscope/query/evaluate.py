"""Evaluating the panels of ``panels.py`` on the store.

Time steps follow Prometheus' range queries, so a panel and the PromQL it stands for can be
compared point by point: points sit at ``start + k * step`` and the point at ``t`` counts the
spans that started in ``(t - step, t]``. Rates are exact counts divided by the step; latency
quantiles are exact, from every span's duration (the reference stack can only interpolate
between histogram buckets).

Scraped counters (``ScrapedRate``) have samples at irregular times, so the point at ``t`` is the
counter's increase from sample ``s0`` to sample ``s1`` divided by the seconds between them, where
``s1`` is the last sample at or before ``t`` and ``s0`` the last sample before ``s1`` at or before
``t - step`` (the first sample, when the counter's samples begin within the step); a step with no
new sample repeats the last interval's rate. The increase follows
Prometheus' counter semantics: where the value falls (a restarted Envoy), the new value counts
from 0, so a rate is never negative. As in Prometheus, a sample more than 5 minutes old is stale:
no point is drawn from it.

A panel draws at most ``max_series`` series of a grouped query (``SpanRate`` by a column,
``SpanCount``, ``LatencyQuantiles``, ``ScrapedRate``): the top ones by value over the range
(requests, for the latency panel), ties by name, and one series named ``other`` (label
``other="true"``) for the rest: their sum per point for rates and counts, so the series still add
up to the total; for latency the quantiles of all the other groups' spans together (exact, as the
others). The panel then says ``truncated: {"shown", "total", "label"}``. The ranking and the
folding run in the store, so 50,000 models cost one aggregate, not 50,000 series.

What is asked and the answers' shape are written here, once; the SQL is the store's
``PanelReads`` (``panels_duckdb.py``, ``panels_clickhouse.py``), by its ``dialect``, and the LLM
panels' statement is ``llm_calls.py``'s.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from ..store import SpanStore
from . import llm_calls, llm_series, steps
from .panels import DEFAULT_MAX_SERIES, LLM_QUERIES, LatencyQuantiles, Panel, ScrapedRate, SpanCount, SpanRate
from .panels_clickhouse import ClickHousePanels
from .panels_duckdb import DuckDBPanels
from .params import QueryError, check_bounds, check_range
from .steps import OTHER, OTHER_LABELS

LOOKBACK_S = 300.0  # Prometheus' staleness: an older sample no longer stands for "now"
MAX_RAW_SAMPLES = 200_000


class PanelReads(Protocol):
    """What the span and scraped panels ask a store (``panels_duckdb.DuckDBPanels``,
    ``panels_clickhouse.ClickHousePanels``): the aggregates, ranked and folded by the store."""

    def span_counts(self, rates: list[SpanRate], start: float, end: float, step: float, max_series: int) -> list[tuple]:
        """Rows ``(panel, k, other, group, spans, groups)``: per rate panel (its index in
        ``rates``), step and group (the ``by`` value, or the service without ``by``) the spans of
        the window (``steps``); a grouped panel's groups past its top ``max_series`` by spans in
        the range (ties by value) folded into ``other`` (group NULL), ``groups`` how many it has."""

    def latency(self, q: LatencyQuantiles, start: float, end: float, step: float, max_series: int) -> list[tuple]:
        """Rows ``(k, other, group, [quantile of Duration in ns, ...], groups)``, folded as in
        ``span_counts``, the quantiles exact (linear interpolation between closest ranks)."""

    def count(self, q: SpanCount, end: float, max_series: int) -> list[tuple]:
        """Rows ``(other, group, spans, groups)`` of the spans up to ``end``, folded the same way."""

    def samples(self, metric: str, since: float, end: float) -> list[tuple]:
        """Rows ``(target, labels JSON, unix µs, value)`` of ``metric`` in ``(since, end]``, by
        target, labels and time."""

    def sample_count(self, metric: str, start: float | None = None, end: float | None = None) -> int:
        """How many samples of ``metric`` (in ``(start, end]`` when given) are stored."""

    def metrics(self) -> list[tuple]:
        """Rows ``(metric, distinct (target, labels), last sample unix µs)``, by metric."""


_READS: dict[str, type] = {"duckdb": DuckDBPanels, "clickhouse": ClickHousePanels}


def reads(store: SpanStore) -> PanelReads:
    """The panels' SQL for ``store``, by its ``dialect``."""
    return _READS[store.dialect](store)


def has_samples(store: SpanStore, metric: str) -> bool:
    """Whether any sample of the scraped ``metric`` is stored."""
    return reads(store).sample_count(metric) > 0


def evaluate(
    store: SpanStore,
    panel: Panel,
    start: float,
    end: float,
    step: float,
    scrape_targets: Sequence[str] = (),
    max_series: int = DEFAULT_MAX_SERIES,
) -> dict:
    """``{"id", "title", "unit", "series": [{"name", "labels", "points"}], ...}`` for the range."""
    return evaluate_all(store, [panel], start, end, step, scrape_targets, max_series)[0]


def evaluate_all(
    store: SpanStore,
    panels: list[Panel],
    start: float,
    end: float,
    step: float,
    scrape_targets: Sequence[str] = (),
    max_series: int = DEFAULT_MAX_SERIES,
) -> list[dict]:
    """Every panel over one range. The rate panels share one scan of the range: at 7 days of
    10 M spans that is one 250 ms aggregate instead of three (benchmarks/dashboard.py); so do the
    panels over LLM calls (``llm_calls.py``).
    ``scrape_targets`` (labels) only shape the notice of a scraped panel without data;
    ``max_series`` bounds the series of a grouped panel (see the module docstring)."""
    check_range(start, end, step)
    if max_series < 1:
        raise ValueError("max_series must be at least 1")
    rates = [p.query for p in panels if isinstance(p.query, SpanRate)]
    calls = [p.query for p in panels if isinstance(p.query, LLM_QUERIES)]
    shared = {
        "rates": _span_counts(store, rates, start, end, step, max_series) if rates else None,
        "calls": llm_calls.query_calls(store, calls, start, end, step, max_series) if calls else None,
    }
    return [_evaluate(store, p, start, end, step, shared, scrape_targets, max_series) for p in panels]


def _evaluate(
    store: SpanStore,
    panel: Panel,
    start: float,
    end: float,
    step: float,
    shared: dict,
    scrape_targets: Sequence[str],
    max_series: int,
) -> dict:
    q = panel.query
    out = {
        "id": panel.id,
        "title": panel.title,
        "unit": panel.unit,
        "kind": panel.kind,
        "start": start,
        "end": end,
        "step": step,
    }
    groups = None  # (label, groups in the range) of a grouped panel
    if isinstance(q, LLM_QUERIES):
        out["series"], truncated = llm_series.series(q, shared["calls"], start, end, step, max_series)
        if truncated:
            out["truncated"] = truncated
        return out
    if isinstance(q, SpanRate):
        out["series"], groups = _span_rate(shared["rates"], q, start, end, step)
    elif isinstance(q, LatencyQuantiles):
        out["series"], groups = _latency(store, q, start, end, step, max_series)
    elif isinstance(q, SpanCount):
        out["series"], groups = _count(store, q, end, max_series)
    elif isinstance(q, ScrapedRate):
        out["series"], total = _top_series(scraped_rate(store, q.metric, start, end, step), max_series)
        groups = ("series", total)
        if out["series"]:
            _say_truncated(out, groups, max_series)
            return out
        if not scrape_targets:
            out["notice"] = (
                "No Envoy scrape target: this panel shows the rate of "
                f"{q.metric} once planoscope scrapes Envoy's admin /stats/prometheus (--scrape URL)."
            )
        elif not has_samples(store, q.metric):
            out["notice"] = (
                f"No samples of {q.metric} yet from Envoy at {', '.join(scrape_targets)}: "
                "see GET /api/v1/targets for the scrapes' health."
            )
        else:
            out["notice"] = f"No samples of {q.metric} in this range."
    else:  # pragma: no cover - the Query union is closed
        raise TypeError(q)
    _say_truncated(out, groups, max_series, "together" if isinstance(q, LatencyQuantiles) else "summed")
    return out


def _say_truncated(out: dict, groups: tuple[str, int] | None, max_series: int, other: str = "summed") -> None:
    if groups is not None and groups[1] > max_series:
        out["truncated"] = {"shown": max_series, "total": groups[1], "label": groups[0], "other": other}


def _span_counts(
    store: SpanStore, rates: list[SpanRate], start: float, end: float, step: float, max_series: int
) -> dict[SpanRate, dict]:
    """Per rate panel: ``{"rows": [(k, other, group, spans)], "groups": distinct groups}``, from
    one read of the range, grouped panels folded to their top ``max_series`` groups."""
    out = {q: {"rows": [], "groups": 0} for q in rates}
    for panel, kk, other, g, n, groups in reads(store).span_counts(rates, start, end, step, max_series):
        entry = out[rates[panel]]
        entry["rows"].append((kk, bool(other), g, n))
        entry["groups"] = max(entry["groups"], groups or 0)
    return out


def _span_rate(counts: dict, q: SpanRate, start: float, end: float, step: float) -> tuple[list[dict], tuple | None]:
    entry = counts[q]
    n_points = steps.n_points(start, end, step)
    by_group: dict[tuple[bool, str | None], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for k, other, g, n in entry["rows"]:
        by_group[(other, g)][k] += n / step
    if q.by:
        series = [
            {"name": g or "", "labels": {q.label: g or ""}, "points": steps.points(start, step, n_points, v, 0.0)}
            for (other, g), v in sorted(by_group.items(), key=lambda kv: kv[0][1] or "")
            if not other
        ]
        if (True, None) in by_group:
            series.append(
                {
                    "name": OTHER,
                    "labels": OTHER_LABELS,
                    "points": steps.points(start, step, n_points, by_group[(True, None)], 0.0),
                }
            )
        return series, (q.label, entry["groups"])
    return [
        {
            "name": name,
            "labels": {"service_name": svc},
            "points": steps.points(start, step, n_points, by_group.get((False, svc), {}), 0.0),
        }
        for svc, name in zip(q.services, q.names)
    ], None


def _latency(
    store: SpanStore, q: LatencyQuantiles, start: float, end: float, step: float, max_series: int
) -> tuple[list[dict], tuple]:
    rows = reads(store).latency(q, start, end, step, max_series)
    series: dict[tuple[bool, str, float], dict[int, float]] = defaultdict(dict)
    groups = 0
    for kk, other, g, values, n_groups in rows:
        groups = max(groups, n_groups)
        for quantile, v in zip(q.quantiles, values):
            series[(bool(other), g or "", quantile)][kk] = v / 1e6
    n_points = steps.n_points(start, end, step)
    out = []
    for (other, g, quantile), v in sorted(series.items()):
        labels = {"quantile": str(quantile), **(OTHER_LABELS if other else {q.label: g})}
        name = f"p{round(quantile * 100)} {OTHER if other else g}".strip()
        out.append({"name": name, "labels": labels, "points": steps.points(start, step, n_points, v, None)})
    return out, (q.label, groups)


def _count(store: SpanStore, q: SpanCount, end: float, max_series: int) -> tuple[list[dict], tuple]:
    rows = reads(store).count(q, end, max_series)
    # by name, the rest last
    rows = sorted(((bool(o), g, n, groups) for o, g, n, groups in rows), key=lambda r: (r[0], r[1] or ""))
    series = [
        {"name": OTHER, "labels": OTHER_LABELS, "points": [[end, n]]}
        if other
        else {"name": g or "", "labels": {q.label: g or ""}, "points": [[end, n]]}
        for other, g, n, _ in rows
    ]
    return series, (q.label, max((r[3] for r in rows), default=0))


def _top_series(series: list[dict], max_series: int) -> tuple[list[dict], int]:
    """The ``max_series`` series of the largest sum of points (ties by name), in their order,
    and one ``other`` series summing the rest per point; and how many there were."""
    if len(series) <= max_series:
        return series, len(series)
    ranked = sorted(range(len(series)), key=lambda i: (-sum(v for _, v in series[i]["points"]), series[i]["name"]))
    top = set(ranked[:max_series])
    rest: dict[float, float] = defaultdict(float)
    for i, s in enumerate(series):
        if i not in top:
            for t, v in s["points"]:
                rest[t] += v
    kept = [s for i, s in enumerate(series) if i in top]
    kept.append({"name": OTHER, "labels": OTHER_LABELS, "points": [[t, rest[t]] for t in sorted(rest)]})
    return kept, len(series)


def _sample_series(store: SpanStore, metric: str, since: float, end: float) -> dict[tuple[str, str], list]:
    """``{(target, labels JSON): [(unix_s, value), ...]}`` of ``metric`` in ``(since, end]``, by time."""
    rows = reads(store).samples(metric, since, end)
    series: dict[tuple[str, str], list] = defaultdict(list)
    for target, labels, us, value in rows:
        series[(target, labels)].append((us / 1e6, value))
    return series


def _series_meta(target: str, labels_json: str) -> tuple[str, dict]:
    labels = json.loads(labels_json)
    extra = ",".join(f"{k}={v}" for k, v in labels.items())
    return (f"{target} {{{extra}}}" if extra else target), {"target": target, **labels}


def counter_rate(samples: list[tuple[float, float]], start: float, end: float, step: float) -> dict[int, float]:
    """``{k: per-second rate at start + k*step}`` of one counter's ``(unix_s, value)`` samples
    (sorted by time), as the module docstring defines it."""
    times = [t for t, _ in samples]
    adjusted, total, prev = [], 0.0, None
    for _, v in samples:  # the increase since the first sample, across resets
        if prev is not None:
            total += v - prev if v >= prev else v
        adjusted.append(total)
        prev = v
    out = {}
    for k in range(steps.n_points(start, end, step)):
        t = start + k * step
        i1 = bisect.bisect_right(times, t) - 1
        if i1 < 1 or times[i1] < t - LOOKBACK_S:
            continue
        i0 = max(min(bisect.bisect_right(times, t - step) - 1, i1 - 1), 0)
        if times[i0] < t - step - LOOKBACK_S:
            continue
        out[k] = (adjusted[i1] - adjusted[i0]) / (times[i1] - times[i0])
    return out


def scraped_rate(store: SpanStore, metric: str, start: float, end: float, step: float) -> list[dict]:
    """Per-second rate of the scraped counter ``metric``, one series per target and label set."""
    check_range(start, end, step)
    out = []
    for (target, labels), samples in sorted(_sample_series(store, metric, start - step - LOOKBACK_S, end).items()):
        name, all_labels = _series_meta(target, labels)
        points = steps.points(
            start, step, steps.n_points(start, end, step), counter_rate(samples, start, end, step), None
        )
        if points:
            out.append({"name": name, "labels": all_labels, "points": points})
    return out


def scraped_samples(store: SpanStore, metric: str, start: float, end: float) -> list[dict]:
    """The stored samples of ``metric`` in ``(start, end]``, one series per target and label set."""
    check_bounds(start, end)
    n = reads(store).sample_count(metric, start, end)
    if n > MAX_RAW_SAMPLES:
        raise QueryError(f"{n} samples in the range, more than {MAX_RAW_SAMPLES}: ask for a shorter range")
    out = []
    for (target, labels), samples in sorted(_sample_series(store, metric, start, end).items()):
        name, all_labels = _series_meta(target, labels)
        out.append({"name": name, "labels": all_labels, "points": [list(p) for p in samples]})
    return out


def scraped_metrics(store: SpanStore) -> list[dict]:
    """Every scraped metric name with its number of series and its last sample time."""
    rows = reads(store).metrics()
    return [{"name": n, "series": s, "last_sample": us / 1e6} for n, s, us in rows]
