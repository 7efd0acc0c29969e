"""Retention: spans and scraped samples older than ``retention`` are deleted in the background.

Deletes go through the writer thread (DuckDB has one write connection, which the writer owns),
in chunks of ``chunk_rows`` rows, each its own small transaction queued behind the commits
already waiting, so ingest keeps flowing between two chunks. Spans go by their start time
(``Timestamp``), samples by the scrape's time, as Prometheus' and Tempo's retention do.

Span metrics are cumulative counters and must not fall when old spans go. The writer snapshots
the totals (and their watermark) before it runs a delete, so every span deleted is already
counted in the stored totals, and the replay on start (of the spans ingested after the watermark)
never needs a span that retention removed; see ``SpanWriter.call``.

On ClickHouse the tables' TTL is the retention (``ClickHouseStore``): its ``delete_before``
deletes nothing, and ClickHouse drops the expired parts itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from .spanstore import SpanStore

log = logging.getLogger("planoscope.retention")


class Writer(Protocol):
    """What retention needs of ingest's writer (``ingest.writer.SpanWriter``), the owner of the
    store's one write connection."""

    async def call(self, fn: Callable[[], Any]) -> Any: ...


class Retention:
    """Async context manager running the deletion loop (nothing when ``keep_s`` is 0). Example::

    async with Retention(writer, store, keep_s=7 * 86400) as r:
        await r.run_once()  # what the loop does every ``interval`` seconds
    """

    def __init__(
        self, writer: Writer, store: SpanStore, keep_s: float, chunk_rows: int = 10_000, interval: float | None = None
    ):
        self.writer = writer
        self.store = store
        self.keep_s = keep_s
        self.chunk_rows = chunk_rows
        # A tenth of the retention, between half a second and a minute: data outlives it by at most that.
        self.interval = interval if interval is not None else min(60.0, max(0.5, keep_s / 10))
        self.spans_deleted = self.samples_deleted = 0
        self.last_run: float | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Retention:
        if self.keep_s > 0:
            self._task = asyncio.create_task(self._loop(), name="planoscope-retention")
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the next pass tries again; ingest is not affected
                log.warning("retention pass failed: %s", e)
            await asyncio.sleep(self.interval)

    async def run_once(self) -> tuple[int, int]:
        """Delete everything older than the retention; returns (spans, samples) deleted."""
        cutoff = datetime.fromtimestamp(time.time() - self.keep_s, UTC).replace(tzinfo=None)
        spans = await self._delete("otel_traces", cutoff)
        samples = await self._delete("samples", cutoff)
        self.spans_deleted += spans
        self.samples_deleted += samples
        self.last_run = time.time()
        if spans or samples:
            log.info(
                "retention: deleted %d spans and %d samples older than %s UTC",
                spans,
                samples,
                cutoff.isoformat(timespec="seconds"),
            )
        return spans, samples

    async def _delete(self, table: str, cutoff: datetime) -> int:
        total = 0
        while True:
            n = await self.writer.call(functools.partial(self.store.delete_before, table, cutoff, self.chunk_rows))
            total += n
            if n < self.chunk_rows:
                return total
