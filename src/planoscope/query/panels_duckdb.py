"""The Requests Overview panels' SQL on DuckDB (``evaluate.PanelReads``): what ``evaluate.py``
asks, as DuckDB queries over ``otel_traces`` and ``samples``. Every value is a parameter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import steps
from .params import naive_utc

if TYPE_CHECKING:
    from ..store import SpanStore
    from .panels import LatencyQuantiles, SpanCount, SpanRate


def _ranked(source: str, by: str, weight: str) -> str:
    """SQL over ``source`` (a FROM clause with its WHERE): each value ``g`` of column ``by`` with
    its ``weight``, its ``rank`` by weight (highest first, ties by value) and the number of
    values, ``groups``."""
    return (
        f"SELECT {by} AS g, {weight} AS weight, row_number() OVER (ORDER BY {weight} DESC, {by} ASC NULLS FIRST)"
        f" AS rank, count(*) OVER () AS groups FROM {source} GROUP BY {by}"
    )


class DuckDBPanels:
    """``evaluate.PanelReads`` on a ``DuckDBStore``."""

    def __init__(self, store: SpanStore):
        self.store = store

    def span_counts(self, rates: list[SpanRate], start: float, end: float, step: float, max_series: int) -> list[tuple]:
        # One scan of the range (``base``, materialized) that every rate panel reads.
        params, k = steps.window(start, end, step)
        services = sorted({s for q in rates for s in q.services})
        by = sorted({q.by for q in rates if q.by})
        sql = [
            f"WITH base AS MATERIALIZED (SELECT {k} AS k, {', '.join(['ServiceName', *by])}, count(*) AS n"
            f" FROM otel_traces WHERE Timestamp > ? AND Timestamp <= ? AND ServiceName IN ({steps.marks(services)})"
            " GROUP BY ALL)"
        ]
        args: list = [*params, *services]
        selects = []
        for i, q in enumerate(rates):
            if q.by:
                sql.append(
                    f", r{i} AS ({_ranked(f'base WHERE ServiceName IN ({steps.marks(q.services)})', q.by, 'sum(n)')})"
                )
                args += q.services
        for i, q in enumerate(rates):
            if q.by:
                selects.append(
                    f"SELECT {i} AS panel, b.k, r.rank > ? AS other, CASE WHEN r.rank <= ? THEN b.{q.by} END AS g,"
                    f" sum(b.n)::BIGINT AS n, max(r.groups) AS groups FROM base b JOIN r{i} r ON b.{q.by} IS NOT"
                    f" DISTINCT FROM r.g WHERE b.ServiceName IN ({steps.marks(q.services)}) GROUP BY ALL"
                )
                args += [max_series, max_series, *q.services]
            else:
                selects.append(
                    f"SELECT {i} AS panel, k, false AS other, ServiceName AS g, sum(n)::BIGINT AS n, NULL AS groups"
                    f" FROM base WHERE ServiceName IN ({steps.marks(q.services)}) GROUP BY ALL"
                )
                args += q.services
        return self.store.query("".join(sql) + " " + " UNION ALL ".join(selects), args)

    def latency(self, q: LatencyQuantiles, start: float, end: float, step: float, max_series: int) -> list[tuple]:
        params, k = steps.window(start, end, step)
        where = "Timestamp > ? AND Timestamp <= ? AND ServiceName = ?"
        return self.store.query(
            f"WITH r AS ({_ranked(f'otel_traces WHERE {where}', q.by, 'count(*)')})"
            f" SELECT {k} AS k, r.rank > ? AS other, CASE WHEN r.rank <= ? THEN o.{q.by} END AS g,"
            f" quantile_cont(o.Duration, ?), max(r.groups) FROM otel_traces o JOIN r ON o.{q.by} IS NOT DISTINCT"
            f" FROM r.g WHERE {where.replace('Timestamp', 'o.Timestamp').replace('ServiceName', 'o.ServiceName')}"
            " GROUP BY ALL",
            [*params, q.service, max_series, max_series, list(q.quantiles), *params, q.service],
        )

    def count(self, q: SpanCount, end: float, max_series: int) -> list[tuple]:
        source = "otel_traces WHERE Timestamp <= ? AND ServiceName = ?"
        return self.store.query(
            f"WITH r AS ({_ranked(source, q.by, 'count(*)')}) SELECT rank > ? AS other,"
            " CASE WHEN rank <= ? THEN g END AS g, sum(weight)::BIGINT, max(groups) FROM r GROUP BY ALL",
            [naive_utc(end), q.service, max_series, max_series],
        )

    def samples(self, metric: str, since: float, end: float) -> list[tuple]:
        return self.store.query(
            "SELECT Target, Labels, epoch_us(Timestamp), Value FROM samples"
            " WHERE MetricName = ? AND Timestamp > ? AND Timestamp <= ? ORDER BY Target, Labels, Timestamp",
            [metric, naive_utc(since), naive_utc(end)],
        )

    def sample_count(self, metric: str, start: float | None = None, end: float | None = None) -> int:
        if start is None:
            return self.store.query("SELECT count(*) FROM samples WHERE MetricName = ?", [metric])[0][0]
        return self.store.query(
            "SELECT count(*) FROM samples WHERE MetricName = ? AND Timestamp > ? AND Timestamp <= ?",
            [metric, naive_utc(start), naive_utc(end)],
        )[0][0]

    def metrics(self) -> list[tuple]:
        return self.store.query(
            "SELECT MetricName, count(DISTINCT (Target, Labels)), epoch_us(max(Timestamp))"
            " FROM samples GROUP BY MetricName ORDER BY MetricName"
        )
