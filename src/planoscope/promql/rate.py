"""The rate family over range vectors: ``rate``, ``increase`` and ``delta`` (Prometheus's
``extrapolatedRate``), ``irate`` and ``idelta`` (its ``instantValue``). Each returns (values,
present), each (series, steps), as ``functions.over_range`` calls it.

The extrapolation's terms of time (where the first and last samples of a window fall, the
average interval) are the same for every series of one scrape, which share their sample times:
they are worked out once per group of such series (``Windows.groups``), and only the values are
taken per series."""

from __future__ import annotations

import numpy as np

from .values import Windows, at


def extrapolated_rate(is_counter: bool, is_rate: bool):
    """Prometheus's ``extrapolatedRate``: the increase between the first and last sample (counter
    resets added back), extrapolated towards the window's ends — by at most half the average sample
    interval, and for counters never below zero."""

    def fn(w: Windows, scalars, times):
        lo, hi = w.lo, w.hi
        counts = w.counts()
        ok = counts >= 2
        if not ok.any():
            return np.zeros(lo.shape), ok
        reps, of = w.representatives()
        g_lo, g_hi = lo[reps], hi[reps]
        first_t, last_t = at(w.ts, g_lo), at(w.ts, g_hi - 1)
        with np.errstate(all="ignore"):  # windows of fewer than two samples: masked by ``ok``
            to_start = (first_t - w.first) / 1000.0
            to_end = (w.last - last_t) / 1000.0
            sampled = (last_t - first_t) / 1000.0
            average = sampled / (counts[reps] - 1)
            threshold = average * 1.1
            to_start = np.where(to_start >= threshold, average / 2, to_start)
            to_end = np.where(to_end >= threshold, average / 2, to_end)
            factor = _factor(sampled, to_start, to_end, w.range if is_rate else None)
        first_v = at(w.values, lo)
        result = at(w.values, hi - 1) - first_v
        if is_counter:
            result = add_resets(w, result)
        with np.errstate(all="ignore"):
            out = result * factor[of]
        if is_counter:
            # Counters start at zero: extrapolate no further back than where this one would be 0
            # (sampled × first / result < to_start), which only a counter that began in or near the
            # window reaches: those few windows are found loosely, then decided as Prometheus does.
            with np.errstate(all="ignore"):
                near = ok & (result > 0) & (first_v >= 0) & (first_v <= (to_start / sampled)[of] * result * (1 + 1e-9))
            r, c = np.nonzero(near)
            if len(r):
                g = of[r]
                to_zero = sampled[g, c] * (first_v[r, c] / result[r, c])
                zeroed = to_zero < to_start[g, c]
                r, c, g, to_zero = r[zeroed], c[zeroed], g[zeroed], to_zero[zeroed]
                out[r, c] = result[r, c] * _factor(sampled[g, c], to_zero, to_end[g, c], w.range if is_rate else None)
        out[~ok] = 0.0
        return out, ok

    return fn


def _factor(sampled, to_start, to_end, range_ms: int | None):
    """How far the sampled interval extends (per second of the range, for a rate)."""
    factor = ((sampled + to_start) + to_end) / sampled
    return factor / (range_ms / 1000.0) if range_ms is not None else factor


def add_resets(w: Windows, result: np.ndarray) -> np.ndarray:
    """Adds, in order, the value before each drop inside each window (a counter reset)."""
    v = w.values
    dropped = v[1:] < v[:-1]
    begins = w.starts[1:-1]
    dropped[begins[(begins > 0) & (begins < len(v))] - 1] = False  # from one series to the next
    drops = np.flatnonzero(dropped) + 1
    if len(drops) == 0:
        return result
    shape = result.shape
    lo, hi = w.lo.ravel(), w.hi.ravel()
    a = np.searchsorted(drops, lo + 1, "left")
    b = np.searchsorted(drops, hi, "left")
    n = b - a
    result = result.ravel().copy()
    for k in range(int(n.max(initial=0))):
        act = np.flatnonzero(n > k)
        result[act] += v[drops[a[act] + k] - 1]
    return result.reshape(shape)


def instant_value(is_rate: bool):
    """Prometheus's ``instantValue``: from the last two samples of each window."""

    def fn(w: Windows, scalars, times):
        lo, hi = w.lo, w.hi
        ok = hi - lo >= 2
        last, prev = at(w.values, hi - 1), at(w.values, hi - 2)
        interval = at(w.ts, hi - 1) - at(w.ts, hi - 2)
        ok &= interval != 0
        if is_rate:
            out = np.where(last < prev, last, last - prev) / (np.where(interval == 0, 1, interval) / 1000.0)
        else:
            out = last - prev
        return out, ok

    return fn
