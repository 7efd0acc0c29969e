"""The trace explorer's SQL on ClickHouse (``traces.TraceReads``): what ``traces.py`` asks, as
ClickHouse queries over the collector exporter's ``otel_traces`` with planoscope's MATERIALIZED
columns (``store/clickhouse_columns.py``), every value a server-side parameter (``SQL``).

Where the rows differ from DuckDB's: ids are hex with '' for a root's parent (as on DuckDB),
``Timestamp`` is a ``DateTime64(9)`` (ranges are given in nanoseconds), ``Duration`` is unsigned,
attribute sets are ``Map(String, String)`` of string forms, read back typed through
``AttributeTypes`` (``clickhouse_rows.attribute_sets``) and handed to ``otlp.to_otlp_json`` in the
DuckDB store's JSON form, so that a trace is the same OTLP/JSON on both stores. A stock
collector's row has no types: its values are strings, as the collector stored them.

A trace is found by the exporter's own look-up table (``otel_traces_trace_id_ts``: each trace's
first and last start per insert, ordered by TraceId), then read from the partitions of that
time with the TraceId bloom filter, as the exporter's readers (Grafana's plugin) do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store.attributes import set_json
from ..store.clickhouse import SPANS
from ..store.clickhouse_rows import attribute_sets
from ..store.schema import FAILURE_CLASSES, LLM_CALL
from .params import unix_ns

if TYPE_CHECKING:
    from ..store import SpanStore
    from .traces import TraceSearch

TRACE_TIMES = "{db:Identifier}.{otel_traces_trace_id_ts:Identifier}"


class SQL:
    """A query's server-side parameters: ``add(value, type)`` keeps the value and gives its
    placeholder, ``{p0:String}``, for the text; nothing the user gives is written into the text."""

    def __init__(self, **named):
        self.params: dict[str, object] = dict(named)

    def add(self, value: object, ch_type: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return "{" + name + ":" + ch_type + "}"


def _where(q: TraceSearch, p: SQL) -> str:
    """``traces_duckdb._where`` on ClickHouse: ANDed conditions on one span."""
    conds = [
        f"Timestamp > fromUnixTimestamp64Nano({p.add(unix_ns(q.start), 'Int64')})",
        f"Timestamp <= fromUnixTimestamp64Nano({p.add(unix_ns(q.end), 'Int64')})",
    ]
    conds += [f"{column} = {p.add(value, 'String')}" for column, value in q.equal_columns()]
    if q.llm_only:
        conds.append(LLM_CALL)
    if q.cost is not None:
        conds.append("CostUsd IS NOT NULL" if q.cost == "sent" else "EstimatedCostUsd IS NOT NULL")
    if q.flagged:
        conds.append("Flagged")
    if q.failures:
        conds.append(f"FailureClass IN {p.add(q.failures, 'Array(String)')}")
    elif q.errors_only:
        conds.append("FailureClass IS NOT NULL")
    if q.min_duration_ns is not None:
        conds.append(f"Duration >= {p.add(q.min_duration_ns, 'UInt64')}")
    if q.max_duration_ns is not None:
        conds.append(f"Duration <= {p.add(q.max_duration_ns, 'UInt64')}")
    for key, value in q.attributes:
        k = p.add(key, "String")
        # A missing key reads '' from a map: the key must be there (the span's, else the resource's).
        present = f"(mapContains(SpanAttributes, {k}) OR mapContains(ResourceAttributes, {k}))"
        if value is None:
            conds.append(present)
            continue
        v = p.add(value, "String")
        # Equal as text, or as numbers (the map holds 2.0 as "2" and 1e21 as "1e+21").
        lookup = f"if(mapContains(SpanAttributes, {k}), SpanAttributes[{k}], ResourceAttributes[{k}])"
        conds.append(f"({present} AND ({lookup} = {v} OR toFloat64OrNull({lookup}) = toFloat64OrNull({v})))")
    if q.trace_id is not None:
        conds.append(f"TraceId = {p.add(q.trace_id, 'String')}")
    return " AND ".join(conds)


# The traces in flight (traces_duckdb._MATCHED): a span ingested since {in_flight_ms} ago (by
# ClickHouse's clock, which stamped IngestedAt), no root among those, and no root stored from
# {margin_s} before their first start. A CTE is a subquery ClickHouse runs where it is named.
_FLYING = f"""
WITH recent AS (
  SELECT TraceKey, TraceId, min(Timestamp) AS first_start FROM {SPANS}
  WHERE IngestedAt > now64(6) - toIntervalMillisecond({{in_flight_ms:UInt64}})
  GROUP BY TraceKey, TraceId HAVING NOT max(ParentSpanId = '')
), rootless AS (
  SELECT TraceKey, TraceId FROM recent WHERE (TraceKey, TraceId) NOT IN (
    SELECT TraceKey, TraceId FROM {SPANS} WHERE ParentSpanId = ''
      AND Timestamp >= (SELECT minOrNull(first_start) FROM recent) - toIntervalSecond({{margin_s:UInt32}})
  )
)
"""
_MARKED = """
SELECT TraceId, TraceKey, toUnixTimestamp64Nano(min(Timestamp)) AS first_ns, max(Duration) AS longest,
       (TraceKey, TraceId) IN (SELECT TraceKey, TraceId FROM rootless) AS in_flight,
       {in_flight:Bool} OR NOT in_flight AS listed
