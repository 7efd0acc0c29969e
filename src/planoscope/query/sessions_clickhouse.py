"""Sessions' SQL on ClickHouse (``sessions.SessionReads``): what ``sessions.py`` asks, as
ClickHouse queries over the collector exporter's ``otel_traces`` with planoscope's columns, every
value a server-side parameter (see ``traces_clickhouse.py``).

The calls take their trace's session and user (``sessions_duckdb._CALLS``) by a LEFT JOIN to the
traces' other spans that carry one (the donors: usually none or few, the join's hash table), in
one scan of the calls; a session's models and routes are gathered in the same aggregation as its
figures (ClickHouse runs a WITH subquery again wherever it is named: a second pass over the
calls for the page's lists would scan them twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store.clickhouse import SPANS
from ..store.schema import LLM_CALL
from .params import unix_ns

if TYPE_CHECKING:
    from ..store import SpanStore

ORDER = {  # as sessions_duckdb.ORDER
    "cost": "cost_usd DESC NULLS LAST, last_ns DESC, session_id",
    "last_seen": "last_ns DESC, session_id",
    "calls": "llm_calls DESC, last_ns DESC, session_id",
}
_CALL_COLUMNS = (
    "TraceKey, TraceId, SpanId, Timestamp, Duration, SessionId, UserId, LlmModel, RequestedModel, ResolvedModel,"
    " RouteName, PromptTokens, CompletionTokens, CachedInputTokens, CostUsd, EstimatedCostUsd, TimeToFirstTokenMs,"
    " HttpStatusCode, FailureClass, SignalsQuality, Flagged"
)
_RANGE = "Timestamp > fromUnixTimestamp64Nano({%s:Int64}) AND Timestamp <= fromUnixTimestamp64Nano({%s:Int64})"


def _calls(scope: str = "true", extra: str = "") -> str:
    """The LLM calls of ({start}, {end}] (within ``scope``), each with its ``session_id`` and
    ``user_id``: its own, else its trace's other spans' of ({lo}, {hi}]."""
    return f"""
WITH donors AS (
  SELECT TraceKey, TraceId, min(SessionId) AS donor_session, min(UserId) AS donor_user FROM {SPANS}
  WHERE {_RANGE % ("lo", "hi")} AND NOT {LLM_CALL} AND (SessionId IS NOT NULL OR UserId IS NOT NULL) AND {scope}
  GROUP BY TraceKey, TraceId
), calls AS (
  SELECT c.*, coalesce(c.SessionId, d.donor_session) AS session_id, coalesce(c.UserId, d.donor_user) AS user_id
  FROM (SELECT {_CALL_COLUMNS}{extra} FROM {SPANS} WHERE {_RANGE % ("start", "end")} AND {LLM_CALL} AND {scope}) AS c
  LEFT JOIN donors AS d ON d.TraceKey = c.TraceKey AND d.TraceId = c.TraceId
)
"""


_SESSIONS = (
    _calls()
    + """, sessions AS (
  SELECT session_id,
         toUnixTimestamp64Nano(min(Timestamp)) AS first_ns,
         max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration)) AS last_ns,
         count() AS llm_calls,
         arraySort(groupUniqArrayIf(assumeNotNull(coalesce(ResolvedModel, LlmModel)),
                                    coalesce(ResolvedModel, LlmModel) IS NOT NULL)) AS models,
         arraySort(groupUniqArrayIf(assumeNotNull(RouteName), RouteName IS NOT NULL)) AS routes,
         sum(PromptTokens) AS input_tokens,
         sum(CompletionTokens) AS output_tokens,
         sum(CachedInputTokens) AS cached_input_tokens,
         sum(coalesce(CostUsd, EstimatedCostUsd)) AS cost_usd,
         toBool(max(CostUsd IS NULL AND EstimatedCostUsd IS NOT NULL)) AS cost_estimated,
         countIf(FailureClass IS NOT NULL) AS failures,
         argMinIf(user_id, Timestamp, user_id IS NOT NULL) AS first_user
  FROM calls WHERE session_id IS NOT NULL GROUP BY session_id
)
"""
)
_LIST = (
    _SESSIONS
    + """SELECT session_id, first_ns, last_ns, llm_calls, models, routes, input_tokens, output_tokens,
       cached_input_tokens, cost_usd, cost_estimated, failures, first_user, count() OVER () AS total
