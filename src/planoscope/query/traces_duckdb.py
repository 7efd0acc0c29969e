"""The trace explorer's SQL on DuckDB (``traces.TraceReads``): what ``traces.py`` asks, as DuckDB
queries over the span table. ``traces_clickhouse.py`` is the same on ClickHouse."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..store.schema import FAILURE_CLASS, FAILURE_CLASSES, LLM_CALL, trace_key
from .otlp import SPAN_SELECT
from .params import naive_utc

if TYPE_CHECKING:
    from ..store import DuckDBStore
    from .traces import TraceSearch


def _where(q: TraceSearch) -> tuple[str, list]:
    """SQL (ANDed conditions on one span) and its parameters."""
    conds, params = ["Timestamp > ?", "Timestamp <= ?"], [naive_utc(q.start), naive_utc(q.end)]
    for column, value in q.equal_columns():
        conds.append(f"{column} = ?")
        params.append(value)
    if q.llm_only:
        conds.append(LLM_CALL)
    if q.cost is not None:
        conds.append("CostUsd IS NOT NULL" if q.cost == "sent" else "EstimatedCostUsd IS NOT NULL")
    if q.flagged:
        conds.append("Flagged")
    if q.failures:
        conds.append(f"{FAILURE_CLASS} IN ({', '.join('?' * len(q.failures))})")
        params += q.failures
    elif q.errors_only:
        conds.append(f"{FAILURE_CLASS} IS NOT NULL")
    if q.min_duration_ns is not None:
        conds.append("Duration >= ?")
        params.append(q.min_duration_ns)
    if q.max_duration_ns is not None:
        conds.append("Duration <= ?")
        params.append(q.max_duration_ns)
    for key, value in q.attributes:
        if value is None:  # present, whatever its value
            conds.append("(has_attr(SpanAttributes, ?) OR has_attr(ResourceAttributes, ?))")
            params += [key, key]
            continue
        # Equal as text (how a user types it), or as numbers: 2 is the double 2.0, which the
        # store's JSON renders "2.0", and 1e21 is "1e+21".
        lookup = "coalesce(attr(SpanAttributes, ?), attr(ResourceAttributes, ?))"
        conds.append(f"({lookup} = ? OR TRY_CAST({lookup} AS DOUBLE) = TRY_CAST(? AS DOUBLE))")
        params += [key, key, value, key, key, value]
    if q.trace_id is not None:
        conds.append("TraceKey = ? AND TraceId = ?")
        params += [trace_key(q.trace_id), q.trace_id]
    return " AND ".join(conds), params


# Ranking groups the matching spans by trace; the page's traces are then summarised from all
# their spans near the range, found by TraceKey. The traces in flight are the ones with a span
# that arrived since IN_FLIGHT_S ago and no root stored: roots are looked for among the spans that
# started from TRACE_MARGIN_S before those traces' first spans (a root starts before its children),
# so the anti-join reads the recent part of the table, not all of it.
_MATCHED = """
WITH recent AS (
  SELECT TraceKey, TraceId, min(Timestamp) AS first FROM otel_traces WHERE IngestedAt > ?
  GROUP BY TraceKey, TraceId HAVING NOT bool_or(ParentSpanId = '')
), flying AS (
  SELECT TraceKey, TraceId FROM recent ANTI JOIN (
    SELECT TraceKey, TraceId FROM otel_traces WHERE ParentSpanId = ''
      AND Timestamp >= (SELECT min(first) FROM recent) - to_seconds(?)
  ) USING (TraceKey, TraceId)
), matched AS (
  SELECT TraceId, TraceKey, epoch_ns(min(Timestamp)) AS first_ns, max(Duration) AS longest
  FROM otel_traces WHERE {where} GROUP BY TraceKey, TraceId
), marked AS (
  SELECT m.*, f.TraceKey IS NOT NULL AS in_flight FROM matched m LEFT JOIN flying f USING (TraceKey, TraceId)
)
"""
# The totals, then the page, in one row each (one row of totals alone for a page past the last
# one). A count(*) FILTER (...) OVER () for the totals took ~30 s over 375,000 traces, where
# count(*) OVER () takes ~60 ms.
_RANK = (
    _MATCHED
    + """, totals AS (
  SELECT count(*) FILTER (WHERE ? OR NOT in_flight) AS total, count(*) FILTER (WHERE in_flight) AS flying FROM marked
), page AS (
  SELECT * FROM marked WHERE ? OR NOT in_flight ORDER BY {order} {direction}, TraceKey, TraceId LIMIT ? OFFSET ?
)
SELECT total, flying, TraceId, TraceKey, first_ns, in_flight FROM totals LEFT JOIN page ON true
ORDER BY {order} {direction}, TraceKey, TraceId
"""
)
# The listener: an agent trace's plano(orchestrator) span (named after it, with
# selection.listener); the agents: agent_id of every span but plano(filter)'s (its agent_id is
# the filter's id).
_SUMMARY = f"""
SELECT TraceId,
       min(epoch_ns(Timestamp)) AS start_ns,
       max(epoch_ns(Timestamp) + Duration) - min(epoch_ns(Timestamp)) AS duration_ns,
       count(*) AS spans,
       count(Failure) AS errors,
       {", ".join(f"count(*) FILTER (WHERE Failure = '{c}')" for c in FAILURE_CLASSES)},
       coalesce(arg_min(ServiceName, Timestamp) FILTER (WHERE ParentSpanId = ''), arg_min(ServiceName, Timestamp)),
       coalesce(arg_min(SpanName, Timestamp) FILTER (WHERE ParentSpanId = ''), arg_min(SpanName, Timestamp)),
       bool_or(ParentSpanId = '') AS has_root,
       arg_min(coalesce(SelectionListener, SpanName), Timestamp) FILTER (WHERE ServiceName = 'plano(orchestrator)'),
       coalesce(list_sort(list(DISTINCT AgentId) FILTER (WHERE AgentId IS NOT NULL AND ServiceName <> 'plano(filter)')), []),
       list_sort(list(DISTINCT ServiceName)),
       coalesce(list_sort(list(DISTINCT LlmModel) FILTER (WHERE LlmModel IS NOT NULL)), []),
       sum(coalesce(TotalTokens, PromptTokens + CompletionTokens)),
       sum(CostUsd)
