"""The writer: the journal thread, which acknowledges requests, and the apply thread, which owns
every write to the store.

Receivers call ``await writer.write(batch, body, fmt)``; it resolves once the request's body is in
the journal and fsynced (see ``journal.py``), so a crash loses nothing acknowledged. The journal
thread writes every request queued meanwhile with one fsync (group commit). The apply thread
inserts the journaled spans into the store (``store.SpanStore``: DuckDB, or ClickHouse) in large
batches, at most ``apply_every`` seconds after they were acknowledged, and the store records the
journal position they reach with them (DuckDB in the same transaction; ClickHouse through an
idempotent insert and its local state); the journal segments behind it are deleted.
``await writer.sync()`` waits until every span acknowledged so far is in the store: the API and
/metrics call it before reading, so what a client was told is stored, a query finds.

Scraped samples (``await writer.write_samples(table)``) go to the apply thread directly, each in
its own transaction, run as soon as it arrives (also while spans wait for their insert); so do
other writes, such as retention's deletes (``await writer.call(fn)``).

The apply thread also keeps the cumulative metrics (span metrics, LLM metrics) and the
de-duplication window in step with what is in the store, hands each commit the new totals of
every metric set (ClickHouse keeps them with the position), and snapshots the metric totals into
the store every ``snapshot_every`` seconds.

An insert that fails is one of two things, and the apply thread never dies of either:
- the store cannot be written (a full disk, an I/O error, memory, ClickHouse down: ``unwritable``):
  the spans stay in the journal and the insert is retried with backoff, forever, without a
  restart; ``health()`` says ``degraded`` meanwhile, and nothing is quarantined;
- the store refuses these spans (DuckDB rejects the rows, or converting or aggregating them
  raises): the group is retried record by record, and a record that fails on its own twice while
  the store takes a write is quarantined (``Journal.quarantine``: its body kept for sending
  again), logged once with its cause and counted; the rest goes in. On start, a journal record
  that no longer decodes (settings changed) is quarantined the same way, so a restart never
  fails on a journal record.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.core import Metric

from ..metrics.cumulative import Cumulative
from ..store import SpanStore
from .decode import Decoder, SpanBatch
from .dedupe import RecentSpans
from .incidents import Incidents
from .journal import Journal, JournalError
from .records import HEADER_BYTES

log = logging.getLogger("planoscope.writer")

# DuckDB's row group: an insert that fills one is written to the database file compressed, once,
# with only a pointer to it in DuckDB's WAL; smaller inserts are copied into the WAL and again at
# the next checkpoint. Measured on 2 cores, 307k spans: 10.0 us of CPU a span inserted in 4,096-row
# commits, 8.1 in 16,384-row ones, 5.0 in 122,880-row ones (checkpoints included).
ROW_GROUP = 122_880

# A reader that waits for the acknowledged spans makes the writer insert what is queued at once,
# instead of gathering a row group: at most this often, so that a client polling the API (or a
# flood of requests it refuses) cannot break ingest's batches into tiny inserts. Measured with 4
# clients looping API requests as fast as answered: ingest fell from ~200k to ~21k spans/s.
READ_SPACING = 0.25

JOURNAL_RECHECK_S = 5.0  # how often a journal that failed is tried again while nothing arrives

_STOP = object()
_WAKE = object()  # a sync() is waiting: apply what is queued now


class WriterUnavailable(RuntimeError):
    """The spans could not be journaled; the client should retry."""


# What a client is told when the journal cannot be written. The reason (and the journal's path)
# goes to the server's log only: an unauthenticated sender learns nothing of its file system.
JOURNAL_UNAVAILABLE = "planoscope cannot write its journal now (its log says why); retry later"


def _canary_request() -> bytes:
    """One ordinary span (what _probe prepares, never stores)."""
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x01" * 8, name="planoscope canary", kind=Span.SPAN_KIND_INTERNAL)
    span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_000_001_000_000
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(span)
    return request.SerializeToString()


_CANARY = _canary_request()


@dataclass
class _Pending:  # a request on its way into the journal
    batch: SpanBatch
    body: bytes
    fmt: str
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass
class _Journaled:  # an acknowledged request on its way into DuckDB
    batch: SpanBatch | None  # None: a request with nothing left to insert
    start: int  # journal position of its record
    end: int  # journal position after it
    size: int  # bytes of its body counted in the backlog (0 for the journal's leftovers)
    fmt: str | None = None  # the record, when it is at hand (on start); else read from the journal
    body: bytes | None = None

    @property
    def rows(self) -> int:
        return self.batch.table.num_rows if self.batch is not None else 0


@dataclass
class _Samples:
    table: pa.Table
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class SpanWriter:
    """Async context manager running the writer's threads. On entry it first inserts what the
    journal holds beyond what DuckDB has (a crash's leftovers).

    Spans are inserted when ``apply_spans`` of them wait, when their requests' bodies reach
    ``apply_bytes`` (ingest refuses requests beyond its ``max_queued_bytes``, which counts them:
    half of it is a good value), ``apply_every`` seconds after the first, or when a reader syncs.
    Example::

        async with SpanWriter(store, [span_metrics], recent, Journal(d / "journal"), decoder) as writer:
            await writer.write(batch, body, "protobuf")
    """

    def __init__(
        self,
        store: SpanStore,
        metrics: Sequence[Cumulative],
        recent: RecentSpans,
        journal: Journal,
        decoder: Decoder,
        apply_spans: int = ROW_GROUP,
        apply_bytes: int = 128 << 20,
        apply_every: float = 5.0,
        snapshot_every: float = 10.0,
        watermark: datetime | None = None,
    ):
        self.store = store
        self.metrics = list(metrics)  # each counts every commit (see Cumulative)
        self.recent = recent
        self.journal = journal
        self.decoder = decoder
        self.apply_spans = apply_spans
        self.apply_bytes = apply_bytes
        self.apply_every = apply_every
        self.snapshot_every = snapshot_every
        self._journal_queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # the apply thread's
        self._journal_thread = threading.Thread(target=self._journal_run, name="planoscope-journal", daemon=True)
        self._thread = threading.Thread(target=self._run, name="planoscope-writer", daemon=True)
        # Never below the stored watermark: retention may have deleted the last spans ingested.
        self._last_ingested = max(store.last_ingested() or datetime(1970, 1, 1), watermark or datetime(1970, 1, 1))
        self._dirty: list[set[str]] = [set() for _ in self.metrics]  # per set: series changed since the last snapshot
        self._snapshot_at = time.monotonic()
        self._applied_at = 0.0  # monotonic time of the last insert (see READ_SPACING)
        self.commits = 0
        self.spans_written = 0
        self.journaled = self.applied = store.journal_applied()  # journal positions
        self._lock = threading.Lock()  # guards _backlog and _waiters
        self._backlog = 0  # bytes of request bodies journaled and not yet in DuckDB
        self._waiters: list[tuple[int, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._closing = threading.Event()  # on stop, a failed insert is left to the next start
        self._given_up = False  # an insert failed on stop: nothing after it may go in either
        self._pending_spans = 0  # acknowledged, neither in DuckDB nor quarantined (guarded by _lock)
        self.incidents = Incidents(self._redact)
        self._in_doubt: int | None = None  # while recovering: the end of the store's insert in doubt
        self._canary = _Journaled(decoder.decode_protobuf(_CANARY), 0, 0, 0)  # see _probe

    async def __aenter__(self) -> SpanWriter:
        """Insert the journal's leftovers and start; raises ``WriterUnavailable`` (the store cannot
        take them) or ``JournalError`` (the journal cannot be read, kept or written)."""
        await asyncio.to_thread(self._recover)
        try:
            self.journal.open()
        except OSError as e:
            raise JournalError(f"cannot write the journal in {self.journal.directory}: {e.strerror or e}") from None
        self.journaled = self.applied = max(self.applied, self.journal.position)
        self._thread.start()
        self._journal_thread.start()
        return self

    async def __aexit__(self, *exc) -> None:
        self._closing.set()
        self._journal_queue.put(_STOP)  # the journal thread hands _STOP on to the apply thread
        await asyncio.to_thread(self._journal_thread.join)
        await asyncio.to_thread(self._thread.join)
        self.journal.close(self.applied)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._journal_thread.is_alive()

    @property
    def backlog_bytes(self) -> int:
        """Bytes of requests acknowledged (journaled) whose spans are not in DuckDB yet."""
        return self._backlog

    @property
    def pending_spans(self) -> int:
        """Spans acknowledged (journaled) that are neither in DuckDB nor quarantined: after the
        stop, those the next start inserts from the journal."""
        return self._pending_spans

    def health(self) -> dict:
        """The writer's part of /healthz: ``status`` ok, degraded (inserts fail, and the spans wait
        in the journal; or the journal cannot be written, and ingest is refused with retryable
        errors) or writer stopped; the ``problems`` behind it; what the journal has set aside."""
        problems = self.incidents.problems(self.pending_spans) + self.store.problems()
        if not self.alive:
            problems.insert(0, "the writer has stopped: nothing is journaled or inserted")
        return {
            "status": "writer stopped" if not self.alive else "degraded" if problems else "ok",
            "problems": problems,
            "pending_spans": self.pending_spans,
            "journal": {
                "quarantined_files": len(self.journal.quarantined()),
                "quarantined_records": self.incidents.quarantined_records,
                "last_quarantined": self.incidents.last_quarantined,
                "corrupt_files": len(self.journal.corrupt_files()),
            },
        }

    def collect(self) -> Iterable[Metric]:
        """A prometheus-client Collector: what the writer holds, fails on and sets aside."""
        return self.incidents.collect(self.pending_spans, self.journal.corrupt_bytes)

    @property
    def last_error(self) -> str | None:
        """Why the last insert failed, while inserts fail."""
        return self.incidents.inserts.reason

    def _redact(self, message: str) -> str:
        """``message`` without the data directory's or the journal's path (/healthz needs no
        credentials)."""
        for path, name in ((self.store.data_dir, "<data_dir>"), (self.journal.directory, "<journal>")):
            for form in {str(path.resolve()), str(path)}:
                message = message.replace(form, name)
        return message

    async def write(self, batch: SpanBatch, body: bytes, fmt: str) -> None:
        """Journal the request ``body`` (format ``fmt``) that decoded to ``batch``; returns once
        durable, raises ``WriterUnavailable`` if it is not. Nothing is journaled for a batch
        without spans."""
        if batch.table.num_rows:
            if not self.alive:
                raise WriterUnavailable("the writer has stopped")
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._journal_queue.put(_Pending(batch, body, fmt, fut, loop))
            await fut

    async def sync(self, timeout: float = 10.0) -> bool:
        """Wait until the spans acknowledged so far are in DuckDB (at most ``timeout`` seconds,
        while the store cannot be written); returns whether they are."""
        target = self.journaled
        if self.applied >= target:
            return True
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            self._waiters.append((target, fut, loop))
        self._queue.put(_WAKE)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except TimeoutError:
            return False

    async def write_samples(self, table: pa.Table) -> None:
        """Commit scraped samples (the ``samples`` table's columns); raises ``WriterUnavailable``."""
        if table.num_rows:
            await self._submit(_Samples, table)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the apply thread (between two commits, with the write connection) and
        return its result. The metric totals are snapshotted first, so that a write that
        deletes spans never deletes one the stored totals do not include yet (the replay on start
        could not count it any more)."""
        return await self._submit(_Call, fn)

    async def _submit(self, kind: type, payload) -> Any:
        """Queue a job for the apply thread and wait until it is done."""
        if not self._thread.is_alive():
            raise WriterUnavailable("the writer has stopped")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put(kind(payload, fut, loop))
        return await fut

    # --- start: the journal's leftovers ---------------------------------------------------
    def _recover(self) -> None:
        """Insert the journal's records after the position DuckDB has, as if they arrived now."""
        decode = {"protobuf": self.decoder.decode_protobuf, "json": self.decoder.decode_json}
        group: list[_Journaled] = []
        n = records = 0
        # An insert the store may or may not have made when the process stopped: its records are
        # inserted again as that one batch, which the store then stores once (SpanStore). Its
        # spans are not checked against the recent ones: if it was made, the spans loaded from
        # the store (RecentSpans) are its own, and dropping them would leave them uncounted.
        in_doubt = self._in_doubt = self.store.journal_in_doubt()
        if in_doubt is not None:
            log.warning(
                "the last insert before the stop (journal position %d) may or may not be in the store: "
                "its records go in again as that one insert, which the store keeps once",
                in_doubt,
            )
        for end, fmt, body in self.journal.replay(after=self.applied):
            records += 1
            record = _Journaled(None, end - HEADER_BYTES - len(body), end, 0, fmt, body)
            try:
                record.batch = decode[fmt](body)
            except Exception as e:  # it decoded once: only changed settings (or a bug) get here
                if group:  # the records before it go in first: positions are committed in order
                    self._apply_recovered(group)
                    group, n = [], 0
                self._quarantine(record, f"it no longer decodes: {e}")
                continue
            with self._lock:
                self._pending_spans += record.rows
            group.append(record)
            n += record.rows
            if end == in_doubt or (n >= self.apply_spans and (in_doubt is None or end > in_doubt)):
                self._apply_recovered(group)
                group, n = [], 0
        if group:
            self._apply_recovered(group)
        self._in_doubt = None
        if records:
            log.warning(
                "inserted %d requests (%d spans) from the journal: acknowledged, and not yet in the "
                "database when planoscope last stopped%s",
                records - self.incidents.quarantined_records,
                self.spans_written,
                f"; {self.incidents.quarantined_records} quarantined" if self.incidents.quarantined_records else "",
            )
        self.journal.release(self.applied)

    def _apply_recovered(self, group: list[_Journaled]) -> None:
        error = self._insert(group)
        if error is not None:
            raise WriterUnavailable(
                f"cannot insert the acknowledged spans its journal holds into the database "
                f"({_first_line(error)}); they stay in {self.journal.directory} for the next start"
            )

    # --- the journal thread ---------------------------------------------------------------
    def _journal_run(self) -> None:
        try:
            stopping = False
            while not stopping:
                try:  # while the journal cannot be written, find out without waiting for a client
                    item = self._journal_queue.get(timeout=JOURNAL_RECHECK_S if self.incidents.journal.since else None)
                except queue.Empty:
                    self._recheck_journal()
                    continue
                if item is _STOP:
                    break
                group = [item]
                while True:  # everything queued meanwhile shares the fsync
                    try:
                        item = self._journal_queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    group.append(item)
                self._journal_group(group)
        finally:  # also if this thread dies: nobody waits forever
            while True:
                try:
                    item = self._journal_queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    _notify(item, WriterUnavailable("the writer is stopping"))
            self._queue.put(_STOP)

    def _recheck_journal(self) -> None:
        """Whether the journal that failed takes a write again (its directory, a little space, an
        fsync): /healthz stays degraded no longer than that, even when no client sends meanwhile."""
        try:
            self.journal.check_writable()
        except OSError:  # still failing: the failed appends are what is logged and shown
            return
        self.incidents.journal.succeeded()

    def _journal_group(self, group: list[_Pending]) -> None:
        try:
            end = self.journal.append([(p.fmt, p.body) for p in group])
        except Exception as e:  # JournalError, or anything unforeseen: nothing is acknowledged
            self.incidents.journal.failed(_first_line(e), str(e))
            for p in group:
                _notify(p, WriterUnavailable(JOURNAL_UNAVAILABLE))
            return
        self.incidents.journal.succeeded()
        records, position = [], end
        for p in reversed(group):  # each record's place in the journal, for a quarantine
            start = position - HEADER_BYTES - len(p.body)
            records.append(_Journaled(p.batch, start, position, len(p.body)))
            position = start
        with self._lock:
            self._backlog += sum(r.size for r in records)
            self._pending_spans += sum(r.rows for r in records)
        # In this order, so that a sync() after the answer waits for these spans.
        for r in reversed(records):
            self._queue.put(r)
        self.journaled = end
        for p in group:
            _notify(p, None)

    # --- the apply thread -----------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                item = self._queue.get(timeout=self.snapshot_every)
            except queue.Empty:
                self._snapshot()
                continue
            if item is _STOP:
                break
            if item is _WAKE:
                self._wake_waiters()
                continue
            if not isinstance(item, _Journaled):
                self._run_job(item)
                if time.monotonic() - self._snapshot_at >= self.snapshot_every:
                    self._snapshot()
                continue
            group = [item]
            n = item.rows
            # Wait for a row group's worth (see ROW_GROUP), apply_every at most; take only what is
            # queued already while a reader waits or the backlog nears what ingest admits.
            deadline = time.monotonic() + self.apply_every
            while n < self.apply_spans:
                now = time.monotonic()
                if self._backlog >= self.apply_bytes:
                    wait = 0.0
                elif self._waiters:  # a reader waits: insert now, but not more often than READ_SPACING
                    wait = min(deadline, self._applied_at + READ_SPACING) - now
                else:
                    wait = deadline - now
                try:
                    item = self._queue.get_nowait() if wait <= 0 else self._queue.get(timeout=wait)
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True  # apply what is already queued, then stop
                    break
                if item is _WAKE:
                    continue
                if not isinstance(item, _Journaled):
                    # At once, not after the group's insert (up to apply_every later): retention
                    # deletes in 10,000-row chunks, one job each. The waiting spans are not in
                    # DuckDB yet, so a delete cannot touch them nor the metric snapshot miss them.
                    self._run_job(item)
                    continue
                group.append(item)
                n += item.rows
                if (
                    self._waiters
                    and item.end >= max(w[0] for w in self._waiters)
                    and time.monotonic() >= self._applied_at + READ_SPACING
                ):
                    break  # what the readers wait for is in the group: insert it now
            self._apply(group)
            if time.monotonic() - self._snapshot_at >= self.snapshot_every:
                self._snapshot()
        self._snapshot()

    def _apply(self, group: list[_Journaled]) -> None:
        """Commit the group's spans, retrying while the store cannot be written (they are
        acknowledged and stay in the journal until then). Groups go in strictly in journal
        order: the position committed with one says every record before it is in DuckDB."""
        delay = 0.5
        while not self._given_up:
            error = self._insert(group)
            if error is None:
                break
            if self._closing.wait(delay):  # stopping: the journal keeps them for the next start
                self._given_up = True
            delay = min(delay * 2, 10.0)
        if self._given_up:
            return
        self._applied_at = time.monotonic()
        self.journal.release(self.applied)
        self._wake_waiters()

    def _insert(self, group: list[_Journaled]) -> BaseException | None:
        """One attempt at the group: committed whole, or else record by record with what the
        store refuses quarantined. Returns None once everything is in (or quarantined), else the
        error that says the store cannot be written now (what is in stays in)."""
        group = [j for j in group if j.end > self.applied]  # a retry after some went in one by one
        error = self._commit(group) if group else None
        if error is not None and not self._unwritable(error):
            error = self._isolate(group)
        if error is None:
            self.incidents.inserts.succeeded()
            return None
        rows, reason = sum(j.rows for j in group if j.end > self.applied), _first_line(error)
        self.incidents.inserts.failed(
            reason, f"insert of {rows} acknowledged spans failed (they stay in the journal and are retried): {reason}"
        )
        return error

    def _isolate(self, group: list[_Journaled]) -> BaseException | None:
        """Commit the records one by one; quarantine one that fails on its own twice for what it
        holds while the store takes a write. None once all are in or set aside; else the error
        that says the store cannot be written."""
        for record in group:
            if record.end <= self.applied:
                continue
            error = self._commit([record])
            if error is not None and not self._unwritable(error):
                error = self._commit([record])  # once more: a cause in the data fails again
            if error is None:
                continue
            if self._unwritable(error):
                return error
            probe = self._probe()
            if probe is not None:  # nothing would go in now: not this record's fault
                return probe
            try:
                self._quarantine(record, _first_line(error))
            except (OSError, JournalError) as e:  # cannot be kept: not quarantined, retried
                return e
        return None

    def _quarantine(self, record: _Journaled, reason: str) -> None:
        """Keep ``record`` in the journal's quarantine, then commit the position past it."""
        fmt, body = (record.fmt, record.body) if record.body is not None else self.journal.read(record.start)
        path = self.journal.quarantine(record.start, fmt, body, reason)
        moved = _Journaled(None, record.start, record.end, record.size)
        error = self._commit([moved])
        if error is not None:
            raise OSError(f"cannot commit the journal position past a quarantined record: {error}")
        with self._lock:
            self._pending_spans -= record.rows
        self.incidents.quarantined(f"{self.journal.directory.name}/{path.parent.name}/{path.name}", record.rows, reason)
        log.error(
            "journal record at position %d (%d acknowledged spans) cannot be inserted: %s. It is kept in %s "
            "(send it again once the cause is fixed); the rest goes on",
            record.start,
            record.rows,
            reason,
            path,
        )

    def _unwritable(self, error: BaseException) -> bool:
        """Whether ``error`` says the store cannot be written now (retry) rather than that it refuses the spans."""
        return isinstance(error, (OSError, MemoryError, JournalError)) or self.store.unwritable(error)

    def _wake_waiters(self) -> None:
        with self._lock:
            done = [w for w in self._waiters if w[0] <= self.applied]
            self._waiters = [w for w in self._waiters if w[0] > self.applied]
        for _, fut, loop in done:
            loop.call_soon_threadsafe(_settle, fut, None)

    def _commit(self, group: list[_Journaled]) -> BaseException | None:
        """One transaction for the group's new spans and the journal position after them; then
        the metrics they add. Returns None once committed, else the error (nothing of the
        group is then in).

        Measured on 2 cores with DuckDB on one thread: a commit costs ~4 ms of CPU plus ~5 us a
        span, so the apply thread gathers up to ``apply_every`` seconds of spans per commit. The
        metrics are aggregated here, once per commit, off the decode thread, which is the busier
        stage.
        """
        end = group[-1].end
        try:
            table, keys, deltas = self._prepare(group)
            rows = table.num_rows if table is not None else 0
            # Strictly increasing, so a snapshot's watermark splits commits cleanly.
            now = datetime.now(UTC).replace(tzinfo=None)
            ingested = max(now, self._last_ingested + timedelta(microseconds=1))
            # Each set's new totals, installed once stored (a store may keep them with the position).
            totals = [m.merge(d) for m, d in zip(self.metrics, deltas)]
            by_set = {m.name: t for m, t in zip(self.metrics, totals)}
            self.store.append_spans(table if rows else None, ingested, end, by_set)
        except Exception as e:
            return e
        if rows:
            self._last_ingested = ingested
            for metrics, dirty, changed, new in zip(self.metrics, self._dirty, deltas, totals):
                metrics.apply(new)
                dirty.update(changed)
            self.recent.add(keys)
            self.commits += 1
            self.spans_written += rows
        with self._lock:
            self._backlog -= sum(j.size for j in group)
            self._pending_spans -= sum(j.rows for j in group)
        self.applied = end  # last: a sync() that sees it finds the metrics counted too
        return None

    def _prepare(self, group: list[_Journaled]) -> tuple[pa.Table | None, list[bytes], list[dict]]:
        """The group's spans not stored yet as one table, their keys and each metric set's deltas."""
        batches = [j.batch for j in group if j.batch is not None]
        if not batches:
            return None, [], [{} for _ in self.metrics]
        keys = [k for b in batches for k in b.keys]
        # One chunk per column: the requests' tables are a chunk each (Plano's are small, tens of
        # spans a service), and DuckDB's insert and the metrics paid per chunk and column. In
        # process, 431,930 Plano spans in commits of 270 requests: the copy costs 0.7 us a span,
        # the insert and the metrics 2.2 us less.
        table = pa.concat_tables([b.table for b in batches]).combine_chunks()
        dims = [pa.concat_arrays([b.dimensions[i] for b in batches]) for i in range(len(self.decoder.dimensions))]
        in_doubt = self._in_doubt is not None and group[-1].end <= self._in_doubt  # see _recover
        mask = self.recent.new_mask(keys, remembered=not in_doubt)
        if mask is not None:  # duplicates of spans already stored (a client's retry): dropped
            keep = pa.array(mask)
            table = table.filter(keep)
            dims = [d.filter(keep) for d in dims]
            keys = [k for k, m in zip(keys, mask) if m]
        table = self.decoder.estimate_costs(table)  # before the metrics: they count estimated cost
        return table, keys, [m.deltas(table, dims) if table.num_rows else {} for m in self.metrics]

    def _probe(self) -> BaseException | None:
        """Whether a sound request would go in now, or else why not: the canary (a request made
        at start, which decoded) is prepared as spans are, without being stored, and the journal
        position is committed again unchanged. A record is quarantined only when this passes:
        a failure that is not its own (a store that takes no write, a writer that can make
        nothing ready) is waited out instead, so it never sets every record aside."""
        try:
            self._prepare([self._canary])
            self.store.append_spans(None, datetime.now(UTC).replace(tzinfo=None), self.applied)
        except Exception as e:
            return e
        return None

    def _run_job(self, item: _Samples | _Call) -> None:
        if isinstance(item, _Samples):
            self._commit_samples(item)
            return
        error: BaseException | None = None
        result = None
        try:
            self._snapshot()
            if any(self._dirty):
                raise WriterUnavailable("could not snapshot the metrics first")
            result = item.fn()
        except Exception as e:
            log.error("write on the writer thread failed: %s", e)
            error = e
        item.loop.call_soon_threadsafe(_settle, item.future, error, result)

    def _commit_samples(self, item: _Samples) -> None:
        error: BaseException | None = None
        try:
            self.store.append_samples(item.table)
        except Exception as e:
            log.error("commit of %d scraped samples failed: %s", item.table.num_rows, e)
            error = e
        item.loop.call_soon_threadsafe(_settle, item.future, error)

    def _snapshot(self) -> None:
        self._snapshot_at = time.monotonic()
        for metrics, dirty in zip(self.metrics, self._dirty):
            if not dirty:
                continue
            totals = [t for t in metrics.snapshot() if t[0] in dirty]
            try:
                self.store.save_metric_totals(totals, self._last_ingested, metrics.fingerprint, name=metrics.name)
                dirty.clear()
            except Exception as e:  # not fatal: the spans are stored and are replayed on start
                log.warning("could not snapshot %s: %s", metrics.title, e)


def _notify(p: _Pending, error: BaseException | None) -> None:
    """Settle a request's future from a writer thread; its event loop may be gone (a client
    that disconnected is not this thread's problem)."""
    try:
        p.loop.call_soon_threadsafe(_settle, p.future, error)
    except RuntimeError:  # the loop is closed
        pass


def _settle(fut: asyncio.Future, error: BaseException | None, result: Any = None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(result)
    elif isinstance(error, WriterUnavailable):
        fut.set_exception(error)
    else:
        fut.set_exception(WriterUnavailable(f"could not store: {error}"))


def _first_line(error: BaseException | str | None) -> str:
    text = str(error or "").strip()
    return text.splitlines()[0] if text else type(error).__name__
