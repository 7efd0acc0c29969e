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
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import Sequence

from ..store import DuckDBStore
from .panels import LatencyQuantiles, Panel, ScrapedRate, SpanCount, SpanRate
from .params import QueryError, check_bounds, check_range, naive_utc

LOOKBACK_S = 300.0  # Prometheus' staleness: an older sample no longer stands for "now"
MAX_RAW_SAMPLES = 200_000


def evaluate(
    store: DuckDBStore, panel: Panel, start: float, end: float, step: float, scrape_targets: Sequence[str] = ()
) -> dict:
    """``{"id", "title", "unit", "series": [{"name", "labels", "points"}], ...}`` for the range."""
    return evaluate_all(store, [panel], start, end, step, scrape_targets)[0]


def evaluate_all(
    store: DuckDBStore, panels: list[Panel], start: float, end: float, step: float, scrape_targets: Sequence[str] = ()
) -> list[dict]:
    """Every panel over one range. The rate panels share one scan of the range: at 7 days of
    10 M spans that is one 250 ms aggregate instead of three (benchmarks/dashboard.py).
    ``scrape_targets`` (labels) only shape the notice of a scraped panel without data."""
    check_range(start, end, step)
    rates = [p.query for p in panels if isinstance(p.query, SpanRate)]
    counts = _span_counts(store, rates, start, end, step) if rates else None
    return [_evaluate(store, p, start, end, step, counts, scrape_targets) for p in panels]


