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
    at,
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


def over_range(fn, *, keep_name: bool = False) -> Impl:
    """A function of a range vector (and scalar arguments): ``fn(windows, scalars, times)`` returns
    (values, present), each (series, steps). Steps whose window is empty have no result."""

    def impl(ev: Evaluator, call: Call, times: np.ndarray) -> Steps:
        args = _args(ev, call, times)
        w = next(a for a in args if isinstance(a, Windows))
        scalars = [a for a in args if not isinstance(a, Windows)]
        values, present = fn(w, scalars, times)
        present = present & (w.hi > w.lo)
        labels = w.labels if keep_name else [drop_name(ls) for ls in w.labels]
        return merge(list(labels), values, present, per_step=False)

    return impl


def _kahan_inc(inc, total, c):
    t = total + inc
    c = np.where(np.abs(total) >= np.abs(inc), c + ((total - t) + inc), c + ((inc - t) + total))
    return t, c


class Lockstep:
    """Walks all windows in step: the k-th iteration visits the k-th sample of every window that
    has one. State arrays are in the walk's order (longest windows first, so the active windows at
    step k are a prefix); ``result`` puts them back in window order."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray):
        self.shape = lo.shape
        lo, hi = lo.ravel(), hi.ravel()
        counts = hi - lo
        self.order = np.argsort(-counts, kind="stable")
        self.lo = lo[self.order]
        self.counts = counts[self.order]
        self._desc = -self.counts

    def __iter__(self):
        longest = int(self.counts[0]) if len(self.counts) else 0
        for k in range(longest):
            m = int(np.searchsorted(self._desc, -k, "left"))
            yield k, m, self.lo[:m] + k

    def zeros(self) -> np.ndarray:
        return np.zeros(len(self.order))

    def result(self, walk_order: np.ndarray) -> np.ndarray:
        out = np.empty(len(self.order), dtype=walk_order.dtype)
        out[self.order] = walk_order
        return out.reshape(self.shape)


_EPS = np.finfo(np.float64).eps


def _window_sums(w: Windows) -> tuple[np.ndarray, np.ndarray]:
    """Plain sums of each window (``reduceat``), and which of them may be off by more than 1e-12
    relative (cancellation, overflow, non-finite values): those Prometheus's Kahan sum must redo."""
    lo, hi = w.lo.ravel(), w.hi.ravel()
    if len(lo) == 0 or len(w.values) == 0:
        return np.zeros(w.lo.shape), np.zeros(w.lo.shape, bool)
    bounds = np.empty(2 * len(lo), np.int64)
    bounds[0::2], bounds[1::2] = lo, hi
    padded = np.append(w.values, 0.0)
    total = np.add.reduceat(padded, bounds)[0::2]
    magnitude = np.add.reduceat(np.abs(padded), bounds)[0::2]
    n = hi - lo
    exact = np.isfinite(magnitude) & (n * _EPS * magnitude <= 1e-12 * np.abs(total))
    exact |= n <= 1
    return total.reshape(w.lo.shape), ~exact.reshape(w.lo.shape)


def _redo(w: Windows, redo: np.ndarray) -> Windows:
    """The windows to compute the slow, exact way (the others left empty)."""
    return Windows(w.labels, w.ts, w.values, w.starts, w.lo, np.where(redo, w.hi, w.lo), w.first, w.last, w.range)


def _sum_over_time(w: Windows, scalars, times):
    total, redo = _window_sums(w)
    if redo.any():
        exact, _ = _kahan_sum_over_time(_redo(w, redo))
        total = np.where(redo, exact, total)
    return total, np.ones(w.lo.shape, bool)


def _kahan_sum_over_time(w: Windows):
    walk = Lockstep(w.lo, w.hi)
    total, c = walk.zeros(), walk.zeros()
    for _, m, pos in walk:
        total[:m], c[:m] = _kahan_inc(w.values[pos], total[:m], c[:m])
    out = np.where(np.isinf(total), total, total + c)
    return walk.result(out), np.ones(w.lo.shape, bool)


