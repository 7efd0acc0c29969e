"""The trace explorer's queries: find traces (``search``) and fetch one (``get_trace``), in the
OTLP/JSON shape other tools read (``otlp.to_otlp_json``).

A search follows Jaeger's semantics: a trace matches when **one of its spans** matches every
span filter given (service, span name, model, agent, status, duration, attributes) and started
in the searched range. Each result summarises the whole trace from its spans that started within
``TRACE_MARGIN_S`` of its earliest matching span.

A span failed as Plano means it (``schema.FAILURE_MACRO``: an HTTP status >= 400, an LLM call
that failed before dispatch, or status ERROR), with a class; ``errors_only`` and ``failures``
search on that, and the summaries count failed spans by it.

Plano exports children first (a span when it ends, batched every ~5 s), so the newest traces
have no root yet: a trace is *in flight* while no root span of it is stored and its newest span
arrived less than ``IN_FLIGHT_S`` ago. A search leaves such traces out unless asked
(``in_flight``), and says how many it left out.

A trace is looked up by its ``TraceKey`` (the id's last 8 bytes as an integer, see
``schema.LOOKUP_COLUMNS``), then its full id.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..store import DuckDBStore
from ..store.schema import FAILURE_CLASS, FAILURE_CLASSES, LLM_CALL, trace_key
from .otlp import SPAN_SELECT, to_otlp_json
from .params import QueryError, check_bounds, naive_utc

TRACE_MARGIN_S = 600  # spans of a matched trace up to 10 min outside the range count in its summary
MAX_LIMIT = 500
# Paging deeper than this is not browsing; beyond int64 it was a 500 from DuckDB.
MAX_OFFSET = 1_000_000_000
# Each attribute filter is a JSON look-up per span scanned: 2,000 of them took ~5 s a query and,
# looped by four clients, cut ingest by 45 %.
MAX_ATTR_FILTERS = 20
# Durations are int64 nanoseconds: a bound above this cannot be compared with any span.
MAX_DURATION_MS = (2**63 - 1) / 1e6
SORTS = ("start", "duration")
COST_SOURCES = ("sent", "estimated")  # the cost filter: the calls with a cost the sender sent, or an estimated one
# The LLM Usage panels' drill-downs: each filter is a typed column equal to the value.
LLM_FILTERS = {
    "provider": "LlmProvider",
    "route": "RouteName",
    "session": "SessionId",
    "quality": "SignalsQuality",
    "requested_model": "RequestedModel",
    "resolved_model": "ResolvedModel",
}
# Plano's exporters flush every ~5 s, and a root ends (so is exported) soon after its last child:
# a root not there 30 s after the newest span of its trace arrived is not on its way (a direct
# LLM call whose parent is the client's own span, or a lost export). A trace is in flight until then.
IN_FLIGHT_S = 30.0

_HEX_ID = re.compile(r"[0-9a-fA-F]{32}")
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h)?\s*")
_DURATION_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3, None: 1.0}


def parse_trace_id(text: str) -> str:
    """A trace id as stored: 32 lowercase hex digits, not all zero (OTLP's invalid id)."""
    if not _HEX_ID.fullmatch(text or ""):
        raise QueryError(f"trace id {text!r} is not 32 hex digits")
    if set(text) == {"0"}:
        raise QueryError("the all-zero trace id is invalid (OTLP)")
    return text.lower()


def parse_duration_ms(text: str, what: str = "duration") -> float:
    """``"250ms"``, ``"1.5s"``, ``"2m"``, ``"300us"``; a bare number is milliseconds."""
    m = _DURATION.fullmatch(text or "")
    if not m:
        raise QueryError(f"{what} {text[:40]!r} is not a duration such as 250ms, 1.5s or 2m")
    return float(m.group(1)) * _DURATION_MS[m.group(2)]  # inf from 400 digits: TraceSearch.check refuses it


def parse_attribute(text: str) -> tuple[str, str | None]:
    """``key=value`` (the attribute has this value) or ``key`` (the attribute is present). Any
    key can be looked up, quotes, backslashes and dots included (see ``schema.ATTR_MACRO``)."""
    key, eq, value = (text or "").partition("=")
    key = key.strip()
    if not key:
        raise QueryError(f"attr filter {text[:40]!r} has no key: write key=value or key")
    return key, (value if eq else None)


@dataclass
class TraceSearch:
    """What to find; every field but the range is optional. Durations are in ms."""

    start: float
    end: float
    service: str | None = None
    name: str | None = None
    model: str | None = None
    agent: str | None = None
    errors_only: bool = False  # spans that failed, whatever the class
    failures: list[str] = field(default_factory=list)  # spans that failed with one of these classes
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    trace_id: str | None = None
    llm_only: bool = False  # spans that are LLM calls (schema.LLM_CALL)
    llm: dict[str, str] = field(default_factory=dict)  # LLM_FILTERS: {"route": "code_generation", ...}
    cost: str | None = None  # COST_SOURCES
    flagged: bool = False  # plano(llm) spans Plano flagged (a span name ending in 🚩)
    sort: str = "start"
    descending: bool = True
    limit: int = 20
    offset: int = 0
    in_flight: bool = False  # include the traces whose root has not arrived yet (see IN_FLIGHT_S)

    def check(self) -> None:
        check_bounds(self.start, self.end)
        if self.sort not in SORTS:
            raise QueryError(f"sort must be one of {', '.join(SORTS)}, not {self.sort!r}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise QueryError(f"offset must be between 0 and {MAX_OFFSET}")
        if len(self.attributes) > MAX_ATTR_FILTERS:
            raise QueryError(f"at most {MAX_ATTR_FILTERS} attr filters, got {len(self.attributes)}")
        for what, ms in (("min_duration", self.min_duration_ms), ("max_duration", self.max_duration_ms)):
            if ms is not None and not 0 <= ms <= MAX_DURATION_MS:
                raise QueryError(f"{what} must be at most {MAX_DURATION_MS / 3_600_000:.0f}h (int64 nanoseconds)")
        lo, hi = self.min_duration_ms, self.max_duration_ms
        if lo is not None and hi is not None and hi < lo:
            raise QueryError(f"max duration ({hi} ms) is below min duration ({lo} ms)")
        if self.trace_id is not None:
            self.trace_id = parse_trace_id(self.trace_id)
        for name in self.llm:
            if name not in LLM_FILTERS:
                raise QueryError(f"no LLM filter {name[:40]!r}: one of {', '.join(LLM_FILTERS)}")
        if self.cost is not None and self.cost not in COST_SOURCES:
            raise QueryError(f"cost must be one of {', '.join(COST_SOURCES)}, not {self.cost[:40]!r}")
        for f in self.failures:
            if f not in FAILURE_CLASSES:
                raise QueryError(f"failure {f[:40]!r} is not a failure class: one of {', '.join(FAILURE_CLASSES)}")

    def span_filter(self) -> tuple[str, list]:
        """SQL (ANDed conditions on one span) and its parameters."""
        conds, params = ["Timestamp > ?", "Timestamp <= ?"], [naive_utc(self.start), naive_utc(self.end)]
        for column, value in (
            ("ServiceName", self.service),
            ("SpanName", self.name),
            ("LlmModel", self.model),
            ("AgentId", self.agent),
        ):
            if value is not None:
                conds.append(f"{column} = ?")
                params.append(value)
        for name, value in self.llm.items():
            conds.append(f"{LLM_FILTERS[name]} = ?")
            params.append(value)
        if self.llm_only:
            conds.append(LLM_CALL)
        if self.cost is not None:
            conds.append("CostUsd IS NOT NULL" if self.cost == "sent" else "EstimatedCostUsd IS NOT NULL")
        if self.flagged:
            conds.append("Flagged")
        if self.failures:
            conds.append(f"{FAILURE_CLASS} IN ({', '.join('?' * len(self.failures))})")
            params += self.failures
        elif self.errors_only:
            conds.append(f"{FAILURE_CLASS} IS NOT NULL")
        if self.min_duration_ms is not None:
            conds.append("Duration >= ?")
            params.append(_ns(self.min_duration_ms))
        if self.max_duration_ms is not None:
            conds.append("Duration <= ?")
            params.append(_ns(self.max_duration_ms))
        for key, value in self.attributes:
            if value is None:  # present, whatever its value
                conds.append("(has_attr(SpanAttributes, ?) OR has_attr(ResourceAttributes, ?))")
                params += [key, key]
                continue
            # Equal as text (how a user types it), or as numbers: 2 is the double 2.0, which the
            # store's JSON renders "2.0", and 1e21 is "1e+21".
            lookup = "coalesce(attr(SpanAttributes, ?), attr(ResourceAttributes, ?))"
            conds.append(f"({lookup} = ? OR TRY_CAST({lookup} AS DOUBLE) = TRY_CAST(? AS DOUBLE))")
            params += [key, key, value, key, key, value]
        if self.trace_id is not None:
            conds.append("TraceKey = ? AND TraceId = ?")
            params += [trace_key(self.trace_id), self.trace_id]
        return " AND ".join(conds), params


def _ns(ms: float) -> int:
    return min(round(ms * 1e6), 2**63 - 1)  # MAX_DURATION_MS in float rounds up to 2**63


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
SELECT TraceId, TraceKey,
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
_RESULT_FIELDS = (
    "trace_id",
    "start_ns",
    "duration_ns",
    "span_count",
    "error_count",
    *(f"failures.{c}" for c in FAILURE_CLASSES),
    "root_service",
    "root_name",
    "has_root",
    "listener",
    "agents",
    "services",
    "models",
    "tokens",
    "cost_usd",
)


def search(store: DuckDBStore, q: TraceSearch) -> dict:
    """``{"traces": [summary, ...], "total": matching traces, "in_flight": matching traces in
    flight, "limit", "offset"}``.

    ``sort="start"`` orders traces by their earliest matching span (newest first unless
    ``q.descending`` is false), ``sort="duration"`` by their longest matching span: with a
    filter such as ``service=plano(llm)`` the slowest LLM calls, without one the longest roots.
    The traces in flight count in ``in_flight``; they are in ``traces`` and ``total`` only
    with ``q.in_flight``."""
    q.check()
    where, params = q.span_filter()
    flying = [_ts_ns(time.time_ns() - int(IN_FLIGHT_S * 1e9)), TRACE_MARGIN_S]
    ranked = store.query(
        _RANK.format(
            where=where,
            order="first_ns" if q.sort == "start" else "longest",
            direction="DESC" if q.descending else "ASC",
        ),
        [*flying, *params, q.in_flight, q.in_flight, q.limit, q.offset],
    )
    total, in_flight = ranked[0][:2]
    if ranked[0][2] is None:  # no trace on this page
        return {"traces": [], "total": total, "in_flight": in_flight, "limit": q.limit, "offset": q.offset}
    ids, keys, first = [r[2] for r in ranked], [r[3] for r in ranked], [r[4] for r in ranked]
    flying_ids = {r[2] for r in ranked if r[5]}
    margin_ns = TRACE_MARGIN_S * 10**9
    rows = store.query(_SUMMARY, [keys, ids, _ts_ns(min(first) - margin_ns), _ts_ns(max(first) + margin_ns)])
    position = {trace_id: i for i, trace_id in enumerate(ids)}
    rows.sort(key=lambda r: position[r[0]])
    traces = []
    for trace_id, _key, *values in rows:
        t = dict(zip(_RESULT_FIELDS, [trace_id, *values]))
        t["failures"] = {c: t.pop(f"failures.{c}") for c in FAILURE_CLASSES}
        t["start"] = t.pop("start_ns") / 1e9
        t["duration_ms"] = t.pop("duration_ns") / 1e6
        t["in_flight"] = trace_id in flying_ids
        if t["cost_usd"] is not None:
            t["cost_usd"] = round(t["cost_usd"], 10)
        traces.append(t)
    return {"traces": traces, "total": total, "in_flight": in_flight, "limit": q.limit, "offset": q.offset}


def _ts_ns(ns: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=ns // 1000)


FACETS = {
    "service": "ServiceName",
    "name": "SpanName",
    "model": "LlmModel",
    "agent": "AgentId",
    "failure": FAILURE_CLASS,
}
MAX_FACET_VALUES = 200
# One aggregate per facet (grouping sets), each cut to its top values in DuckDB: grouping by all
# four columns together sent their cross product to Python (50,000 models: 50,000 rows).
_FACETS_SQL = (
    "SELECT f, v, n FROM (SELECT "
    + "CASE "
    + " ".join(f"WHEN grouping({c}) = 0 THEN {i}" for i, c in enumerate(FACETS.values()))
    + f" END AS f, coalesce({', '.join(FACETS.values())}) AS v, count(*) AS n FROM otel_traces"
    " WHERE Timestamp > ? AND Timestamp <= ?"
    f" GROUP BY GROUPING SETS ({', '.join(f'({c})' for c in FACETS.values())}))"
    " WHERE v IS NOT NULL QUALIFY row_number() OVER (PARTITION BY f ORDER BY n DESC, v) <= ?"
)


def facets(store: DuckDBStore, start: float, end: float) -> dict[str, list[dict]]:
    """``{filter: [{"value", "spans"}, ...]}``: the values of each search filter in the range,
    most frequent first (at most ``MAX_FACET_VALUES`` each); ``failure``: the failed spans per class."""
    rows = store.query(_FACETS_SQL, [naive_utc(start), naive_utc(end), MAX_FACET_VALUES])
    out: dict[str, list[dict]] = {name: [] for name in FACETS}
    names = list(FACETS)
    for f, v, n in sorted(rows, key=lambda r: (r[0], -r[2], r[1])):
        out[names[f]].append({"value": v, "spans": n})
    return out


# --- why a trace's spans failed ---------------------------------------------------------------

# Every span of the trace, in the two steps of get_trace (its time by TraceKey, then its rows).
_FAILED_SQL = f"""
SELECT SpanId, {FAILURE_CLASS}, HttpStatusCode, StatusCode, StatusMessage FROM otel_traces
WHERE Timestamp >= make_timestamp_ns(?) AND Timestamp <= make_timestamp_ns(?) AND TraceKey = ? AND TraceId = ?
ORDER BY Timestamp, SpanId
"""
_HTTP_REASONS = {"429": "rate limited", "4xx": "client error", "5xx": "server error"}


def failure_reason(failure: str, http_status_code: int | None, status_code: str, status_message: str) -> str:
    """Why a span of class ``failure`` failed, for a person: ``HTTP 429 (rate limited)``,
    ``failed before dispatch (no model)``, ``status ERROR: upstream timeout``."""
    error = f"status ERROR: {status_message}" if status_message else "status ERROR"
    if failure in _HTTP_REASONS:
        http = f"HTTP {http_status_code} ({_HTTP_REASONS[failure]})"
        return f"{http}; {error}" if status_code == "Error" else http
    if failure == "before_dispatch":
        return "failed before dispatch (no model)"
    return error


def trace_failures(store: DuckDBStore, trace_id: str) -> dict[str, dict] | None:
    """``{span_id: {"class", "http_status_code", "reason"}}`` for the failed spans of trace
    ``trace_id`` (none: {}), or None when no span of it is stored. What the trace view marks."""
    trace_id = parse_trace_id(trace_id)
    key = trace_key(trace_id)
    first, last = store.query(_TRACE_TIMES_SQL, [key])[0]
    rows = [] if first is None else store.query(_FAILED_SQL, [first, last, key, trace_id])
    if not rows:  # none stored, or only another trace with the same key
        return None
    return {
        span_id: {"class": failure, "http_status_code": http, "reason": failure_reason(failure, http, status, message)}
        for span_id, failure, http, status, message in rows
        if failure is not None
    }


# --- one trace ------------------------------------------------------------------------------

# Two steps: the TraceKey scan finds when the trace's spans started (an integer column, ~12 ms
# at 10 M spans), then the spans are read from the row groups of that time only (zone maps),
# instead of decompressing every column wherever the key scan runs (~40 ms).
_TRACE_TIMES_SQL = "SELECT epoch_ns(min(Timestamp)), epoch_ns(max(Timestamp)) FROM otel_traces WHERE TraceKey = ?"
_TRACE_SQL = (
    f"{SPAN_SELECT} WHERE Timestamp >= make_timestamp_ns(?) AND Timestamp <= make_timestamp_ns(?)"
    " AND TraceKey = ? AND TraceId = ? ORDER BY Timestamp, SpanId"
)


def get_trace(store: DuckDBStore, trace_id: str) -> dict | None:
    """Trace ``trace_id`` in the OTLP/JSON shape, or None when no span of it is stored."""
    trace_id = parse_trace_id(trace_id)
    key = trace_key(trace_id)
    first, last = store.query(_TRACE_TIMES_SQL, [key])[0]
    if first is None:
        return None
    rows = store.query(_TRACE_SQL, [first, last, key, trace_id])  # none: another trace has the key
    return to_otlp_json(rows) if rows else None