FROM (SELECT *, {FAILURE_CLASS} AS Failure FROM otel_traces
      WHERE TraceKey IN (SELECT unnest(?::UBIGINT[])) AND TraceId IN (SELECT unnest(?::VARCHAR[]))
        AND Timestamp > ? AND Timestamp <= ?)
GROUP BY TraceId, TraceKey
"""

# One aggregate per facet (grouping sets), each cut to its top values in DuckDB: grouping by all
# four columns together sent their cross product to Python (50,000 models: 50,000 rows).
_FACET_COLUMNS = ("ServiceName", "SpanName", "LlmModel", "AgentId", FAILURE_CLASS)
_FACETS_SQL = (
    "SELECT f, v, n FROM (SELECT "
    + "CASE "
    + " ".join(f"WHEN grouping({c}) = 0 THEN {i}" for i, c in enumerate(_FACET_COLUMNS))
    + f" END AS f, coalesce({', '.join(_FACET_COLUMNS)}) AS v, count(*) AS n FROM otel_traces"
    " WHERE Timestamp > ? AND Timestamp <= ?"
    f" GROUP BY GROUPING SETS ({', '.join(f'({c})' for c in _FACET_COLUMNS)}))"
    " WHERE v IS NOT NULL QUALIFY row_number() OVER (PARTITION BY f ORDER BY n DESC, v) <= ?"
)

# One trace, in two steps: the TraceKey scan finds when the trace's spans started (an integer
# column, ~12 ms at 10 M spans), then the spans are read from the row groups of that time only
# (zone maps), instead of decompressing every column wherever the key scan runs (~40 ms).
_TRACE_TIMES_SQL = "SELECT epoch_ns(min(Timestamp)), epoch_ns(max(Timestamp)) FROM otel_traces WHERE TraceKey = ?"
_OF_TRACE = (
    "WHERE Timestamp >= make_timestamp_ns(?) AND Timestamp <= make_timestamp_ns(?) AND TraceKey = ? AND TraceId = ?"
)
_TRACE_SQL = f"{SPAN_SELECT} {_OF_TRACE} ORDER BY Timestamp, SpanId"
_FAILED_SQL = (
    f"SELECT SpanId, {FAILURE_CLASS}, HttpStatusCode, StatusCode, StatusMessage FROM otel_traces {_OF_TRACE}"
    " ORDER BY Timestamp, SpanId"
)


def _ts_ns(ns: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=ns // 1000)


class DuckDBTraces:
    """``traces.TraceReads`` on a ``DuckDBStore``."""

    def __init__(self, store: DuckDBStore):
        self.store = store

    def rank(self, q: TraceSearch, in_flight_s: float, margin_s: int) -> list[tuple]:
        where, params = _where(q)
        flying = [_ts_ns(time.time_ns() - int(in_flight_s * 1e9)), margin_s]
        sql = _RANK.format(
            where=where,
            order="first_ns" if q.sort == "start" else "longest",
            direction="DESC" if q.descending else "ASC",
        )
        return self.store.read(sql, [*flying, *params, q.in_flight, q.in_flight, q.limit, q.offset])

    def summaries(self, ids: list[str], after_ns: int, until_ns: int) -> list[tuple]:
        keys = [trace_key(t) for t in ids]
        return self.store.read(_SUMMARY, [keys, ids, _ts_ns(after_ns), _ts_ns(until_ns)])

    def facets(self, start: float, end: float, limit: int) -> list[tuple]:
        return self.store.read(_FACETS_SQL, [naive_utc(start), naive_utc(end), limit])

    def _of_trace(self, sql: str, trace_id: str) -> list[tuple]:
        key = trace_key(trace_id)
        first, last = self.store.read(_TRACE_TIMES_SQL, [key])[0]
        return [] if first is None else self.store.read(sql, [first, last, key, trace_id])

    def spans(self, trace_id: str) -> list[tuple]:
        return self._of_trace(_TRACE_SQL, trace_id)

    def failed(self, trace_id: str) -> list[tuple]:
        return self._of_trace(_FAILED_SQL, trace_id)
