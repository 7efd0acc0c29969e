"""``/api/v1/traces``: the trace explorer's search, facets and one trace as OTLP/JSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from ...query.traces import (
    COST_SOURCES,
    IN_FLIGHT_S,
    MAX_ATTR_FILTERS,
    MAX_LIMIT,
    MAX_OFFSET,
    TraceSearch,
    facets,
    get_trace,
    parse_attribute,
    parse_duration_ms,
    search,
    trace_failures,
)
from ...store.schema import FAILURE_CLASSES
from ..deps import End, Start, StoreDep, time_range

router = APIRouter(tags=["traces"])


_CLASSES = ", ".join(FAILURE_CLASSES)
_FAILED = (
    "a span failed when its HTTP status (http.status_code, int or string) is >= 400, or it is a plano(llm) "
    "span named llm (failed before dispatch), or its status is ERROR"
)


class TraceSummary(BaseModel):
    trace_id: str
    start: float = Field(description="start of the trace's earliest span, unix seconds")
    duration_ms: float = Field(description="earliest span start to latest span end")
    span_count: int
    error_count: int = Field(description=f"spans that failed: {_FAILED}")
    failures: dict[str, int] = Field(
        description=f"failed spans per failure class ({_CLASSES}), every class present; they add up to error_count"
    )
    root_service: str = Field(description="service of the root span (the earliest span when the root is missing)")
    root_name: str
    has_root: bool = Field(description="false while the root span has not arrived")
    in_flight: bool = Field(
        description=f"no root yet and the newest span arrived less than {IN_FLIGHT_S:g} s ago (listed only with in_flight=true)"
    )
    listener: str | None = Field(
        description="the agent listener that took the request (its plano(orchestrator) span), for agent traces"
    )
    agents: list[str] = Field(description="agent_id of the agents the trace invoked")
    services: list[str]
    models: list[str] = Field(description="LLM models the trace called")
    tokens: int | None = Field(description="total LLM tokens, when the spans report usage")
    cost_usd: float | None


class TraceSearchResult(BaseModel):
    traces: list[TraceSummary]
    total: int = Field(description="matching traces in the range (all pages), those in flight only with in_flight=true")
    in_flight: int = Field(
        description="matching traces in flight: no root span yet, newest span less than "
        f"{IN_FLIGHT_S:g} s old (Plano exports a span when it ends, so a root arrives last)"
    )
    limit: int
    offset: int


class SpanFailure(BaseModel):
    class_: str = Field(alias="class", description=f"the failure class: {_CLASSES}")
    http_status_code: int | None
    reason: str = Field(description="why, for a person: HTTP 429 (rate limited), failed before dispatch (no model), …")


class FacetValue(BaseModel):
    value: str
    spans: int


@router.get("/traces", response_model=TraceSearchResult)
def find_traces(
    store: StoreDep,
    start: Start = None,
    end: End = None,
    service: Annotated[str | None, Query(description="service.name of a span, e.g. plano(llm)")] = None,
    name: Annotated[str | None, Query(description="span name")] = None,
    model: Annotated[str | None, Query(description="LLM model (llm.model or gen_ai.request.model)")] = None,
    agent: Annotated[str | None, Query(description="agent_id")] = None,
    errors: Annotated[bool, Query(description=f"only spans that failed ({_FAILED}), whatever the class")] = False,
    failure: Annotated[
        list[str],
        Query(description=f"only spans that failed with this class ({_CLASSES}); repeat for several"),
    ] = [],  # noqa: B006
    min_duration: Annotated[str | None, Query(description="span duration at least, e.g. 250ms, 1.5s")] = None,
    max_duration: Annotated[str | None, Query(description="span duration at most")] = None,
    attr: Annotated[
        list[str],
        Query(
            description="key=value (equal) or key (present), span or resource attribute; repeat for several "
            f"(at most {MAX_ATTR_FILTERS})"
        ),
    ] = [],  # noqa: B006
    trace_id: Annotated[str | None, Query(description="32 hex digits")] = None,
    llm: Annotated[
        bool,
        Query(description="only LLM calls: spans with a model or token counts, or plano(llm) spans"),
    ] = False,
    provider: Annotated[str | None, Query(description="LLM provider (llm.provider, gen_ai.provider.name)")] = None,
    route: Annotated[str | None, Query(description="plano.route.name")] = None,
    session: Annotated[
        str | None, Query(description="session (plano.session_id, gen_ai.conversation.id, session.id)")
    ] = None,
    quality: Annotated[str | None, Query(description="signals.quality: excellent, good, neutral, poor, severe")] = None,
    requested_model: Annotated[str | None, Query(description="the model the caller asked for")] = None,
    resolved_model: Annotated[str | None, Query(description="the model Plano sent the call to")] = None,
    cost: Annotated[
        str | None,
        Query(description=f"calls with a cost: {' or '.join(COST_SOURCES)} (the sender's, or planoscope's estimate)"),
    ] = None,
    flagged: Annotated[bool, Query(description="only the plano(llm) spans Plano flagged 🚩")] = False,
    sort: Annotated[str, Query(description="start or duration (of the whole trace)")] = "start",
    order: Annotated[str, Query(pattern="^(asc|desc)$", description="desc: newest or longest first")] = "desc",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    in_flight: Annotated[
        bool,
        Query(
            description=f"also list the traces whose root has not arrived while their newest span is under {IN_FLIGHT_S:g} s old"
        ),
    ] = False,
) -> dict:
    """Traces with a span that started in ``[start, end]`` and matches every filter given (as
    Jaeger searches: the filters hold on one span). Each row summarises the whole trace. Traces
    still in flight (no root yet, a span in the last seconds) are counted in ``in_flight`` and
    listed only with ``in_flight=true``."""
    start, end, _ = time_range(start, end)
    q = TraceSearch(
        start,
        end,
        service=service,
        name=name,
        model=model,
        agent=agent,
        errors_only=errors,
        failures=failure,
        min_duration_ms=None if min_duration is None else parse_duration_ms(min_duration, "min_duration"),
        max_duration_ms=None if max_duration is None else parse_duration_ms(max_duration, "max_duration"),
        attributes=[parse_attribute(a) for a in attr],
        trace_id=trace_id,
        llm_only=llm,
        llm={
            name: value
            for name, value in {
                "provider": provider,
                "route": route,
                "session": session,
                "quality": quality,
                "requested_model": requested_model,
                "resolved_model": resolved_model,
            }.items()
            if value is not None
        },
        cost=cost,
        flagged=flagged,
        sort=sort,
        descending=order == "desc",
        limit=limit,
        offset=offset,
        in_flight=in_flight,
    )
    return search(store, q)


@router.get("/traces/facets", response_model=dict[str, list[FacetValue]])
def trace_facets(store: StoreDep, start: Start = None, end: End = None) -> dict:
    """The values each search filter can take in the range (services, span names, models,
    agents, failure classes), most frequent first, for the search form's pickers."""
    return facets(store, *time_range(start, end)[:2])


