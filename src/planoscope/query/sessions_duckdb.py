"""Sessions' SQL on DuckDB (``sessions.SessionReads``): what ``sessions.py`` asks, as DuckDB
queries over the span table. ``sessions_clickhouse.py`` is the same on ClickHouse."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..store.schema import llm_call
from .params import naive_utc

if TYPE_CHECKING:
    from ..store import DuckDBStore

LLM_CALL = llm_call()
_NOT_LLM_CALL = f"NOT {LLM_CALL}"
ORDER = {
    "cost": "cost_usd DESC NULLS LAST, last_ns DESC, session_id",
    "last_seen": "last_ns DESC, session_id",
    "calls": "llm_calls DESC, last_ns DESC, session_id",
}

# The LLM calls of the range ($start, $end], each with its session and user: its own, else its
# trace's other spans' (``donors``, from $lo to $hi). The calls of traces without such a span
# (Plano's: its session id is on the plano(llm) span) and those of traces with one are two scans
# put together, so that the usual case costs no join: the anti-join and the join build their hash
# tables from the donors, usually none or few. (A LEFT JOIN of every call to its trace's spans took
# ~200 ms over 1.43 M spans in range, as many as 24 h of a 10 M-span week; this takes ~70 ms.)
# ``{scope}`` narrows every scan (to a session's traces), ``{extra}`` adds columns.
_CALL_COLUMNS = (
    "TraceKey, TraceId, SpanId, Timestamp, Duration, SessionId, UserId, LlmModel, RequestedModel, ResolvedModel,"
    " RouteName, PromptTokens, CompletionTokens, CachedInputTokens, CostUsd, EstimatedCostUsd, TimeToFirstTokenMs,"
    " HttpStatusCode, FailureClass, SignalsQuality, Flagged"
)
_C = ", ".join(f"c.{col.strip()}" for col in _CALL_COLUMNS.split(","))
_IS_CALL = f"c.Timestamp > $start AND c.Timestamp <= $end AND {llm_call('c.')}"
_CALLS = f"""
WITH donors AS (
  SELECT TraceKey, TraceId, min(SessionId) AS session_id, min(UserId) AS user_id FROM otel_traces
  WHERE Timestamp > $lo AND Timestamp <= $hi AND {_NOT_LLM_CALL} AND (SessionId IS NOT NULL OR UserId IS NOT NULL)
    AND {{scope}}
  GROUP BY TraceKey, TraceId
), calls AS (
  SELECT {_C}{{extra}}, c.SessionId AS session_id, c.UserId AS user_id FROM otel_traces c
  WHERE {_IS_CALL} AND {{scope_c}}
    AND NOT EXISTS (SELECT 1 FROM donors d WHERE d.TraceKey = c.TraceKey AND d.TraceId = c.TraceId)
  UNION ALL
  SELECT {_C}{{extra}}, coalesce(c.SessionId, d.session_id), coalesce(c.UserId, d.user_id)
  FROM otel_traces c JOIN donors d ON d.TraceKey = c.TraceKey AND d.TraceId = c.TraceId
  WHERE {_IS_CALL} AND {{scope_c}}
)
"""

# A session's figures over its calls of the range; the page's, then their models and routes
# (lists of distinct values cost ~0.2 us a call: for the page's sessions only). Each row of the
# page has the total of all pages (count(*) OVER (), as the trace search counts); a page past
# the last has no row, and the total is counted apart (_COUNT).
_SESSIONS = (
    _CALLS
    + """, sessions AS (
  SELECT session_id,
         epoch_ns(min(Timestamp)) AS first_ns,
         max(epoch_ns(Timestamp) + Duration) AS last_ns,
         count(*) AS llm_calls,
         sum(PromptTokens) AS input_tokens,
         sum(CompletionTokens) AS output_tokens,
         sum(CachedInputTokens) AS cached_input_tokens,
         sum(coalesce(CostUsd, EstimatedCostUsd)) AS cost_usd,
         bool_or(CostUsd IS NULL AND EstimatedCostUsd IS NOT NULL) AS cost_estimated,
         count(FailureClass) AS failures,
         arg_min(user_id, Timestamp) FILTER (WHERE user_id IS NOT NULL) AS user_id
  FROM calls WHERE session_id IS NOT NULL GROUP BY session_id
)
"""
)
_LIST = (
    _SESSIONS
    + """, page AS (
  SELECT *, count(*) OVER () AS total FROM sessions WHERE {user} ORDER BY {order} LIMIT $limit OFFSET $offset
), lists AS (
  SELECT session_id,
         coalesce(list_sort(list(DISTINCT coalesce(ResolvedModel, LlmModel))
                  FILTER (WHERE coalesce(ResolvedModel, LlmModel) IS NOT NULL)), []) AS models,
         coalesce(list_sort(list(DISTINCT RouteName) FILTER (WHERE RouteName IS NOT NULL)), []) AS routes
  FROM calls SEMI JOIN page USING (session_id) GROUP BY session_id
)
SELECT session_id, first_ns, last_ns, llm_calls, models, routes, input_tokens, output_tokens,
       cached_input_tokens, cost_usd, cost_estimated, failures, user_id, total
