"""The Requests Overview panels' SQL on ClickHouse (``evaluate.PanelReads``): what
``evaluate.py`` asks, as ClickHouse queries over the collector exporter's ``otel_traces`` (with
planoscope's MATERIALIZED typed columns) and the scraper's ``planoscope_samples``, every value a
server-side parameter.

The same answers as ``panels_duckdb.py``, row for row: the steps of ``steps.clickhouse_window``,
the top groups by spans (ties by value, a span without the value first) and ``other`` folded in
the query (``_folded``: one scan, per (step, group), then the groups ranked by window functions
over those rows). Latency quantiles are ``quantilesExactInclusive``: linear interpolation between
the closest ranks, as DuckDB's ``quantile_cont`` and numpy's default; its states (the values)
per (step, group) are merged for ``other``.

One difference in cost, not in answers: DuckDB materializes one scan of the range that every
rate panel reads; ClickHouse runs a CTE where it is named, so each rate panel scans the range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store.clickhouse import SPANS
from . import steps
from .params import unix_ns

if TYPE_CHECKING:
    from ..store import SpanStore
    from .panels import LatencyQuantiles, SpanCount, SpanRate

SAMPLES = "{db:Identifier}.{planoscope_samples:Identifier}"


def _folded(per_group: str, folded: str) -> str:
    """The rows of ``per_group`` (columns ``kk``, ``g``, ``n`` the spans, and any aggregate
    states) with their group ranked by spans over the whole range (ties by value, NULL first) and
    every group past the top ``{n:UInt32}`` folded into ``other``: ``kk, other, g, <folded>,
    groups`` (how many values there are). One scan of the range: the ranking is over the few
    (step, group) rows, where a scalar subquery of the top groups scanned it again (twice, with
    the count of groups), and matching each span against the top groups cost more than the scan."""
    return (
        f"SELECT kk, rank > {{n:UInt32}} AS other, if(other, NULL, g) AS gg, {folded}, max(groups) FROM ("
        "SELECT *, max(rank) OVER () AS groups FROM ("
        "SELECT *, dense_rank() OVER (ORDER BY w DESC, g ASC NULLS FIRST) AS rank FROM ("
        f"SELECT *, sum(n) OVER (PARTITION BY g) AS w FROM ({per_group})))) GROUP BY kk, other, gg"
    )


class ClickHousePanels:
    """``evaluate.PanelReads`` on a ``ClickHouseStore`` (its ``read``)."""

    def __init__(self, store: SpanStore):
        self.store = store

    def span_counts(self, rates: list[SpanRate], start: float, end: float, step: float, max_series: int) -> list[tuple]:
        params, window, k = steps.clickhouse_window(start, end, step)
        params["n"] = max_series
        selects = []
        for i, q in enumerate(rates):
            params[f"s{i}"] = list(q.services)
            where = f"{window} AND ServiceName IN {{s{i}:Array(String)}}"
            if q.by:
                per_group = f"SELECT {k} AS kk, {q.by} AS g, count() AS n FROM {SPANS} WHERE {where} GROUP BY kk, g"
                selects.append(f"SELECT toUInt32({i}) AS panel, * FROM ({_folded(per_group, 'sum(n)')})")
            else:
                selects.append(
                    f"SELECT toUInt32({i}) AS panel, {k} AS kk, false AS other, toNullable(ServiceName) AS g,"
                    f" count() AS n, CAST(NULL AS Nullable(UInt64)) AS groups FROM {SPANS} WHERE {where}"
                    " GROUP BY kk, g"
                )
        return self.store.read(" UNION ALL ".join(f"({s})" for s in selects), params)

    def latency(self, q: LatencyQuantiles, start: float, end: float, step: float, max_series: int) -> list[tuple]:
        params, window, k = steps.clickhouse_window(start, end, step)
        params.update(n=max_series, service=q.service)
        where = f"{window} AND ServiceName = {{service:String}}"
        levels = ", ".join(repr(float(x)) for x in q.quantiles)  # the panel's own constants
        per_group = (
            f"SELECT {k} AS kk, {q.by} AS g, count() AS n, quantilesExactInclusiveState({levels})(Duration) AS st"
            f" FROM {SPANS} WHERE {where} GROUP BY kk, g"
        )
        return self.store.read(_folded(per_group, f"quantilesExactInclusiveMerge({levels})(st)"), params)

    def count(self, q: SpanCount, end: float, max_series: int) -> list[tuple]:
        where = "Timestamp <= fromUnixTimestamp64Nano({end:Int64}) AND ServiceName = {service:String}"
        return self.store.read(
            f"SELECT rank > {{n:UInt32}} AS other, if(other, NULL, g) AS gg, sum(w), max(groups) FROM ("
            f"SELECT g, w, row_number() OVER (ORDER BY w DESC, g ASC NULLS FIRST) AS rank, count() OVER () AS groups"
            f" FROM (SELECT {q.by} AS g, count() AS w FROM {SPANS} WHERE {where} GROUP BY g)) GROUP BY other, gg",
            {"end": unix_ns(end), "service": q.service, "n": max_series},
        )

    def samples(self, metric: str, since: float, end: float) -> list[tuple]:
        return self.store.read(
            "SELECT Target, Labels, toUnixTimestamp64Micro(Timestamp), Value FROM " + SAMPLES + " WHERE"
            " MetricName = {metric:String} AND Timestamp > fromUnixTimestamp64Micro({since:Int64})"
            " AND Timestamp <= fromUnixTimestamp64Micro({end:Int64}) ORDER BY Target, Labels, Timestamp",
            {"metric": metric, "since": unix_ns(since) // 1000, "end": unix_ns(end) // 1000},
        )

    def sample_count(self, metric: str, start: float | None = None, end: float | None = None) -> int:
        where = "MetricName = {metric:String}"
        params: dict = {"metric": metric}
        if start is not None:
            where += (
                " AND Timestamp > fromUnixTimestamp64Micro({start:Int64})"
                " AND Timestamp <= fromUnixTimestamp64Micro({end:Int64})"
            )
            params.update(start=unix_ns(start) // 1000, end=unix_ns(end) // 1000)
        return int(self.store.read(f"SELECT count() FROM {SAMPLES} WHERE {where}", params)[0][0])

    def metrics(self) -> list[tuple]:
        return self.store.read(
            f"SELECT MetricName, uniqExact(Target, Labels), toUnixTimestamp64Micro(max(Timestamp)) FROM {SAMPLES}"
            " GROUP BY MetricName ORDER BY MetricName"
        )
