"""Quantiles: of a set of values (``quantile``, ``quantile_over_time``), and of classic histogram
buckets (``histogram_quantile``), ported from Prometheus's ``promql/quantile.go``."""

from __future__ import annotations

import math

import numpy as np

SMALL_DELTA_TOLERANCE = 1e-12
_MIN_NORMAL = 2.2250738585072014e-308


def quantile(q: float, values: np.ndarray) -> float:
    """The q-quantile of values, interpolating between the closest ranks; NaNs sort first."""
    if len(values) == 0 or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    nan = np.isnan(values)
    ordered = np.concatenate([values[nan], np.sort(values[~nan])])
    n = len(ordered)
    rank = q * (n - 1)
    lower = max(0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return float(ordered[lower] * (1 - weight) + ordered[upper] * weight)


def column_quantiles(q: float, values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``quantile(q, …)`` of the present values of every column of a (k, T) array."""
    steps = values.shape[1]
    if math.isnan(q):
        return np.full(steps, math.nan)
    if q < 0 or q > 1:
        return np.full(steps, -math.inf if q < 0 else math.inf)
    order_key = np.where(~present, 2, np.where(np.isnan(values), 0, 1))
    order = np.lexsort((values, order_key), axis=0)
    ordered = np.take_along_axis(values, order, axis=0)
    n = present.sum(axis=0)
    rank = q * (n - 1)
    lower = np.maximum(0, np.floor(rank)).astype(np.int64)
    upper = np.minimum(n - 1, lower + 1).clip(0)
    weight = rank - np.floor(rank)
    cols = np.arange(steps)
    return ordered[lower, cols] * (1 - weight) + ordered[upper, cols] * weight


def almost_equal(a: np.ndarray, b: np.ndarray, epsilon: float) -> np.ndarray:
    """Prometheus's ``almost.Equal``, elementwise."""
    both_nan = np.isnan(a) & np.isnan(b)
    abs_sum = np.abs(a) + np.abs(b)
    diff = np.abs(a - b)
    tiny = (a == 0) | (b == 0) | (abs_sum < _MIN_NORMAL)
    rel = np.where(tiny, diff < epsilon * _MIN_NORMAL, diff / np.minimum(abs_sum, np.finfo(np.float64).max) < epsilon)
    return both_nan | (a == b) | rel


def bucket_quantile(q: np.ndarray, upper: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``bucketQuantile`` for many steps of one classic histogram: ``upper`` (m,) bucket bounds
    (any order, repeats allowed), ``counts`` (m, S) cumulative counts, ``q`` (S,). Returns (S,).

    As Prometheus: the highest bucket must be +Inf; buckets of equal bound are summed; counts that
    decrease are raised to the previous bucket's (and deltas within 1e-12 relative ignored);
    the quantile is interpolated linearly within its bucket (from 0 for the lowest, unless that
    bucket's bound is ≤ 0).
    """
    steps = counts.shape[1]
    out = np.full(steps, math.nan)
    out[q < 0] = -math.inf
    out[q > 1] = math.inf
    todo = (q >= 0) & (q <= 1)
    order = np.argsort(upper, kind="stable")
    upper, counts = upper[order], counts[order]
    if not np.isposinf(upper[-1]) or not todo.any():
        return out
    # Coalesce buckets with the same upper bound.
    bounds, first = np.unique(upper, return_index=True)
    merged = np.empty((len(bounds), steps))
    for b, start in enumerate(first):
        stop = first[b + 1] if b + 1 < len(first) else len(upper)
        acc = counts[start].copy()
        for r in range(start + 1, stop):
            acc = acc + counts[r]
        merged[b] = acc
    # Force monotonicity, sequentially as Prometheus does.
    prev = merged[0].copy()
    for b in range(1, len(bounds)):
        curr = merged[b]
        same = curr == prev
        close = ~same & almost_equal(prev, curr, SMALL_DELTA_TOLERANCE)
        lower = ~same & ~close & (curr < prev)
        merged[b] = np.where(close | lower, prev, curr)
        prev = np.where(same | close | lower, prev, curr)
    m = len(bounds)
    if m < 2:
        return out
    observations = merged[-1]
    ok = todo & (observations != 0)
    rank = q * observations
    reached = merged[: m - 1] >= rank[None, :]
    b = np.where(reached.any(axis=0), reached.argmax(axis=0), m - 1)
    cols = np.arange(steps)
    bucket_end = bounds[b]
    count = merged[b, cols]
    below = np.where(b > 0, merged[np.maximum(b - 1, 0), cols], 0.0)
    bucket_start = np.where(b > 0, bounds[np.maximum(b - 1, 0)], 0.0)
    interpolated = bucket_start + (bucket_end - bucket_start) * ((rank - below) / (count - below))
    result = np.where(b == m - 1, bounds[m - 2], np.where((b == 0) & (bounds[0] <= 0), bounds[0], interpolated))
    out[ok] = result[ok]
    return out
