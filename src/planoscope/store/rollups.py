"""``Rollups``: the DuckDB store's scraped samples thinned per 5 minutes and per hour, so that a
PromQL range query over days reads a few samples a series and bucket instead of every scrape,
and still answers what the raw samples answer, bit for bit.

A rollup is a subset of the raw samples, not an aggregate. Per series and bucket (5 minutes or an
hour, aligned to the epoch) it keeps:

- the bucket's first sample and its last two (a window of Grafana's ``$__rate_interval``, a step
  and a scrape interval, starts just before a bucket ends);
- every sample that is not inside a non-decreasing run (``prev <= v <= next`` fails): a counter's
  resets, a gauge's turns, NaNs;
- every staleness marker;

and on each kept sample its ``Rank`` (the non-stale samples before it in its bucket) and its
bucket's ``BucketN`` (the non-stale samples in it). Between two kept samples the raw ones climb, so
a range vector of kept samples has the raw one's first and last sample and every counter reset
wherever its window's edges fall on a kept sample, and the ranks give its raw sample count: what
``rate``, ``increase``, ``delta``, ``resets``, ``count_over_time``, ``last_over_time`` and an instant
vector's lookback need. ``promql.engine`` checks the edges (``exact``) and reads the raw samples
when one falls between kept ones. A counter scraped every 15 s keeps 3 of 20 samples per 5
minutes and 3 of 240 per hour; Grafana's aligned steps with ``$__rate_interval`` (a step plus a
scrape interval) put every edge on a bucket's first or last sample.

Each resolution covers ``[CoveredFrom, Watermark)`` (``sample_rollup_state``). ``compact`` moves the
watermark on over complete buckets (a minute of grace for a scrape's late write), an hour of raw
samples at a time, on the writer's thread (``Compaction`` runs it every ``interval``); a store
that held samples before rollups existed is thinned from its oldest sample on, in the background.
A write into a covered bucket (a backfill, a late sample) moves the watermark back to that bucket
and deletes its rollups, in the insert's transaction (``invalidate``), and they are made again;
retention's deletes move ``CoveredFrom`` on to the next whole bucket (``trim``).

The series' labels are kept once, in ``sample_series`` (by the 64-bit key of ``head.SERIES_KEY``).
Only the DuckDB store has rollups: on ClickHouse (which other instances write to) queries read
the raw samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from .head import SERIES_KEY
from .periodic import Periodic, Writer
from .staleness import is_stale

RESOLUTIONS_MS = (300_000, 3_600_000)  # 5 minutes, an hour
GRACE_MS = 60_000  # a bucket is thinned once a minute has passed since its end
CHUNK_MS = 3_600_000  # raw samples read per step of ``compact``
STATE_TABLE, SERIES_TABLE = "sample_rollup_state", "sample_series"
_EPOCH, _MS = datetime(1970, 1, 1), timedelta(milliseconds=1)
_ROLLUP_SCHEMA = pa.schema(
    [
        ("Key", pa.uint64()),
        ("Timestamp", pa.int64()),
        ("Value", pa.float64()),
        ("Rank", pa.int32()),
        ("BucketN", pa.int32()),
    ]
)


def ms_of(naive_utc: datetime) -> int:
    return (naive_utc - _EPOCH) // _MS


def table(resolution_ms: int) -> str:
    """The table of one resolution's rollups."""
    return f"sample_rollups_{resolution_ms // 1000}s"


