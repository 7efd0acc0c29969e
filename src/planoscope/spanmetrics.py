"""Span metrics, as the OpenTelemetry Collector's spanmetrics connector derives them.

``calls_total`` and ``duration_milliseconds`` (an explicit-bucket histogram) per service, span
name, kind, status and the configured dimensions. The per-batch deltas are aggregated by the
store in SQL (in C, not per span in Python) inside the transaction that stores the spans; the
totals live in the store too, so they are cumulative since the data began, across restarts.

``SpanMetrics`` is a prometheus-client Collector: values are read at scrape time.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client.core import Metric

from .attributes import AttributeIndex

BASE_LABELS = ("service_name", "span_name", "span_kind", "status_code")
DEFAULT_DIMENSIONS = ("llm.model", "agent_id", "selection.listener", "http.method", "http.status_code")
DEFAULT_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def _label_name(dimension: str) -> str:
    # The collector's Prometheus exporter sanitizes label names: anything not [a-zA-Z0-9_] → _.
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in dimension)
    return "key_" + out if out[:1].isdigit() else out


def _num(x: float) -> str:
    return repr(float(x))


class SpanMetrics:
    """Cumulative span metrics; ``apply`` folds in committed deltas, ``collect`` exposes them."""

    def __init__(
        self,
        namespace: str = "",
        dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
        buckets_ms: Sequence[float] = DEFAULT_BUCKETS_MS,
    ):
        self.dimensions = tuple(dimensions)
        self.buckets = tuple(float(b) for b in buckets_ms)
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError("buckets must be strictly increasing")
        prefix = namespace.replace(".", "_") + "_" if namespace else ""
        self.calls_name = prefix + "calls"
        self.duration_name = prefix + "duration_milliseconds"
        self.label_names = BASE_LABELS + tuple(_label_name(d) for d in self.dimensions)
        self._lock = threading.Lock()
        # series key (JSON list of label values, null = absent) -> [calls, sum_ms, cumulative buckets]
        self._totals: dict[str, list] = {}
        self.aggregate_sql = self._aggregate_sql()
        self.fingerprint = hashlib.sha256(
            json.dumps([self.dimensions, self.buckets]).encode()
        ).hexdigest()[:16]

    def prepare(self, spans: pa.Table | pa.RecordBatch) -> pa.Table:
        """The columns the aggregate reads: the base labels, Duration and one per dimension."""
        base = [spans.column(n) for n in ("ServiceName", "SpanName", "SpanKind", "StatusCode", "Duration")]
        span_attrs = AttributeIndex(spans.column("SpanAttributes"))
        res_attrs = AttributeIndex(spans.column("ResourceAttributes"))
        dims = [pc.coalesce(span_attrs.get(d), res_attrs.get(d)) for d in self.dimensions]
        names = ["ServiceName", "SpanName", "SpanKind", "StatusCode", "Duration"]
        names += [f"d{i}" for i in range(len(dims))]
        return pa.Table.from_arrays([*base, *dims], names=names)

    def _aggregate_sql(self) -> str:
        """Deltas ``(series, calls, sum_ms, cumulative buckets)`` of a prepared batch ``_metrics_in``."""
        dims = [f"d{i}" for i in range(len(self.dimensions))]
        buckets = ", ".join(f"count(*) FILTER (WHERE Duration / 1e6 <= {_num(b)})" for b in self.buckets)
        # Group on the raw columns first: the label strings are then built once per series.
        values = ["ServiceName", "SpanName", "'SPAN_KIND_' || upper(SpanKind)",
                  "'STATUS_CODE_' || upper(StatusCode)", *dims]
        return (
            f"SELECT CAST(to_json([{', '.join(values)}]) AS VARCHAR) AS series, calls, sum_ms, buckets FROM ("
            f" SELECT {', '.join(['ServiceName', 'SpanName', 'SpanKind', 'StatusCode', *dims])},"
            " count(*)::BIGINT AS calls, coalesce(sum(Duration / 1e6), 0)::DOUBLE AS sum_ms,"
            f" CAST([{buckets}] AS BIGINT[]) AS buckets"
            " FROM _metrics_in GROUP BY ALL)"
        )

    # --- state -------------------------------------------------------------------------
    def load(self, rows: Iterable[tuple[str, int, float, list[int]]]) -> None:
        with self._lock:
            self._totals = {s: [c, m, list(b)] for s, c, m, b in rows}

    def apply(self, totals: Iterable[tuple]) -> None:
        """Install totals once the transaction that stored them has committed."""
        with self._lock:
            for series, calls, sum_ms, buckets in totals:
                self._totals[series] = [calls, sum_ms, buckets]

    # --- exposition --------------------------------------------------------------------
    def collect(self) -> Iterable[Metric]:
        with self._lock:
            items = [(s, v[0], v[1], list(v[2])) for s, v in self._totals.items()]
        calls = Metric(self.calls_name, "Number of spans, as the spanmetrics connector counts them", "counter")
        hist = Metric(self.duration_name, "Span duration in milliseconds", "histogram")
        names = self.label_names
        bounds = [_bucket_label(b) for b in self.buckets]
        for series, n, sum_ms, buckets in sorted(items):
            labels = {k: v for k, v in zip(names, json.loads(series)) if v is not None}
            calls.add_sample(self.calls_name + "_total", labels, n)
            for le, c in zip(bounds, buckets):
                hist.add_sample(self.duration_name + "_bucket", {**labels, "le": le}, c)
            hist.add_sample(self.duration_name + "_bucket", {**labels, "le": "+Inf"}, n)
            hist.add_sample(self.duration_name + "_sum", labels, sum_ms)
            hist.add_sample(self.duration_name + "_count", labels, n)
        yield calls
        yield hist


def _bucket_label(b: float) -> str:
    # Prometheus' Go client writes bounds with %g-style shortest form: 5, 2.5, 10000.
    return str(int(b)) if b == int(b) else repr(b)