@router.get(
    "/traces/{trace_id}",
    responses={
        200: {
            "description": "The trace as an OTLP/JSON ExportTraceServiceRequest: "
            "resourceSpans, scopeSpans, spans (hex ids, int64 as strings), attribute values typed as sent"
        }
    },
)
def trace(store: StoreDep, trace_id: Annotated[str, Path(description="32 hex digits")]) -> dict:
    """Every stored span of one trace, in the OTLP/JSON shape other tools consume, as it was sent:
    attribute values in their types (intValue, doubleValue, boolValue, arrayValue, kvlistValue,
    bytesValue), the resource and scope with their attributes, nothing added."""
    found = get_trace(store, trace_id)
    if found is None:
        raise HTTPException(404, f"no span of trace {trace_id.lower()} is stored")
    return found


@router.get("/traces/{trace_id}/failures", response_model=dict[str, SpanFailure], response_model_by_alias=True)
def failures(store: StoreDep, trace_id: Annotated[str, Path(description="32 hex digits")]) -> dict:
    """The failed spans of one trace, by span id, with their failure class and why (the trace
    view's marks): the same definition as the search's ``errors`` and ``failure`` filters. The
    trace itself (``GET /api/v1/traces/{trace_id}``) stays plain OTLP."""
    found = trace_failures(store, trace_id)
    if found is None:
        raise HTTPException(404, f"no span of trace {trace_id.lower()} is stored")
    return found
