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

The parameters, their checks and the answers' shape are written once, here; the SQL is the
store's ``SessionReads`` (``sessions_duckdb.py``, ``sessions_clickhouse.py``), by its ``dialect``.
"""

from __future__ import annotations

from typing import Protocol

from ..store import SpanStore
from .params import QueryError, check_bounds
from .sessions_clickhouse import ClickHouseSessions
from .sessions_duckdb import ORDER, DuckDBSessions

# Each falls back on the others, then the id: a page never depends on the scan's order.
SORTS = tuple(ORDER)  # cost (costliest first), last_seen (most recent first), calls (most calls first)
MAX_LIMIT = 500
MAX_OFFSET = 1_000_000_000  # as the trace search's: beyond int64 DuckDB answers a 500
MAX_ID_CHARS = 1024
# The spans that give a trace its session start before its LLM calls (a root) or after them (a
# routing child): they are looked for this far beyond the calls' range (as the trace search's
# summaries reach beyond theirs, query/traces.py).
TRACE_MARGIN_S = 600


class SessionReads(Protocol):
    """What sessions ask a store (``sessions_duckdb.DuckDBSessions``,
    ``sessions_clickhouse.ClickHouseSessions``)."""

    def sessions(
        self, start: float, end: float, sort: str, limit: int, offset: int, user: str | None, margin_s: int
    ) -> tuple[list[tuple], int]:
        """The page of sessions with an LLM call in (start, end] (of ``user``'s only, if given),
        ordered by ``sort`` (one of SORTS), as ``_LIST_FIELDS`` rows, and how many there are in
        all; a call takes its session and user from its trace's other spans within ``margin_s``
        of the range when it has none of its own."""

    def calls(self, session_id: str, margin_s: int) -> list[tuple]:
        """The LLM calls of the session in time order (then span id), as ``_CALL_FIELDS`` rows:
        those of the traces of the spans that carry the session id,
        a call's session and user taken as in ``sessions``; [] when there is none."""


_READS: dict[str, type] = {"duckdb": DuckDBSessions, "clickhouse": ClickHouseSessions}


def reads(store: SpanStore) -> SessionReads:
    """Sessions' SQL for ``store``, by its ``dialect``."""
    return _READS[store.dialect](store)


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
    store: SpanStore,
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
    rows, total = reads(store).sessions(start, end, sort, limit, offset, user, TRACE_MARGIN_S)
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


def get_session(store: SpanStore, session_id: str) -> dict | None:
    """``{"session_id", "user_id", "calls": [...]}``, the calls in time order, or None when no
    call of the session is stored."""
    _check_session_id(session_id)
    rows = reads(store).calls(session_id, TRACE_MARGIN_S)
    if not rows:  # none stored, or the id is on spans whose traces hold no LLM call
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


def _usd(v: float | None) -> float | None:
    # Sums of doubles: 0.1 + 0.2 is 0.30000000000000004; no price has 10 decimals.
    return None if v is None else round(v, 10)
