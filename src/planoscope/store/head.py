"""``SamplesHead``: the last hours of the DuckDB store's ``samples`` in memory, by series, as
Prometheus keeps its head block, so a query over them (a dashboard's last hour) reads arrays
instead of scanning, hashing and sorting rows.

It holds, from ``covered_from`` (ms) on, every sample the table holds: the store appends a
committed insert here (``append``) and trims what retention deletes (``trim``); until
``ensure_loaded`` (on start, in the background) has read the table's last ``window`` it covers
nothing, and what was appended since the store opened is merged with that read (a series' sample
at one time taken once). Past
``max_samples`` it gives up (covers nothing again, and drops what it held): a store of more
series than that reads from the table, as before.

Readers list its series (``catalog``: its own numbers as keys, with the stored name, target and
labels) and take views of their samples in a range (``views``); ``promql.StoredSamples`` reads a
range from it when it ``covers`` it. Only
the DuckDB store has one: one process owns that file, so nothing is written behind its back. A
ClickHouse store is shared by instances, and reads the table.

Thread-safe: appends come from the writer's thread, reads from any. A read takes, under the lock,
views of arrays that no later append changes (an append writes past every view; growing,
trimming and an out-of-order sample make new arrays).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger("planoscope.store")

WINDOW_MS = 3 * 3600 * 1000  # a dashboard's last hour, its rate windows and lookback, with room
MAX_SAMPLES = 20_000_000  # ~16 bytes each: 320 MB, with the series' own overhead beside
# A series' key in the DuckDB ``samples`` table: 64 bits its samples carry instead of its labels.
SERIES_KEY = "hash(MetricName, Target, Labels)"
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
_NEVER = np.iinfo(np.int64).max
APPENDED, LATE, REPLACED = "appended", "late", "replaced"  # what ``_Series.add`` did


class _Series:
    __slots__ = ("name", "target", "labels", "ts", "vs", "n", "timeline")

    def __init__(self, name: str, target: str, labels: str):
        self.name, self.target, self.labels = name, target, labels
        self.ts = np.empty(16, np.int64)
        self.vs = np.empty(16, np.float64)
        self.n = 0
        self.timeline = 0  # series of one timeline hold the same sample times (0: none yet)

    def add(self, t: int, v: float) -> int:
        """Add one sample: ``APPENDED`` after the last, ``LATE`` before it, or ``REPLACED`` (the
        value at that time)."""
        n = self.n
        if n and t <= self.ts[n - 1]:  # not after the last: rare, new arrays (views stay as they were)
            i = int(np.searchsorted(self.ts[:n], t))
            same = i < n and self.ts[i] == t
            ts, vs = self.ts[:n].copy(), self.vs[:n].copy()
            if same:
                vs[i] = v
            else:
                ts, vs = np.insert(ts, i, t), np.insert(vs, i, v)
            self.ts, self.vs, self.n = _room(ts, len(ts) + 16), _room(vs, len(vs) + 16), len(ts)
            return REPLACED if same else LATE
        if n == len(self.ts):
            self.ts, self.vs = _room(self.ts[:n], 2 * n), _room(self.vs[:n], 2 * n)
        self.ts[n], self.vs[n] = t, v
        self.n = n + 1
        return APPENDED

    def drop_before(self, cutoff_ms: int) -> int:
        """Drop the samples before ``cutoff_ms``; how many."""
        i = int(np.searchsorted(self.ts[: self.n], cutoff_ms))
        if i:
            keep = self.n - i
            self.ts, self.vs = _room(self.ts[i : self.n], keep + 16), _room(self.vs[i : self.n], keep + 16)
            self.n = keep
        return i

    def bounds(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        """Where ``[start_ms, end_ms]`` starts and ends in the samples."""
        ts = self.ts[: self.n]
        return int(ts.searchsorted(start_ms, "left")), int(ts.searchsorted(end_ms, "right"))


def _room(a: np.ndarray, size: int) -> np.ndarray:
    out = np.empty(max(size, 16), a.dtype)
    out[: len(a)] = a
    return out


class SamplesHead:
    """See the module docstring. ``read_table(cutoff)``: what the table holds from ``cutoff``
    (naive UTC) on: its series as (key, MetricName, Target, Labels), and their samples as columns
    k (the key), t (ms), v, ordered by k then t. It only needs to be right about what was stored
    before the head's first ``append``: everything since is appended too."""

    def __init__(
        self,
        read_table: Callable[[datetime], pa.Table],
        window_ms: int = WINDOW_MS,
        max_samples: int = MAX_SAMPLES,
        clock: Callable[[], float] = time.time,
    ):
        self._read_table = read_table
        self.window_ms = window_ms
        self.max_samples = max_samples
        self._clock = clock
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._series: list[_Series] = []
        self._ids: dict[tuple[str, str, str], int] = {}
        self._by_name: dict[str, list[int]] = {}
        self.held = 0
        self._timelines = itertools.count(1)
        # Bumped whenever the set of series changes: ``memo`` holds readers' work that depends on
        # that set alone (which series a selector matches), valid while the generation is.
        self.generation = 0
        self.memo: dict = {}
        self.covered_from = _NEVER  # ms: every stored sample from then on is here
        self._state = "empty"  # empty → loading → loaded; or given up (too many samples)

    # --- writes ------------------------------------------------------------------------------

    def append(self, rows: pa.Table) -> None:
        """A committed insert into ``samples`` (Timestamp, Target, MetricName, Labels, Value)."""
        if self._state == "given up" or rows.num_rows == 0:
            return
        ts = pc.cast(rows.column("Timestamp"), pa.timestamp("us")).to_numpy().astype(np.int64) // 1000
        targets = rows.column("Target").to_pylist()
        names = rows.column("MetricName").to_pylist()
        labels = rows.column("Labels").to_pylist()
        values = rows.column("Value").to_numpy()
        with self._lock:
            added, moved = 0, {}
            for i, key in enumerate(zip(names, targets, labels)):
                series, t = self._get(key), int(ts[i])
                kind = series.add(t, float(values[i]))
                if kind == APPENDED:  # the series of a timeline given the same time stay one timeline
                    series.timeline = moved.setdefault((series.timeline, t), next(self._timelines))
                elif kind == LATE:  # times of its own
                    series.timeline = next(self._timelines)
                added += kind != REPLACED
            self.held += added
            self._bound(int(ts.max()))

    def trim(self, cutoff: datetime) -> None:
        """Drop what retention deleted: the samples before ``cutoff`` (naive UTC)."""
        cutoff_ms = _ms(cutoff)
        with self._lock:
            self.held -= sum(s.drop_before(cutoff_ms) for s in self._series)
            if self._state == "loaded":  # what it still holds before the cutoff may be half deleted
                self.covered_from = max(self.covered_from, cutoff_ms)

    def _get(self, key: tuple[str, str, str]) -> _Series:
        i = self._ids.get(key)
        if i is None:
            i = self._ids[key] = len(self._series)
            self._series.append(_Series(*key))
            self._changed()
            self._by_name.setdefault(key[0], []).append(i)
        return self._series[i]

    def _bound(self, newest_ms: int) -> None:
        """Keep the window (trimming once it holds half a window more) and the sample limit."""
        if self.held > self.max_samples:
            log.warning(
                "more than %s samples in the last %d h: PromQL reads the samples table instead of memory",
                f"{self.max_samples:,}",
                self.window_ms // 3_600_000,
            )
            self._series, self._ids, self._by_name, self.held = [], {}, {}, 0
            self._changed()
            self._state, self.covered_from = "given up", _NEVER
            return
        oldest = newest_ms - self.window_ms
        if self._state == "loaded" and oldest - self.covered_from > self.window_ms // 2:
            self.held -= sum(s.drop_before(oldest) for s in self._series)
            self.covered_from = oldest

    def _changed(self) -> None:
        self.generation += 1
        self.memo = {}

    # --- reads -------------------------------------------------------------------------------

    def ensure_loaded(self) -> None:
        """Read the table's last window once (the first query's caller pays for it, others read
        the table meanwhile); the appends made meanwhile are merged in."""
        if self._state != "empty" or not self._load_lock.acquire(blocking=False):
            return
        try:
            if self._state != "empty":
                return
            self._state = "loading"
            since = int(self._clock() * 1000) - self.window_ms
            t0 = time.perf_counter()
            self._merge(*self._read_table(_EPOCH + since * _MS), since)
            log.debug(
                "PromQL's head: %s samples of %s series in %.1f s",
                f"{self.held:,}",
                f"{len(self._series):,}",
                time.perf_counter() - t0,
            )
        except Exception as e:  # the table stays the source: nothing is lost, only speed
            log.warning("could not read the recent samples into memory: %s", e)
            with self._lock:
                if self._state == "loading":
                    self._state = "empty"
        finally:
            self._load_lock.release()

    def _merge(self, series: list[tuple], table: pa.Table, since: int) -> None:
        keys = table.column("k").to_numpy()
        ts = table.column("t").to_numpy().astype(np.int64, copy=False)
        vs = table.column("v").to_numpy().astype(np.float64, copy=False)
        bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.empty(0, np.int64)
        ends = np.r_[bounds[1:], len(keys)].astype(np.int64)
        named = {k: (name, target, labels) for k, name, target, labels in series}
        with self._lock:
            if self._state != "loading":
                return
            for lo, hi in zip(bounds, ends):
                key = named.get(int(keys[lo]))
                if key is None:  # a series new since the listing: appended here as it was stored
                    continue
                s = self._get(key)
                old_t, old_v = s.ts[: s.n], s.vs[: s.n]
                t = np.concatenate([ts[lo:hi], old_t])
                v = np.concatenate([vs[lo:hi], old_v])
                order = np.argsort(t, kind="stable")
                t, v = t[order], v[order]
                last = np.r_[t[1:] != t[:-1], True]  # one sample a time: the appended one
                s.ts, s.vs, s.n = (
                    _room(t[last], int(last.sum()) + 16),
                    _room(v[last], int(last.sum()) + 16),
                    int(last.sum()),
                )
            self._regroup()
            self.held = sum(s.n for s in self._series)
            self.covered_from, self._state = since, "loaded"
            if self._series:
                self._bound(max(int(s.ts[s.n - 1]) for s in self._series if s.n))

    def _regroup(self) -> None:
        """Timelines from the series' times as they are (after the start-up read)."""
        seen: dict[tuple[int, bytes], tuple[int, np.ndarray]] = {}
        for series in self._series:
            ts = series.ts[: series.n]
            key = (series.n, ts[:1].tobytes() + ts[-1:].tobytes())
            found = seen.get(key)
            if found is not None and np.array_equal(found[1], ts):
                series.timeline = found[0]
            else:
                series.timeline = next(self._timelines)
                seen.setdefault(key, (series.timeline, ts))

    @property
    def loaded(self) -> bool:
        """Whether it holds the window (read on start, and not given up)."""
        return self._state == "loaded"

    def covers(self, start_ms: int) -> bool:
        """Whether every stored sample from ``start_ms`` on is here."""
        return self.loaded and start_ms >= self.covered_from

    def _selected(self, names: list[str] | None, job: str | None) -> list[int]:
        ids = range(len(self._series)) if names is None else [i for n in names for i in self._by_name.get(n, ())]
        if job is None:
            return list(ids)
        return [i for i in ids if self._series[i].target in (job, "")]  # the rules' rows: job in Labels

    def catalog(self, names: list[str] | None, job: str | None) -> tuple[int, list[tuple[int, str, str, str]]]:
        """The generation, and the series of ``names`` (None: all) and ``job`` (None: any) as
        (key, MetricName, Target, Labels), whatever their samples' times."""
        with self._lock:
            rows = [
                (i, self._series[i].name, self._series[i].target, self._series[i].labels)
                for i in self._selected(names, job)
            ]
            return self.generation, rows

    def views(self, keys: list[int], start_ms: int, end_ms: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Each series' samples in ``[start_ms, end_ms]`` (ts ms, values) and its timeline (the
        series of one timeline have the same times), in the order of ``keys``."""
        out, of_timeline = [], {}
        with self._lock:
            for i in keys:
                series = self._series[i]
                bounds = of_timeline.get(series.timeline)
                if bounds is None:
                    bounds = of_timeline[series.timeline] = series.bounds(start_ms, end_ms)
                lo, hi = bounds
                out.append((series.ts[lo:hi], series.vs[lo:hi], series.timeline))
        return out


def recent_samples(store, since: datetime) -> tuple[list[tuple], pa.Table]:
    """A DuckDB store's samples from ``since`` on, as ``SamplesHead`` reads them: the series (key,
    MetricName, Target, Labels) and their samples (k, t: ms, v) by series and time."""
    series = store.query(
        f"SELECT {SERIES_KEY}, MetricName, Target, Labels FROM samples WHERE Timestamp >= ?"
        " GROUP BY MetricName, Target, Labels",
        [since],
    )
    samples = store.read_arrow(
        f"SELECT {SERIES_KEY} AS k, epoch_us(Timestamp) // 1000 AS t, Value AS v FROM samples"
        " WHERE Timestamp >= ? ORDER BY k, t",
        [since],
    )
    return series, samples


def _ms(at: datetime) -> int:
    """Naive UTC (or aware) to unix ms."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return (at - _EPOCH) // _MS
