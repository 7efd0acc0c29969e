"""The DuckDB store: one file in the data directory, one write connection owned by the writer
thread, a cursor per reading thread.

Writes are transactions that append a span batch *and* the span-metric totals it changes, so
the metrics restored after a restart always match exactly what was acknowledged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from ..schema import COLUMN_NAMES, duckdb_ddl

DB_FILE = "planoscope.duckdb"


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message is meant for the user."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
        self._con.execute(duckdb_ddl())
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS spanmetrics_state ("
            " series VARCHAR PRIMARY KEY, calls BIGINT NOT NULL, sum_ms DOUBLE NOT NULL,"
            " buckets BIGINT[] NOT NULL)"
        )
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS planoscope_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"
        )
        self._insert_sql = (
            "INSERT INTO otel_traces ("
            + ", ".join(_quote(c) for c in [*COLUMN_NAMES, "IngestedAt"])
            + ") SELECT "
            + ", ".join(_quote(c) for c in COLUMN_NAMES)
            + ", $ingested FROM _batch"
        )

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
    def append_spans(
        self, batch: pa.Table, aggregate_sql: str, merge
    ) -> None:
        """Append ``batch`` and fold its span-metric deltas into the stored totals, atomically.

        ``aggregate_sql`` selects ``(series, calls, sum_ms, buckets)`` deltas from ``_batch``;
        ``merge(rows)`` returns the new ``(series, calls, sum_ms, buckets)`` totals to store.
        """
        con = self._con
        con.register("_batch", batch)
        try:
            con.begin()
            try:
                con.execute(self._insert_sql, {"ingested": datetime.now(timezone.utc).replace(tzinfo=None)})
                deltas = con.execute(aggregate_sql).fetchall()
                totals = merge(deltas)
                if totals:
                    con.executemany(
                        "INSERT OR REPLACE INTO spanmetrics_state VALUES (?, ?, ?, ?)", totals
                    )
                con.commit()
            except BaseException:
                con.rollback()
                raise
        finally:
            con.unregister("_batch")

    def metric_totals(self) -> list[tuple[str, int, float, list[int]]]:
        return self._con.execute("SELECT series, calls, sum_ms, buckets FROM spanmetrics_state").fetchall()

    def rebuild_metric_totals(self, aggregate_sql: str, fingerprint: str) -> None:
        """Recompute all span-metric totals from the stored spans (after a config change)."""
        con = self._con
        con.begin()
        try:
            con.execute("CREATE OR REPLACE TEMP VIEW _batch AS SELECT * FROM otel_traces")
            rows = con.execute(aggregate_sql).fetchall()
            con.execute("DELETE FROM spanmetrics_state")
            if rows:
                con.executemany("INSERT INTO spanmetrics_state VALUES (?, ?, ?, ?)", rows)
            con.execute("INSERT OR REPLACE INTO planoscope_meta VALUES ('spanmetrics', ?)", [fingerprint])
            con.execute("DROP VIEW _batch")
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


def series_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))