FROM %s WHERE %s GROUP BY TraceKey, TraceId
"""
# The totals beside each trace of the page (count() OVER () before the page is cut); a page
# past the last one has no row, and the totals are counted apart.
_RANK = (
    _FLYING
    + """SELECT total, flying, TraceId, TraceKey, first_ns, in_flight FROM (
  SELECT *, countIf(listed) OVER () AS total, countIf(in_flight) OVER () AS flying FROM (%s)
) WHERE listed ORDER BY %s, TraceKey, TraceId LIMIT {limit:UInt32} OFFSET {offset:UInt64}"""
)
_TOTALS = _FLYING + "SELECT countIf(listed), countIf(in_flight) FROM (%s)"

_SUMMARY = f"""
SELECT TraceId,
       toUnixTimestamp64Nano(min(Timestamp)),
       max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration)) - toUnixTimestamp64Nano(min(Timestamp)),
       count(),
       countIf(FailureClass IS NOT NULL),
       {", ".join(f"countIf(FailureClass = '{c}')" for c in FAILURE_CLASSES)},
       if(max(ParentSpanId = ''), argMinIf(ServiceName, Timestamp, ParentSpanId = ''), argMin(ServiceName, Timestamp)),
       if(max(ParentSpanId = ''), argMinIf(SpanName, Timestamp, ParentSpanId = ''), argMin(SpanName, Timestamp)),
       toBool(max(ParentSpanId = '')),
       if(countIf(ServiceName = 'plano(orchestrator)') > 0,
          argMinIf(coalesce(SelectionListener, SpanName), Timestamp, ServiceName = 'plano(orchestrator)'), NULL),
       arraySort(groupUniqArrayIf(assumeNotNull(AgentId), AgentId IS NOT NULL AND ServiceName != 'plano(filter)')),
       arraySort(groupUniqArray(ServiceName)),
       arraySort(groupUniqArrayIf(assumeNotNull(LlmModel), LlmModel IS NOT NULL)),
       sum(coalesce(TotalTokens, PromptTokens + CompletionTokens)),
       sum(CostUsd)
FROM {SPANS}
WHERE TraceId IN {{ids:Array(String)}}
  AND Timestamp > fromUnixTimestamp64Nano({{after:Int64}}) AND Timestamp <= fromUnixTimestamp64Nano({{until:Int64}})
GROUP BY TraceId
"""
assert all("'" not in c for c in FAILURE_CLASSES)

# Every facet's values from one scan: each span gives one (facet, value) pair per facet.
_FACETS_SQL = f"""
SELECT tupleElement(fv, 1) AS f, tupleElement(fv, 2) AS v, count() AS n FROM {SPANS}
ARRAY JOIN [{", ".join(f"(toUInt8({i}), CAST({c} AS Nullable(String)))" for i, c in enumerate(("ServiceName", "SpanName", "LlmModel", "AgentId", "FailureClass")))}] AS fv
WHERE Timestamp > fromUnixTimestamp64Nano({{start:Int64}}) AND Timestamp <= fromUnixTimestamp64Nano({{end:Int64}})
  AND v IS NOT NULL
GROUP BY f, v ORDER BY f, n DESC, v LIMIT {{limit:UInt32}} BY f
"""

# One trace: its time from the look-up table (DateTime, whole seconds: one more each side), then
# its spans of that time, by the id's bloom filter. No row there: no span of the trace.
_OF_TRACE = f"""
WHERE TraceId = {{trace_id:String}}
  AND Timestamp >= (SELECT minOrNull(Start) - 1 FROM {TRACE_TIMES} WHERE TraceId = {{trace_id:String}})
  AND Timestamp < (SELECT maxOrNull(End) + 2 FROM {TRACE_TIMES} WHERE TraceId = {{trace_id:String}})
