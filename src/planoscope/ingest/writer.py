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

An insert that fails never kills the apply thread (``committer.py`` says how a failed insert is
told apart and what is quarantined): while the store cannot be written, the spans stay in the
journal and the insert is retried with backoff, forever, without a restart; ``health()`` says
``degraded`` meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from prometheus_client.core import Metric

from ..metrics.cumulative import Cumulative
from ..store import SpanStore
from .committer import Backlog, Committer, Journaled, WriterUnavailable, first_line
from .decode import Decoder, SpanBatch
from .dedupe import RecentSpans
from .incidents import Incidents
from .journal import Journal, JournalError
from .records import HEADER_BYTES

__all__ = ["JOURNAL_UNAVAILABLE", "SpanWriter", "WriterUnavailable"]

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


# What a client is told when the journal cannot be written. The reason (and the journal's path)
# goes to the server's log only: an unauthenticated sender learns nothing of its file system.
JOURNAL_UNAVAILABLE = "planoscope cannot write its journal now (its log says why); retry later"


@dataclass
class _Pending:  # a request on its way into the journal
    batch: SpanBatch
    body: bytes
    fmt: str
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


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
        self._snapshot_at = time.monotonic()
        self._applied_at = 0.0  # monotonic time of the last insert (see READ_SPACING)
        self.incidents = Incidents(self._redact)
        self.backlog = Backlog()
        self.committer = Committer(store, metrics, recent, journal, decoder, self.incidents, self.backlog, watermark)
        self.journaled = self.committer.applied  # the journal position acknowledged
        self._lock = threading.Lock()  # guards _waiters
        self._waiters: list[tuple[int, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._closing = threading.Event()  # on stop, a failed insert is left to the next start
        self._given_up = False  # an insert failed on stop: nothing after it may go in either

    async def __aenter__(self) -> SpanWriter:
        """Insert the journal's leftovers and start; raises ``WriterUnavailable`` (the store cannot
        take them) or ``JournalError`` (the journal cannot be read, kept or written)."""
        await asyncio.to_thread(self.committer.recover, self.apply_spans)
        try:
            self.journal.open()
        except OSError as e:
            raise JournalError(f"cannot write the journal in {self.journal.directory}: {e.strerror or e}") from None
        self.journaled = self.committer.applied = max(self.applied, self.journal.position)
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
    def applied(self) -> int:
        """The journal position the store has reached: every request before it is in, or quarantined."""
        return self.committer.applied

    @property
    def commits(self) -> int:
        return self.committer.commits

    @property
    def spans_written(self) -> int:
        return self.committer.spans_written

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._journal_thread.is_alive()

    @property
    def backlog_bytes(self) -> int:
        """Bytes of requests acknowledged (journaled) whose spans are not in DuckDB yet."""
        return self.backlog.bytes

    @property
    def pending_spans(self) -> int:
        """Spans acknowledged (journaled) that are neither in DuckDB nor quarantined: after the
        stop, those the next start inserts from the journal."""
        return self.backlog.spans

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
            self.incidents.journal.failed(first_line(e), str(e))
            for p in group:
                _notify(p, WriterUnavailable(JOURNAL_UNAVAILABLE))
            return
        self.incidents.journal.succeeded()
        records, position = [], end
        for p in reversed(group):  # each record's place in the journal, for a quarantine
            start = position - HEADER_BYTES - len(p.body)
            records.append(Journaled(p.batch, start, position, len(p.body)))
            position = start
        self.backlog.add(sum(r.size for r in records), sum(r.rows for r in records))
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
            if not isinstance(item, Journaled):
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
                if self.backlog.bytes >= self.apply_bytes:
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
                if not isinstance(item, Journaled):
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

    def _apply(self, group: list[Journaled]) -> None:
        """Commit the group's spans, retrying while the store cannot be written (they are
        acknowledged and stay in the journal until then). Groups go in strictly in journal
        order: the position committed with one says every record before it is in DuckDB."""
        delay = 0.5
        while not self._given_up:
            error = self.committer.insert(group)
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

    def _wake_waiters(self) -> None:
        with self._lock:
            done = [w for w in self._waiters if w[0] <= self.applied]
            self._waiters = [w for w in self._waiters if w[0] > self.applied]
        for _, fut, loop in done:
            loop.call_soon_threadsafe(_settle, fut, None)

    def _run_job(self, item: _Samples | _Call) -> None:
        if isinstance(item, _Samples):
            self._commit_samples(item)
            return
        error: BaseException | None = None
        result = None
        try:
            if not self._snapshot():
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

    def _snapshot(self) -> bool:
        self._snapshot_at = time.monotonic()
        return self.committer.snapshot()


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
