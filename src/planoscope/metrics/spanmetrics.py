"""Span metrics, as the OpenTelemetry Collector's spanmetrics connector derives them.

``calls_total`` and ``duration_milliseconds`` (an explicit-bucket histogram) per service, span
name, kind, status and the configured dimensions. A batch's deltas are aggregated with Arrow's
hash aggregation (in C, not per span in Python). The totals are snapshotted into the store with
a watermark and the spans after it are replayed on start (see the writer and the store), so
after a restart the metrics continue from exactly what was acknowledged: cumulative since the
data began, not since the process started.

Cardinality is bounded as the connector's ``aggregation_cardinality_limit`` bounds it: once
``cardinality_limit`` series exist, the spans of a series not seen before are counted in one
overflow series whose only label is ``otel_metric_overflow="true"`` (the connector's overflow data
point has no attribute but ``otel.metric.overflow``). Known series keep counting; every span is
counted exactly once, so sums over all series stay exact. ``calls`` and ``duration_milliseconds``
are each limited (the connector limits per metric); both see the same series, so they overflow
together. The connector limits per resource; /metrics has no resource here (``service_name`` is
a label like any other), so the limit holds over all services: a flood of service names is
bounded too. Which new series fit below the limit is decided from the stored totals and, within
one batch, in the order of their label values, so a restart reaches the same assignment: the
commits after the last snapshot are replayed one by one, in order, as they were counted live
(``replay_commits``), and a full recount counts everything as one batch (``replay``). Changing
the limit applies to series not known yet: raising it lets new ones in, lowering it keeps the
known ones.

``SpanMetrics`` is a prometheus-client Collector: values are read at scrape time.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client.core import Metric

BASE_LABELS = ("service_name", "span_name", "span_kind", "status_code")
DEFAULT_DIMENSIONS = ("llm.model", "agent_id", "selection.listener", "http.method", "http.status_code")
DEFAULT_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# The OpenTelemetry metrics SDK's default aggregation cardinality limit (the connector has none
# unless configured: unbounded, which a client sending a new llm.model per request turns into
# 330 MB dashboards and 130 MB scrapes).
DEFAULT_CARDINALITY_LIMIT = 2000
# The overflow series' key: a JSON object of its labels (other series are a JSON list of values).
OVERFLOW_SERIES = '{"otel_metric_overflow":"true"}'
_BASE_COLUMNS = ("ServiceName", "SpanName", "SpanKind", "StatusCode")

# One stored row per series: the label values (JSON list, null = label absent), the call count,
# the duration sum and the per-bucket counts (not cumulative; the last one is the overflow).
Totals = tuple[str, int, float, list[int]]


def _label_name(dimension: str) -> str:
    # The collector's Prometheus exporter sanitizes label names: anything not [a-zA-Z0-9_] → _.
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in dimension)
    return "key_" + out if out[:1].isdigit() else out


def _bucket_label(b: float) -> str:
    # As Go's Prometheus client writes bounds: 5, 2.5, 10000.
    return str(int(b)) if b == int(b) else repr(float(b))


class SpanMetrics:
    """Cumulative span metrics. ``deltas`` aggregates a batch, ``merge`` gives the new totals to
    store, ``apply`` installs them once stored, ``collect`` exposes them."""

    def __init__(
        self,
        namespace: str = "",
        dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
        buckets_ms: Sequence[float] = DEFAULT_BUCKETS_MS,
        cardinality_limit: int = DEFAULT_CARDINALITY_LIMIT,
    ):
        if cardinality_limit < 1:
            raise ValueError("cardinality_limit must be at least 1")
        self.cardinality_limit = cardinality_limit
        self.dimensions = tuple(dimensions)
        self.buckets = np.array([float(b) for b in buckets_ms])
        if len(self.buckets) == 0 or np.any(np.diff(self.buckets) <= 0):
            raise ValueError("buckets must be strictly increasing")
        # ns <= bound_ms * 1e6 exactly, for an integer ns: ns <= floor(bound_ms * 1e6)
        self._bounds_ns = np.array([min(math.floor(Fraction(b) * 10**6), 2**63 - 1) for b in self.buckets], np.int64)
        prefix = namespace.replace(".", "_") + "_" if namespace else ""
        self.calls_name = prefix + "calls"
        self.duration_name = prefix + "duration_milliseconds"
        self.label_names = BASE_LABELS + tuple(_label_name(d) for d in self.dimensions)
        self._lock = threading.Lock()
        self._totals: dict[str, list] = {}  # series -> [calls, sum_ms, bucket counts]
        self._series_keys: dict[tuple, str] = {}  # label values -> series (its JSON), a cache
        self.fingerprint = hashlib.sha256(json.dumps([self.dimensions, list(self.buckets)]).encode()).hexdigest()[:16]

    # --- aggregation -------------------------------------------------------------------
    def deltas(self, spans: pa.Table | pa.RecordBatch, dims: list[pa.Array] | None = None) -> dict[str, list]:
        """Per series: [calls, sum_ms, bucket counts] of ``spans``; the spans of new series beyond
        the cardinality limit under ``OVERFLOW_SERIES``.

        ``dims`` are the dimension values (span attribute, else resource attribute) per span, as
        the decoder pulls them out; without them they are read from columns ``d0``, ``d1``, …
        (as ``DuckDBStore.scan_for_metrics`` selects them).
        """
        return self._bound(self._aggregate(spans, dims))

    def replay(self, batches: Iterable[pa.Table | pa.RecordBatch]) -> None:
        """Count stored spans on start (those after the snapshot's watermark, or all of them),
        as one batch: which new series take the room left below the limit then depends on what
        is stored, not on the order or the batches the store returns it in. Memory holds at most
        the limit's worth of series: a new series that can no longer be among the first by label
        values is folded into the overflow at once."""
        pending: dict[str, list] = {}
        for batch in batches:
            for series, acc in self._aggregate(batch).items():
                _add(pending, series, acc)
            with self._lock:
                room = self._room()
                new = [s for s in pending if s not in self._totals and s != OVERFLOW_SERIES]
            if len(new) > room:
                for series in sorted(new)[room:]:
                    _add(pending, OVERFLOW_SERIES, pending.pop(series))
        self.apply(self.merge(self._bound(pending)))

    def replay_commits(self, batches: Iterable[pa.Table | pa.RecordBatch]) -> None:
        """Count the commits made after the last snapshot, one by one and in order, exactly as
        the writer counted them when they were made (each commit was one ``deltas``): so the new
        series that took the room left below the limit are the same ones /metrics showed before a
        crash. ``batches`` hold an ``IngestedAt`` column (one value per commit), sorted by it, as
        ``DuckDBStore.scan_for_metrics(..., by_commit=True)`` returns them."""
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

    def _room(self) -> int:
        """New series that still fit below the limit (call with the lock held)."""
        return max(self.cardinality_limit - (len(self._totals) - (OVERFLOW_SERIES in self._totals)), 0)

    def _bound(self, deltas: dict[str, list]) -> dict[str, list]:
        with self._lock:
            known, room = self._totals, self._room()
            new = [s for s in deltas if s not in known and s != OVERFLOW_SERIES]
            if len(new) <= room:
                return deltas
            # The first by label values get the room: the same spans give the same series.
            admitted = set(sorted(new)[:room]) if room else set()
        out: dict[str, list] = {}
        for series, acc in deltas.items():
            if series in known or series in admitted:
                out[series] = acc
            else:
                _add(out, OVERFLOW_SERIES, acc)
        return out

    def _aggregate(self, spans: pa.Table | pa.RecordBatch, dims: list[pa.Array] | None = None) -> dict[str, list]:
        if spans.num_rows == 0:
            return {}
        if dims is None:
            dims = [spans.column(f"d{i}") for i in range(len(self.dimensions))]
        # The collector's latency: float64(end - start) / 1e6; bucket i holds bounds[i-1] < ms <= bounds[i].
        # Bucketed on the int64 ns themselves (a float64 is exact only to 2^53 ns, 104 days, and
        # Arrow's safe cast raises beyond), the sum in float64 through an unchecked cast.
        duration = spans.column("Duration")
        ms = pc.divide(pc.cast(duration, pa.float64(), safe=False), 1e6)
        bucket = np.searchsorted(self._bounds_ns, np.asarray(duration), side="left").astype(np.int32)
        names = [*_BASE_COLUMNS, *(f"d{i}" for i in range(len(dims))), "bucket"]
        table = pa.Table.from_arrays(
            [*(spans.column(c) for c in _BASE_COLUMNS), *dims, pa.array(bucket), ms], names=[*names, "ms"]
        )
        grouped = table.group_by(names, use_threads=False).aggregate([("ms", "sum"), ("ms", "count")])
        rows = zip(*(grouped.column(c).to_pylist() for c in [*names, "ms_sum", "ms_count"]))
        out: dict[str, list] = {}
        nb = len(self.buckets) + 1
        keys = self._series_keys
        if len(keys) > 100_000:  # a bound on memory if some label has unbounded values
            keys.clear()
        for *labels, b, total_ms, count in rows:
            labels = tuple(labels)
            series = keys.get(labels)
            if series is None:
                service, name, kind, status, *dim_values = labels
                series = keys[labels] = json.dumps(
                    [service, name, "SPAN_KIND_" + kind.upper(), "STATUS_CODE_" + status.upper(), *dim_values],
                    separators=(",", ":"),
                    ensure_ascii=False,
                )
            acc = out.get(series)
            if acc is None:
                acc = out[series] = [0, 0.0, [0] * nb]
            acc[0] += count
            acc[1] += total_ms
            acc[2][b] += count
        return out

    def merge(self, deltas: dict[str, list]) -> list[Totals]:
        """The new totals of the series in ``deltas`` (not yet applied: see ``apply``)."""
        out = []
        with self._lock:
            for series, (calls, sum_ms, buckets) in deltas.items():
                old = self._totals.get(series)
                if old is not None:
                    calls, sum_ms = calls + old[0], sum_ms + old[1]
                    buckets = [a + b for a, b in zip(buckets, old[2])]
                out.append((series, calls, sum_ms, buckets))
        return out

    def apply(self, totals: Iterable[Totals]) -> None:
        """Install totals once the transaction that stored them has committed."""
        with self._lock:
            for series, calls, sum_ms, buckets in totals:
                self._totals[series] = [calls, sum_ms, list(buckets)]

    def snapshot(self) -> list[Totals]:
        with self._lock:
            return [(s, v[0], v[1], list(v[2])) for s, v in self._totals.items()]

    def load(self, totals: Iterable[Totals]) -> None:
        with self._lock:
            self._totals = {}
        self.apply(totals)

    # --- exposition --------------------------------------------------------------------
    def collect(self) -> Iterable[Metric]:
        items = sorted(self.snapshot())
        calls = Metric(self.calls_name, "Number of spans, as the spanmetrics connector counts them", "counter")
        hist = Metric(self.duration_name, "Span duration in milliseconds", "histogram")
        bounds = [_bucket_label(b) for b in self.buckets] + ["+Inf"]
        for series, n, sum_ms, buckets in items:
            values = json.loads(series)
            if isinstance(values, dict):  # the overflow series
                labels = values
            else:
                labels = {k: v for k, v in zip(self.label_names, values) if v is not None}
            calls.add_sample(self.calls_name + "_total", labels, n)
            cumulative = 0
            for le, c in zip(bounds, buckets):
                cumulative += c
                hist.add_sample(self.duration_name + "_bucket", {**labels, "le": le}, cumulative)
            hist.add_sample(self.duration_name + "_sum", labels, sum_ms)
            hist.add_sample(self.duration_name + "_count", labels, n)
        yield calls
        yield hist


def _add(out: dict[str, list], series: str, acc: list) -> None:
    """Add the [calls, sum_ms, buckets] ``acc`` to ``out[series]``."""
    old = out.get(series)
    if old is None:
        out[series] = [acc[0], acc[1], list(acc[2])]
    else:
        old[0] += acc[0]
        old[1] += acc[1]
        old[2] = [a + b for a, b in zip(old[2], acc[2])]
