"""Functions of a range vector over each window, beside the rate family (``rate.py``): the
``*_over_time`` aggregations (Kahan sums and incremental means, as Prometheus computes them),
``changes``, ``resets``, ``deriv``, ``predict_linear`` and ``holt_winters``. Each takes
(windows, scalar arguments, step times) and returns (values, present), each (series, steps), as
``functions.over_range`` calls it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .values import EvalError, Windows, at


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


def _redone(w: Windows, fast: np.ndarray, redo: np.ndarray, exact) -> tuple[np.ndarray, np.ndarray]:
    """``fast``, with the windows of ``redo`` computed the slow, exact way by ``exact(windows)``
    (the other windows left empty for it)."""
    if redo.any():
        only = Windows(w.labels, w.ts, w.values, w.starts, w.lo, np.where(redo, w.hi, w.lo), w.first, w.last, w.range)
        fast = np.where(redo, exact(only)[0], fast)
    return fast, np.ones(w.lo.shape, bool)


def sum_over_time(w: Windows, scalars, times):
    total, redo = _window_sums(w)
    return _redone(w, total, redo, _kahan_sum_over_time)


def _kahan_sum_over_time(w: Windows):
    walk = Lockstep(w.lo, w.hi)
    total, c = walk.zeros(), walk.zeros()
    for _, m, pos in walk:
        total[:m], c[:m] = _kahan_inc(w.values[pos], total[:m], c[:m])
    out = np.where(np.isinf(total), total, total + c)
    return walk.result(out), np.ones(w.lo.shape, bool)


def avg_over_time(w: Windows, scalars, times):
    total, redo = _window_sums(w)
    return _redone(w, total / np.maximum(w.hi - w.lo, 1), redo, _incremental_mean)


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


def stdvar_over_time(w: Windows, scalars, times):
    return _variance_over_time(w), np.ones(w.lo.shape, bool)


def stddev_over_time(w: Windows, scalars, times):
    return np.sqrt(_variance_over_time(w)), np.ones(w.lo.shape, bool)


def reduce(ufunc) -> Callable:
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


def count_over_time(w: Windows, scalars, times):
    return w.counts().astype(np.float64), np.ones(w.lo.shape, bool)


def last_over_time(w: Windows, scalars, times):
    return at(w.values, w.hi - 1), np.ones(w.lo.shape, bool)


def present_over_time(w: Windows, scalars, times):
    return np.ones(w.lo.shape), np.ones(w.lo.shape, bool)


def _prefix(flags: np.ndarray) -> np.ndarray:
    out = np.zeros(len(flags) + 1, np.int64)
    np.cumsum(flags, out=out[1:])
    return out


def changes(w: Windows, scalars, times):
    v = w.values
    changed = np.zeros(len(v), bool)
    changed[1:] = (v[1:] != v[:-1]) & ~(np.isnan(v[1:]) & np.isnan(v[:-1]))
    p = _prefix(changed)
    # Pairs within a window: positions lo+1 … hi-1 (windows never span two series).
    counts = p[w.hi] - p[np.minimum(w.lo + 1, w.hi)]
    return counts.astype(np.float64), np.ones(w.lo.shape, bool)


def resets(w: Windows, scalars, times):
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


def deriv(w: Windows, scalars, times):
    # Relative to the first sample's time, which keeps the sums small (Prometheus issue 2674).
    slope, _ = _linear_regression(w, at(w.ts, w.lo))
    return slope, w.hi - w.lo >= 2


def predict_linear(w: Windows, scalars, times):
    (duration,) = scalars
    at = np.broadcast_to(times[None, :], w.lo.shape)
    slope, intercept = _linear_regression(w, at)
    return slope * duration[None, :] + intercept, w.hi - w.lo >= 2


def holt_winters(w: Windows, scalars, times):
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


def row_quantiles(phi: np.ndarray, ordered: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Prometheus's ``quantile`` of each row's sorted values (phi one per row)."""
    rank = phi * (counts - 1)
    lower = np.maximum(0, np.floor(rank)).astype(np.int64)
    upper = np.minimum(counts - 1, lower + 1)
    weight = rank - np.floor(rank)
    rows = np.arange(len(counts))
    lower, upper = np.clip(lower, 0, ordered.shape[1] - 1), np.clip(upper, 0, ordered.shape[1] - 1)
    out = ordered[rows, lower] * (1 - weight) + ordered[rows, upper] * weight
    return np.where(np.isnan(phi), np.nan, np.where(phi < 0, -np.inf, np.where(phi > 1, np.inf, out)))


def by_sorted_windows(fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Callable:
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


def mad_rows(phi: np.ndarray, ordered: np.ndarray, counts: np.ndarray) -> np.ndarray:
    half = np.full(len(counts), 0.5)
    median = row_quantiles(half, ordered, counts)
    return row_quantiles(half, _sorted_rows(np.abs(ordered - median[:, None]), counts), counts)