def _avg_over_time(w: Windows, scalars, times):
    total, redo = _window_sums(w)
    mean = total / np.maximum(w.hi - w.lo, 1)
    if redo.any():
        exact, _ = _incremental_mean(_redo(w, redo))
        mean = np.where(redo, exact, mean)
    return mean, np.ones(w.lo.shape, bool)


def _incremental_mean(w: Windows):
    """Prometheus's avg_over_time: a running mean (Kahan-summed), which cannot overflow."""
    walk = Lockstep(w.lo, w.hi)
    mean, c = walk.zeros(), walk.zeros()
    for k, m, pos in walk:
        f = w.values[pos]
        cur, cc = mean[:m], c[:m]
        count = k + 1
        hold = np.isinf(cur) & ((np.isinf(f) & ((cur > 0) == (f > 0))) | (~np.isinf(f) & ~np.isnan(f)))
        new, newc = _kahan_inc(f / count - cur / count, cur, cc)
        mean[:m] = np.where(hold, cur, new)
        c[:m] = np.where(hold, cc, newc)
    out = np.where(np.isinf(mean), mean, mean + c)
    return walk.result(out), np.ones(w.lo.shape, bool)


def _variance_over_time(w: Windows):
    walk = Lockstep(w.lo, w.hi)
    mean, cmean, aux, caux = walk.zeros(), walk.zeros(), walk.zeros(), walk.zeros()
    for k, m, pos in walk:
        f = w.values[pos]
        delta = f - (mean[:m] + cmean[:m])
        mean[:m], cmean[:m] = _kahan_inc(delta / (k + 1), mean[:m], cmean[:m])
        aux[:m], caux[:m] = _kahan_inc(delta * (f - (mean[:m] + cmean[:m])), aux[:m], caux[:m])
    count = np.maximum(walk.counts, 1)
    return walk.result((aux + caux) / count)


def _stdvar_over_time(w: Windows, scalars, times):
    return _variance_over_time(w), np.ones(w.lo.shape, bool)


def _stddev_over_time(w: Windows, scalars, times):
    return np.sqrt(_variance_over_time(w)), np.ones(w.lo.shape, bool)


def _reduce(ufunc) -> Callable:
    """min/max over each window (``reduceat`` on interleaved bounds handles overlapping windows)."""

    def fn(w: Windows, scalars, times):
        lo, hi = w.lo.ravel(), w.hi.ravel()
        if len(lo) == 0 or len(w.values) == 0:
            return np.zeros(w.lo.shape), np.zeros(w.lo.shape, bool)
        padded = np.append(w.values, 0.0)
        bounds = np.empty(2 * len(lo), np.int64)
        bounds[0::2], bounds[1::2] = lo, hi
        out = ufunc.reduceat(padded, bounds)[0::2]
        return out.reshape(w.lo.shape), np.ones(w.lo.shape, bool)

    return fn


def _count_over_time(w: Windows, scalars, times):
    return w.counts().astype(np.float64), np.ones(w.lo.shape, bool)


def _last_over_time(w: Windows, scalars, times):
    return at(w.values, w.hi - 1), np.ones(w.lo.shape, bool)


def _present_over_time(w: Windows, scalars, times):
    return np.ones(w.lo.shape), np.ones(w.lo.shape, bool)


def _prefix(flags: np.ndarray) -> np.ndarray:
    out = np.zeros(len(flags) + 1, np.int64)
    np.cumsum(flags, out=out[1:])
    return out


def _changes(w: Windows, scalars, times):
    v = w.values
    changed = np.zeros(len(v), bool)
    changed[1:] = (v[1:] != v[:-1]) & ~(np.isnan(v[1:]) & np.isnan(v[:-1]))
    p = _prefix(changed)
    # Pairs within a window: positions lo+1 … hi-1 (windows never span two series).
    counts = p[w.hi] - p[np.minimum(w.lo + 1, w.hi)]
    return counts.astype(np.float64), np.ones(w.lo.shape, bool)