FROM page JOIN lists USING (session_id) ORDER BY {order}
"""
)
_COUNT = _SESSIONS + "SELECT count(*) FROM sessions WHERE {user}"
# Two steps, as a trace is read (query/traces.py): when the spans carrying the session id
# started (a scan of one dictionary-compressed column: ~12 ms over 10 M spans), then the calls of
# their traces from the row groups of that time only (zone maps on Timestamp).
_SESSION_TIMES = (
    "SELECT epoch_ns(min(Timestamp)), max(epoch_ns(Timestamp) + Duration) FROM otel_traces WHERE SessionId = $session"
)
_TRACES_OF_SESSION = (
    "(SELECT TraceKey FROM otel_traces WHERE Timestamp >= $first AND Timestamp <= $last AND SessionId = $session)"
)
_DETAIL = (
    _CALLS
    + """
SELECT TraceId, SpanId, epoch_ns(Timestamp), coalesce(ResolvedModel, LlmModel), RequestedModel, ResolvedModel,
       RouteName, PromptTokens, CompletionTokens, CachedInputTokens, coalesce(CostUsd, EstimatedCostUsd),
       CostUsd IS NULL AND EstimatedCostUsd IS NOT NULL, TimeToFirstTokenMs, Duration, HttpStatusCode, FailureClass,
       SignalsQuality, Flagged, attr(SpanAttributes, 'llm.user_message_preview'), user_id
FROM calls WHERE session_id = $session ORDER BY Timestamp, SpanId
"""
).format(
    scope=f"TraceKey IN {_TRACES_OF_SESSION}",
    scope_c=f"c.TraceKey IN {_TRACES_OF_SESSION}",
    extra=", c.SpanAttributes",
)


class DuckDBSessions:
    """``sessions.SessionReads`` on a ``DuckDBStore``."""

    def __init__(self, store: DuckDBStore):
        self.store = store

    def sessions(
        self, start: float, end: float, sort: str, limit: int, offset: int, user: str | None, margin_s: int
    ) -> tuple[list[tuple], int]:
        parts = {"scope": "true", "scope_c": "true", "extra": "", "user": "true" if user is None else "user_id = $user"}
        params = {
            "lo": naive_utc(max(0.0, start - margin_s)),
            "hi": naive_utc(end + margin_s),
            "start": naive_utc(start),
            "end": naive_utc(end),
            **({} if user is None else {"user": user}),
        }
        rows = self.store.read(_LIST.format(order=ORDER[sort], **parts), {**params, "limit": limit, "offset": offset})
        if rows:
            return [r[:-1] for r in rows], rows[0][-1]
        return [], self.store.read(_COUNT.format(**parts), params)[0][0] if offset else 0

    def calls(self, session_id: str, margin_s: int) -> list[tuple]:
        first, last = self.store.read(_SESSION_TIMES, {"session": session_id})[0]
        if first is None:
            return []
        margin = margin_s * 10**9
        return self.store.read(
            _DETAIL,
            {
                "session": session_id,
                "first": _at_ns(first),
                "last": _at_ns(last + 999),  # a datetime holds microseconds
                "lo": _at_ns(first - margin),
                "hi": _at_ns(last + margin),
                "start": _at_ns(first - margin),
                "end": _at_ns(last + margin),
            },
        )


def _at_ns(ns: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=max(0, ns) // 1000)
