"""The DuckDB store: one file in the data directory, one write connection owned by the writer
thread, a cursor per reading thread.

Writes are transactions that append a span batch *and* the span-metric totals it changes, so
the metrics restored after a restart always match exactly what was acknowledged.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from ..schema import ATTR_MACRO, duckdb_ddl, insert_sql

DB_FILE = "planoscope.duckdb"


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message is meant for the user."""


class DuckDBStore:
    """Owns the database file. ``write_*`` methods must be called from one thread only."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create data directory {self.data_dir}: {e.strerror}") from None
        self.path = self.data_dir / DB_FILE
        try:
            self._con = duckdb.connect(str(self.path))
        except duckdb.IOException as e:
            msg = str(e).splitlines()[0]
            if "lock" in msg.lower():
                msg = f"database {self.path} is in use by another process (is planoscope already running?)"
            raise StoreError(msg) from None
        except duckdb.Error as e:
            raise StoreError(f"cannot open {self.path}: {str(e).splitlines()[0]}") from None
        self._local = threading.local()
        self._con.execute("SET threads = 1")
        self._con.execute(ATTR_MACRO)
        self._con.execute(duckdb_ddl())
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS spanmetrics_state ("
            " series VARCHAR PRIMARY KEY, calls BIGINT NOT NULL, sum_ms DOUBLE NOT NULL,"
            " buckets BIGINT[] NOT NULL)"
        )
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS planoscope_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"
        )
        self._insert_sql = insert_sql()

    # --- reads: any thread --------------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    def query(self, sql: str, params: Sequence | dict | None = None) -> list[tuple]:
        """Run a read-only parameterized query on this thread's cursor."""
        return self._cursor().execute(sql, params).fetchall()

    def query_arrow(self, sql: str, params: Sequence | dict | None = None) -> pa.Table:
        return self._cursor().execute(sql, params).to_arrow_table()

    # --- writes: the writer thread only -------------------------------------------------
    def append_spans(self, batch: pa.Table, metrics_in: pa.Table, aggregate_sql: str) -> list[tuple]:
        """Append ``batch`` and fold its span-metric deltas into the stored totals, atomically.

        ``aggregate_sql`` selects ``(series, calls, sum_ms, buckets)`` deltas from ``_metrics_in``;
        returns the new totals of the series it touched, to be installed once this returns.
        """
        con = self._con
        con.register("_batch", batch)
        con.register("_metrics_in", metrics_in)
        try:
            con.begin()
            try:
                con.execute(self._insert_sql, {"ingested": datetime.now(timezone.utc).replace(tzinfo=None)})
                totals = con.execute(_UPSERT.format(select=aggregate_sql)).fetchall()
                con.commit()
            except BaseException:
                con.rollback()
                raise
        finally:
            con.unregister("_batch")
            con.unregister("_metrics_in")
        return totals

    def metric_totals(self) -> list[tuple[str, int, float, list[int]]]:
        return self._con.execute("SELECT series, calls, sum_ms, buckets FROM spanmetrics_state").fetchall()

    def rebuild_metric_totals(self, prepare, aggregate_sql: str, fingerprint: str) -> None:
        """Recompute all span-metric totals from the stored spans (after a settings change)."""
        con = self._con
        reader = self._con.cursor().sql(
            "SELECT ServiceName, SpanName, SpanKind, StatusCode, Duration, SpanAttributes, ResourceAttributes"
            " FROM otel_traces"
        ).to_arrow_reader(100_000)
        con.begin()
        try:
            con.execute("DELETE FROM spanmetrics_state")
            for rb in reader:
                con.register("_metrics_in", prepare(rb))
                con.execute(_UPSERT.format(select=aggregate_sql)).fetchall()
                con.unregister("_metrics_in")
            con.execute("INSERT OR REPLACE INTO planoscope_meta VALUES ('spanmetrics', ?)", [fingerprint])
            con.commit()
        except BaseException:
            con.rollback()
            raise

    def meta(self, key: str) -> str | None:
        row = self._con.execute("SELECT value FROM planoscope_meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def recent_span_keys(self, window: timedelta, limit: int) -> list[bytes]:
        """trace_id + span_id of the spans ingested within ``window``, newest first."""
        since = datetime.now(timezone.utc).replace(tzinfo=None) - window
        rows = self._con.execute(
            "SELECT unhex(TraceId || SpanId) FROM otel_traces WHERE IngestedAt >= ?"
            " ORDER BY IngestedAt DESC LIMIT ?",
            [since, limit],
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def span_count(self) -> int:
        return self._cursor().execute("SELECT count(*) FROM otel_traces").fetchone()[0]

    def close(self) -> None:
        try:
            self._con.execute("CHECKPOINT")
        finally:
            self._con.close()


_UPSERT = (
    "INSERT INTO spanmetrics_state {select} ON CONFLICT (series) DO UPDATE SET"
    " calls = spanmetrics_state.calls + excluded.calls,"
    " sum_ms = spanmetrics_state.sum_ms + excluded.sum_ms,"
    " buckets = list_transform(list_zip(spanmetrics_state.buckets, excluded.buckets), lambda p: p[1] + p[2])"
    " RETURNING series, calls, sum_ms, buckets"
)
