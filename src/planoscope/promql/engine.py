"""The engine: evaluates an expression tree against a Queryable, as Prometheus 2.x does.

Every node is evaluated for a whole array of step times at once (an instant query is one step):
an instant vector is a ``Steps`` (series × steps arrays), a scalar a float array, a range vector a
``Windows`` (each series' samples once, and per step the bounds of its window). Functions,
aggregations and binary operators are numpy work over those arrays, not loops over points.

>>> from planoscope.promql import Engine, MemoryStorage
>>> store = MemoryStorage()
>>> store.add({"__name__": "up"}, [0, 15_000, 30_000], [1, 1, 0])
>>> Engine().instant_query(store, "sum(up)", 30_000).samples[0].v
0.0
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planoscope.query.params import MAX_POINTS

from . import aggregations, binary, functions
from .storage import Matcher, Queryable, is_stale, matches_all, metric_name
from .syntax import (
    Aggregate,
    At,
    Binary,
    Call,
    Expr,
    MatrixSelector,
    Number,
    Paren,
    String,
    Subquery,
    Unary,
    VectorSelector,
    children,
    parse,
    value_type,
)
from .values import (
    LimitExceeded,
    Matrix,
    ParseError,
    Sample,
    Scalar,
    Selection,
    Series,
    Steps,
    Timeout,
    Unsupported,
    Value,
    Vector,
    Windows,
    at,
    drop_name,
    labels_of,
    merge,
)
from .values import String as StringValue

TOO_MANY_SAMPLES = "query processing would load too many samples into memory in query execution"
TOO_MANY_SERIES = "query processing would load too many series into memory in query execution"


@dataclass(frozen=True)
class Limits:
    """What one query may use. ``max_samples`` counts samples and points held at once, as
    Prometheus's ``--query.max-samples`` (default 50,000,000), and also bounds every series x steps
    working array (stricter than Prometheus where a series is absent at most steps: the arrays
    are dense). ``max_series``: the series selected from the store, all selectors together."""

    max_samples: int = 50_000_000
    max_series: int = 500_000
    max_points: int = MAX_POINTS  # steps of a range query
    timeout_s: float = 120.0


class Engine:
    """A PromQL engine with Prometheus 2.x semantics.

    ``lookback_ms``: how far back an instant selector looks for a sample (Prometheus's
    ``--query.lookback-delta``, 5 m). ``subquery_step_ms``: the step of a subquery that names none
    (Prometheus's global evaluation interval, 1 m).
    """

    def __init__(self, *, lookback_ms: int = 300_000, subquery_step_ms: int = 60_000, limits: Limits = Limits()):
        self.lookback_ms = lookback_ms
        self.subquery_step_ms = subquery_step_ms
        self.limits = limits

    def instant_query(self, queryable: Queryable, query: str | Expr, time_ms: int) -> Value:
        """Evaluate at one time: a Vector, Scalar, String or (for a range vector) Matrix."""
        expr = parse(query) if isinstance(query, str) else query
        times = np.array([time_ms], np.int64)
        ev = Evaluator(self, queryable, time_ms, time_ms)
        with np.errstate(all="ignore"):  # IEEE results (NaN, ±Inf) are PromQL's, not warnings
            out = ev.eval(expr, times)
        kind = value_type(expr)
        if kind == "scalar":
            return Scalar(time_ms, float(out[0]))
        if kind == "string":
            return StringValue(time_ms, out)
        if kind == "matrix":
            series = [
                Series(out.labels[i], out.ts[out.lo[i, 0] : out.hi[i, 0]], out.values[out.lo[i, 0] : out.hi[i, 0]])
                for i in range(len(out))
                if out.hi[i, 0] > out.lo[i, 0]
            ]
            return Matrix(sorted(series, key=lambda s: s.labels))
        rows = np.flatnonzero(out.present[:, 0])
        return Vector([Sample(out.labels[i], time_ms, float(out.values[i, 0])) for i in rows])

    def range_query(self, queryable: Queryable, query: str | Expr, start_ms: int, end_ms: int, step_ms: int) -> Matrix:
        """Evaluate at ``start_ms, start_ms + step_ms, … ≤ end_ms``: a Matrix sorted by label set."""
        if step_ms <= 0:
            raise ParseError("zero or negative query resolution step widths are not accepted")
        if end_ms < start_ms:
            raise ParseError("end timestamp must not be before start time")
        if (end_ms - start_ms) // step_ms > self.limits.max_points:
            raise ParseError(
                f"exceeded maximum resolution of {self.limits.max_points:,} points per timeseries. "
                "Try decreasing the query resolution (?step=XX)"
            )
        expr = parse(query) if isinstance(query, str) else query
        kind = value_type(expr)
        if kind not in ("vector", "scalar"):
            documented = {"matrix": "range vector", "string": "string"}[kind]
            raise ParseError(
                f'invalid expression type "{documented}" for range query, must be Scalar or instant Vector'
            )
        times = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        ev = Evaluator(self, queryable, start_ms, end_ms)
        with np.errstate(all="ignore"):
            out = ev.eval(expr, times)
        if kind == "scalar":
            return Matrix([Series((), times, np.asarray(out, np.float64))])
        series = [
            Series(out.labels[i], times[out.present[i]], out.values[i][out.present[i]])
            for i in range(len(out))
            if out.present[i].any()
        ]
        return Matrix(sorted(series, key=lambda s: s.labels))


# Functions whose result depends on the evaluation time even when their arguments do not.
AT_UNSAFE = {
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "time",
    "timestamp",
}


def cacheable(e: Expr, volatile: frozenset[str]) -> bool:
    """Whether ``e`` reads stored samples only, at or before each step: no ``@``, no negative
    offset, and every selector of a fixed metric name the queryable stores (not ``volatile``)."""
    if isinstance(e, VectorSelector):
        name = metric_name(e.matchers)
        return e.at is None and e.offset >= 0 and name is not None and name not in volatile
    if isinstance(e, MatrixSelector):
        return cacheable(e.selector, volatile)
    if isinstance(e, Subquery):
        return e.at is None and e.offset >= 0 and cacheable(e.expr, volatile)
    if isinstance(e, Call):
        return all(cacheable(a, volatile) for a in e.args)
    if isinstance(e, Aggregate):
        return cacheable(e.expr, volatile) and (e.param is None or cacheable(e.param, volatile))
    if isinstance(e, Binary):
        return cacheable(e.lhs, volatile) and cacheable(e.rhs, volatile)
    if isinstance(e, Unary | Paren):
        return cacheable(e.expr, volatile)
    return True


def step_invariant(e: Expr) -> bool:
    """Whether the expression has one value whatever the step (its selectors are all pinned with
    ``@``), so it is evaluated once and repeated, as Prometheus's StepInvariantExpr."""
    if isinstance(e, VectorSelector):
        return e.at is not None
    if isinstance(e, MatrixSelector):
        return e.selector.at is not None
    if isinstance(e, Subquery):
        return e.at is not None
    if isinstance(e, Number | String):
        return True
    if isinstance(e, Call):
        return e.func not in AT_UNSAFE and all(step_invariant(a) for a in e.args)
    if isinstance(e, Aggregate):
        return step_invariant(e.expr)
    return all(step_invariant(c) for c in children(e))


class Evaluator:
    """One query's evaluation: the store, the query's start and end (for ``@ start()``/``end()``),
    and the samples held so far against the limits."""

    def __init__(self, engine: Engine, queryable: Queryable, start_ms: int, end_ms: int):
        self.engine = engine
        self.queryable = queryable
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.lookback_ms = engine.lookback_ms
        self.limits = engine.limits
        self.samples = 0
        self.series = 0
        self.deadline = _time.monotonic() + engine.limits.timeout_s
        self._invariant: dict[int, bool] = {}
        self._cacheable: dict[int, bool] = {}

    # --- bookkeeping -------------------------------------------------------------------------

    def charge(self, samples: int) -> None:
        self.samples += samples
        if self.samples > self.limits.max_samples:
            raise LimitExceeded(TOO_MANY_SAMPLES)

    def reserve(self, rows: int, steps: int) -> None:
        """Refuses a (rows x steps) working array larger than the sample limit before allocating it:
        the limit is what keeps a query from exhausting memory, so it must hold for dense arrays too."""
        if rows * steps > self.limits.max_samples:
            raise LimitExceeded(TOO_MANY_SAMPLES)

    def _size(self, value) -> int:
        if isinstance(value, Steps):
            return value.points()
        if isinstance(value, Windows):
            return len(value.ts)
        if isinstance(value, np.ndarray):
            return len(value)
        return 0

    # --- evaluation --------------------------------------------------------------------------

    def eval(self, e: Expr, times: np.ndarray, thinned: bool = False):
        """The value of ``e`` at each of ``times`` (ms): Steps, a float array, Windows or a str.
        ``thinned``: a range vector may be read from the store's rollups (``range_vector``)."""
        if _time.monotonic() > self.deadline:
            raise Timeout("query timed out in expression evaluation")
        before = self.samples
        key = self._cache_key(e, times)
        if key is not None:
            cache = self.queryable.cache
            out = cache.get(key)
            if out is not None:
                self.charge(out.points())
                return out
            seq = cache.changes.seq
        if len(times) > 1 and self.is_invariant(e):
            once = self._eval(e, times[:1])
            self.reserve(len(once) if isinstance(once, Steps | Windows) else 1, len(times))
            out = _repeat(once, len(times))
        else:
            out = self._eval(e, times, thinned)
        self.samples = before
        self.charge(self._size(out))
        if key is not None and isinstance(out, Steps):
            cache.put(key, seq, int(times.max()), out)
        return out

    def _cache_key(self, e: Expr, times: np.ndarray):
        """What ``e`` at ``times`` is kept under in the queryable's cache (``promql.cache``), or
        None: no cache, not a range query, or not an aggregation or call of stored samples alone."""
        if len(times) < 2 or not isinstance(e, Aggregate | Call) or getattr(self.queryable, "cache", None) is None:
            return None
        if id(e) not in self._cacheable:
            self._cacheable[id(e)] = cacheable(e, getattr(self.queryable, "volatile_metrics", frozenset()))
        if not self._cacheable[id(e)]:
            return None
        step = int(times[1] - times[0])
        engine = self.engine
        return (
            e,
            int(times[0]),
            step,
            len(times),
            engine.lookback_ms,
            engine.subquery_step_ms,
            self.queryable.cache_scope,
        )

    def is_invariant(self, e: Expr) -> bool:
        key = id(e)
        if key not in self._invariant:
            self._invariant[key] = step_invariant(e) and not isinstance(e, Number | String)
        return self._invariant[key]

    def _eval(self, e: Expr, times: np.ndarray, thinned: bool = False):
        if isinstance(e, Number):
            return np.full(len(times), e.value)
        if isinstance(e, String):
            return e.value
        if isinstance(e, Paren):
            return self.eval(e.expr, times, thinned)
        if isinstance(e, VectorSelector):
            return self.instant_vector(e, times)[0]
        if isinstance(e, MatrixSelector):
            return self.range_vector(e, times, thinned)
        if isinstance(e, Subquery):
            return self.subquery(e, times)
        if isinstance(e, Unary):
            v = self.eval(e.expr, times)
            if isinstance(v, np.ndarray):
                return -v
            return merge([drop_name(ls) for ls in v.labels], -v.values, v.present, per_step=False)
        if isinstance(e, Call):
            impl = functions.FUNCTIONS.get(e.func)
            if impl is None:
                raise Unsupported(f"function {e.func}() is not supported")
            return impl(self, e, times)
        if isinstance(e, Aggregate):
            return aggregations.aggregate(self, e, times)
        if isinstance(e, Binary):
            return binary.evaluate(self, e, times)
        raise Unsupported(f"expression {type(e).__name__} is not supported")

    def at_times(self, at: At | None, offset: int, times: np.ndarray) -> np.ndarray:
        """The times a selector or subquery reads at: the step times, or the ``@`` time, minus the offset."""
        if at is None:
            return times - offset
        pinned = {"at": at.ms, "start": self.start_ms, "end": self.end_ms}[at.kind]
        return np.full(len(times), pinned - offset, np.int64)

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Selection:
        """The matching series with samples in ``[start_ms, end_ms]``, sorted by label set. A
        Queryable with ``select_block`` may answer it whole (see ``storage.Queryable``)."""
        start_ms, end_ms = int(start_ms), int(end_ms)
        block = getattr(self.queryable, "select_block", None)
        found = block(matchers, start_ms, end_ms) if block else None
        if found is None:
            out = []
            for raw_labels, ts, vs in self.queryable.select(matchers, start_ms, end_ms):
                if not matches_all(raw_labels, matchers):
                    continue
                ts = np.asarray(ts, np.int64)
                vs = np.asarray(vs, np.float64)
                lo, hi = np.searchsorted(ts, start_ms, "left"), np.searchsorted(ts, end_ms, "right")
                if hi > lo:
                    out.append((labels_of(raw_labels), ts[lo:hi], vs[lo:hi]))
            out.sort(key=lambda s: s[0])
            found = Selection.of(out)
        self.series += len(found)
        if self.series > self.limits.max_series:
            raise LimitExceeded(TOO_MANY_SERIES)
        self.charge(len(found.ts))
        return found

    def _thinned(
        self, matchers: Sequence[Matcher], refs: np.ndarray, span_ms: int, times: np.ndarray, within: int | None = None
    ):
        """The store's rollups (``Selection.ordinal``) of what windows of ``span_ms`` ending at
        ``refs`` read, or None: the store has none for that range, or no resolution is at most the
        step and ``within`` (a range: a coarser one would leave its windows' edges inside buckets)."""
        if len(times) < 2:
            return None
        fit = [
            r for r in getattr(self.queryable, "rollup_resolutions", ()) if r <= min(within or r, times[1] - times[0])
        ]
        if not fit:
            return None
        r = max(fit)
        start, end = (int(refs.min()) - span_ms) // r * r, int(refs.max()) // r * r + r - 1
        return self.queryable.select_thinned(matchers, start, end, r)

    def _count(self, found: Selection) -> None:
        self.series += len(found)
        if self.series > self.limits.max_series:
            raise LimitExceeded(TOO_MANY_SERIES)
        self.charge(len(found.ts))

    def instant_vector(self, e: VectorSelector, times: np.ndarray) -> tuple[Steps, np.ndarray]:
        """The selector at each step, and the timestamps of the samples it took (for timestamp())."""
        refs = self.at_times(e.at, e.offset, times)
        found = self._thinned(e.matchers, refs, self.lookback_ms, times)
        if found is not None:
            live = found.without(is_stale(found.values))
            if exact(windows(live, refs, self.lookback_ms), left=False):
                self._count(found)
            else:
                found = None
        if found is None:
            found = self.select(e.matchers, refs.min() - self.lookback_ms, refs.max())
        self.reserve(len(found), len(times))
        if not len(found):
            empty = Steps.empty(len(times))
            return empty, np.zeros(empty.values.shape, np.int64)
        ts, vs, starts = found.ts, found.values, found.starts
        # The last sample at or before each step, if it is within the lookback and not a marker.
        idx = search(ts, starts, refs, "right", found.groups) - 1
        present = idx >= starts[:-1, None]
        idx = np.maximum(idx, 0)
        sample_ts = ts[idx]
        present &= sample_ts >= (refs - self.lookback_ms)[None, :]
        values = vs[idx]
        present &= ~is_stale(values)
        return Steps(found.labels, values, present), sample_ts

    def range_vector(self, e: MatrixSelector, times: np.ndarray, thinned: bool = False) -> Windows:
        """``thinned``: the caller needs of each window only what a rollup keeps (see
        ``store.rollups``): it is read from them when every window's edges allow."""
        refs = self.at_times(e.selector.at, e.selector.offset, times)
        found = self._thinned(e.selector.matchers, refs, e.range, times, within=e.range) if thinned else None
        if found is not None:
            w = windows(found.without(is_stale(found.values)), refs, e.range)
            if exact(w):
                self._count(found)
                self.reserve(len(found), len(refs))
                return w
        found = self.select(e.selector.matchers, refs.min() - e.range, refs.max())
        self.reserve(len(found), len(refs))
        return windows(found.without(is_stale(found.values)), refs, e.range)

    def subquery(self, e: Subquery, times: np.ndarray) -> Windows:
        refs = self.at_times(e.at, e.offset, times)
        step = e.step or self.engine.subquery_step_ms
        # The inner steps are aligned to multiples of the step, as Prometheus aligns them.
        first = -(-(int(refs.min()) - e.range) // step) * step
        inner = np.arange(first, int(refs.max()) + 1, step, dtype=np.int64)
        if len(inner) == 0:
            return windows(Selection.of([]), refs, e.range)
        val = self.eval(e.expr, inner)
        if isinstance(val, np.ndarray):  # a scalar subquery: one series without labels
            val = Steps([()], val[None, :], np.ones((1, len(inner)), bool))
        series = [
            (ls, inner[val.present[i]], val.values[i][val.present[i]])
            for i, ls in enumerate(val.labels)
            if val.present[i].any()
        ]
        self.reserve(len(series), len(refs))
        return windows(Selection.of(series), refs, e.range)


def windows(found: Selection, refs: np.ndarray, range_ms: int) -> Windows:
    """Windows ``[ref - range, ref]`` (both ends included) over each series' samples."""
    first = refs - range_ms
    groups = found.groups if found.groups is not None else same_times(found.ts, found.starts, found.ordinal)
    lo = search(found.ts, found.starts, first, "left", groups)
    hi = search(found.ts, found.starts, refs, "right", groups)
    return Windows(
        found.labels, found.ts, found.values, found.starts, lo, hi, first, refs.copy(), range_ms, groups, found.ordinal
    )


def exact(w: Windows, left: bool = True) -> bool:
    """Whether windows over a rollup's samples hold the raw windows' first and last samples: the
    raw sample nearest inside each edge was kept (it is on the edge, or its ordinal follows the
    kept one outside). ``left=False``: only the last (an instant vector's lookback)."""
    o, starts = w.ordinal, w.starts
    if o is None or len(starts) < 2:
        return True
    s0, s1 = starts[:-1, None], starts[1:, None]
    lo, hi = w.lo, w.hi
    right = (hi <= s0) | (hi >= s1) | (at(o, hi) == at(o, hi - 1) + 1) | (at(w.ts, hi - 1) == w.last[None, :])
    if not right.all():
        return False
    if not left:
        return True
    prev = np.where(lo > s0, at(o, lo - 1), 0)
    return bool(((lo >= s1) | (at(o, lo) == prev + 1) | (at(w.ts, lo) == w.first[None, :])).all())


def search(ts: np.ndarray, starts: np.ndarray, at: np.ndarray, side: str, groups=None) -> np.ndarray:
    """``np.searchsorted`` of ``at`` (T,) in each series' part of ``ts``, as flat indices (n, T).
    Series with the same sample times (the series of one scrape all have them: ``groups``, default
    ``same_times``) are searched once; the rest one call a series (faster than one call over all
    series shifted into bands, measured)."""
    out = np.empty((len(starts) - 1, len(at)), np.int64)
    for members in same_times(ts, starts) if groups is None else groups:
        first = members[0]
        found = np.searchsorted(ts[starts[first] : starts[first + 1]], at, side)
        out[members] = found[None, :] + starts[members][:, None]
    return out


def same_times(ts: np.ndarray, starts: np.ndarray, ordinal: np.ndarray | None = None) -> list[np.ndarray]:
    """The series (indices) grouped by their sample times: each group's series have equal ``ts``
    (and ``ordinal``, a rollup's: the same raw samples' times)."""
    n = len(starts) - 1
    if n == 0:
        return []
    sizes = np.diff(starts)
    if len(ts) == 0:
        return [np.arange(n)]
    key = np.stack(
        [sizes, np.where(sizes > 0, ts[np.minimum(starts[:-1], len(ts) - 1)], 0), ts[np.maximum(starts[1:] - 1, 0)]],
        axis=1,
    )
    _, inverse = np.unique(key, axis=0, return_inverse=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(inverse.ravel()[order])) + 1)
    out = []
    for members in groups:
        size = int(sizes[members[0]])
        if len(members) == 1 or size == 0:
            out.append(members)
            continue
        where = starts[members][:, None] + np.arange(size)[None, :]
        rows = ts[where]
        same = (rows == rows[0]).all(axis=1)
        if ordinal is not None:
            same &= (ordinal[where] == ordinal[where[0]]).all(axis=1)
        out.append(members[same])
        out.extend(np.array([m]) for m in members[~same])  # same ends and length, other times
    return out


def _repeat(value, steps: int):
    """A one-step value repeated for every step (a step-invariant expression)."""
    if isinstance(value, np.ndarray):
        return np.repeat(value, steps)
    if isinstance(value, Steps):
        return Steps(value.labels, np.repeat(value.values, steps, axis=1), np.repeat(value.present, steps, axis=1))
    if isinstance(value, Windows):
        return Windows(
            value.labels,
            value.ts,
            value.values,
            value.starts,
            np.repeat(value.lo, steps, axis=1),
            np.repeat(value.hi, steps, axis=1),
            np.repeat(value.first, steps),
            np.repeat(value.last, steps),
            value.range,
            value.groups,
        )
    return value


__all__ = ["Engine", "Evaluator", "Limits"]
