"""A ``PromQL`` panel (a Grafana dashboard's) evaluated as Grafana would draw it, through the
PromQL engine over a ``Queryable`` (the stored samples): the answer has the shape of a native
panel's (``query/evaluate.py``), so the UI draws both alike.

As Grafana does: each target's range query runs over ``[start, end]`` at the panel's step, with
the datasource's template variables filled (``$__interval`` the step, ``$__rate_interval``
max(step + scrape interval, 4 × scrape interval), ``$__range``); each series is named by the
target's ``legendFormat`` (``{{label}}`` replaced by the label's value), or by its label set as
Prometheus prints it when the target has none; a stat panel reduces each series to one value by
its reducer, a point at ``end``. A query the engine refuses becomes the panel's notice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from ..promql import Engine, PromQLError, Queryable, Series
from ..query.panels import Panel, PromQL

_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_VARIABLE = re.compile(r"\$(?:\{(__\w+)\}|(__\w+))")


def evaluate_promql(
    queryable: Queryable,
    panels: Sequence[Panel],
    start: float,
    end: float,
    step: float,
    scrape_interval: float,
    engine: Engine | None = None,
) -> list[dict]:
    """Each panel's ``{"id", "title", "unit", "kind", "start", "end", "step", "series"[, "notice"]}``."""
    engine = engine or Engine()
    return [_panel(engine, queryable, p, start, end, step, scrape_interval) for p in panels]


def _panel(engine, queryable, panel: Panel, start, end, step, scrape_interval) -> dict:
    out = {"id": panel.id, "title": panel.title, "unit": panel.unit, "kind": panel.kind}
    out |= {"start": start, "end": end, "step": step, "series": []}
    if panel.kind == "row":
        return out
    assert isinstance(panel.query, PromQL)
    measures = {m.id for m in panel.measures}
    for target in panel.targets:
        expr = fill_variables(target.expr, start, end, step, scrape_interval)
        try:
            matrix = engine.range_query(queryable, expr, _ms(start), _ms(end), _ms(step))
        except PromQLError as e:
            out["series"] = []
            out["notice"] = f"{target.expr}: {e}"
            return out
        for s in matrix.series:
            name = legend(target.legend, s.labels)
            labels = dict(s.labels)
            if name in measures:
                labels["measure"] = name
            points = _points(s, panel.query.reducer, end) if panel.kind == "stat" else _all(s)
            if points:
                out["series"].append({"name": name, "labels": labels, "points": points})
    return out


def fill_variables(expr: str, start: float, end: float, step: float, scrape_interval: float) -> str:
    """``expr`` with Grafana's Prometheus template variables replaced by durations in seconds."""
    values = {
        "__interval": step,
        "__rate_interval": max(step + scrape_interval, 4 * scrape_interval),
        "__range": end - start,
    }

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name.endswith("_ms") and name[:-3] in values:
            return str(round(values[name[:-3]] * 1000))
        if name.endswith("_s") and name[:-2] in values:
            return str(round(values[name[:-2]]))
        return f"{max(1, round(values[name]))}s" if name in values else m.group(0)

    return _VARIABLE.sub(sub, expr)


def legend(fmt: str, labels) -> str:
    """A series' name: Grafana's ``legendFormat`` filled, else the label set as Prometheus prints it."""
    pairs = dict(labels)
    if fmt and fmt != "__auto":
        return _LEGEND.sub(lambda m: pairs.get(m.group(1), ""), fmt)
    name = pairs.pop("__name__", "")
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))
    return f"{name}{{{inner}}}" if inner or not name else name


def _all(s: Series) -> list[tuple[float, float]]:
    return [(t / 1000, float(v)) for t, v in zip(s.timestamps.tolist(), s.values.tolist()) if math.isfinite(v)]


def _points(s: Series, reducer: str, end: float) -> list[tuple[float, float]]:
    values = s.values[np.isfinite(s.values)]
    if reducer == "count":
        return [(end, float(len(values)))]
    if not len(values):
        return []
    if reducer in ("last", "lastNotNull"):
        v = values[-1]
    elif reducer in ("first", "firstNotNull"):
        v = values[0]
    else:
        v = {"mean": np.mean, "max": np.max, "min": np.min, "sum": np.sum}[reducer](values)
    return [(end, float(v))]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
