"""PromQL functions: ``FUNCTIONS`` maps each name to its implementation, as Prometheus's
``functions.go`` does; adding a function is one entry.

An implementation is called as ``impl(evaluator, call, times)`` and returns the call's value for all
steps. Most are built by ``elementwise`` (instant-vector functions) or ``over_range`` (range-vector
functions) from a numpy function of whole arrays; range-vector functions see each window's samples
as ``lo``/``hi`` bounds into flat arrays (see ``Windows``).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from . import quantile as q
from .over_time import (
    avg_over_time,
    by_sorted_windows,
    changes,
    count_over_time,
    deriv,
    holt_winters,
    last_over_time,
    mad_rows,
    predict_linear,
    present_over_time,
    reduce,
    resets,
    row_quantiles,
    stddev_over_time,
    stdvar_over_time,
    sum_over_time,
)
from .rate import extrapolated_rate, instant_value
from .regex import RegexError, compile_anchored
from .storage import is_valid_label_name
from .syntax import Call, MatrixSelector, Subquery, VectorSelector, unwrap
from .values import (
    BUCKET_LABEL,
    METRIC_NAME,
    EvalError,
    Labels,
    Steps,
    Unsupported,
    Windows,
    drop_name,
    get,
    merge,
    with_label,
    without,
)

if TYPE_CHECKING:
    from .engine import Evaluator

Impl = Callable[["Evaluator", Call, np.ndarray], object]


def _args(ev: Evaluator, call: Call, times: np.ndarray) -> list:
    return [ev.eval(a, times) for a in call.args]


# --- instant-vector functions -------------------------------------------------------------------


def elementwise(fn: Callable[..., np.ndarray]) -> Impl:
    """A function of an instant vector's values (and scalar arguments, one value per step): the
    result drops the metric name, as Prometheus's ``simpleFunc``."""

    def impl(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
        vec, *scalars = _args(ev, call, times)
        values = fn(vec.values, *(s[None, :] for s in scalars))
        return merge([drop_name(ls) for ls in vec.labels], np.asarray(values, np.float64), vec.present.copy())

    return impl


def _sgn(v):
    return np.where(v < 0, -1.0, np.where(v > 0, 1.0, v))


def _round(v, to_nearest=None):
    if to_nearest is None:
        return np.floor(v + 0.5)
    inverse = 1.0 / to_nearest  # Prometheus inverts: fewer floating-point surprises
    return np.floor(v * inverse + 0.5) / inverse


def _clamp(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
    vec, lo, hi = _args(ev, call, times)
    values = np.maximum(lo[None, :], np.minimum(hi[None, :], vec.values))
    present = vec.present & ~(hi < lo)[None, :]  # max < min: no result at that step
    return merge([drop_name(ls) for ls in vec.labels], values, present)


def _timestamp(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
    arg = unwrap(call.args[0])
    if isinstance(arg, VectorSelector):
        # The sample's own time, not the step's (Prometheus special-cases a bare selector).
        vec, sample_ts = ev.instant_vector(arg, times)
        values = sample_ts / 1000.0
    else:
        vec = ev.eval(arg, times)
        values = np.broadcast_to(times / 1000.0, vec.values.shape).copy()
    return merge([drop_name(ls) for ls in vec.labels], values, vec.present.copy())


def _vector(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
    (s,) = _args(ev, call, times)
    return Steps([()], s[None, :].copy(), np.ones((1, len(times)), bool))


def _scalar(ev: Evaluator, call: Call, times: np.ndarray) -> np.ndarray:
    (vec,) = _args(ev, call, times)
    out = np.full(len(times), math.nan)
    one = vec.present.sum(axis=0) == 1
    if len(vec):
        picked = vec.values[vec.present.argmax(axis=0), np.arange(len(times))]
        out[one] = picked[one]
    return out


def _time(ev: Evaluator, call: Call, times: np.ndarray) -> np.ndarray:
    return times / 1000.0


def _pi(ev: Evaluator, call: Call, times: np.ndarray) -> np.ndarray:
    return np.full(len(times), math.pi)


def _date(part: Callable[[np.ndarray], np.ndarray]) -> Impl:
    """hour(), month() …: of each sample's value as unix seconds, or of the step time without argument."""

    def impl(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
        if not call.args:
            secs = (times // 1000)[None, :]
            return Steps([()], part(secs).astype(np.float64), np.ones((1, len(times)), bool))
        (vec,) = _args(ev, call, times)
        with np.errstate(all="ignore"):
            secs = np.where(vec.present, np.nan_to_num(vec.values), 0).astype(np.int64)
        return merge([drop_name(ls) for ls in vec.labels], part(secs).astype(np.float64), vec.present.copy())

    return impl


def _days(secs):
    return (secs.astype("datetime64[s]")).astype("datetime64[D]")


def _year(secs):
    return _days(secs).astype("datetime64[Y]").astype(np.int64) + 1970


def _month(secs):
    return _days(secs).astype("datetime64[M]").astype(np.int64) % 12 + 1


def _day_of_month(secs):
    d = _days(secs)
    return (d - d.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1


def _day_of_year(secs):
    d = _days(secs)
    return (d - d.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64) + 1


def _day_of_week(secs):
    return (_days(secs).astype(np.int64) + 4) % 7  # 1970-01-01 was a Thursday


def _days_in_month(secs):
    m = _days(secs).astype("datetime64[M]")
    return ((m + 1).astype("datetime64[D]") - m.astype("datetime64[D]")).astype(np.int64)


def _sort(descending: bool) -> Impl:
    def impl(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
        (vec,) = _args(ev, call, times)
        if len(times) != 1:
            return vec  # a range query's result is sorted by label set anyway
        return _by_value(vec, descending)

    return impl


def _natural_less(a: str, b: str) -> bool:
    """facette/natsort.Compare, which Prometheus's sort_by_label uses."""
    ca, cb = re.findall(r"\d+|\D+", a), re.findall(r"\d+|\D+", b)
    for i, x in enumerate(ca):
        if i >= len(cb):
            return False
        y = cb[i]
        if x.isdigit() and y.isdigit():
            if int(x) == int(y):
                if i == len(ca) - 1:
                    return True
                if i == len(cb) - 1:
                    return False
                continue
            return int(x) < int(y)
        if x == y:
            if i == len(ca) - 1:
                return True
            if i == len(cb) - 1:
                return False
            continue
        return x < y
    return False


def _sort_by_label(descending: bool) -> Impl:
    def impl(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
        vec, *names = _args(ev, call, times)
        if len(times) != 1:
            return vec
        vec = _by_value(vec, descending)  # ties keep value order, as Prometheus sorts by value first

        def cmp(i: int, j: int) -> int:
            for name in names:
                a, b = get(vec.labels[i], name), get(vec.labels[j], name)
                if a == b:
                    continue
                less = _natural_less(a, b)
                return (1 if less else -1) if descending else (-1 if less else 1)
            return 0

        order = sorted(range(len(vec)), key=functools.cmp_to_key(cmp))
        return Steps([vec.labels[i] for i in order], vec.values[order], vec.present[order])

    return impl


def _by_value(vec: Steps, descending: bool) -> Steps:
    """An instant vector in value order, NaNs last either way."""
    v = vec.values[:, 0]
    order = np.lexsort((-v if descending else v, np.isnan(v)))
    return Steps([vec.labels[i] for i in order], vec.values[order], vec.present[order])


def _label_replace(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
    vec, dst, repl, src, regex = _args(ev, call, times)
    try:
        pattern = compile_anchored(regex)
    except RegexError:
        raise EvalError(f"invalid regular expression in label_replace(): {regex}") from None
    if not is_valid_label_name(dst):
        raise EvalError(f"invalid destination label name in label_replace(): {dst}")
    labels = []
    for ls in vec.labels:
        m = pattern.match(get(ls, src))
        labels.append(with_label(ls, dst, _expand(repl, m)) if m else ls)
    return merge(labels, vec.values, vec.present, per_step=False)


def _expand(template: str, m) -> str:
    """Go's Regexp.ExpandString: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``."""
    out = []
    while template:
        before, dollar, after = template.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        template = after
        if template.startswith("$"):
            out.append("$")
            template = template[1:]
            continue
        name, rest = _extract(template)
        if name is None:
            out.append("$")
            continue
        template = rest
        if name.isdigit() and not (name[0] == "0" and len(name) > 1) and len(name) <= 8:
            num = int(name)
            if num <= m.re.groups and m.group(num) is not None:
                out.append(m.group(num))
        elif name in m.re.groupindex and m.group(name) is not None:
            out.append(m.group(name))
    return "".join(out)


def _extract(s: str) -> tuple[str | None, str]:
    brace = s.startswith("{")
    if brace:
        s = s[1:]
    i = 0
    while i < len(s) and (s[i].isalnum() or s[i] == "_"):
        i += 1
    if i == 0:
        return None, s
    name = s[:i]
    if brace:
        if i >= len(s) or s[i] != "}":
            return None, s
        i += 1
    return name, s[i:]


def _label_join(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
    vec, dst, sep, *srcs = _args(ev, call, times)
    for src in srcs:
        if not is_valid_label_name(src):
            raise EvalError(f"invalid source label name in label_join(): {src}")
    if not is_valid_label_name(dst):
        raise EvalError(f"invalid destination label name in label_join(): {dst}")
    labels = [with_label(ls, dst, sep.join(get(ls, s) for s in srcs)) for ls in vec.labels]
    return Steps(labels, vec.values, vec.present)


def _absent_labels(arg) -> Labels:
    """The labels absent() reports: those an equality matcher fixes, once (Prometheus's rule)."""
    arg = unwrap(arg)
    if isinstance(arg, MatrixSelector):
        arg = arg.selector
    if not isinstance(arg, VectorSelector):
        return ()
    out: dict[str, str] = {}
    seen: set[str] = set()
    for m in arg.matchers:
        if m.name == METRIC_NAME:
            continue
        if m.op == "=" and m.name not in seen:
            out[m.name] = m.value
            seen.add(m.name)
        else:
            out.pop(m.name, None)
    return tuple(sorted((k, v) for k, v in out.items() if v))


def _absent(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
    (vec,) = _args(ev, call, times)
    missing = ~vec.present.any(axis=0)
    return merge([_absent_labels(call.args[0])], np.ones((1, len(times))), missing[None, :])


def _histogram_quantile(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
    quant, vec = _args(ev, call, times)
    groups: dict[Labels, list[int]] = {}
    bound_of: dict[int, float] = {}
    for i, ls in enumerate(vec.labels):
        bound = _parse_go_float(get(ls, BUCKET_LABEL))
        if bound is None:
            continue  # Prometheus skips a bucket whose le it cannot parse (with a warning)
        bound_of[i] = bound
        groups.setdefault(without(ls, (BUCKET_LABEL,)), []).append(i)
    labels, values, present = [], [], []
    for key, rows in groups.items():
        rows = np.array(rows)
        upper = np.array([bound_of[i] for i in rows])
        pres = vec.present[rows]
        out = np.full(len(times), math.nan)
        alive = pres.any(axis=0)
        # Steps with the same buckets present are one numpy computation.
        patterns, which = np.unique(pres.T, axis=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            cols = np.flatnonzero((which.ravel() == p) & alive)
            if len(cols) == 0:
                continue
            sel = rows[pattern]
            out[cols] = q.bucket_quantile(quant[cols], upper[pattern], vec.values[sel][:, cols])
        labels.append(drop_name(key))
        values.append(out)
        present.append(alive)
    if not labels:
        return Steps.empty(len(times))
    return merge(labels, np.array(values), np.array(present))


_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]*\.?[0-9a-fA-F]*(?:[pP][+-]?\d+)?"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])"
)


def _parse_go_float(s: str) -> float | None:
    """Go's strconv.ParseFloat, which reads the le label: stricter than float() (no spaces, no _)."""
    if not _GO_FLOAT.fullmatch(s):
        return None
    if s.lstrip("+-")[:2].lower() == "0x":
        try:
            return float.fromhex(s)
        except ValueError:
            return None
    return float(s)


def _native_histograms(name: str) -> Impl:
    def impl(ev: Evaluator, call: Call, times: np.ndarray):
        raise Unsupported(f"{name}() works on native histograms, which are not supported")

    return impl


# --- range-vector functions --------------------------------------------------------------------


def over_range(fn, *, keep_name: bool = False, thinned: bool = False) -> Impl:
    """A function of a range vector (and scalar arguments): ``fn(windows, scalars, times)`` returns
    (values, present), each (series, steps). Steps whose window is empty have no result.
    ``thinned``: ``fn`` reads of a window only its first and last samples, its counter resets and
    its count (``Windows.counts``), which the store's rollups keep (``store.rollups``)."""

    def impl(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
        args = [ev.eval(a, times, thinned) for a in call.args]
        w = next(a for a in args if isinstance(a, Windows))
        scalars = [a for a in args if not isinstance(a, Windows)]
        values, present = fn(w, scalars, times)
        present = present & (w.hi > w.lo)
        labels = w.labels if keep_name else [drop_name(ls) for ls in w.labels]
        return merge(list(labels), values, present, per_step=False)

    return impl


def _absent_over_time(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
    (w,) = _args(ev, call, times)
    missing = ~(w.hi > w.lo).any(axis=0)
    arg = unwrap(call.args[0])
    labels = () if isinstance(arg, Subquery) else _absent_labels(arg)
    return merge([labels], np.ones((1, len(times))), missing[None, :])


_np_unary = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "ln": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
}

FUNCTIONS: dict[str, Impl] = {
    **{name: elementwise(fn) for name, fn in _np_unary.items()},
    "rad": elementwise(lambda v: v * math.pi / 180),
    "deg": elementwise(lambda v: v * 180 / math.pi),
    "sgn": elementwise(_sgn),
    "round": elementwise(_round),
    "clamp": _clamp,
    "clamp_max": elementwise(lambda v, hi: np.minimum(hi, v)),
    "clamp_min": elementwise(lambda v, lo: np.maximum(lo, v)),
    "timestamp": _timestamp,
    "vector": _vector,
    "scalar": _scalar,
    "time": _time,
    "pi": _pi,
    "year": _date(_year),
    "month": _date(_month),
    "day_of_month": _date(_day_of_month),
    "day_of_year": _date(_day_of_year),
    "day_of_week": _date(_day_of_week),
    "days_in_month": _date(_days_in_month),
    "hour": _date(lambda s: (s // 3600) % 24),
    "minute": _date(lambda s: (s // 60) % 60),
    "sort": _sort(descending=False),
    "sort_desc": _sort(descending=True),
    "sort_by_label": _sort_by_label(descending=False),
    "sort_by_label_desc": _sort_by_label(descending=True),
    "label_replace": _label_replace,
    "label_join": _label_join,
    "absent": _absent,
    "absent_over_time": _absent_over_time,
    "histogram_quantile": _histogram_quantile,
    "rate": over_range(extrapolated_rate(is_counter=True, is_rate=True), thinned=True),
    "increase": over_range(extrapolated_rate(is_counter=True, is_rate=False), thinned=True),
    "delta": over_range(extrapolated_rate(is_counter=False, is_rate=False), thinned=True),
    "irate": over_range(instant_value(is_rate=True)),
    "idelta": over_range(instant_value(is_rate=False)),
    "changes": over_range(changes),
    "resets": over_range(resets, thinned=True),
    "deriv": over_range(deriv),
    "predict_linear": over_range(predict_linear),
    "holt_winters": over_range(holt_winters),
    "sum_over_time": over_range(sum_over_time),
    "avg_over_time": over_range(avg_over_time),
    "min_over_time": over_range(reduce(np.fmin)),
    "max_over_time": over_range(reduce(np.fmax)),
    "count_over_time": over_range(count_over_time, thinned=True),
    "last_over_time": over_range(last_over_time, keep_name=True, thinned=True),
    "present_over_time": over_range(present_over_time, thinned=True),
    "stddev_over_time": over_range(stddev_over_time),
    "stdvar_over_time": over_range(stdvar_over_time),
    "quantile_over_time": over_range(by_sorted_windows(row_quantiles)),
    "mad_over_time": over_range(by_sorted_windows(mad_rows)),
    **{
        name: _native_histograms(name)
        for name in (
            "histogram_count",
            "histogram_sum",
            "histogram_avg",
            "histogram_fraction",
            "histogram_stddev",
            "histogram_stdvar",
        )
    },
}
