"""Aggregation operators (``sum``, ``avg``, ``topk``, ``count_values`` … with ``by``/``without``), as
Prometheus's ``aggregation``/``aggregationK``/``aggregationCountValues``: each group folds its
series in input order, for all steps at once."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .quantile import column_quantiles
from .storage import is_valid_label_name
from .syntax import Aggregate
from .values import METRIC_NAME, EvalError, Labels, Steps, format_value, merge, with_label

if TYPE_CHECKING:
    from .engine import Evaluator

MAX_INT64 = 9223372036854774784  # the largest float that converts to an int64
MIN_INT64 = -9223372036854775808


def grouper(grouping: tuple[str, ...], by_without: bool) -> Callable[[Labels], Labels]:
    """A series' group label set: ``by`` keeps only ``grouping``, ``without`` drops it and the
    metric name (the names' set made once, for every series: ~5 µs a series less)."""
    named = frozenset((*grouping, METRIC_NAME) if by_without else grouping)
    return lambda labels: tuple(p for p in labels if (p[0] in named) != by_without)


def aggregate(ev: Evaluator, e: Aggregate, times: np.ndarray) -> Steps:
    if e.op == "count_values":
        return _count_values(ev, e, times)
    param = None
    if e.param is not None:
        # Prometheus 2 takes the parameter's value at the first step for the whole range.
        param = float(ev.eval(e.param, times)[0])
    vec: Steps = ev.eval(e.expr, times)
    steps = len(times)
    if e.op in ("topk", "bottomk"):
        return _topk(e, vec, param, steps)
    groups: dict[Labels, list[int]] = {}
    group_of = grouper(e.grouping, e.without)
    for i, ls in enumerate(vec.labels):
        groups.setdefault(group_of(ls), []).append(i)
    labels = list(groups)
    values = np.zeros((len(labels), steps))
    present = np.zeros((len(labels), steps), bool)
    fold = _FOLDS[e.op]
    for g, rows in enumerate(groups.values()):
        if e.op == "quantile":
            values[g] = column_quantiles(param, vec.values[rows], vec.present[rows])
            present[g] = vec.present[rows].any(axis=0)
        else:
            values[g], present[g] = fold(vec.values[rows], vec.present[rows])
    return merge(labels, values, present)


def _sum(v: np.ndarray, p: np.ndarray):
    # Added series after series, as Prometheus adds them (an accumulation is sequential, where a
    # numpy sum may add in pairs); -0.0 where a series is absent leaves any sum as it was.
    with np.errstate(invalid="ignore"):  # inf + -inf: NaN, as in Prometheus
        return np.cumsum(np.where(p, v, -0.0), axis=0)[-1], p.any(axis=0)


def _avg(v: np.ndarray, p: np.ndarray):
    mean, count = np.zeros(v.shape[1]), np.zeros(v.shape[1])
    for x, here in zip(v, p):
        first = here & (count == 0)
        count = count + here
        inf_mean = np.isinf(mean)
        # An infinite mean stays as it is unless an infinity of the other sign or a NaN comes.
        hold = inf_mean & ((np.isinf(x) & ((mean > 0) == (x > 0))) | (~np.isinf(x) & ~np.isnan(x)))
        step = here & ~first & ~hold
        with np.errstate(all="ignore"):
            updated = mean + (x / count - mean / count)
        mean = np.where(first, x, np.where(step, updated, mean))
    return mean, count > 0


def _count(v: np.ndarray, p: np.ndarray):
    n = p.sum(axis=0)
    return n.astype(np.float64), n > 0


def _group(v: np.ndarray, p: np.ndarray):
    any_ = p.any(axis=0)
    return np.ones(v.shape[1]), any_


def _extreme(better):
    def fold(v: np.ndarray, p: np.ndarray):
        acc, seen = np.zeros(v.shape[1]), np.zeros(v.shape[1], bool)
        for x, here in zip(v, p):
            take = here & (~seen | better(acc, x) | np.isnan(acc))
            acc = np.where(take, x, acc)
            seen |= here
        return acc, seen

    return fold


def _variance(v: np.ndarray, p: np.ndarray):
    mean, aux, count = np.zeros(v.shape[1]), np.zeros(v.shape[1]), np.zeros(v.shape[1])
    for x, here in zip(v, p):
        first = here & (count == 0)
        count = count + here
        rest = here & ~first
        with np.errstate(all="ignore"):
            delta = x - mean
            new_mean = mean + delta / count
            new_aux = aux + delta * (x - new_mean)
        mean = np.where(first, x, np.where(rest, new_mean, mean))
        aux = np.where(rest, new_aux, aux)
    with np.errstate(all="ignore"):
        return aux / count, count > 0


def _stddev(v: np.ndarray, p: np.ndarray):
    var, seen = _variance(v, p)
    return np.sqrt(var), seen


_FOLDS = {
    "sum": _sum,
    "avg": _avg,
    "count": _count,
    "group": _group,
    "min": _extreme(lambda acc, x: acc > x),
    "max": _extreme(lambda acc, x: acc < x),
    "stdvar": _variance,
    "stddev": _stddev,
    "quantile": None,
}


def _topk(e: Aggregate, vec: Steps, param: float, steps: int) -> Steps:
    if not (MIN_INT64 <= param <= MAX_INT64):  # NaN fails too
        raise EvalError(f"Scalar value {format_value(param)} overflows int64")
    k = min(int(param), len(vec))
    if k < 1:
        return Steps.empty(steps)
    gid: dict[Labels, int] = {}
    group_of = grouper(e.grouping, e.without)
    group = np.array([gid.setdefault(group_of(ls), len(gid)) for ls in vec.labels])
    top = e.op == "topk"
    chosen = np.zeros(vec.present.shape, bool)
    first_order: list[int] = []
    for t in range(steps):
        rows = np.flatnonzero(vec.present[:, t])
        if len(rows) == 0:
            continue
        v = vec.values[rows, t]
        # NaN loses to any number; ties keep the earlier series, as Prometheus's heap does.
        order = np.lexsort((rows, -v if top else v, np.isnan(v), group[rows]))
        ranked = rows[order]
        g = group[ranked]
        start = np.searchsorted(g, g, "left")
        winners = ranked[np.arange(len(ranked)) - start < k]
        chosen[winners, t] = True
        # An instant query lists each group's winners in order, groups as first seen.
        first_order = list(winners)
    if steps == 1:
        order = first_order
        return Steps([vec.labels[i] for i in order], vec.values[order], chosen[order])
    rows = np.flatnonzero(chosen.any(axis=1))
    return Steps([vec.labels[i] for i in rows], vec.values[rows], chosen[rows])


def _count_values(ev: Evaluator, e: Aggregate, times: np.ndarray) -> Steps:
    label = ev.eval(e.param, times)
    if not is_valid_label_name(label):
        raise EvalError(f"invalid label name {label!r}")
    vec: Steps = ev.eval(e.expr, times)
    grouping = e.grouping if e.without else tuple(sorted({*e.grouping, label}))
    counts: dict[Labels, np.ndarray] = {}
    steps = len(times)
    group_of = grouper(grouping, e.without)
    for i, t in zip(*np.nonzero(vec.present)):
        ls = with_label(vec.labels[i], label, _go_format(float(vec.values[i, t])))
        key = group_of(ls)
        if key not in counts:
            counts[key] = np.zeros(steps)
        counts[key][t] += 1
    labels = list(counts)
    values = np.array([counts[k] for k in labels]).reshape(len(labels), steps)
    return merge(labels, values, values > 0)


def _go_format(v: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return np.format_float_positional(v, unique=True, trim="-")