FROM sessions WHERE %s ORDER BY %s LIMIT {limit:UInt32} OFFSET {offset:UInt64}
SETTINGS join_use_nulls = 1"""
)
_COUNT = _SESSIONS + "SELECT count() FROM sessions WHERE %s SETTINGS join_use_nulls = 1"

# One session (sessions_duckdb._SESSION_TIMES, _DETAIL): when the spans with its id ran, then the
# calls of their traces from that time, their margins around it.
_SESSION_TIMES = (
    "SELECT toUnixTimestamp64Nano(minOrNull(Timestamp)), maxOrNull(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration))"
    f" FROM {SPANS} WHERE SessionId = {{session:String}}"
)
_OF_SESSION = (
    f"TraceId IN (SELECT TraceId FROM {SPANS} WHERE Timestamp >= fromUnixTimestamp64Nano({{first:Int64}})"
    " AND Timestamp <= fromUnixTimestamp64Nano({last:Int64}) AND SessionId = {session:String})"
)
_DETAIL = (
    _calls(_OF_SESSION, ", SpanAttributes")
    + """SELECT TraceId, SpanId, toUnixTimestamp64Nano(Timestamp), coalesce(ResolvedModel, LlmModel), RequestedModel,
       ResolvedModel, RouteName, PromptTokens, CompletionTokens, CachedInputTokens, coalesce(CostUsd, EstimatedCostUsd),
       CostUsd IS NULL AND EstimatedCostUsd IS NOT NULL, TimeToFirstTokenMs, toInt64(Duration), HttpStatusCode,
       FailureClass, SignalsQuality, Flagged,
       if(mapContains(SpanAttributes, 'llm.user_message_preview'), SpanAttributes['llm.user_message_preview'], NULL),
       user_id
FROM calls WHERE session_id = {session:String} ORDER BY Timestamp, SpanId
SETTINGS join_use_nulls = 1"""
)


def _us(ns: int) -> int:
    return max(0, ns) // 1000 * 1000  # as sessions_duckdb's bounds, in microseconds


class ClickHouseSessions:
    """``sessions.SessionReads`` on a ``ClickHouseStore`` (its ``read``)."""

    def __init__(self, store: SpanStore):
        self.store = store

    def sessions(
        self, start: float, end: float, sort: str, limit: int, offset: int, user: str | None, margin_s: int
    ) -> tuple[list[tuple], int]:
        params = {
            "lo": unix_ns(max(0.0, start - margin_s)),
            "hi": unix_ns(end + margin_s),
            "start": unix_ns(start),
            "end": unix_ns(end),
            **({} if user is None else {"user": user}),
        }
        who = "true" if user is None else "first_user = {user:String}"
        rows = self.store.read(_LIST % (who, ORDER[sort]), {**params, "limit": limit, "offset": offset})
        if rows:
            return [r[:-1] for r in rows], rows[0][-1]
        return [], self.store.read(_COUNT % who, params)[0][0] if offset else 0

    def calls(self, session_id: str, margin_s: int) -> list[tuple]:
        first, last = self.store.read(_SESSION_TIMES, {"session": session_id})[0]
        if first is None:
            return []
        margin = margin_s * 10**9
        return self.store.read(
            _DETAIL,
            {
                "session": session_id,
                "first": first,
                "last": last,
                "lo": _us(first - margin),
                "hi": _us(last + margin),
                "start": _us(first - margin),
                "end": _us(last + margin),
            },
        )