def thin(
    series: np.ndarray, ts: np.ndarray, vs: np.ndarray, resolution_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The samples a rollup keeps (see the module docstring) of raw samples ordered by series
    (``series``: any integer per sample), then time: their indices, ranks and bucket sizes."""
    n = len(ts)
    if n == 0:
        empty = np.empty(0, np.int64)
        return empty, empty.astype(np.int32), empty.astype(np.int32)
    live = ~is_stale(vs)
    bucket = ts // resolution_ms
    new = np.ones(n, bool)
    new[1:] = (series[1:] != series[:-1]) | (bucket[1:] != bucket[:-1])
    group = np.cumsum(new) - 1
    firsts = np.flatnonzero(new)
    before = np.cumsum(live) - live  # non-stale samples before each, over all
    rank = before - before[firsts][group]
    size = np.bincount(group, weights=live).astype(np.int64)[group]
    # Among a bucket's non-stale samples: its first, its last, and those not inside a climb.
    idx = np.flatnonzero(live)
    g, v = group[idx], vs[idx]
    edge = np.ones(len(idx), bool)  # first, last, or the one before the last
    edge[1:-2] = (g[1:-2] != g[:-3]) | (g[1:-2] != g[3:])
    climbing = np.zeros(len(idx), bool)
    climbing[1:-1] = (v[:-2] <= v[1:-1]) & (v[1:-1] <= v[2:])
    keep = ~live
    keep[idx[edge | ~climbing]] = True
    kept = np.flatnonzero(keep)
    return kept, rank[kept].astype(np.int32), size[kept].astype(np.int32)


class Rollups:
    """The rollups of one DuckDB file: its tables, and the state (coverage) of each resolution,
    mirrored in memory. ``compact``, ``invalidate`` and ``trim`` run on the writer's connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, resolutions_ms: tuple[int, ...] = RESOLUTIONS_MS):
        self.resolutions = tuple(sorted(resolutions_ms))
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (Resolution BIGINT PRIMARY KEY,"
            " CoveredFrom BIGINT NOT NULL, Watermark BIGINT NOT NULL)"
        )
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {SERIES_TABLE} (Key UBIGINT PRIMARY KEY, MetricName VARCHAR NOT NULL,"
            " Target VARCHAR NOT NULL, Labels VARCHAR NOT NULL)"
        )
        for r in self.resolutions:
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {table(r)} (Key UBIGINT NOT NULL, Timestamp BIGINT NOT NULL,"
                " Value DOUBLE NOT NULL, Rank INTEGER NOT NULL, BucketN INTEGER NOT NULL)"
            )
        self.state: dict[int, tuple[int, int]] = {}  # resolution: (CoveredFrom, Watermark), ms
        self.reload(con)
        # The catalog in memory, by metric name: (Key, MetricName, Target, Labels); a new series is
        # added before the rollups that name it are committed (see ``read``).
        self._by_name: dict[str, list[tuple[int, str, str, str]]] = {}
        self._known: set[int] = set()
        self.generation = 0  # bumped whenever the catalog grows
        self.memo: dict = {}  # readers' work on the catalog (which series a selector matches), until it grows
        self._add(con.execute(f"SELECT * FROM {SERIES_TABLE}").fetchall())

    def watermark(self, resolution_ms: int) -> int | None:
        """Where the resolution's rollups end (ms), if it has any."""
        s = self.state.get(resolution_ms)
        return s[1] if s else None

    # --- the writer's thread ----------------------------------------------------------------

    def compact(self, con: duckdb.DuckDBPyConnection, now_ms: int) -> bool:
        """Thin the next hour (at most) of complete buckets of the resolution furthest behind, in
        one transaction; whether more is left to do."""
        todo = []
        for r in self.resolutions:
            due = (now_ms - GRACE_MS) // r * r
            if r not in self.state:
                oldest = con.execute("SELECT epoch_ms(min(Timestamp)) FROM samples").fetchall()[0][0]
                if oldest is None:
                    continue
                start = int(oldest) // r * r
                self._set(con, r, start, start)
            if self.state[r][1] < due:
                todo.append((self.state[r][1], r, due))
        if not todo:
            return False
        start, r, due = min(todo)
        end = min(due, (start // CHUNK_MS + 1) * CHUNK_MS)
        keys, ts, vs = self._raw(con, start, end)
        con.begin()
        try:
            self._catalog(con, keys, start, end)
            kept, rank, size = thin(keys, ts, vs, r)
            rows = pa.Table.from_arrays(
                [pa.array(keys[kept]), pa.array(ts[kept]), pa.array(vs[kept]), pa.array(rank), pa.array(size)],
                schema=_ROLLUP_SCHEMA,
            )
            con.register("_rollup", rows)
            try:
                con.execute(f"INSERT INTO {table(r)} SELECT * FROM _rollup")
            finally:
                con.unregister("_rollup")
            self._set(con, r, self.state[r][0], end)
            con.commit()
        except BaseException:
            con.rollback()
            self.reload(con)
            raise
        return len(todo) > 1 or end < due

    def invalidate(self, con: duckdb.DuckDBPyConnection, oldest_ms: int) -> None:
        """Samples from ``oldest_ms`` on are being written (in the caller's transaction): the
        rollups of their buckets and after are deleted, to be made again."""
        for r, (covered_from, watermark) in list(self.state.items()):
            if oldest_ms < watermark:
                back = max(covered_from, oldest_ms // r * r)
                con.execute(f"DELETE FROM {table(r)} WHERE Timestamp >= ?", [back])
                self._set(con, r, covered_from, back)

    def trim(self, con: duckdb.DuckDBPyConnection, cutoff_ms: int) -> None:
        """Retention deleted the samples before ``cutoff_ms``: the rollups of every bucket it
        reached go (a bucket half deleted would no longer be the raw samples' subset)."""
        for r, (covered_from, watermark) in list(self.state.items()):
            start = -(-cutoff_ms // r) * r
            if start > covered_from:
                con.execute(f"DELETE FROM {table(r)} WHERE Timestamp < ?", [start])
                self._set(con, r, start, max(start, watermark))

    def lowest_watermark(self) -> int | None:
        return min((w for _, w in self.state.values()), default=None)

    def _raw(self, con, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw samples of ``[start_ms, end_ms)`` ordered by series key, then time; of two in one
        millisecond the one written later."""
        t = con.sql(
            f"SELECT {SERIES_KEY} AS k, epoch_us(Timestamp) // 1000 AS t, Value AS v FROM samples"
            " WHERE Timestamp >= make_timestamp(? * 1000) AND Timestamp < make_timestamp(? * 1000)",
            params=[start_ms, end_ms],
        ).to_arrow_table()
        keys = t.column("k").to_numpy()
        ts = t.column("t").to_numpy().astype(np.int64, copy=False)
        vs = t.column("v").to_numpy().astype(np.float64, copy=False)
        order = np.lexsort((np.arange(len(ts)), ts, keys))
        keys, ts, vs = keys[order], ts[order], vs[order]
        later = np.ones(len(ts), bool)
        later[:-1] = (keys[1:] != keys[:-1]) | (ts[1:] != ts[:-1])
        return keys[later], ts[later], vs[later]

    def _catalog(self, con, keys: np.ndarray, start_ms: int, end_ms: int) -> None:
        """Record the labels of the series first seen in ``[start_ms, end_ms)``."""
        new = np.setdiff1d(np.unique(keys), np.fromiter(self._known, np.uint64, len(self._known)))
        if not len(new):
            return
        rows = con.execute(
            f"SELECT {SERIES_KEY} AS k, any_value(MetricName), any_value(Target), any_value(Labels) FROM samples"
            " WHERE Timestamp >= make_timestamp(? * 1000) AND Timestamp < make_timestamp(? * 1000)"
            " AND k IN (SELECT unnest(?::UBIGINT[])) GROUP BY k",
            [start_ms, end_ms, new.tolist()],
        ).fetchall()
        con.executemany(f"INSERT OR IGNORE INTO {SERIES_TABLE} VALUES (?, ?, ?, ?)", rows)
        self._add(rows)

    def _add(self, rows: list[tuple]) -> None:
        for key, name, target, labels in rows:
            if int(key) not in self._known:
                self._known.add(int(key))
                self._by_name.setdefault(name, []).append((int(key), name, target, labels))
        self.generation += 1
        self.memo = {}

    def catalog(self, names: list[str] | None, job: str | None) -> tuple[int, list[tuple[int, str, str, str]]]:
        """The catalog's generation, and its series (Key, MetricName, Target, Labels) of ``names``
        (None: all) and target ``job`` (None: any; the rules' rows, target "", always)."""
        generation = self.generation
        picked = [r for n in (names if names is not None else list(self._by_name)) for r in self._by_name.get(n, ())]
        if job is not None:
            picked = [r for r in picked if r[2] in (job, "")]
        return generation, picked

    def _set(self, con, r: int, covered_from: int, watermark: int) -> None:
        con.execute(f"INSERT OR REPLACE INTO {STATE_TABLE} VALUES (?, ?, ?)", [r, covered_from, watermark])
        self.state[r] = (covered_from, watermark)

    def reload(self, con) -> None:
        """The state as stored (after a rollback)."""
        self.state = {int(r): (int(a), int(b)) for r, a, b in con.execute(f"SELECT * FROM {STATE_TABLE}").fetchall()}

    # --- readers (any thread, on a cursor of their own) --------------------------------------

    def read(
        self,
        cur: duckdb.DuckDBPyConnection,
        resolution_ms: int,
        start_ms: int,
        end_ms: int,
        match: Callable[[], list[int]],
    ) -> tuple[int, int, pa.Table] | None:
        """The rollups of ``[start_ms, end_ms)`` at ``resolution_ms`` of the series ``match()`` picks
        (from ``catalog``: it returns their keys, in the order it numbers them): rows (Code: that
        number, Timestamp, Value, Rank, BucketN), with where they begin and end (CoveredFrom,
        Watermark: the raw samples answer before and after), in one snapshot; None when they end
        before ``start_ms``. ``match`` is called inside the snapshot: the catalog then names every
        series of the rollups it sees."""
        cur.begin()
        try:
            got = cur.execute(f"SELECT CoveredFrom, Watermark FROM {STATE_TABLE} WHERE Resolution = ?", [resolution_ms])
            state = got.fetchall()
            if not state or not start_ms < state[0][1] or state[0][0] >= min(end_ms, state[0][1]):
                return None
            covered_from, watermark = int(state[0][0]), int(state[0][1])
            keys = match()
            start_ms = max(start_ms, covered_from)
            rows = cur.sql(
                "SELECT rowid AS Row, c AS Code, Timestamp, Value, Rank, BucketN FROM"
                f" {table(resolution_ms)} JOIN (SELECT unnest(?::UBIGINT[]) AS k, unnest(?::INTEGER[]) AS c) ON Key = k"
                " WHERE Timestamp >= ? AND Timestamp < ?",
                params=[keys, list(range(len(keys))), start_ms, min(end_ms, watermark)],
            ).to_arrow_table()
            return start_ms, watermark, rows
        finally:
            cur.commit()


class Compaction(Periodic):
    """Async context manager running ``compact`` on the writer's thread: every ``interval`` s,
    and back to back (one hour of samples a call, ingest flowing between) while behind."""

    name = "planoscope-rollups"
    failed = "thinning the samples failed"  # queries read the raw samples meanwhile

    def __init__(self, writer: Writer, compact: Callable[[int], bool], interval: float = 30.0):
        super().__init__(writer, interval)
        self.compact = compact

    async def run_once(self) -> None:
        while await self.writer.call(lambda: self.compact(int(time.time() * 1000))):
            pass
