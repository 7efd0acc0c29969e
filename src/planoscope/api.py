"""The JSON query API under ``/api/v1`` (OpenAPI at ``/docs``): the panels of ``panels.py``
evaluated on the store. Other tools rely on these shapes; see DESIGN.md's query API contract."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from .panels import BY_ID, PANELS, ScrapedRate, drilldown
from .query import (QueryError, check_bounds, default_step, evaluate, evaluate_all, scraped_metrics, scraped_rate,
                    scraped_samples)
from .scraper import Scraper
from .store import DuckDBStore
from .traces import (MAX_LIMIT, TraceSearch, facets, get_trace, parse_attribute,
                     parse_duration_ms, search)


class PanelInfo(BaseModel):
    id: str
    title: str
    unit: str = Field(description="Grafana unit id: reqps, ms, short")
    kind: str = Field(description="timeseries or stat")
    grid: tuple[int, int, int, int] = Field(description="x, y, w, h on a 24-column grid")
    description: str
    color: str | None
    promql: list[str] = Field(description="what the reference stack's Grafana panel queries")
    source: str = Field(description="spans, or scrape: the panel shows scraped samples (see /api/v1/targets)")
    drilldown: dict | None = Field(description="how a point or series maps to a trace search (GET /api/v1/traces): "
                                               "filters for every series, plus the filter `by` taking the value of "
                                               "series label `label`, or per-series filters `series`; `sort`")


class Series(BaseModel):
    name: str
    labels: dict[str, str]
    points: list[tuple[float, float]] = Field(description="[unix seconds, value] pairs")


class PanelData(BaseModel):
    id: str
    title: str
    unit: str
    kind: str
    start: float
    end: float
    step: float
    series: list[Series]
    notice: str | None = Field(None, description="why the panel has no data, when it cannot have any")


class Dashboard(BaseModel):
    start: float
    end: float
    step: float
    spans_stored: int = Field(description="All spans in the store, whatever the range (0: nothing received yet)")
    panels: list[PanelData]


class TargetHealth(BaseModel):
    label: str
    url: str
    up: bool | None = Field(description="whether the last scrape succeeded; null before the first")
    last_scrape: float | None = Field(description="start of the last scrape, unix seconds")
    last_duration_s: float | None
    last_error: str | None = Field(description="why the last scrape failed; null when it succeeded")
    samples_last_scrape: int
    scrapes: int
    failures: int


class ScrapedMetric(BaseModel):
    name: str
    series: int = Field(description="distinct (target, labels) series stored")
    last_sample: float = Field(description="unix seconds")


class MetricData(BaseModel):
    metric: str
    start: float
    end: float
    step: float | None = None
    series: list[Series]


class TraceSummary(BaseModel):
    trace_id: str
    start: float = Field(description="start of the trace's earliest span, unix seconds")
    duration_ms: float = Field(description="earliest span start to latest span end")
    span_count: int
    error_count: int = Field(description="spans with status Error")
    root_service: str = Field(description="service of the root span (the earliest span when the root is missing)")
    root_name: str
    has_root: bool = Field(description="false while the root span has not arrived")
    services: list[str]
    models: list[str] = Field(description="LLM models the trace called")
    tokens: int | None = Field(description="total LLM tokens, when the spans report usage")
    cost_usd: float | None


class TraceSearchResult(BaseModel):
    traces: list[TraceSummary]
    total: int = Field(description="matching traces in the range (all pages)")
    limit: int
    offset: int


class FacetValue(BaseModel):
    value: str
    spans: int


Start = Annotated[float | None, Query(description="Range start, unix seconds. Default: end - 1 h.")]
End = Annotated[float | None, Query(description="Range end, unix seconds. Default: now.")]
Step = Annotated[float | None, Query(gt=0, description="Seconds between points. Default: ~250 points over the range.")]


def _range(start: float | None, end: float | None, step: float | None) -> tuple[float, float, float]:
    end = time.time() if end is None else end
    start = end - 3600 if start is None else start
    try:
        check_bounds(start, end)
    except QueryError as e:
        raise HTTPException(400, str(e)) from None
    return start, end, step or default_step(start, end)


def create_api(store: DuckDBStore, scraper: Scraper | None = None) -> APIRouter:
    """The ``/api/v1`` router over ``store`` (and the scrape targets' health from ``scraper``)."""
    api = APIRouter(prefix="/api/v1", tags=["dashboard"])
    targets = [t.label for t in scraper.targets] if scraper else []

    def run(panel_id: str, start: float, end: float, step: float) -> dict:
        try:
            return evaluate(store, BY_ID[panel_id], start, end, step, targets)
        except QueryError as e:
            raise HTTPException(400, str(e)) from None

    @api.get("/panels", response_model=list[PanelInfo])
    def list_panels() -> list[dict]:
        """The dashboard's panels, in layout order."""
        return [
            {"id": p.id, "title": p.title, "unit": p.unit, "kind": p.kind, "grid": p.grid,
             "description": p.description, "color": p.color, "promql": [t.expr for t in p.targets],
             "source": "scrape" if isinstance(p.query, ScrapedRate) else "spans", "drilldown": drilldown(p)}
            for p in PANELS
        ]

    @api.get("/panels/{panel_id}", response_model=PanelData, response_model_exclude_none=True)
    def panel(panel_id: Annotated[str, Path(description="e.g. llm_requests_per_second")],
              start: Start = None, end: End = None, step: Step = None) -> dict:
        """One panel's series over ``[start, end]``; a stat panel has one point per series, at ``end``."""
        if panel_id not in BY_ID:
            raise HTTPException(404, f"no panel {panel_id!r}; GET /api/v1/panels lists them")
        return run(panel_id, *_range(start, end, step))

    @api.get("/dashboard", response_model=Dashboard, response_model_exclude_none=True)
    def dashboard(start: Start = None, end: End = None, step: Step = None) -> dict:
        """Every panel over one range: what the UI asks for on each refresh."""
        start, end, step = _range(start, end, step)
        try:
            panels = evaluate_all(store, list(PANELS), start, end, step, targets)
        except QueryError as e:
            raise HTTPException(400, str(e)) from None
        return {"start": start, "end": end, "step": step, "spans_stored": store.span_count(), "panels": panels}

    @api.get("/targets", response_model=list[TargetHealth], tags=["scraping"])
    def scrape_targets() -> list[dict]:
        """Health of every scrape target (``--scrape``): up, last scrape, its duration and error."""
        return scraper.health() if scraper else []

    @api.get("/metrics", response_model=list[ScrapedMetric], tags=["scraping"])
    def list_metrics() -> list[dict]:
        """The scraped metric names held in the store."""
        return scraped_metrics(store)

    def known(name: str) -> None:
        if not store.query("SELECT 1 FROM samples WHERE MetricName = ? LIMIT 1", [name]):
            raise HTTPException(404, f"no samples of {name!r} stored; GET /api/v1/metrics lists the metrics")

    @api.get("/metrics/{name}/rate", response_model=MetricData, tags=["scraping"])
    def metric_rate(name: str, start: Start = None, end: End = None, step: Step = None) -> dict:
        """Per-second rate of a scraped counter, counter resets handled (see the README)."""
        start, end, step = _range(start, end, step)
        known(name)
        try:
            series = scraped_rate(store, name, start, end, step)
        except QueryError as e:
            raise HTTPException(400, str(e)) from None
        return {"metric": name, "start": start, "end": end, "step": step, "series": series}

    @api.get("/metrics/{name}/samples", response_model=MetricData, tags=["scraping"])
    def metric_samples(name: str, start: Start = None, end: End = None) -> dict:
        """The stored samples of a scraped metric in ``(start, end]``, as scraped."""
        start, end, _ = _range(start, end, None)
        known(name)
        try:
            series = scraped_samples(store, name, start, end)
        except QueryError as e:
            raise HTTPException(400, str(e)) from None
        return {"metric": name, "start": start, "end": end, "series": series}

    @api.get("/traces", response_model=TraceSearchResult, tags=["traces"])
    def find_traces(
        start: Start = None, end: End = None,
        service: Annotated[str | None, Query(description="service.name of a span, e.g. plano(llm)")] = None,
        name: Annotated[str | None, Query(description="span name")] = None,
        model: Annotated[str | None, Query(description="LLM model (llm.model or gen_ai.request.model)")] = None,
        agent: Annotated[str | None, Query(description="agent_id")] = None,
        errors: Annotated[bool, Query(description="only spans with status Error")] = False,
        min_duration: Annotated[str | None, Query(description="span duration at least, e.g. 250ms, 1.5s")] = None,
        max_duration: Annotated[str | None, Query(description="span duration at most")] = None,
        attr: Annotated[list[str], Query(description="key=value (equal) or key (present), span or resource "
                                                      "attribute; repeat for several")] = [],  # noqa: B006
        trace_id: Annotated[str | None, Query(description="32 hex digits")] = None,
        sort: Annotated[str, Query(description="start or duration (of the whole trace)")] = "start",
        order: Annotated[str, Query(pattern="^(asc|desc)$", description="desc: newest or longest first")] = "desc",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict:
        """Traces with a span that started in ``[start, end]`` and matches every filter given (as
        Jaeger searches: the filters hold on one span). Each row summarises the whole trace."""
        start, end, _ = _range(start, end, None)
        try:
            q = TraceSearch(
                start, end, service=service, name=name, model=model, agent=agent, errors_only=errors,
                min_duration_ms=None if min_duration is None else parse_duration_ms(min_duration, "min_duration"),
                max_duration_ms=None if max_duration is None else parse_duration_ms(max_duration, "max_duration"),
                attributes=[parse_attribute(a) for a in attr], trace_id=trace_id, sort=sort,
                descending=order == "desc", limit=limit, offset=offset)
            return search(store, q)
        except QueryError as e:
            raise HTTPException(400, str(e)) from None

    @api.get("/traces/facets", response_model=dict[str, list[FacetValue]], tags=["traces"])
    def trace_facets(start: Start = None, end: End = None) -> dict:
        """The values each search filter can take in the range (services, span names, models,
        agents), most frequent first, for the search form's pickers."""
        return facets(store, *_range(start, end, None)[:2])

    @api.get("/traces/{trace_id}", tags=["traces"],
             responses={200: {"description": "The trace as an OTLP/JSON ExportTraceServiceRequest: "
                                             "resourceSpans, scopeSpans, spans (hex ids, int64 as strings)"}})
    def trace(trace_id: Annotated[str, Path(description="32 hex digits")]) -> dict:
        """Every stored span of one trace, in the OTLP/JSON shape other tools consume. Attribute
        values come back as strings (they are stored as the ClickHouse exporter stores them)."""
        try:
            found = get_trace(store, trace_id)
        except QueryError as e:
            raise HTTPException(400, str(e)) from None
        if found is None:
            raise HTTPException(404, f"no span of trace {trace_id.lower()} is stored")
        return found

    return api
