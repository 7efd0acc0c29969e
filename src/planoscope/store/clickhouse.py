"""The ClickHouse store: spans in the OpenTelemetry Collector ClickHouse exporter's ``otel_traces``
tables, so that stock collectors and any number of planoscope instances write (and read) the
same tables; each instance's own state in a small DuckDB file in its data directory.

``--store clickhouse://[USER[:PASSWORD]@]HOST:PORT/DATABASE`` (``clickhouses://`` for TLS) is
ClickHouse's HTTP interface, through clickhouse-connect. On start planoscope creates the
exporter's tables when they are absent (``clickhouse_schema``, with the TTL of ``retention``),
adds its own columns (``clickhouse_columns``) and the samples table, and turns on the table
setting that makes ClickHouse deduplicate inserts (below). ClickHouse must answer on start.

Exactly once. Ingest acknowledges a request once it is in the local journal, as with DuckDB;
the writer then inserts the journal's spans here in large batches (an Arrow block each), each
insert carrying an ``insert_deduplication_token`` named after this instance and the journal
range it holds. ClickHouse has no transaction spanning its insert and the local state, so the
order is: (1) record locally that the range is in doubt, (2) insert with the token, (3) commit
locally the journal position, the metric totals the batch brings, and the end of the doubt.
A crash between (2) and (3) replays the range as one insert with the same token, which ClickHouse
drops as a duplicate (its materialized view's rows too); a crash before (2) inserts it for the
first time. ClickHouse keeps the tokens of a table's last ``non_replicated_deduplication_window``
blocks (planoscope sets DEDUP_WINDOW if lower; the exporter leaves 0, which deduplicates
nothing); a replicated table keeps them ``replicated_deduplication_window`` blocks and
``…_seconds``. The instance's id is random, made with its state file: two instances never share
a token, and neither does one whose state was lost.

The cumulative metrics (span metrics, LLM metrics: each set by its name) are this instance's,
like a collector's: each set's totals are kept with the journal position (``append_spans``), so
they are exact after a crash with no replay from ClickHouse. Nothing is recounted from
ClickHouse on start, as DuckDB recounts its file: its rows are every writer's (other instances',
collectors'), which their own /metrics count, and say nothing of which instance wrote them. A
set without totals of its settings here (new metric settings, or a set this instance's version
did not have) starts from zero: Prometheus sees a counter reset.

Retention is the tables' TTL: ClickHouse drops whole parts once every span in them has started
longer ago than ``retention``. A table that exists keeps its TTL (planoscope never alters one it
did not create; a different TTL is logged).

The views read ClickHouse through ``read`` (ClickHouse SQL, server-side parameters): the trace
search and view, sessions and both dashboards (``query/traces_clickhouse.py``,
``query/sessions_clickhouse.py``, ``query/panels_clickhouse.py``, ``query/llm_calls_clickhouse.py``).
Forwarding reads back this instance's own rows: each insert carries ``IngestedBy`` (the instance
id) and ``JournalPosition`` (the journal position it reaches), and a destination's cursor is such
a position, kept in the state file beside the journal's (``forward_cursors``;
``forward/clickhouse.py``). ``query`` reads the state file (the DuckDB store's tables, no span).
``/metrics`` and ``/healthz`` are this instance's.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.exceptions import ClickHouseError

from . import clickhouse_columns as columns
from . import clickhouse_schema as schema
from .clickhouse_rows import exporter_rows
from .clickhouse_url import ClickHouseURL
from .duckdb import DuckDBStore
from .fill import Estimate, Progress
from .spanstore import StoreError, Totals

log = logging.getLogger("planoscope.store")

STATE_FILE = "clickhouse-state.duckdb"
SAMPLES_TABLE = "planoscope_samples"
FORWARD_TABLE = "planoscope_forward"  # in the state file: each forwarding destination's journal position
# Blocks whose tokens ClickHouse remembers per table: the replay of an insert in doubt is
# deduplicated if fewer blocks than this were inserted into the table (by every writer) between
# the crash and the restart. Hashes of 10,000 blocks are a few hundred kilobytes on the server.
DEDUP_WINDOW = 10_000
INSERT_SETTINGS = {
    "async_insert": 0,  # inserted (a part written) before the insert returns, never buffered
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,  # the trace-id view's rows too
    # Spans of many days in one batch (a backfill) make a part per day; never refuse them.
    "throw_on_max_partitions_per_insert_block": 0,
}
SLOW_INSERT_S = 10.0  # an insert running longer is reported in /healthz (one of 120k spans takes 1-3 s)
HEALTH_TIMEOUT_S = 1  # /healthz's look at ClickHouse: a liveness probe must not wait for a ClickHouse that hangs
# ClickHouse's answers about the rows given to it, not about the server: the same insert fails
# again whatever ClickHouse does (a value it cannot convert, arrays of unequal length, ...).
DATA_ERROR_CODES = {6, 26, 27, 38, 41, 43, 53, 69, 70, 72, 117, 131, 190, 321, 407}
# The parameters ``read`` fills in with the tables' names.
TABLE_PARAMETERS = frozenset({"db", "otel_traces", "otel_traces_trace_id_ts", "planoscope_samples"})
# The tables as a read's SQL names them (``ClickHouseStore.read`` fills in the parameters).
SPANS = "{db:Identifier}.{otel_traces:Identifier}"
_CODE = re.compile(r"Code: (\d+)\. (?:DB::Exception: )?([^\n]*)")


# --- errors ----------------------------------------------------------------------------------


def _reason(e: BaseException, secret: str) -> str:
    """One line saying why ClickHouse failed: its own message when it sent one, with the
    password taken out should anything repeat it."""
    text = str(e)
    m = _CODE.search(text)
    line = f"Code: {m.group(1)}. {m.group(2).strip()}" if m else (text.strip().splitlines() or [type(e).__name__])[0]
    if len(secret) >= 3:
        line = line.replace(secret, "***")
    return line


def _code(e: BaseException) -> int | None:
    m = _CODE.search(str(e))
    return int(m.group(1)) if m else None


class ClickHouseUnavailable(StoreError):
    """ClickHouse did not take a write (down, slow, refusing): the spans wait in the journal."""


# --- the store -------------------------------------------------------------------------------


class ClickHouseStore:
    """A ``store.SpanStore`` on ClickHouse (see the module). Example::

    store = ClickHouseStore("clickhouse://planoscope:secret@127.0.0.1:8123/observability", data_dir, 7 * 86400)
    """

    attribute_maps = True  # the exporter's Map columns are built at decode time (Decoder(maps=True))
    dialect = "clickhouse"
    samples_head = None  # other instances insert samples too: reads go to the table
    sample_changes = None  # nor can it tell where they changed

    def __init__(self, url: str, data_dir: Path, retention_s: float = 0.0, table: str = schema.DEFAULT_TABLE):
        self.url = ClickHouseURL.parse(url)
        self.data_dir = Path(data_dir)
        self.failed = False
        self.retention = timedelta(seconds=retention_s) if retention_s > 0 else None
        q = schema.quote_identifier
        self.table = f"{q(self.url.database)}.{q(table)}"
        self.lookup = f"{q(self.url.database)}.{q(table + '_trace_id_ts')}"
        self.samples = f"{q(self.url.database)}.{q(SAMPLES_TABLE)}"
        self._table_name = table
        self._lookup_name = table + "_trace_id_ts"
        self._inserting_since: float | None = None
        self._oldest: tuple[float, tuple] = (0.0, (None, None))
        self._read_lock = threading.Lock()
        self._health_lock = threading.Lock()
        self.local = DuckDBStore(self.data_dir, STATE_FILE)  # this instance's state; raises StoreError
        try:
            self._writes = self._client()  # the writer thread's
            self._reads = self._client()  # everyone else's: a client runs one request at a time
            self._health = self._client(timeout=HEALTH_TIMEOUT_S)
            # The views' reads, from any thread at once: a client without a session runs
            # concurrent requests on its connection pool.
            self._views = self._client()
            self._create()
        except ClickHouseError as e:
            self.local.close()
            raise StoreError(f"cannot use ClickHouse at {self.url.shown}: {_reason(e, self.url.password)}") from None
        except BaseException:
            self.local.close()
            raise
        self.instance = self.local.meta("instance_id")
        if self.instance is None:
            self.instance = secrets.token_hex(8)
            self.local.commit_state(meta={"instance_id": self.instance})
        self._applied = self.local.journal_applied()
        self.local.write(f"CREATE TABLE IF NOT EXISTS {FORWARD_TABLE} (url VARCHAR PRIMARY KEY, position UBIGINT)")
        in_doubt = self.local.meta("insert_in_doubt")
        self._in_doubt = int(in_doubt) if in_doubt else None

    def _client(self, timeout: int = 120):
        u = self.url
        return clickhouse_connect.get_client(
            host=u.host,
            port=u.port,
            username=u.user,
            password=u.password,
            secure=u.secure,
            # Compressing a body costs CPU on both sides; it pays only over a network.
            compress=u.host not in ("127.0.0.1", "::1", "localhost"),
            autogenerate_session_id=False,
            connect_timeout=min(10, timeout),
            send_receive_timeout=timeout,
            query_retries=0,
        )

    def _create(self) -> None:
        """The exporter's tables if absent, planoscope's columns, skip indexes and samples table, the dedup window."""
        c = self._writes
        for sql in schema.schema_sql(self.url.database, self._table_name, ttl=self.retention):
            c.command(sql)
        for sql in columns.additions_sql(self.table):
            c.command(sql)
        ttl = schema.ttl_clause(self.retention, "toDateTime(Timestamp)")
        c.command(columns.samples_table_sql(self.samples, ttl))
        rows = c.query(
            "SELECT name, engine, create_table_query FROM system.tables WHERE database = {db:String}"
            " AND name IN ({names:Array(String)})",
            parameters={"db": self.url.database, "names": [self._table_name, self._table_name + "_trace_id_ts"]},
        ).result_rows
        for name, engine, ddl in rows:
            # A replicated (or shared) table keeps the tokens by the server's replicated_deduplication_window.
            if engine.endswith("MergeTree") and not engine.startswith(("Replicated", "Shared")):
                window = c.command(
                    "SELECT value FROM system.merge_tree_settings WHERE name = 'non_replicated_deduplication_window'"
                )
                current = re.search(r"non_replicated_deduplication_window = (\d+)", ddl)
                if int(current.group(1) if current else window) < DEDUP_WINDOW:
                    c.command(
                        f"ALTER TABLE {schema.quote_identifier(self.url.database)}.{schema.quote_identifier(name)}"
                        f" MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW}"
                    )
            elif not engine.endswith("MergeTree"):
                log.warning("%s is a %s table: planoscope's inserts may not be deduplicated on a replay", name, engine)
            if name == self._table_name:
                want = schema.ttl_clause(self.retention, "toDateTime(Timestamp)")
                have = re.search(r"\bTTL (.*?) SETTINGS", ddl.replace("`", ""), re.S)
                if (have.group(1).strip() if have else "") != want.removeprefix("TTL "):
                    log.warning(
                        "%s keeps its own TTL (%s), not retention's (%s): planoscope does not change a table's TTL;"
                        " ALTER TABLE ... MODIFY TTL does",
                        self.table,
                        have.group(1).strip() if have else "none",
                        want.removeprefix("TTL ") or "none",
                    )

    def describe(self) -> dict:
        out = {"kind": "clickhouse", "url": self.url.shown, "instance": self.instance}
        if self._in_doubt is not None:
            out["insert_in_doubt_until"] = self._in_doubt
        return out

    def problems(self) -> list[str]:
        """What /healthz should say beyond the failures the writer counts: a slow insert."""
        since = self._inserting_since
        if since is not None and time.monotonic() - since > SLOW_INSERT_S:
            return [
                f"an insert into ClickHouse ({self.url.shown}) has been running for {time.monotonic() - since:.0f} s"
            ]
        return []

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        with self.local.starting():
            try:
                yield
            except ClickHouseError as e:
                raise self.error(e) from None

    def error(self, e: BaseException) -> StoreError:
        self.failed = True
        if isinstance(e, StoreError):
            return e
        if isinstance(e, ClickHouseError):
            return StoreError(f"cannot use ClickHouse at {self.url.shown}: {_reason(e, self.url.password)}")
        return self.local.error(e)

    def unwritable(self, e: BaseException) -> bool:
        if isinstance(e, ClickHouseUnavailable):
            return _code(e) not in DATA_ERROR_CODES
        return isinstance(e, OSError) or self.local.unwritable(e)

    # --- spans --------------------------------------------------------------------------
    def token(self, start: int, end: int) -> str:
        """The deduplication token of the insert of the journal's records in (start, end]."""
        return f"planoscope:{self.instance}:{start}-{end}"

    def append_spans(
        self,
        batch: pa.Table | None,
        ingested_at: datetime,
        journal_position: int | None = None,
        metric_totals: Mapping[str, Sequence[Totals]] | None = None,
    ) -> None:
        """Insert ``batch`` with the token of its journal range, then commit the position and
        each metric set's ``metric_totals`` locally (see the module for the order). ``ingested_at`` is unused:
        ClickHouse stamps ``IngestedAt`` itself. Raises ``ClickHouseUnavailable``."""
        end = self._applied if journal_position is None else journal_position
        if batch is not None and batch.num_rows:
            rows = exporter_rows(batch)
            # Whose rows and which insert: what this instance's forwarders read back, in order.
            rows = rows.append_column("IngestedBy", pa.array([self.instance] * rows.num_rows, pa.string()))
            rows = rows.append_column("JournalPosition", pa.array([end] * rows.num_rows, pa.uint64()))
            if self._in_doubt != end:
                self.local.commit_state(meta={"insert_in_doubt": str(end)})
                self._in_doubt = end
            settings = dict(INSERT_SETTINGS, insert_deduplication_token=self.token(self._applied, end))
            self._inserting_since = time.monotonic()
            try:
                self._writes.insert_arrow(self.table, rows, settings=settings)
            except ClickHouseError as e:
                raise self._unavailable(e) from None
            finally:
                self._inserting_since = None
        self.local.commit_state(end, metric_totals, meta={"insert_in_doubt": None})
        self._applied, self._in_doubt = end, None

    def journal_applied(self) -> int:
        return self._applied

    def journal_in_doubt(self) -> int | None:
        return self._in_doubt if self._in_doubt is not None and self._in_doubt > self._applied else None

    # --- cumulative metrics: this instance's, kept with the position ---------------------
    def save_metric_totals(
        self,
        totals: list[tuple],
        watermark: datetime | None,
        fingerprint: str,
        replace: bool = False,
        name: str = "spanmetrics",
    ) -> None:
        self.local.save_metric_totals(totals, watermark, fingerprint, replace, name=name)

    def metric_totals(self, fingerprint: str, name: str = "spanmetrics") -> tuple[list[tuple], datetime | None]:
        """This instance's totals of the metric set ``name``; none (a counter reset) when stored
        for other settings or never: ClickHouse holds every writer's spans, which are not this
        instance's to count (see the module)."""
        stored = self.local.metric_totals(fingerprint, name)
        if stored is None:
            if self.local.meta(name) is not None:
                log.info("%s: the metric settings changed: this instance's counters start again from zero", name)
            elif self._applied:
                log.info("%s: new to this instance: its counters start from zero, at this start", name)
            return [], None
        return stored[0], None

    def scan_spans(
        self,
        columns: Sequence[str],
        where: str = "",
        after: datetime | None = None,
        batch_rows: int = 100_000,
        by_commit: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """Nothing: every metric set's totals are committed with the journal position they count
        up to, and ClickHouse's rows are not this instance's alone to recount (see the module)."""
        return iter(())

    def scan_for_metrics(
        self,
        dimensions: Sequence[str],
        after: datetime | None = None,
        batch_rows: int = 100_000,
        by_commit: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """Nothing, as ``scan_spans``."""
        return iter(())

    def last_ingested(self) -> datetime | None:
        return None  # ClickHouse stamps IngestedAt; the metric totals need no watermark here

    def recent_span_keys(self, window: timedelta, limit: int) -> list[bytes]:
        """trace_id + span_id of the spans ClickHouse stored within ``window`` (any instance's, or
        a collector's), newest first."""
        rows = self._read(
            f"SELECT concat(TraceId, SpanId) FROM {self.table}"
            " WHERE IngestedAt >= now64(6) - toIntervalMillisecond({ms:UInt64})"
            " AND Timestamp >= now64(9) - toIntervalMillisecond({ms:UInt64}) - toIntervalDay(1)"
            " ORDER BY IngestedAt DESC LIMIT {limit:UInt64}",
            {"ms": int(window.total_seconds() * 1000), "limit": limit},
        )
        return [bytes.fromhex(r[0]) for r in rows if len(r[0]) == 48]

    # --- the rest ------------------------------------------------------------------------
    def append_samples(self, rows: pa.Table) -> None:
        # On the writer's thread like the spans' inserts: one that hangs holds those up too, and
        # /healthz says so the same way.
        self._inserting_since = time.monotonic()
        try:
            self._writes.insert_arrow(self.samples, rows, settings={"async_insert": 0})
        except ClickHouseError as e:
            raise self._unavailable(e) from None
        finally:
            self._inserting_since = None

    def _unavailable(self, e: ClickHouseError) -> ClickHouseUnavailable:
        return ClickHouseUnavailable(f"ClickHouse at {self.url.shown}: {_reason(e, self.url.password)}")

    def delete_before(self, table: str, cutoff: datetime, limit: int) -> int:
        """Nothing: ClickHouse drops what is past the tables' TTL."""
        return 0

    def oldest(self) -> tuple[datetime | None, datetime | None]:
        """From ClickHouse's part metadata (min of the partition key's column), cached for 10 s;
        (None, None) while ClickHouse does not answer within HEALTH_TIMEOUT_S (/healthz must)."""
        at, value = self._oldest
        if time.monotonic() - at < 10:
            return value
        try:
            with self._health_lock:
                spans, samples = self._health.query(
                    f"SELECT (SELECT (min(Timestamp), count()) FROM {self.table}),"
                    f" (SELECT (min(Timestamp), count()) FROM {self.samples})"
                ).result_rows[0]
            value = (spans[0] if spans[1] else None, samples[0] if samples[1] else None)
        except ClickHouseError:
            value = (None, None)
        self._oldest = (time.monotonic(), value)
        return value

    def span_count(self) -> int:
        return int(self._read(f"SELECT count() FROM {self.table}")[0][0])

    def disk_bytes(self) -> int:
        """The data directory's: the journal and the state file (ClickHouse's disks are its own)."""
        return self.local.disk_bytes()

    def fill_pending(self) -> int:
        return 0  # ClickHouse computes the added columns of older parts when it reads them

    def fill(self, estimate: Estimate | None, progress: Progress = lambda done, total: None) -> int:
        return 0

    def read(self, sql: str, params: Mapping[str, object] | None = None) -> list[tuple]:
        """A read-only query of the views, in ClickHouse SQL with server-side parameters
        (``{name:Type}``, bound by ClickHouse, never formatted into the text). The SQL names the
        tables with parameters this fills in: ``{db:Identifier}.{otel_traces:Identifier}``,
        ``{db:Identifier}.{otel_traces_trace_id_ts:Identifier}`` and
        ``{db:Identifier}.{planoscope_samples:Identifier}`` (the scraped samples). Raises ``StoreError``."""
        try:
            return self._views.query(sql, parameters=self._view_params(params)).result_rows
        except ClickHouseError as e:
            raise StoreError(f"ClickHouse at {self.url.shown}: {_reason(e, self.url.password)}") from None

    def _view_params(self, params: Mapping[str, object] | None) -> dict:
        params = dict(params or {})
        if TABLE_PARAMETERS & params.keys():
            raise ValueError(f"{sorted(TABLE_PARAMETERS & params.keys())} name the tables: pick other names")
        params.update(
            db=self.url.database,
            otel_traces=self._table_name,
            otel_traces_trace_id_ts=self._lookup_name,
            planoscope_samples=SAMPLES_TABLE,
        )
        return params

    def read_arrow(self, sql: str, params: Mapping[str, object] | None = None) -> pa.Table:
        """``read``, its answer as an Arrow table (columns of numbers stay arrays, not Python objects)."""
        try:
            return self._views.query_arrow(sql, parameters=self._view_params(params))
        except ClickHouseError as e:
            raise StoreError(f"ClickHouse at {self.url.shown}: {_reason(e, self.url.password)}") from None

    def query(self, sql: str, params: Sequence | dict | None = None) -> list[tuple]:
        """DuckDB SQL of the views not written for ClickHouse yet, on the state file (no span: see the module)."""
        return self.local.query(sql, params)

    def read_quick(self, sql: str, params: Mapping[str, object] | None = None) -> list[tuple]:
        """``read``, for /healthz: an answer within HEALTH_TIMEOUT_S or ``StoreError``."""
        params = dict(params or {}, db=self.url.database, otel_traces=self._table_name)
        with self._health_lock:
            try:
                return self._health.query(sql, parameters=params).result_rows
            except ClickHouseError as e:
                raise StoreError(f"ClickHouse at {self.url.shown}: {_reason(e, self.url.password)}") from None

    # --- forwarding: this instance's cursors, in the state file --------------------------
    def forward_cursors(self) -> dict[str, int]:
        """Each destination's journal position, up to which this instance's spans are forwarded."""
        return dict(self.local.query(f"SELECT url, position FROM {FORWARD_TABLE}"))

    def save_forward_cursor(self, url: str, position: int) -> None:
        """Durably, from a forwarder's thread (the table is the forwarders' alone)."""
        self.local.write(f"INSERT OR REPLACE INTO {FORWARD_TABLE} VALUES (?, ?)", [url, position])

    def _read(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        with self._read_lock:
            try:
                return self._reads.query(sql, parameters=parameters).result_rows
            except ClickHouseError as e:
                raise StoreError(f"ClickHouse at {self.url.shown}: {_reason(e, self.url.password)}") from None

    def close(self) -> None:
        for client in (getattr(self, name, None) for name in ("_writes", "_reads", "_health", "_views")):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self.local.failed = self.local.failed or self.failed
        self.local.close()
