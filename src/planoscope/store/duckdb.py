"""The DuckDB store: one file in the data directory, one write connection owned by the writer's
apply thread, a cursor per reading thread.

A span insert commits, in the same transaction, the journal position it reaches (see
``ingest/journal.py``), so on start the journal's records after it, and only those, are inserted again.

Opening never writes to a database file it has not validated: a file shorter than its own block
count says (truncated) is refused before anything runs on it, the start-up statements write only
what is missing, and a store that failed (``failed``) is closed without a checkpoint, so a start
that fails leaves the file byte for byte as it found it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .attributes import stored_str
from .fill import Estimate, Fill, Progress, fillable
from .head import SamplesHead, recent_samples
from .metric_state import put_totals, state_ddl, state_table
from .rollups import Rollups, ms_of
from .sample_changes import EVERYTHING, SampleChanges
from .schema import ADDED_COLUMNS, DERIVED_COLUMNS, MACROS, duckdb_ddl
from .spanstore import StoreError, Totals

DB_FILE = "planoscope.duckdb"
log = logging.getLogger("planoscope.store")
__all__ = ["DB_FILE", "DuckDBStore", "StoreError"]


# DuckDB's answers that are about the rows given to it (a value it cannot convert, a constraint),
# not about the database: the same insert fails again whatever the disk does.
_DATA_ERRORS = (
    duckdb.DataError,
    duckdb.IntegrityError,
    duckdb.ConversionException,
    duckdb.OutOfRangeException,
    duckdb.TypeMismatchException,
    duckdb.InvalidInputException,
)
_FILE_HEADER_BYTES = 3 * 4096  # DuckDB's main header and its two database headers, before the blocks


class DuckDBStore:
    """Owns the database file (``file`` in ``data_dir``); a ``store.SpanStore``. ``write_*``
    methods must be called from one thread only."""

    attribute_maps = False  # the attribute sets are stored as the JSON alone
    dialect = "duckdb"

    def __init__(self, data_dir: Path, file: str = DB_FILE):
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create data directory {self.data_dir}: {e.strerror}") from None
        self.path = self.data_dir / file
        self.failed = False  # a DuckDB error on start: close without writing to the file
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
        self.samples_head = SamplesHead(lambda since: recent_samples(self, since))
        self.sample_changes = SampleChanges()  # where the samples changed, for PromQL's cache
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        try:
            self._open()
        except (duckdb.Error, StoreError) as e:
            self.failed = True
            self.close()
            if isinstance(e, StoreError):
                raise
            raise self.error(e) from None

    def _open(self) -> None:
        self._check_size()
        # Measured on 2 cores: with DuckDB's default 16 MB WAL checkpoint threshold ingest falls
        # from ~45k to ~28k spans/s (each checkpoint recompresses the open row group). The price of
        # 256 MB: up to ~500k recent spans held in memory, and a few seconds of WAL replay after a
        # crash.
        self._con.execute("SET checkpoint_threshold = '256MB'")
        # DuckDB's threads: all cores for reads, one for ingest's inserts. An insert of a few
        # thousand rows gains nothing from a second thread, yet costs ~40% more CPU with it
        # (per-thread row groups merged and copied again at commit: 10.3 against 6.2 us a span
        # for 4096-span commits, and ingest went from ~32.5k to ~37.5k spans/s); a 7-day query
        # over 10 M spans takes 0.34 s with two threads against 0.59 s with one. A read raises
        # the threads and leaves them raised (lowering right after each read cost a search up to
        # ~20 ms: DuckDB joins the worker thread it drops); the next insert lowers them, even
        # under a read (see _threads_for_ingest). Until the first insert DuckDB keeps all of
        # them, for the work done on start (a migration, the span-metric replay), which reads.
        self.read_threads = int(self._con.execute("SELECT current_setting('threads')").fetchall()[0][0])
        self._threads_lock = threading.Lock()
        self._threads = self.read_threads  # DuckDB's thread count now
        self._create_macros()
        self._con.execute(duckdb_ddl())  # these statements write nothing when the tables exist
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS planoscope_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"
        )
        self._migrate()
        self._con.execute(state_ddl("spanmetrics"))
        # Scraped Prometheus samples; Labels is one JSON object, as the span attributes are.
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS samples (Timestamp TIMESTAMP NOT NULL, Target VARCHAR NOT NULL,"
            " MetricName VARCHAR NOT NULL, Labels VARCHAR NOT NULL, Value DOUBLE NOT NULL)"
        )
        self.rollups = Rollups(self._con)
        self._span_columns = [
            r[0]
            for r in self._con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'otel_traces'"
                " ORDER BY ordinal_position"
            ).fetchall()
        ]
        # What an insert selects, in the table's order: a batch's columns by name, each derived
        # column computed from its definition (schema.DERIVED_COLUMNS).
        derived = {c.name: c.sql for c in DERIVED_COLUMNS}
        self._insert_columns = ", ".join(
            f'{derived[c]} AS "{c}"' if c in derived else f'"{c}"' for c in self._span_columns
        )

    def _check_size(self) -> None:
        """Refuse a file shorter than the blocks it uses: DuckDB would open it and fail on the
        first read of a missing block, half-way through the start. (Free blocks at the end of
        the file may have been cut off by DuckDB itself: only used ones count.)"""
        block_size, used = self._con.execute("SELECT block_size, used_blocks FROM pragma_database_size()").fetchall()[0]
        last = used - 1  # blocks are numbered from 0: at least this many are in use
        for (table,) in self._con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall():
            top = self._con.execute("SELECT max(block_id) FROM pragma_storage_info(?)", [table]).fetchall()[0][0]
            last = max(last, top if top is not None else -1)
        need = _FILE_HEADER_BYTES + block_size * (last + 1) if last >= 0 else 0
        have = self.path.stat().st_size
        if have < need:
            raise StoreError(
                f"the database {self.path} is truncated ({have} bytes; the blocks it uses need {need}): "
                "restore it from a backup, or move it away to start with an empty store"
            )

    def _create_macros(self) -> None:
        """(Re)define the macros stored in the database (``schema.MACROS``) only where they differ:
        a statement that writes would have DuckDB checkpoint into the file on close, even after a
        failed start."""
        for name, sql in MACROS.items():
            self._con.execute(sql.replace(f"MACRO {name}(", f"TEMP MACRO _planoscope_{name}(", 1))
            defs = dict(
                self._con.execute(
                    "SELECT function_name, macro_definition FROM duckdb_functions()"
                    " WHERE function_name IN (?, ?) AND schema_name = 'main'"
                    " AND database_name IN (current_database(), 'temp')",
                    [name, f"_planoscope_{name}"],
                ).fetchall()
            )
            if defs.get(name) != defs[f"_planoscope_{name}"]:
                self._con.execute(sql)

    def describe(self) -> dict:
        """What /healthz shows of the store."""
        return {"kind": "duckdb"}

    def problems(self) -> list[str]:
        return []  # a failing insert is the writer's to report

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Around the start's reads and writes (the span-metric replay, ...): a DuckDB error (a
        corrupt block) becomes the one-line ``StoreError`` and the store closes without writing."""
        try:
            yield
        except duckdb.Error as e:
            raise self.error(e) from None

    def error(self, e: BaseException) -> StoreError:
        """A DuckDB error met on start as the one-line ``StoreError`` the user sees; the store is
        marked failed, so closing it writes nothing to the file."""
        self.failed = True
        return StoreError(f"cannot use the database {self.path}: {str(e).splitlines()[0]}")

    @staticmethod
    def unwritable(e: BaseException) -> bool:
        """Whether ``e``, raised by a write, says the database cannot be written now (a full disk,
        an I/O error, memory, a failed commit, or anything else about the database itself) rather
        than that DuckDB refused the rows given to it (it would refuse them again)."""
        return isinstance(e, duckdb.Error) and not isinstance(e, _DATA_ERRORS)

    def _migrate(self) -> None:
        """Bring a store written by an earlier planoscope up to the current columns."""
        have = {
            r[0]
            for r in self._con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'otel_traces'"
            ).fetchall()
        }
        if "TraceKey" not in have:  # added with the trace explorer: the look-up key (schema.LOOKUP_COLUMNS)
            log.info("adding the TraceKey column to the spans stored by an earlier version")
            self._con.execute('ALTER TABLE otel_traces ADD COLUMN "TraceKey" UBIGINT')
            self._con.execute("""UPDATE otel_traces SET "TraceKey" = ('0x' || TraceId[17:32])::UBIGINT""")
        added = [(name, ddl) for name, _, ddl in ADDED_COLUMNS if name not in have]
        if not added:
            return
        # The spans stored before hold NULL; those computed from the span are filled later (see
        # fill.py), as recorded in the same transaction: a kill after it still has them filled.
        log.info("adding the %s columns to the spans stored by an earlier version", ", ".join(n for n, _ in added))
        self._con.begin()
        try:
            for name, ddl in added:
                self._con.execute(f'ALTER TABLE otel_traces ADD COLUMN "{name}" {ddl}')
            Fill.plan(self._con, [n for n, _ in added if fillable(n)])
            self._con.commit()
        except BaseException:
            _rollback(self._con)
            raise

    def fill_pending(self) -> int:
        """Spans stored by an earlier version whose new columns are still to be filled (``fill``)."""
        fill = Fill.pending(self._con)
        return 0 if fill is None else fill.remaining(self._con)[0]

    def fill(self, estimate: Estimate | None, progress: Progress = lambda done, total: None) -> int:
        """Fill the new columns of the spans an earlier version stored (on start, before the
        writer: this is the write connection); returns how many. Resumes where a killed start left."""
        fill = Fill.pending(self._con)
        return 0 if fill is None else fill.run(self._con, estimate, progress)

    # --- reads: any thread --------------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
            with self._cursors_lock:
                self._cursors.append(cur)
        return cur

    def query(self, sql: str, params: Sequence | dict | None = None) -> list[tuple]:
        """Run a read-only parameterized query on this thread's cursor, with all of DuckDB's threads."""
        cur = self._cursor()
        with self._threads_lock:
            self._set_threads(cur, self.read_threads)
        return cur.execute(sql, params).fetchall()

    def write(self, sql: str, params: Sequence | dict | None = None) -> None:
        """A small parameterized write of state another store keeps here (``ClickHouseStore``'s
        forwarding cursors), from any thread: on this thread's cursor, in a transaction of its
        own, durable once it returns; never on a table the writer's thread writes."""
        self._cursor().execute(sql, params)

    read = query  # the views' reads (SpanStore.read): DuckDB SQL, on the spans of this file

    def read_arrow(self, sql: str, params: Sequence | dict | None = None) -> pa.Table:
        """``read``, its answer as an Arrow table (columns of numbers stay arrays, not Python objects)."""
        cur = self._cursor()
        with self._threads_lock:
            self._set_threads(cur, self.read_threads)
        return cur.sql(sql, params=params).to_arrow_table()

    def _threads_for_ingest(self) -> None:
        """Back to one DuckDB thread for an insert, even under a read: a 122,880-row insert took
        4.0 us of CPU a span on one thread and 6.1 on two, and several seconds instead of ~0.5
        next to a dashboard read. A read in flight finishes on one thread."""
        with self._threads_lock:
            self._set_threads(self._con, 1)

    def _set_threads(self, con: duckdb.DuckDBPyConnection, n: int) -> None:
        if self._threads != n:
            con.execute(f"SET threads = {n}")
            self._threads = n

    # --- writes: the writer thread only -------------------------------------------------
    def append_spans(
        self,
        batch: pa.Table | None,
        ingested_at: datetime,
        journal_position: int | None = None,
        metric_totals: Mapping[str, Sequence[Totals]] | None = None,
    ) -> None:
        """Append ``batch`` (if any), stamped ``ingested_at``, and record that the journal is
        applied up to ``journal_position`` (if given), in one durable transaction.

        ``metric_totals`` (per metric set) are not written here: writing them in every commit would cost ~8 ms of
        statements each; the snapshots (``save_metric_totals``) and the replay of the spans
        ingested after their watermark keep them exact instead."""
        # Straight from Arrow, by name (a store migrated from an earlier version has its later
        # columns after IngestedAt), with the derived columns computed on the way.
        self._threads_for_ingest()
        con = self._con
        con.begin()
        try:
            if batch is not None:
                stamp = pa.array(np.full(batch.num_rows, np.datetime64(ingested_at, "us")))
                rows = batch.append_column("IngestedAt", stamp)
                con.from_arrow(rows).project(self._insert_columns).insert_into("otel_traces")
            if journal_position is not None:
                con.execute(
                    "INSERT OR REPLACE INTO planoscope_meta VALUES ('journal_applied', ?)", [str(journal_position)]
                )
            con.commit()
        except BaseException:
            _rollback(con)
            raise

    def journal_applied(self) -> int:
        """The journal position up to which the spans are in the store."""
        return int(self.meta("journal_applied") or 0)

    def journal_in_doubt(self) -> None:
        """None: the spans and the position they reach are committed in one transaction."""
        return None

    def commit_state(
        self,
        journal_position: int | None = None,
        metric_totals: Mapping[str, Sequence[Totals]] | None = None,
        meta: dict | None = None,
    ) -> None:
        """In one durable transaction: the journal position (if given), the totals of the series
        given per metric set (``{name: totals}``; the set's table exists: ``save_metric_totals``
        made it), and ``meta`` keys (a None value deletes one). The state another store keeps
        here (``ClickHouseStore``: its spans are elsewhere)."""
        con = self._con
        con.begin()
        try:
            if journal_position is not None:
                con.execute(
                    "INSERT OR REPLACE INTO planoscope_meta VALUES ('journal_applied', ?)", [str(journal_position)]
                )
            for name, totals in (metric_totals or {}).items():
                if totals:
                    put_totals(self._con, name, totals)
            for key, value in (meta or {}).items():
                if value is None:
                    con.execute("DELETE FROM planoscope_meta WHERE key = ?", [key])
                else:
                    con.execute("INSERT OR REPLACE INTO planoscope_meta VALUES (?, ?)", [key, value])
            con.commit()
        except BaseException:
            _rollback(con)
            raise

    def append_samples(self, rows: pa.Table) -> None:
        """Append scraped samples (the columns of ``samples``, in order) in one transaction; the
        rollups of buckets they fall in are made again (``Rollups.invalidate``)."""
        if not rows.num_rows:
            return
        con = self._con
        covered = self.rollups.lowest_watermark()
        oldest = pc.min(pc.cast(rows.column("Timestamp"), pa.timestamp("us"))).value // 1000
        con.register("_samples", rows)
        con.begin()
        try:
            if covered is not None and oldest < covered:
                self.rollups.invalidate(con, oldest)
            con.execute("INSERT INTO samples SELECT * FROM _samples")
            con.commit()
        except BaseException:
            _rollback(con)
            self.rollups.reload(con)
            raise
        finally:
            con.unregister("_samples")
        self.samples_head.append(rows)
        self.sample_changes.record(oldest)

    def delete_before(self, table: str, cutoff: datetime, limit: int) -> int:
        """Delete at most ``limit`` rows of ``table`` (otel_traces or samples) whose Timestamp is
        before ``cutoff``, in one transaction; returns how many were deleted."""
        if table not in ("otel_traces", "samples"):
            raise ValueError(table)
        con = self._con
        con.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE Timestamp < ? LIMIT ?)",
            [cutoff, limit],
        )
        deleted = con.fetchall()[0][0]
        if table == "samples" and deleted:
            self.sample_changes.record(EVERYTHING)
            self.samples_head.trim(cutoff)
            self.rollups.trim(con, ms_of(cutoff))
        return deleted

    def compact_rollups(self, now_ms: int) -> bool:
        """Thin the next hour of complete buckets of samples (``Rollups.compact``); whether more is due."""
        self._threads_for_ingest()
        return self.rollups.compact(self._con, now_ms)

    def read_rollups(self, resolution_ms: int, start_ms: int, end_ms: int, match):
        """``Rollups.read`` on this thread's cursor, with all of DuckDB's threads."""
        cur = self._cursor()
        with self._threads_lock:
            self._set_threads(cur, self.read_threads)
        return self.rollups.read(cur, resolution_ms, start_ms, end_ms, match)

    def oldest(self) -> tuple[datetime | None, datetime | None]:
        """The earliest Timestamp of the stored spans and of the stored samples."""
        return (
            self.query("SELECT min(Timestamp) FROM otel_traces")[0][0],
            self.query("SELECT min(Timestamp) FROM samples")[0][0],
        )

    def disk_bytes(self) -> int:
        """Bytes of the files in the data directory (the database, its write-ahead log, the journal)."""
        total = 0
        for root, _, files in os.walk(self.data_dir):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
                except OSError:  # a file removed meanwhile
                    pass
        return total

    # The metric sets' totals and watermarks: see ``metric_state``.

    def save_metric_totals(
        self,
        totals: list[tuple],
        watermark: datetime | None,
        fingerprint: str,
        replace: bool = False,
        name: str = "spanmetrics",
    ) -> None:
        """Store ``totals`` (all of them if ``replace``) of the metric set ``name`` as of ``watermark``."""
        con = self._con
        con.begin()
        try:
            con.execute(state_ddl(name))
            if replace:
                con.execute(f"DELETE FROM {state_table(name)}")
            if totals:
                put_totals(self._con, name, totals)
            con.execute(
                "INSERT OR REPLACE INTO planoscope_meta VALUES (?, ?), (?, ?)",
                [name, fingerprint, f"{name}_watermark", watermark.isoformat() if watermark else ""],
            )
            con.commit()
        except BaseException:
            _rollback(con)
            raise

    def metric_totals(self, fingerprint: str, name: str = "spanmetrics") -> tuple[list[tuple], datetime | None] | None:
        """(totals, watermark) of the metric set ``name`` stored for ``fingerprint``, or None if
        stored for other settings or never."""
        if self.meta(name) != fingerprint:
            return None
        rows = self._con.execute(f"SELECT * FROM {state_table(name)}").fetchall()
        mark = self.meta(f"{name}_watermark")
        return [tuple(r) for r in rows], (datetime.fromisoformat(mark) if mark else None)

    def scan_spans(
        self,
        columns: Sequence[str],
        where: str = "",
        after: datetime | None = None,
        batch_rows: int = 100_000,
        by_commit: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """``columns`` of the spans ingested after ``after`` that match ``where`` (an SQL condition
        written by planoscope, never from input), as Arrow batches; ``by_commit`` adds
        ``IngestedAt`` and orders by it (what a metric replay reads: metrics/cumulative.py)."""
        names = [*columns, *(["IngestedAt"] if by_commit else [])]
        conditions = [c for c in (where, "IngestedAt > $1" if after else "") if c]
        sql = "SELECT " + ", ".join(f'"{c}"' for c in names) + " FROM otel_traces"
        if conditions:
            sql += " WHERE " + " AND ".join(f"({c})" for c in conditions)
        if by_commit:
            sql += " ORDER BY IngestedAt"
        reader = self._con.cursor().sql(sql, params=[after] if after else None).to_arrow_reader(batch_rows)
        return iter(reader)

    def scan_for_metrics(
        self,
        dimensions: Sequence[str],
        after: datetime | None = None,
        batch_rows: int = 100_000,
        by_commit: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """What span metrics derive from, of the spans ingested after ``after``, as Arrow batches:
        the label columns, Duration and ``d0``, ``d1``, … per dimension; ``by_commit`` adds
        ``IngestedAt`` (one value per commit) and orders by it.

        A dimension's value is its string form, as the decoder pulls it out when the span
        arrives, so that a series counted live and the same series recounted from the store have
        the same labels: strings, ints and bools are their JSON text in DuckDB; doubles, arrays,
        maps, bytes and empty values (which DuckDB would write its own way: 2.0 for the
        collector's 2) are read back as the value sent and rendered as the decoder renders them
        (``attributes.stored_str``), once per distinct value."""
        n = len(dimensions)
        pointer = "'/' || replace(replace(${i}, '~', '~0'), '/', '~1')"  # as schema.ATTR_MACRO has it
        values = ", ".join(
            f"coalesce(json_extract(SpanAttributes, {pointer.format(i=i + 1)}),"
            f" json_extract(ResourceAttributes, {pointer.format(i=i + 1)}))::VARCHAR AS j{i}"
            for i in range(n)
        )
        labels = "".join(
            f", CASE json_type(j{i}) WHEN 'VARCHAR' THEN j{i} ->> '$' WHEN 'BIGINT' THEN j{i}"
            f" WHEN 'UBIGINT' THEN j{i} WHEN 'BOOLEAN' THEN j{i} END AS d{i},"
            f" CASE WHEN json_type(j{i}) NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'BOOLEAN') THEN j{i} END AS raw{i}"
            for i in range(n)
        )
        where = f" WHERE IngestedAt > ${n + 1}" if after else ""
        params = [*dimensions, *([after] if after else [])]
        commit = (", IngestedAt", " ORDER BY IngestedAt") if by_commit else ("", "")
        base = "ServiceName, SpanName, SpanKind, StatusCode, Duration"
        sql = (
            f"SELECT {base}{labels}{commit[0]} FROM"
            f" (SELECT {base}{', ' + values if n else ''}{commit[0]} FROM otel_traces{where}){commit[1]}"
        )
        reader = self._con.cursor().sql(sql, params=params).to_arrow_reader(batch_rows)
        return _rendered_labels(reader, n)

    def last_ingested(self) -> datetime | None:
        return self._con.execute("SELECT max(IngestedAt) FROM otel_traces").fetchall()[0][0]

    def meta(self, key: str) -> str | None:
        rows = self._con.execute("SELECT value FROM planoscope_meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else None

    def recent_span_keys(self, window: timedelta, limit: int) -> list[bytes]:
        """trace_id + span_id of the spans ingested within ``window``, newest first."""
        since = datetime.now(UTC).replace(tzinfo=None) - window
        rows = self._con.execute(
            "SELECT unhex(TraceId || SpanId) FROM otel_traces WHERE IngestedAt >= ? ORDER BY IngestedAt DESC LIMIT ?",
            [since, limit],
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def span_count(self) -> int:
        return self.query("SELECT count(*) FROM otel_traces")[0][0]

    def close(self) -> None:
        """Checkpoint (so the next start replays no WAL) and close; a failed store is closed
        without one, so that nothing is written into a file DuckDB could not read."""
        with self._cursors_lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        try:
            self._con.execute("PRAGMA disable_checkpoint_on_shutdown" if self.failed else "CHECKPOINT")
        except duckdb.Error as e:  # the WAL is still there and is replayed on the next start
            log.warning("checkpoint on close failed: %s", e)
        finally:
            self._con.close()


def _rendered_labels(reader: pa.RecordBatchReader, n: int) -> Iterator[pa.RecordBatch]:
    """``scan_for_metrics``' batches with each ``raw<i>`` (a stored value's JSON, where DuckDB's
    text is not the string form) rendered into ``d<i>``."""
    for batch in reader:
        columns = dict(zip(batch.schema.names, batch.columns))
        for i in range(n):
            raw = columns.pop(f"raw{i}")
            if raw.null_count < len(raw):
                distinct = pc.unique(raw)
                rendered = pa.array([None if v is None else stored_str(v) for v in distinct.to_pylist()], pa.string())
                columns[f"d{i}"] = pc.coalesce(columns[f"d{i}"], rendered.take(pc.index_in(raw, distinct)))
        yield pa.RecordBatch.from_pydict(columns)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back what a failed statement left open, keeping the error that failed it: a commit
    that failed (a full disk) has already ended the transaction, and the rollback's own "no
    transaction is active" would replace the real reason."""
    try:
        con.rollback()
    except duckdb.Error:
        pass