ORDER BY Timestamp, SpanId
"""
# The columns ``span_row`` reads (the trace view's, forwarding's).
SPAN_SELECT = (
    "SELECT toUnixTimestamp64Nano(Timestamp), TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind,"
    " ServiceName, ScopeName, ScopeVersion, toInt64(Duration), StatusCode, StatusMessage,"
    " arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`), `Events.Name`,"
    " `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, AttributeTypes,"
    " mapKeys(ResourceAttributes), mapValues(ResourceAttributes), mapKeys(ScopeAttributes), mapValues(ScopeAttributes),"
    " mapKeys(SpanAttributes), mapValues(SpanAttributes),"
    " arrayMap(m -> mapKeys(m), `Events.Attributes`), arrayMap(m -> mapValues(m), `Events.Attributes`),"
    " arrayMap(m -> mapKeys(m), `Links.Attributes`), arrayMap(m -> mapValues(m), `Links.Attributes`)"
    f" FROM {SPANS}"
)
_SPANS_SQL = f"{SPAN_SELECT} {_OF_TRACE}"
_FAILED_SQL = f"SELECT SpanId, FailureClass, HttpStatusCode, StatusCode, StatusMessage FROM {SPANS} {_OF_TRACE}"


def span_row(row: tuple) -> tuple:
    """A row of ``SPAN_SELECT`` as the DuckDB store's ``otlp.SPAN_SELECT`` row: the attribute sets
    as its JSON (typed by AttributeTypes), events and links as its structs."""
    head, (scope, version, duration, status, message) = row[:8], row[8:13]  # start ns to ServiceName
    event_ts, event_names, link_traces, link_spans, link_states, types = row[13:19]
    rk, rv, sk, sv, pk, pv, ek, ev, lk, lv = row[19:]
    pairs = [list(zip(rk, rv)), list(zip(sk, sv)), list(zip(pk, pv))]
    pairs += [list(zip(k, v)) for k, v in zip(ek, ev)] + [list(zip(k, v)) for k, v in zip(lk, lv)]
    resource, scope_attrs, span_attrs, *rest = [set_json(kvs) for kvs in attribute_sets(types, pairs)]
    events = [{"Name": n, "Attributes": a} for n, a in zip(event_names, rest[: len(event_names)])]
    links = [
        {"TraceId": t, "SpanId": s, "TraceState": ts, "Attributes": a}
        for t, s, ts, a in zip(link_traces, link_spans, link_states, rest[len(event_names) :])
    ]
    return (
        *head,
        resource,
        scope,
        version,
        span_attrs,
        duration,
        status,
        message,
        events,
        links,
        scope_attrs,
        event_ts,
    )


class ClickHouseTraces:
    """``traces.TraceReads`` on a ``ClickHouseStore`` (its ``read``)."""

    def __init__(self, store: SpanStore):
        self.store = store

    def rank(self, q: TraceSearch, in_flight_s: float, margin_s: int) -> list[tuple]:
        p = SQL(in_flight_ms=int(in_flight_s * 1000), margin_s=margin_s, in_flight=q.in_flight)
        marked = _MARKED % (SPANS, _where(q, p))
        order = f"{'first_ns' if q.sort == 'start' else 'longest'} {'DESC' if q.descending else 'ASC'}"
        rows = self.store.read(_RANK % (marked, order), {**p.params, "limit": q.limit, "offset": q.offset})
        if rows:
            return rows
        total, flying = self.store.read(_TOTALS % marked, p.params)[0]
        return [(total, flying, None, None, None, None)]

    def summaries(self, ids: list[str], after_ns: int, until_ns: int) -> list[tuple]:
        return self.store.read(_SUMMARY, {"ids": ids, "after": after_ns, "until": until_ns})

    def facets(self, start: float, end: float, limit: int) -> list[tuple]:
        return self.store.read(_FACETS_SQL, {"start": unix_ns(start), "end": unix_ns(end), "limit": limit})

    def spans(self, trace_id: str) -> list[tuple]:
        return [span_row(r) for r in self.store.read(_SPANS_SQL, {"trace_id": trace_id})]

    def failed(self, trace_id: str) -> list[tuple]:
        return self.store.read(_FAILED_SQL, {"trace_id": trace_id})