def _resets(w: Windows, scalars, times):
    v = w.values
    dropped = np.zeros(len(v), bool)
    dropped[1:] = v[1:] < v[:-1]
    p = _prefix(dropped)
    counts = p[w.hi] - p[np.minimum(w.lo + 1, w.hi)]
    return counts.astype(np.float64), np.ones(w.lo.shape, bool)


def _linear_regression(w: Windows, intercept_ms: np.ndarray):
    """Least squares over each window (Kahan sums, as Prometheus's ``linearRegression``), with x in
    seconds from ``intercept_ms`` (one per window). Returns slope, intercept."""
    walk = Lockstep(w.lo, w.hi)
    icpt = intercept_ms.ravel()[walk.order]
    sx, cx, sy, cy, sxy, cxy, sx2, cx2 = (walk.zeros() for _ in range(8))
    init_y = at(w.values, walk.lo)
    const_y = np.ones(len(walk.order), bool)
    for k, m, pos in walk:
        y = w.values[pos]
        if k > 0:
            const_y[:m] &= ~(y != init_y[:m])
        x = (w.ts[pos] - icpt[:m]) / 1e3
        sx[:m], cx[:m] = _kahan_inc(x, sx[:m], cx[:m])
        sy[:m], cy[:m] = _kahan_inc(y, sy[:m], cy[:m])
        sxy[:m], cxy[:m] = _kahan_inc(x * y, sxy[:m], cxy[:m])
        sx2[:m], cx2[:m] = _kahan_inc(x * x, sx2[:m], cx2[:m])
    n = walk.counts.astype(np.float64)
    sx, sy, sxy, sx2 = sx + cx, sy + cy, sxy + cxy, sx2 + cx2
    cov = sxy - sx * sy / n
    var = sx2 - sx * sx / n
    slope = cov / var
    intercept = sy / n - slope * sx / n
    inf_const = const_y & np.isinf(init_y)
    slope = np.where(const_y, np.where(inf_const, np.nan, 0.0), slope)
    intercept = np.where(const_y, np.where(inf_const, np.nan, init_y), intercept)
    return walk.result(slope), walk.result(intercept)


def _deriv(w: Windows, scalars, times):
    # Relative to the first sample's time, which keeps the sums small (Prometheus issue 2674).
    slope, _ = _linear_regression(w, at(w.ts, w.lo))
    return slope, w.hi - w.lo >= 2


def _predict_linear(w: Windows, scalars, times):
    (duration,) = scalars
    at = np.broadcast_to(times[None, :], w.lo.shape)
    slope, intercept = _linear_regression(w, at)
    return slope * duration[None, :] + intercept, w.hi - w.lo >= 2


def _holt_winters(w: Windows, scalars, times):
    sf, tf = scalars
    called = (w.hi > w.lo).any(axis=0)
    bad_sf = called & ((sf <= 0) | (sf >= 1))
    if bad_sf.any():
        raise EvalError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {sf[bad_sf.argmax()]:f}")
    bad_tf = called & ((tf <= 0) | (tf >= 1))
    if bad_tf.any():
        raise EvalError(f"invalid trend factor. Expected: 0 < tf < 1, got: {tf[bad_tf.argmax()]:f}")
    walk = Lockstep(w.lo, w.hi)
    steps = w.lo.shape[1]
    col = np.tile(np.arange(steps), w.lo.shape[0])[walk.order]
    sfw, tfw = sf[col], tf[col]
    s0, s1, b = walk.zeros(), walk.zeros(), walk.zeros()
    for k, m, pos in walk:
        f = w.values[pos]
        if k == 0:
            s1[:m] = f
            continue
        if k == 1:
            b[:m] = f - s1[:m]
        else:
            b[:m] = tfw[:m] * (s1[:m] - s0[:m]) + (1 - tfw[:m]) * b[:m]
        x = sfw[:m] * f
        y = (1 - sfw[:m]) * (s1[:m] + b[:m])
        s0[:m], s1[:m] = s1[:m], x + y
    return walk.result(s1), w.hi - w.lo >= 2


