"""Cumulative metrics derived from spans: the mechanism span metrics and the LLM metrics share.

A set of metric families (``Cumulative``) keeps one accumulator per series: the observations,
their sum (in the family's unit) and, for a histogram, the count per bucket. A batch's deltas are
aggregated by the subclass (``_aggregate``: Arrow's hash aggregation, in C, not per span in
Python), bounded here, merged into the totals by the writer once the spans are committed, and
snapshotted into the store with a watermark (the store's ``{name}_state`` table); on start the
totals are loaded and the spans after the watermark replayed (see the writer and ``app.py``), so
the metrics continue from exactly what was acknowledged: cumulative since the data began, not
since the process started.

Cardinality is bounded per family as the spanmetrics connector's ``aggregation_cardinality_limit``
bounds it: once ``cardinality_limit`` series of a family exist, the observations of a series of
that family not seen before are counted in the family's one overflow series, whose only label is
``otel_metric_overflow="true"`` (the connector's overflow data point has no attribute but
``otel.metric.overflow``). Known series keep counting; every observation is counted exactly once,
so sums over all series stay exact. Which new series fit below the limit is decided from the
stored totals and, within one batch, in the order of their keys, so a restart reaches the same
assignment: the commits after the last snapshot are replayed one by one, in order, as they were
counted live (``replay_commits``), and a full recount counts everything as one batch
(``replay``). Changing the limit applies to series not known yet: raising it lets new ones in,
lowering it keeps the known ones.

A set is a prometheus-client Collector: values are read at scrape time (``collect``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from prometheus_client.core import Metric

if TYPE_CHECKING:
    from ..store import SpanStore

# One stored row per series: its key, the observations, their sum and the per-bucket counts (not
# cumulative; the last one is +Inf; none for a counter).
Totals = tuple[str, int, float, list[int]]
OVERFLOW_LABELS = {"otel_metric_overflow": "true"}


class Cumulative:
    """Cumulative totals per series. ``deltas`` aggregates a batch, ``merge`` gives the new totals
    to store, ``apply`` installs them once stored, ``collect`` exposes them.

    A subclass sets ``name`` (its state in the store), ``title`` (for the log), ``fingerprint``
    (of the settings its totals depend on: stored totals of other settings are recounted) and
    implements ``_aggregate``, ``scan`` and ``collect``; one with several families also
    ``family`` and ``overflow``."""

    name = ""
    title = ""
    fingerprint = ""

    def __init__(self, cardinality_limit: int):
        if cardinality_limit < 1:
            raise ValueError("cardinality_limit must be at least 1")
        self.cardinality_limit = cardinality_limit
        self._lock = threading.Lock()
        self._totals: dict[str, list] = {}  # series -> [observations, sum, bucket counts]
        self._sizes: dict[str, int] = {}  # family -> its series known, the overflow one aside
        self._series_keys: dict[tuple, str] = {}  # label values -> series key, a cache

    # --- what a subclass defines ------------------------------------------------------------
    def _aggregate(self, spans: pa.Table | pa.RecordBatch, dims: list[pa.Array] | None = None) -> dict[str, list]:
        """Per series: [observations, sum, bucket counts] of ``spans`` (unbounded)."""
        raise NotImplementedError

    def scan(self, store: SpanStore, after: datetime | None = None, by_commit: bool = False) -> Iterator:
        """What ``_aggregate`` reads, of the spans stored after ``after``, as Arrow batches;
        ``by_commit`` adds ``IngestedAt`` and orders by it (see ``replay_commits``)."""
        raise NotImplementedError

    def family(self, series: str) -> str:
        """The family a series key belongs to (its cardinality limit and overflow series)."""
        return ""

    def overflow(self, family: str) -> str:
        """The key of ``family``'s overflow series."""
        raise NotImplementedError

    def collect(self) -> Iterable[Metric]:
        raise NotImplementedError

    def series_key(self, labels: tuple, render) -> str:
        """The key of the series with label values ``labels`` (``render(labels)``, cached)."""
        keys = self._series_keys
        series = keys.get(labels)
        if series is None:
            if len(keys) > 100_000:  # a bound on memory if some label has unbounded values
                keys.clear()
            series = keys[labels] = render(labels)
        return series

    # --- aggregation ----------------------------------------------------------------------
    def deltas(self, spans: pa.Table | pa.RecordBatch, dims: list[pa.Array] | None = None) -> dict[str, list]:
        """Per series: [observations, sum, bucket counts] of ``spans``; those of new series
        beyond the cardinality limit under their family's overflow series. ``dims`` are the span
        metrics' dimension values, as the decoder pulls them out (see ``SpanMetrics``)."""
        return self._bound(self._aggregate(spans, dims))

    def replay(self, batches: Iterable[pa.Table | pa.RecordBatch]) -> None:
        """Count stored spans on start (those after the snapshot's watermark, or all of them),
        as one batch: which new series take the room left below the limit then depends on what
        is stored, not on the order or the batches the store returns it in. Memory holds at most
        the limit's worth of series per family: a new series that can no longer be among the
        first by key is folded into the overflow at once."""
        pending: dict[str, list] = {}
        for batch in batches:
            for series, acc in self._aggregate(batch).items():
                _add(pending, series, acc)
            for series in self._refused(pending):
                _add(pending, self.overflow(self.family(series)), pending.pop(series))
        self.apply(self.merge(self._bound(pending)))

    def replay_commits(self, batches: Iterable[pa.Table | pa.RecordBatch]) -> None:
        """Count the commits made after the last snapshot, one by one and in order, exactly as
        the writer counted them when they were made (each commit was one ``deltas``): so the new
        series that took the room left below the limit are the same ones /metrics showed before a
        crash. ``batches`` hold an ``IngestedAt`` column (one value per commit), sorted by it, as
        ``scan(..., by_commit=True)`` returns them."""
        commit, pending = None, {}
        for batch in batches:
            stamps = batch.column("IngestedAt").to_numpy()
            cuts = [0, *(np.flatnonzero(stamps[1:] != stamps[:-1]) + 1), len(stamps)]
            for lo, hi in zip(cuts, cuts[1:]):
                if lo == hi:
                    continue
                if stamps[lo] != commit and pending:
                    self.apply(self.merge(self._bound(pending)))
                    pending = {}
                commit = stamps[lo]
                for series, acc in self._aggregate(batch.slice(lo, hi - lo)).items():
                    _add(pending, series, acc)
        if pending:
            self.apply(self.merge(self._bound(pending)))

    def _refused(self, deltas: dict[str, list]) -> set[str]:
        """The new series of ``deltas`` beyond their family's room below the limit: all but the
        first by key (the same spans give the same series)."""
        with self._lock:
            new: dict[str, list[str]] = {}
            for series in deltas:
                if series not in self._totals:
                    family = self.family(series)
                    if series != self.overflow(family):
                        new.setdefault(family, []).append(series)
            refused: set[str] = set()
            for family, series in new.items():
                room = max(self.cardinality_limit - self._sizes.get(family, 0), 0)
                if len(series) > room:
                    refused.update(sorted(series)[room:])
        return refused

    def _bound(self, deltas: dict[str, list]) -> dict[str, list]:
        refused = self._refused(deltas)
        if not refused:
            return deltas
        out: dict[str, list] = {}
        for series, acc in deltas.items():
            _add(out, self.overflow(self.family(series)) if series in refused else series, acc)
        return out

    def merge(self, deltas: dict[str, list]) -> list[Totals]:
        """The new totals of the series in ``deltas`` (not yet applied: see ``apply``)."""
        out = []
        with self._lock:
            for series, (count, total, buckets) in deltas.items():
                old = self._totals.get(series)
                if old is not None:
                    count, total = count + old[0], total + old[1]
                    buckets = [a + b for a, b in zip(buckets, old[2])]
                out.append((series, count, total, buckets))
        return out

    def apply(self, totals: Iterable[Totals]) -> None:
        """Install totals once the transaction that stored them has committed."""
        with self._lock:
            for series, count, total, buckets in totals:
                if series not in self._totals:
                    family = self.family(series)
                    if series != self.overflow(family):
                        self._sizes[family] = self._sizes.get(family, 0) + 1
                self._totals[series] = [count, total, list(buckets)]

    def snapshot(self) -> list[Totals]:
        with self._lock:
            return [(s, v[0], v[1], list(v[2])) for s, v in self._totals.items()]

    def load(self, totals: Iterable[Totals]) -> None:
        with self._lock:
            self._totals, self._sizes = {}, {}
        self.apply(totals)


def bucket_label(b: float) -> str:
    """A bucket bound as Go's Prometheus client writes it: 5, 2.5, 10000, 0.01."""
    return str(int(b)) if b == int(b) else repr(float(b))


def add_histogram(
    metric: Metric, labels: dict, count: int, total: float, buckets: list[int], bounds: list[str]
) -> None:
    """The ``_bucket`` (cumulative, ``bounds`` then +Inf), ``_sum`` and ``_count`` samples of one
    series to ``metric``."""
    cumulative = 0
    for le, c in zip([*bounds, "+Inf"], buckets):
        cumulative += c
        metric.add_sample(metric.name + "_bucket", {**labels, "le": le}, cumulative)
    metric.add_sample(metric.name + "_sum", labels, total)
    metric.add_sample(metric.name + "_count", labels, count)


def _add(out: dict[str, list], series: str, acc: list) -> None:
    """Add the [observations, sum, buckets] ``acc`` to ``out[series]``."""
    old = out.get(series)
    if old is None:
        out[series] = [acc[0], acc[1], list(acc[2])]
    else:
        old[0] += acc[0]
        old[1] += acc[1]
        old[2] = [a + b for a, b in zip(old[2], acc[2])]
