"""Values: label sets, the engine's step-aligned working form, query results and their rendering in
the Prometheus HTTP API's JSON shapes.

A label set is a tuple of ``(name, value)`` pairs sorted by name, with no empty values: hashable,
and ordered exactly as Prometheus orders label sets (``labels.Compare``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

Labels = tuple[tuple[str, str], ...]

METRIC_NAME = "__name__"
BUCKET_LABEL = "le"


class PromQLError(Exception):
    """A query the engine refuses or cannot finish. ``kind`` is the Prometheus API error type:
    ``bad_data`` (the query itself is wrong), ``execution``, ``timeout``."""

    kind = "execution"


class ParseError(PromQLError):
    kind = "bad_data"


class EvalError(PromQLError):
    kind = "execution"


class Unsupported(PromQLError):
    """A valid PromQL construct this engine does not implement; never answered wrongly instead."""

    kind = "bad_data"


class LimitExceeded(PromQLError):
    kind = "execution"


class Timeout(PromQLError):
    kind = "timeout"


# --- label sets -----------------------------------------------------------------------------


def labels_of(mapping: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """A label set from a mapping or pairs; empty values mean "absent", as in Prometheus."""
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    return tuple(sorted((k, v) for k, v in items if v != ""))


def get(labels: Labels, name: str) -> str:
    for k, v in labels:
        if k == name:
            return v
    return ""


def without(labels: Labels, names: Iterable[str]) -> Labels:
    drop = set(names)
    return tuple(p for p in labels if p[0] not in drop)


def drop_name(labels: Labels) -> Labels:
    # Sorted by name: ``__name__`` is where the names pass it (first, unless one starts with a
    # capital), so the search stops there (a series' labels: 7 µs the whole way, under 1 µs so).
    for i, (k, _) in enumerate(labels):
        if k >= METRIC_NAME:
            return labels[:i] + labels[i + 1 :] if k == METRIC_NAME else labels
    return labels


def with_label(labels: Labels, name: str, value: str) -> Labels:
    rest = [p for p in labels if p[0] != name]
    if value != "":
        rest.append((name, value))
    return tuple(sorted(rest))


def format_labels(labels: Labels) -> str:
    """``{a="b", c="d"}``, as Prometheus prints a label set in messages."""
    return "{" + ", ".join(f"{k}={quote(v)}" for k, v in labels) + "}"


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# --- the working form: one row per series, one column per evaluation step ---------------------


@dataclass
class Steps:
    """An instant vector evaluated at every step of a query: ``values[i, t]`` is series ``i`` at
    step ``t`` when ``present[i, t]``. Arrays, not points, so that whole ranges are numpy work."""

    labels: list[Labels]
    values: np.ndarray  # (n, T) float64
    present: np.ndarray  # (n, T) bool

    @classmethod
    def empty(cls, steps: int) -> Steps:
        return cls([], np.empty((0, steps)), np.zeros((0, steps), bool))

    def __len__(self) -> int:
        return len(self.labels)

    def points(self) -> int:
        return int(self.present.sum())


def merge(labels: list[Labels], values: np.ndarray, present: np.ndarray, *, per_step: bool = True) -> Steps:
    """Rows with equal label sets become one series. Two of them at one step are an error, as in
    Prometheus (``per_step=False``: equal label sets are an error whatever the steps, as Prometheus
    checks a function's range-vector result). Rows that are never present are dropped."""
    alive = present.any(axis=1)
    rows: dict[Labels, list[int]] = {}
    for i, ls in enumerate(labels):
        if alive[i]:
            rows.setdefault(ls, []).append(i)
    if all(len(r) == 1 for r in rows.values()):
        idx = [r[0] for r in rows.values()]
        if len(idx) == len(labels):
            return Steps(labels, values, present)
        return Steps(list(rows), values[idx], present[idx])
    out_v = np.empty((len(rows), values.shape[1]))
    out_p = np.zeros((len(rows), values.shape[1]), bool)
    for o, idx in enumerate(rows.values()):
        if len(idx) > 1 and (not per_step or (present[idx].sum(axis=0) > 1).any()):
            raise EvalError("vector cannot contain metrics with the same labelset")
        out_v[o] = values[idx[0]]
        out_p[o] = present[idx[0]]
        for i in idx[1:]:
            out_v[o] = np.where(present[i], values[i], out_v[o])
            out_p[o] |= present[i]
    return Steps(list(rows), out_v, out_p)


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    labels: Labels
    t: int  # ms
    v: float


@dataclass
class Vector:
    """An instant query's instant-vector result, in Prometheus's order (sort(), topk() … keep theirs)."""

    samples: list[Sample]


@dataclass
class Series:
    labels: Labels
    timestamps: np.ndarray  # int64 ms
    values: np.ndarray  # float64


@dataclass
class Matrix:
    """A range query's result, or an instant query's range vector; series sorted by label set."""

    series: list[Series]


@dataclass(frozen=True)
class Scalar:
    t: int
    v: float


@dataclass(frozen=True)
class String:
    t: int
    v: str


Value = Vector | Matrix | Scalar | String


def format_value(v: float) -> str:
    """A sample value as Prometheus's JSON writes it (Go's strconv.FormatFloat, 'f' or 'e', shortest)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    a = abs(v)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        return np.format_float_scientific(v, unique=True, trim="-")
    return np.format_float_positional(v, unique=True, trim="-")


def format_time(t_ms: int) -> float | int:
    """A timestamp in seconds: an int when whole, else milliseconds as a fraction (JSON number)."""
    return t_ms // 1000 if t_ms % 1000 == 0 else t_ms / 1000


def render(value: Value) -> dict:
    """The ``data`` member of a Prometheus API query response.

    >>> render(Scalar(1500, 2.0))
    {'resultType': 'scalar', 'result': [1.5, '2']}
    """
    if isinstance(value, Scalar):
        return {"resultType": "scalar", "result": [format_time(value.t), format_value(value.v)]}
    if isinstance(value, String):
        return {"resultType": "string", "result": [format_time(value.t), value.v]}
    if isinstance(value, Vector):
        return {
            "resultType": "vector",
            "result": [
                {"metric": dict(s.labels), "value": [format_time(s.t), format_value(s.v)]} for s in value.samples
            ],
        }
    return {
        "resultType": "matrix",
        "result": [
            {
                "metric": dict(s.labels),
                "values": [[format_time(int(t)), format_value(float(v))] for t, v in zip(s.timestamps, s.values)],
            }
            for s in value.series
        ],
    }


@dataclass
class Selection:
    """What a selector read: series ``i`` (label set ``labels[i]``, sorted) has the samples
    ``ts/values[starts[i]:starts[i+1]]`` (at least one), ascending in time, one a millisecond."""

    labels: list[Labels]
    ts: np.ndarray  # int64 ms, all series one after another
    values: np.ndarray
    starts: np.ndarray  # (n + 1,)
    # Series (indices) with the same sample times, if the store knows them (else ``engine.same_times``).
    groups: list[np.ndarray] | None = None
    # A store's rollup (``store.rollups``) is a subset of the raw samples: each non-stale one's
    # place among its series' raw non-stale samples (consecutive where nothing was left out). None:
    # every sample is here.
    ordinal: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, series: list[tuple[Labels, np.ndarray, np.ndarray]], timelines: list[int] | None = None) -> Selection:
        """From (labels, ts, values) per series, in order; ``timelines``: a number per series,
        the same for series with the same sample times (as the store's head keeps them)."""
        starts = np.zeros(len(series) + 1, np.int64)
        np.cumsum([len(t) for _, t, _ in series], out=starts[1:])
        if not series:
            return cls([], np.empty(0, np.int64), np.empty(0), starts)
        ts = np.concatenate([t for _, t, _ in series])
        vs = np.concatenate([v for _, _, v in series])
        groups = None
        if timelines is not None:
            _, inverse = np.unique(np.asarray(timelines, np.int64), return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            groups = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
        return cls([ls for ls, _, _ in series], ts, vs, starts, groups)

    def without(self, drop: np.ndarray) -> Selection:
        """The same series without the samples where ``drop`` (a mask over all samples) is set
        (a series may be left with none)."""
        if not drop.any():
            return self
        kept = np.zeros(len(self.starts), np.int64)
        np.cumsum(np.add.reduceat((~drop).astype(np.int64), self.starts[:-1]), out=kept[1:])
        ordinal = None if self.ordinal is None else self.ordinal[~drop]
        return Selection(self.labels, self.ts[~drop], self.values[~drop], kept, ordinal=ordinal)


@dataclass
class Windows:
    """A range vector at every step: series ``i``'s samples are ``ts/values[starts[i]:starts[i+1]]``
    (staleness markers removed) and its window at step ``t`` is ``[lo[i, t], hi[i, t])`` of those flat
    arrays, covering ``[first[t], last[t]]`` in time (both ends included, as in Prometheus 2)."""

    labels: list[Labels]
    ts: np.ndarray  # int64, all series one after another
    values: np.ndarray
    starts: np.ndarray  # (n + 1,)
    lo: np.ndarray  # (n, T)
    hi: np.ndarray  # (n, T)
    first: np.ndarray  # (T,) range start, ms
    last: np.ndarray  # (T,) range end, ms
    range: int  # ms
    # Series (indices) with the same sample times and so the same windows, if known (``engine.same_times``).
    groups: list[np.ndarray] | None = None
    ordinal: np.ndarray | None = None  # of a rollup's samples (``Selection.ordinal``)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> np.ndarray:
        """The raw samples in each window."""
        if self.ordinal is None:
            return self.hi - self.lo
        lo, hi = self.lo, self.hi
        return np.where(hi > lo, at(self.ordinal, hi - 1) - at(self.ordinal, lo) + 1, 0)

    def representatives(self) -> tuple[np.ndarray, np.ndarray]:
        """One series of each group (G,), and each series' group (n,): every series its own
        group when the groups are not known."""
        if self.groups is None:
            every = np.arange(len(self.labels))
            return every, every
        reps = np.array([g[0] for g in self.groups], np.int64)
        of = np.empty(len(self.labels), np.int64)
        for i, members in enumerate(self.groups):
            of[members] = i
        return reps, of


def at(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``arr[idx]`` where idx may point outside for empty windows (masked by the caller)."""
    if len(arr) == 0:
        return np.zeros(idx.shape, arr.dtype)
    return arr.take(idx, mode="clip")
