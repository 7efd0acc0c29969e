"""``/api/v1/sessions``: conversations of LLM calls (``plano.session_id``, ``gen_ai.conversation.id``,
``session.id``), listed over a range and read turn by turn."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from ...query.sessions import MAX_LIMIT, MAX_OFFSET, SORTS, get_session, list_sessions
from ...store.schema import FAILURE_CLASSES
from ..deps import End, Start, StoreDep, time_range

router = APIRouter(tags=["sessions"])

_COST = (
    "USD: the cost the sender sent (llm.usage.total_cost_usd, …) or, for a call with tokens and no sent cost, "
    "the price table's estimate; null when neither is known"
)
_ESTIMATED = "true when some of cost_usd is estimated from the price table rather than sent"


class SessionSummary(BaseModel):
    session_id: str
    first_seen: float = Field(description="start of the session's first LLM call in the range, unix seconds")
    last_seen: float = Field(description="end of its last LLM call in the range, unix seconds")
    llm_calls: int
    models: list[str] = Field(description="models called (the resolved model when the router changed it)")
    routes: list[str] = Field(description="plano.route.name of its calls")
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    cost_usd: float | None = Field(description=_COST)
    cost_estimated: bool = Field(description=_ESTIMATED)
    failures: int = Field(description=f"calls that failed (classes {', '.join(FAILURE_CLASSES)})")
    user_id: str | None = Field(description="plano.distinct_id or user.id of its first call that has one")


class SessionList(BaseModel):
    sessions: list[SessionSummary]
    total: int = Field(description="sessions in the range (all pages)")
    limit: int
    offset: int


class SessionCall(BaseModel):
    trace_id: str
    span_id: str
    start: float = Field(description="unix seconds")
    model: str | None = Field(description="the model that answered (resolved); null when it failed before dispatch")
    requested_model: str | None = Field(description="the model the client asked for")
    resolved_model: str | None = Field(description="the model an alias or the router resolved it to")
    route: str | None = Field(description="plano.route.name")
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    cost_usd: float | None = Field(description=_COST)
    cost_estimated: bool = Field(description="true when cost_usd is the price table's estimate")
    ttft_ms: float | None = Field(description="time to first token")
    duration_ms: float
    status_code: int | None = Field(description="HTTP status of the call")
    failure_class: str | None = Field(description=f"{', '.join(FAILURE_CLASSES)}; null when it did not fail")
    signals_quality: str | None = Field(description="signals.quality: excellent, good, neutral, poor, severe")
    flagged: bool | None = Field(description="Plano flagged the call's signals as concerning (🚩)")
    user_message_preview: str | None = Field(
        description="llm.user_message_preview: the user message's first 50 characters"
    )


class Session(BaseModel):
    session_id: str
    user_id: str | None
    calls: list[SessionCall] = Field(description="its LLM calls in time order")


_SORT = "cost: costliest first; last_seen: most recent first; calls: most LLM calls first"


@router.get("/sessions", response_model=SessionList)
def sessions(
    store: StoreDep,
    start: Start = None,
    end: End = None,
    sort: Annotated[str, Query(description=f"one of {', '.join(SORTS)} ({_SORT})")] = "cost",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    user: Annotated[
        str | None, Query(description="only the sessions of this user (plano.distinct_id, user.id)")
    ] = None,
) -> dict:
    """The sessions with an LLM call that started in ``[start, end]``, each summed over those
    calls: tokens, cost (sent plus estimated; ``cost_estimated`` when part of it is estimated),
    failures, models and routes. A call without a session id of its own belongs to its trace's
    session (other senders set it on one span of the trace)."""
    start, end, _ = time_range(start, end)
    return list_sessions(store, start, end, sort=sort, limit=limit, offset=offset, user=user)


@router.get("/sessions/{session_id:path}", response_model=Session)
def session(store: StoreDep, session_id: Annotated[str, Path(description="the session id, URL-encoded")]) -> dict:
    """One session's LLM calls in time order, each with its model, route, tokens, cost, time to
    first token, duration, status, failure class, signals quality, the user message preview and
    its trace (``/api/v1/traces/{trace_id}``). 404 when no call of it is stored."""
    found = get_session(store, session_id)
    if found is None:
        raise HTTPException(404, f"no LLM call of session {session_id[:200]!r} is stored")
    return found
