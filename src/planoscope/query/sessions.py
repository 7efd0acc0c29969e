"""Sessions: conversations of LLM calls, listed over a range (``list_sessions``) and read turn
by turn (``get_session``).

A session is a ``SessionId`` (Plano's ``plano.session_id``: the ``x-model-affinity`` value or
``implicit:<16 hex>``; ``gen_ai.conversation.id`` and OpenInference's ``session.id`` from other
senders), a user a ``UserId`` (``plano.distinct_id``, ``user.id``). Its calls are LLM calls
(``LLM_CALL``). Plano sets the session id on each ``plano(llm)`` span itself; a sender may set it
on another span of the trace only (OpenInference: the root ``CHAIN`` span, the token counts on an
``LLM`` child; a routing span), so a call without a session id or user of its own takes its
trace's: those of the trace's spans that are not LLM calls (the smallest when they disagree). A
session's user is its first call's that has one.

Costs: ``cost_usd`` is what the calls cost, as sent (``CostUsd``) or, for a call with tokens and
no sent cost, as estimated from the price table at ingest (``EstimatedCostUsd``); a session's
``cost_estimated`` says that part of it is estimated, never mixed silently.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..store import DuckDBStore
from ..store.schema import llm_call
from .params import QueryError, check_bounds, naive_utc

LLM_CALL = llm_call()
_NOT_LLM_CALL = f"NOT {LLM_CALL}"
SORTS = {
    # Each falls back on the others, then the id: a page never depends on the scan's order.
    "cost": "cost_usd DESC NULLS LAST, last_ns DESC, session_id",
    "last_seen": "last_ns DESC, session_id",
    "calls": "llm_calls DESC, last_ns DESC, session_id",
}
MAX_LIMIT = 500
MAX_OFFSET = 1_000_000_000  # as the trace search's: beyond int64 DuckDB answers a 500
MAX_ID_CHARS = 1024
# The spans that give a trace its session start before its LLM calls (a root) or after them (a
# routing child): they are looked for this far beyond the calls' range (as the trace search's
# summaries reach beyond theirs, query/traces.py).
TRACE_MARGIN_S = 600

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
_LIST_FIELDS = (
    "session_id",
    "first_ns",
    "last_ns",
    "llm_calls",
    "models",
    "routes",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "cost_estimated",
    "failures",
    "user_id",
)


def _check_session_id(session_id: str) -> None:
    if not session_id or len(session_id) > MAX_ID_CHARS:
        raise QueryError(f"a session id is 1 to {MAX_ID_CHARS} characters")


def list_sessions(
    store: DuckDBStore,
    start: float,
    end: float,
    sort: str = "cost",
    limit: int = 50,
    offset: int = 0,
    user: str | None = None,
) -> dict:
    """``{"sessions": [...], "total", "limit", "offset"}``: the sessions with an LLM call that
    started in ``(start, end]``, their figures over those calls; ``sort`` is ``cost`` (costliest
    first), ``last_seen`` (most recent first) or ``calls`` (most calls first); ``user`` keeps the
    sessions of that user. Raises ``QueryError`` for a bad parameter."""
    check_bounds(start, end)
    if sort not in SORTS:
        raise QueryError(f"sort must be one of {', '.join(SORTS)}, not {sort[:40]!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
    if not 0 <= offset <= MAX_OFFSET:
        raise QueryError(f"offset must be between 0 and {MAX_OFFSET}")
    if user is not None and not user:
        raise QueryError("user must not be empty")
    parts = {"scope": "true", "scope_c": "true", "extra": "", "user": "true" if user is None else "user_id = $user"}
    params = {
        "lo": naive_utc(max(0.0, start - TRACE_MARGIN_S)),
        "hi": naive_utc(end + TRACE_MARGIN_S),
        "start": naive_utc(start),
        "end": naive_utc(end),
        **({} if user is None else {"user": user}),
    }
    rows = store.query(_LIST.format(order=SORTS[sort], **parts), {**params, "limit": limit, "offset": offset})
    if rows:
        total = rows[0][-1]
    else:
        total = store.query(_COUNT.format(**parts), params)[0][0] if offset else 0
    sessions = []
    for row in rows:
        s = dict(zip(_LIST_FIELDS, row))
        s["first_seen"] = s.pop("first_ns") / 1e9
        s["last_seen"] = s.pop("last_ns") / 1e9
        s["cost_usd"] = _usd(s["cost_usd"])
        s["cost_estimated"] = bool(s["cost_estimated"])
        sessions.append(s)
    return {"sessions": sessions, "total": total, "limit": limit, "offset": offset}


# --- one session --------------------------------------------------------------------------

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
_CALL_FIELDS = (
    "trace_id",
    "span_id",
    "start_ns",
    "model",
    "requested_model",
    "resolved_model",
    "route",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "cost_estimated",
    "ttft_ms",
    "duration_ns",
    "status_code",
    "failure_class",
    "signals_quality",
    "flagged",
    "user_message_preview",
    "user_id",
)


def get_session(store: DuckDBStore, session_id: str) -> dict | None:
    """``{"session_id", "user_id", "calls": [...]}``, the calls in time order, or None when no
    call of the session is stored."""
    _check_session_id(session_id)
    first, last = store.query(_SESSION_TIMES, {"session": session_id})[0]
    if first is None:
        return None
    margin = TRACE_MARGIN_S * 10**9
    rows = store.query(
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
    if not rows:  # the id is on spans whose traces hold no LLM call
        return None
    calls, user = [], None
    for row in rows:
        c = dict(zip(_CALL_FIELDS, row))
        c["start"] = c.pop("start_ns") / 1e9
        c["duration_ms"] = c.pop("duration_ns") / 1e6
        c["cost_usd"] = _usd(c["cost_usd"])
        c["cost_estimated"] = bool(c["cost_estimated"])
        user = user or c["user_id"]
        del c["user_id"]
        calls.append(c)
    return {"session_id": session_id, "user_id": user, "calls": calls}


def _at_ns(ns: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=max(0, ns) // 1000)


def _usd(v: float | None) -> float | None:
    # Sums of doubles: 0.1 + 0.2 is 0.30000000000000004; no price has 10 decimals.
    return None if v is None else round(v, 10)
