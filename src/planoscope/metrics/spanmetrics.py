"""Span metrics, as the OpenTelemetry Collector's spanmetrics connector derives them.

``calls_total`` and ``duration_milliseconds`` (an explicit-bucket histogram) per service, span
name, kind, status and the configured dimensions: one family of the cumulative mechanism
(``cumulative.py``: per-commit deltas, snapshots, the replay on start, the cardinality bound),
whose series are a JSON list of their label values (null = label absent).

The connector limits cardinality per metric; ``calls`` and ``duration_milliseconds`` see the same
series, so they overflow together, into one series labelled ``otel_metric_overflow="true"``. It
limits per resource; /metrics has no resource here (``service_name`` is a label like any other),
so the limit holds over all services: a flood of service names is bounded too.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client.core import Metric

from .cumulative import Cumulative, Totals, add_histogram, bucket_label

if TYPE_CHECKING:
    from ..store import SpanStore

__all__ = ["OVERFLOW_SERIES", "SpanMetrics", "Totals"]

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


def _label_name(dimension: str) -> str:
    # The collector's Prometheus exporter sanitizes label names: anything not [a-zA-Z0-9_] → _.
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in dimension)
    return "key_" + out if out[:1].isdigit() else out


def _series(labels: tuple) -> str:
    service, name, kind, status, *dim_values = labels
    return json.dumps(
        [service, name, "SPAN_KIND_" + kind.upper(), "STATUS_CODE_" + status.upper(), *dim_values],
        separators=(",", ":"),
        ensure_ascii=False,
    )


class SpanMetrics(Cumulative):
    """Cumulative span metrics (see ``Cumulative`` for the life of the totals)."""

    name = "spanmetrics"
    title = "span metrics"

    def __init__(
        self,
        namespace: str = "",
        dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
        buckets_ms: Sequence[float] = DEFAULT_BUCKETS_MS,
        cardinality_limit: int = DEFAULT_CARDINALITY_LIMIT,
    ):
        super().__init__(cardinality_limit)
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
        self.fingerprint = hashlib.sha256(json.dumps([self.dimensions, list(self.buckets)]).encode()).hexdigest()[:16]

    def overflow(self, family: str) -> str:
        return OVERFLOW_SERIES

    def scan(self, store: SpanStore, after: datetime | None = None, by_commit: bool = False) -> Iterator:
        return store.scan_for_metrics(self.dimensions, after=after, by_commit=by_commit)

    def _aggregate(self, spans: pa.Table | pa.RecordBatch, dims: list[pa.Array] | None = None) -> dict[str, list]:
        """``dims`` are the dimension values (span attribute, else resource attribute) per span, as
        the decoder pulls them out; without them they are read from columns ``d0``, ``d1``, …
        (as ``DuckDBStore.scan_for_metrics`` selects them)."""
        if dims is not None and len(dims) != len(self.dimensions):
            raise ValueError(
                f"{len(dims)} dimension columns given for the {len(self.dimensions)} span-metric dimensions"
            )
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
        for *labels, b, total_ms, count in rows:
            series = self.series_key(tuple(labels), _series)
            acc = out.get(series)
            if acc is None:
                acc = out[series] = [0, 0.0, [0] * nb]
            acc[0] += count
            acc[1] += total_ms
            acc[2][b] += count
        return out

    # --- exposition --------------------------------------------------------------------
    def collect(self) -> Iterable[Metric]:
        items = sorted(self.snapshot())
        calls = Metric(self.calls_name, "Number of spans, as the spanmetrics connector counts them", "counter")
        hist = Metric(self.duration_name, "Span duration in milliseconds", "histogram")
        bounds = [bucket_label(b) for b in self.buckets]
        for series, n, sum_ms, buckets in items:
            values = json.loads(series)
            if isinstance(values, dict):  # the overflow series
                labels = values
            else:
                labels = {k: v for k, v in zip(self.label_names, values) if v is not None}
            calls.add_sample(self.calls_name + "_total", labels, n)
            add_histogram(hist, labels, n, sum_ms, buckets, bounds)
        yield calls
        yield hist
