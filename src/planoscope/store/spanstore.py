"""What ingest writes to: the span store's interface, which ``DuckDBStore`` (the embedded default)
and ``ClickHouseStore`` (scale-out, the collector exporter's ``otel_traces``) implement.

The writer (``ingest/writer.py``) is its one writer: it acknowledges requests once they are in
the local journal, then calls ``append_spans`` from one thread, in journal order, each call
saying the journal position its spans reach. Whatever a store does underneath, it must keep that
position and the span-metric totals consistent with the spans it holds across a crash: DuckDB
commits them in one transaction; ClickHouse, which has none, keeps them in a local file and
makes its inserts idempotent (see ``clickhouse.py``). The totals are those of each metric set
(``metrics.cumulative.Cumulative``: span metrics, LLM metrics), kept per set by its ``name``. The start (``app.py``), retention, the
scraper and ``/healthz`` use the rest.

The read side serves the web views. ``read`` runs a query in the store's own SQL, named by
``dialect``: the query modules hold one implementation of their SQL per dialect
(``query/traces_duckdb.py`` and ``query/traces_clickhouse.py``, ...) and pick it by the store's
``dialect``; everything else they do (parameters, validation, the answer's shape) is written once.
``query`` is DuckDB SQL on the data directory's file: on ClickHouse the local state file, which
holds no span.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from .fill import Estimate, Progress
from .head import SamplesHead
from .sample_changes import SampleChanges

Totals = tuple  # (series, observations, sum, buckets): metrics.cumulative.Totals


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message is meant for the user."""


class SpanStore(Protocol):
    """The store ingest's writer owns. ``append_*``, ``save_metric_totals``, ``delete_before`` and
    ``fill`` are called from the writer's thread only."""

    data_dir: Path
    dialect: str  # the SQL ``read`` takes: "duckdb" or "clickhouse"
    failed: bool  # a start that failed: close without writing anything more
    attribute_maps: bool  # append_spans needs the batches' schema.STRING_MAPS (Decoder(maps=True))
    # The last hours of the samples in memory (DuckDB: one process owns the file), or None (a
    # ClickHouse store, which other instances write to).
    samples_head: SamplesHead | None
    # Where the samples changed (DuckDB), for PromQL's cache of results; None: unknown (ClickHouse).
    sample_changes: SampleChanges | None

    def describe(self) -> dict:
        """What /healthz shows of the store: its kind and where it is (never a password)."""

    def problems(self) -> list[str]:
        """What goes wrong with the store that /healthz should say, beyond the failed inserts the
        writer counts (a slow insert, ...), one sentence each."""

    def starting(self) -> AbstractContextManager[None]:
        """Around the start's reads and writes: the store's errors become a one-line ``StoreError``."""

    def error(self, e: BaseException) -> StoreError:
        """An error met on start as the ``StoreError`` the user sees; marks the store failed."""

    def unwritable(self, e: BaseException) -> bool:
        """Whether ``e``, raised by a write, says the store cannot be written now (retry later:
        the spans wait in the journal) rather than that it refuses these rows."""

    # --- spans and the journal position ------------------------------------------------
    def append_spans(
        self,
        batch: pa.Table | None,
        ingested_at: datetime,
        journal_position: int | None = None,
        metric_totals: Mapping[str, Sequence[Totals]] | None = None,
    ) -> None:
        """Store ``batch`` (if any) and record that the journal is applied up to
        ``journal_position``, durably and as one step as far as a crash can tell: after a crash
        either both are there, or the position is not and storing the same batch again (the
        replay) stores nothing twice. ``metric_totals``: per metric set (by name), the totals of
        the series the batch changes, as they stand with it; a store may keep them with the
        position (and its scans then have nothing to replay) or rely on ``save_metric_totals``."""

    def journal_applied(self) -> int:
        """The journal position up to which the spans are stored."""

    def journal_in_doubt(self) -> int | None:
        """The journal position an insert reached that may or may not have been stored when the
        process stopped (it crashed between the two); the replay must store the records up to it
        as one batch, which is then stored once. None when there is none."""

    # --- cumulative metrics (span metrics, LLM metrics), per set ``name`` ---------------
    def save_metric_totals(
        self,
        totals: list[tuple],
        watermark: datetime | None,
        fingerprint: str,
        replace: bool = False,
        name: str = "spanmetrics",
    ) -> None:
        """Store ``totals`` of the metric set ``name`` (all of them if ``replace``) as of ``watermark``."""

    def metric_totals(self, fingerprint: str, name: str = "spanmetrics") -> tuple[list[tuple], datetime | None] | None:
        """(totals, watermark) of the metric set ``name`` stored for ``fingerprint``; None if
        stored for other settings or never (the set is then recounted from the store's scans)."""

    def scan_spans(
        self,
        columns: Sequence[str],
        where: str = "",
        after: datetime | None = None,
        batch_rows: int = 100_000,
        by_commit: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """What a metric set counts on start (``Cumulative.scan``): ``columns`` of the spans
        ingested after ``after`` that its stored totals do not count yet, matching ``where`` (an
        SQL condition written by planoscope); ``by_commit`` adds ``IngestedAt`` and orders by it."""

    def scan_for_metrics(
        self,
        dimensions: Sequence[str],
        after: datetime | None = None,
        batch_rows: int = 100_000,
        by_commit: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """What span metrics derive from, as ``scan_spans`` selects it (see DuckDBStore)."""

    def last_ingested(self) -> datetime | None:
        """When the last span was stored (the watermark of the metric totals never goes below it)."""

    def recent_span_keys(self, window: timedelta, limit: int) -> list[bytes]:
        """trace_id + span_id of the spans stored within ``window``, newest first (de-duplication)."""

    # --- the rest ------------------------------------------------------------------------
    def append_samples(self, rows: pa.Table) -> None:
        """Store scraped samples (the ``samples`` columns: Timestamp, Target, MetricName, Labels, Value)."""

    def delete_before(self, table: str, cutoff: datetime, limit: int) -> int:
        """Delete at most ``limit`` spans or samples older than ``cutoff``; how many (retention)."""

    def oldest(self) -> tuple[datetime | None, datetime | None]:
        """The earliest start of the stored spans and time of the stored samples."""

    def span_count(self) -> int:
        """How many spans the store holds."""

    def disk_bytes(self) -> int:
        """Bytes planoscope keeps in its data directory."""

    def fill_pending(self) -> int:
        """Spans stored by an earlier version whose new columns are still to be filled."""

    def fill(self, estimate: Estimate | None, progress: Progress = lambda done, total: None) -> int:
        """Fill those (on start, before the writer); how many."""

    def read(self, sql: str, params: Sequence | dict | None = None) -> list[tuple]:
        """A read-only parameterized query over the store's spans, in its ``dialect``: DuckDB's
        (``?`` or ``$name`` parameters) or ClickHouse's (``{name:Type}`` parameters, bound by the
        server; see ``ClickHouseStore.read`` for how the SQL names the tables)."""

    def read_arrow(self, sql: str, params: Sequence | dict | None = None) -> pa.Table:
        """``read``, its answer as an Arrow table: for reads of millions of numbers (PromQL's
        samples), which as Python objects would take ten times the memory."""

    def query(self, sql: str, params: Sequence | dict | None = None) -> list[tuple]:
        """A read-only parameterized query in DuckDB SQL on the data directory's file (on
        ClickHouse: the local state file, without spans)."""

    def close(self) -> None:
        """Flush and close; a failed store writes nothing more."""