def _evaluate(
    store: DuckDBStore, panel: Panel, start: float, end: float, step: float, counts, scrape_targets: Sequence[str] = ()
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
    if isinstance(q, SpanRate):
        out["series"] = _span_rate(counts, q, start, end, step)
    elif isinstance(q, LatencyQuantiles):
        out["series"] = _latency(store, q, start, end, step)
    elif isinstance(q, SpanCount):
        out["series"] = _count(store, q, end)
    elif isinstance(q, ScrapedRate):
        out["series"] = scraped_rate(store, q.metric, start, end, step)
        if out["series"]:
            return out
        if not scrape_targets:
            out["notice"] = (
                "No Envoy scrape target: this panel shows the rate of "
                f"{q.metric} once planoscope scrapes Envoy's admin /stats/prometheus (--scrape URL)."
            )
        elif not store.query("SELECT count(*) FROM samples WHERE MetricName = ?", [q.metric])[0][0]:
            out["notice"] = (
                f"No samples of {q.metric} yet from Envoy at {', '.join(scrape_targets)}: "
                "see GET /api/v1/targets for the scrapes' health."
            )
        else:
            out["notice"] = f"No samples of {q.metric} in this range."
    else:  # pragma: no cover - the Query union is closed
        raise TypeError(q)
    return out


def _n_points(start: float, end: float, step: float) -> int:
    return int(math.floor((end - start) / step + 1e-9)) + 1


def _window(start: float, end: float, step: float) -> tuple[list, str]:
    """Parameters and SQL: the bucket index k of each span, and the time filter."""
    start_ns, step_ns = round(start * 1e9), round(step * 1e9)
    sql_k = f"(epoch_ns(Timestamp) - {start_ns} + {step_ns} - 1) // {step_ns}"
    return [naive_utc(start - step), naive_utc(end)], sql_k


def _points(start: float, step: float, n: int, values: dict[int, float], fill: float | None) -> list:
    if fill is None:
        return [[start + k * step, values[k]] for k in sorted(values) if 0 <= k < n]
    return [[start + k * step, values.get(k, fill)] for k in range(n)]


def _span_counts(store: DuckDBStore, rates: list[SpanRate], start: float, end: float, step: float) -> dict:
    """Span counts per (step, service, every ``by`` column the rate panels group on)."""
    params, k = _window(start, end, step)
    services = sorted({s for q in rates for s in q.services})
    by = sorted({q.by for q in rates if q.by})
    cols = ["ServiceName", *by]
    rows = store.query(
        f"SELECT {k} AS k, {', '.join(cols)}, count(*) FROM otel_traces"
        f" WHERE Timestamp > ? AND Timestamp <= ? AND ServiceName IN ({', '.join('?' for _ in services)})"
        " GROUP BY ALL",
        [*params, *services],
    )
    return {"columns": cols, "rows": rows}


def _span_rate(counts: dict, q: SpanRate, start: float, end: float, step: float) -> list[dict]:
    cols = counts["columns"]
    group_at = cols.index(q.by if q.by else "ServiceName") + 1
    by_group: dict[str | None, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for row in counts["rows"]:
        if row[1] in q.services:
            by_group[row[group_at]][row[0]] += row[-1] / step
    n_points = _n_points(start, end, step)
    if q.by:
        return [
            {"name": g or "", "labels": {q.label: g or ""}, "points": _points(start, step, n_points, v, 0.0)}
            for g, v in sorted(by_group.items(), key=lambda kv: kv[0] or "")
        ]
    return [
        {
            "name": name,
            "labels": {"service_name": svc},
            "points": _points(start, step, n_points, by_group.get(svc, {}), 0.0),
        }
        for svc, name in zip(q.services, q.names)
    ]


def _latency(store: DuckDBStore, q: LatencyQuantiles, start: float, end: float, step: float) -> list[dict]:
    params, k = _window(start, end, step)
    rows = store.query(
        f"SELECT {k} AS k, {q.by} AS g, quantile_cont(Duration, ?) FROM otel_traces"
        " WHERE Timestamp > ? AND Timestamp <= ? AND ServiceName = ? GROUP BY ALL",
        [list(q.quantiles), *params, q.service],
    )
    series: dict[tuple[float, str], dict[int, float]] = defaultdict(dict)
    for kk, g, values in rows:
        for quantile, v in zip(q.quantiles, values):
            series[(quantile, g or "")][kk] = v / 1e6
    n_points = _n_points(start, end, step)
    return [
        {
            "name": f"p{round(quantile * 100)} {g}".strip(),
            "labels": {"quantile": str(quantile), q.label: g},
            "points": _points(start, step, n_points, v, None),
        }
        for (quantile, g), v in sorted(series.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


def _count(store: DuckDBStore, q: SpanCount, end: float) -> list[dict]:
    rows = store.query(
        f"SELECT {q.by} AS g, count(*) FROM otel_traces WHERE Timestamp <= ? AND ServiceName = ? GROUP BY ALL",
        [naive_utc(end), q.service],
    )
    return [
        {"name": g or "", "labels": {q.label: g or ""}, "points": [[end, n]]}
        for g, n in sorted(rows, key=lambda r: r[0] or "")
    ]


def _sample_series(store: DuckDBStore, metric: str, since: float, end: float) -> dict[tuple[str, str], list]:
    """``{(target, labels JSON): [(unix_s, value), ...]}`` of ``metric`` in ``(since, end]``, by time."""
    rows = store.query(
        "SELECT Target, Labels, epoch_us(Timestamp), Value FROM samples"
        " WHERE MetricName = ? AND Timestamp > ? AND Timestamp <= ? ORDER BY Target, Labels, Timestamp",
        [metric, naive_utc(since), naive_utc(end)],
    )
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
    for k in range(_n_points(start, end, step)):
        t = start + k * step
        i1 = bisect.bisect_right(times, t) - 1
        if i1 < 1 or times[i1] < t - LOOKBACK_S:
            continue
        i0 = max(min(bisect.bisect_right(times, t - step) - 1, i1 - 1), 0)
        if times[i0] < t - step - LOOKBACK_S:
            continue
        out[k] = (adjusted[i1] - adjusted[i0]) / (times[i1] - times[i0])
    return out


def scraped_rate(store: DuckDBStore, metric: str, start: float, end: float, step: float) -> list[dict]:
    """Per-second rate of the scraped counter ``metric``, one series per target and label set."""
    check_range(start, end, step)
    out = []
    for (target, labels), samples in sorted(_sample_series(store, metric, start - step - LOOKBACK_S, end).items()):
        name, all_labels = _series_meta(target, labels)
        points = _points(start, step, _n_points(start, end, step), counter_rate(samples, start, end, step), None)
        if points:
            out.append({"name": name, "labels": all_labels, "points": points})
    return out


def scraped_samples(store: DuckDBStore, metric: str, start: float, end: float) -> list[dict]:
    """The stored samples of ``metric`` in ``(start, end]``, one series per target and label set."""
    check_bounds(start, end)
    n = store.query(
        "SELECT count(*) FROM samples WHERE MetricName = ? AND Timestamp > ? AND Timestamp <= ?",
        [metric, naive_utc(start), naive_utc(end)],
    )[0][0]
    if n > MAX_RAW_SAMPLES:
        raise QueryError(f"{n} samples in the range, more than {MAX_RAW_SAMPLES}: ask for a shorter range")
    out = []
    for (target, labels), samples in sorted(_sample_series(store, metric, start, end).items()):
        name, all_labels = _series_meta(target, labels)
        out.append({"name": name, "labels": all_labels, "points": [list(p) for p in samples]})
    return out


def scraped_metrics(store: DuckDBStore) -> list[dict]:
    """Every scraped metric name with its number of series and its last sample time."""
    rows = store.query(
        "SELECT MetricName, count(DISTINCT (Target, Labels)), epoch_us(max(Timestamp))"
        " FROM samples GROUP BY MetricName ORDER BY MetricName"
    )
    return [{"name": n, "series": s, "last_sample": us / 1e6} for n, s, us in rows]
