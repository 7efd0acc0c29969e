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

import functools
import logging
import time
from datetime import UTC, datetime

from .periodic import Periodic, Writer
from .spanstore import SpanStore


class Retention(Periodic):
    """Async context manager running the deletion loop (nothing when ``keep_s`` is 0). Example::

    async with Retention(writer, store, keep_s=7 * 86400) as r:
        await r.run_once()  # what the loop does every ``interval`` seconds
    """

    name = "planoscope-retention"
    failed = "retention pass failed"
    log = logging.getLogger("planoscope.retention")

    def __init__(
        self, writer: Writer, store: SpanStore, keep_s: float, chunk_rows: int = 10_000, interval: float | None = None
    ):
        # A tenth of the retention, between half a second and a minute: data outlives it by at most that.
        super().__init__(writer, interval if interval is not None else min(60.0, max(0.5, keep_s / 10)), keep_s > 0)
        self.store = store
        self.keep_s = keep_s
        self.chunk_rows = chunk_rows
        self.spans_deleted = self.samples_deleted = 0
        self.last_run: float | None = None

    async def run_once(self) -> tuple[int, int]:
        """Delete everything older than the retention; returns (spans, samples) deleted."""
        cutoff = datetime.fromtimestamp(time.time() - self.keep_s, UTC).replace(tzinfo=None)
        spans = await self._delete("otel_traces", cutoff)
        samples = await self._delete("samples", cutoff)
        self.spans_deleted += spans
        self.samples_deleted += samples
        self.last_run = time.time()
        if spans or samples:
            self.log.info(
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