def _sorted_rows(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each row's first ``counts`` values sorted, NaNs first (as Prometheus sorts), padding last."""
    width = values.shape[1]
    pad = np.arange(width)[None, :] >= counts[:, None]
    key = np.where(pad, 2, np.where(np.isnan(values), 0, 1))
    order = np.lexsort((values, key), axis=1)
    return np.take_along_axis(values, order, axis=1)


def _row_quantiles(phi: np.ndarray, ordered: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Prometheus's ``quantile`` of each row's sorted values (phi one per row)."""
    rank = phi * (counts - 1)
    lower = np.maximum(0, np.floor(rank)).astype(np.int64)
    upper = np.minimum(counts - 1, lower + 1)
    weight = rank - np.floor(rank)
    rows = np.arange(len(counts))
    lower, upper = np.clip(lower, 0, ordered.shape[1] - 1), np.clip(upper, 0, ordered.shape[1] - 1)
    out = ordered[rows, lower] * (1 - weight) + ordered[rows, upper] * weight
    return np.where(np.isnan(phi), np.nan, np.where(phi < 0, -np.inf, np.where(phi > 1, np.inf, out)))


def _by_sorted_windows(fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Callable:
    """A function of each window's sorted values: windows are padded into rows, a chunk at a time,
    so that sorting and ranking are numpy work. ``fn(phi, ordered, counts)`` gets one row a window."""

    def run(w: Windows, scalars, times):
        shape = w.lo.shape
        lo, counts = w.lo.ravel(), (w.hi - w.lo).ravel()
        phi = np.broadcast_to(scalars[0][None, :], shape).ravel() if scalars else np.zeros(len(lo))
        out = np.zeros(len(lo))
        alive = np.flatnonzero(counts > 0)
        if len(alive) == 0:
            return out.reshape(shape), np.ones(shape, bool)
        width = int(counts[alive].max())
        chunk = max(1, 4_000_000 // width)
        for start in range(0, len(alive), chunk):
            rows = alive[start : start + chunk]
            idx = np.minimum(lo[rows, None] + np.arange(width)[None, :], len(w.values) - 1)
            ordered = _sorted_rows(w.values[idx], counts[rows])
            out[rows] = fn(phi[rows], ordered, counts[rows])
        return out.reshape(shape), np.ones(shape, bool)

    return run


def _mad_rows(phi: np.ndarray, ordered: np.ndarray, counts: np.ndarray) -> np.ndarray:
    half = np.full(len(counts), 0.5)
    median = _row_quantiles(half, ordered, counts)
    return _row_quantiles(half, _sorted_rows(np.abs(ordered - median[:, None]), counts), counts)


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
    "rate": over_range(extrapolated_rate(is_counter=True, is_rate=True)),
    "increase": over_range(extrapolated_rate(is_counter=True, is_rate=False)),
    "delta": over_range(extrapolated_rate(is_counter=False, is_rate=False)),
    "irate": over_range(instant_value(is_rate=True)),
    "idelta": over_range(instant_value(is_rate=False)),
    "changes": over_range(_changes),
    "resets": over_range(_resets),
    "deriv": over_range(_deriv),
    "predict_linear": over_range(_predict_linear),
    "holt_winters": over_range(_holt_winters),
    "sum_over_time": over_range(_sum_over_time),
    "avg_over_time": over_range(_avg_over_time),
    "min_over_time": over_range(_reduce(np.fmin)),
    "max_over_time": over_range(_reduce(np.fmax)),
    "count_over_time": over_range(_count_over_time),
    "last_over_time": over_range(_last_over_time, keep_name=True),
    "present_over_time": over_range(_present_over_time),
    "stddev_over_time": over_range(_stddev_over_time),
    "stdvar_over_time": over_range(_stdvar_over_time),
    "quantile_over_time": over_range(_by_sorted_windows(_row_quantiles)),
    "mad_over_time": over_range(_by_sorted_windows(_mad_rows)),
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
