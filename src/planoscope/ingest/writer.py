"""The writer: the journal thread, which acknowledges requests, and the apply thread, which owns
every write to the store.

Receivers call ``await writer.write(batch, body, fmt)``; it resolves once the request's body is in
the journal and fsynced (see ``journal.py``), so a crash loses nothing acknowledged. The journal
thread writes every request queued meanwhile with one fsync (group commit). The apply thread
inserts the journaled spans into DuckDB in large batches, at most ``apply_every`` seconds after
they were acknowledged, and commits the journal position they reach in the same transaction; the
journal segments behind it are deleted. ``await writer.sync()`` waits until every span
acknowledged so far is in DuckDB: the API and /metrics call it before reading, so what a client
was told is stored, a query finds.

Scraped samples (``await writer.write_samples(table)``) go to the apply thread directly, each in
its own transaction, run as soon as it arrives (also while spans wait for their insert); so do
other writes, such as retention's deletes (``await writer.call(fn)``).

The apply thread also keeps the span metrics and the de-duplication window in step with what is
in DuckDB, and snapshots the span-metric totals into the store every ``snapshot_every`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from ..metrics.spanmetrics import SpanMetrics
from ..store import DuckDBStore
from .decode import BadRequest, Decoder, SpanBatch
from .dedupe import RecentSpans
from .journal import Journal

log = logging.getLogger("planoscope.writer")

# DuckDB's row group: an insert that fills one is written to the database file compressed, once,
# with only a pointer to it in DuckDB's WAL; smaller inserts are copied into the WAL and again at
# the next checkpoint. Measured on 2 cores, 307k spans: 10.0 us of CPU a span inserted in 4,096-row
# commits, 8.1 in 16,384-row ones, 5.0 in 122,880-row ones (checkpoints included).
ROW_GROUP = 122_880

_STOP = object()
_WAKE = object()  # a sync() is waiting: apply what is queued now


class WriterUnavailable(RuntimeError):
    """The spans could not be journaled; the client should retry."""


@dataclass
class _Pending:  # a request on its way into the journal
    batch: SpanBatch
    body: bytes
    fmt: str
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass
class _Journaled:  # acknowledged spans on their way into DuckDB
    batches: list[SpanBatch]
    end: int  # journal position after them
    size: int  # bytes of request bodies


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

        async with SpanWriter(store, metrics, recent, Journal(d / "journal"), decoder) as writer:
            await writer.write(batch, body, "protobuf")
    """

    def __init__(
        self,
        store: DuckDBStore,
        metrics: SpanMetrics,
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
        self.metrics = metrics
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
        self._dirty: set[str] = set()  # series changed since the last snapshot
        self._snapshot_at = time.monotonic()
        self.commits = 0
        self.spans_written = 0
        self.journaled = self.applied = store.journal_applied()  # journal positions
        self._lock = threading.Lock()  # guards _backlog and _waiters
        self._backlog = 0  # bytes of request bodies journaled and not yet in DuckDB
        self._waiters: list[tuple[int, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._closing = threading.Event()  # on stop, a failed insert is left to the next start
        self._given_up = False  # an insert failed on stop: nothing after it may go in either
        self.last_error: Exception | None = None  # of the last failed insert

    async def __aenter__(self) -> SpanWriter:
        await asyncio.to_thread(self._recover)
        self.journal.open()
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
        return its result. The span-metric totals are snapshotted first, so that a write that
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
        for end, fmt, body in self.journal.replay(after=self.applied):
            try:
                batch = decode[fmt](body)
            except BadRequest as e:  # decoded once already: only different settings get here
                log.error("journal record ending at %d no longer decodes (%s); skipped", end, e)
                batch = None
            group.append(_Journaled([batch] if batch else [], end, 0))
            n += batch.table.num_rows if batch else 0
            records += 1
            if n >= self.apply_spans:
                self._apply_recovered(group)
                group, n = [], 0
        if group:
            self._apply_recovered(group)
        if records:
            log.warning(
                "inserted %d requests (%d spans) from the journal: acknowledged, and not yet in the "
                "database when planoscope last stopped",
                records,
                self.spans_written,
            )
        self.journal.release(self.applied)

    def _apply_recovered(self, group: list[_Journaled]) -> None:
        if not self._commit(group):
            raise WriterUnavailable(
                f"cannot insert the acknowledged spans its journal holds into the database "
                f"({self.last_error}); they stay in {self.journal.directory} for the next start"
            )

    # --- the journal thread ---------------------------------------------------------------
    def _journal_run(self) -> None:
        try:
            stopping = False
            while not stopping:
                item = self._journal_queue.get()
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

    def _journal_group(self, group: list[_Pending]) -> None:
        try:
            end = self.journal.append([(p.fmt, p.body) for p in group])
        except Exception as e:  # JournalError, or anything unforeseen: nothing is acknowledged
            log.error("%s", e)
            for p in group:
                _notify(p, e)
            return
        size = sum(len(p.body) for p in group)
        with self._lock:
            self._backlog += size
        # In this order, so that a sync() after the answer waits for these spans.
        self._queue.put(_Journaled([p.batch for p in group], end, size))
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
            n = sum(b.table.num_rows for b in item.batches)
            # Wait for a row group's worth (see ROW_GROUP), apply_every at most; take only what is
            # queued already while a reader waits or the backlog nears what ingest admits.
            deadline = time.monotonic() + self.apply_every
            while n < self.apply_spans:
                wait = deadline - time.monotonic()
                if self._waiters or self._backlog >= self.apply_bytes:
                    wait = 0
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
                n += sum(b.table.num_rows for b in item.batches)
                if self._waiters and item.end >= max(w[0] for w in self._waiters):
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
        while not self._given_up and not self._commit(group):
            if self._closing.wait(delay):  # stopping: the journal keeps them for the next start
                self._given_up = True
            delay = min(delay * 2, 10.0)
        if self._given_up:
            return
        with self._lock:
            self._backlog -= sum(j.size for j in group)
        self.journal.release(self.applied)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        with self._lock:
            done = [w for w in self._waiters if w[0] <= self.applied]
            self._waiters = [w for w in self._waiters if w[0] > self.applied]
        for _, fut, loop in done:
            loop.call_soon_threadsafe(_settle, fut, None)

    def _commit(self, group: list[_Journaled]) -> bool:
        """One transaction for the group's new spans and the journal position after them; then
        the span metrics they add. Returns whether it committed.

        Measured on 2 cores with DuckDB on one thread: a commit costs ~4 ms of CPU plus ~5 us a
        span, so the apply thread gathers up to ``apply_every`` seconds of spans per commit. The
        metrics are aggregated here, once per commit, off the decode thread, which is the busier
        stage.
        """
        batches = [b for j in group for b in j.batches]
        end = group[-1].end
        keys = [k for b in batches for k in b.keys]
        if batches:
            table = pa.concat_tables([b.table for b in batches])
            dims = [pa.concat_arrays([b.dimensions[i] for b in batches]) for i in range(len(self.metrics.dimensions))]
        else:
            table, dims = None, []
        mask = self.recent.new_mask(keys)
        if mask is not None:  # duplicates of spans already stored (a client's retry): dropped
            keep = pa.array(mask)
            table = table.filter(keep)
            dims = [d.filter(keep) for d in dims]
            keys = [k for k, m in zip(keys, mask) if m]
        rows = table.num_rows if table is not None else 0
        deltas = self.metrics.deltas(table, dims) if rows else {}
        try:
            # Strictly increasing, so a snapshot's watermark splits commits cleanly.
            now = datetime.now(UTC).replace(tzinfo=None)
            ingested = max(now, self._last_ingested + timedelta(microseconds=1))
            self.store.append_spans(table if rows else None, ingested, end)
        except Exception as e:
            log.error("insert of %d acknowledged spans failed (they stay in the journal): %s", rows, e)
            self.last_error = e
            return False
        if rows:
            self._last_ingested = ingested
            self.metrics.apply(self.metrics.merge(deltas))
            self._dirty.update(deltas)
            self.recent.add(keys)
            self.commits += 1
            self.spans_written += rows
        self.applied = end  # last: a sync() that sees it finds the metrics counted too
        return True

    def _run_job(self, item: _Samples | _Call) -> None:
        if isinstance(item, _Samples):
            self._commit_samples(item)
            return
        error: BaseException | None = None
        result = None
        try:
            self._snapshot()
            if self._dirty:
                raise WriterUnavailable("could not snapshot span metrics first")
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
        if not self._dirty:
            return
        totals = [t for t in self.metrics.snapshot() if t[0] in self._dirty]
        try:
            self.store.save_metric_totals(totals, self._last_ingested, self.metrics.fingerprint)
            self._dirty.clear()
        except Exception as e:  # not fatal: the spans are stored and are replayed on start
            log.warning("could not snapshot span metrics: %s", e)


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
    else:
        fut.set_exception(WriterUnavailable(f"could not store: {error}"))
