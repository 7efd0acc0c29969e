"""``/api/v1/dashboards``, ``/api/v1/panels`` and ``/api/v1/dashboard``: the dashboards of
``query/dashboards.py`` and their panels, evaluated on the store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from ...query.dashboards import BY_ID, DASHBOARD_BY_ID, DASHBOARDS, DEFAULT_DASHBOARD
from ...query.evaluate import evaluate, evaluate_all
from ...query.panels import ScrapedRate, drilldown
from ..deps import End, MaxSeriesDep, ScraperDep, Start, Step, StoreDep, time_range

router = APIRouter(tags=["dashboard"])


class DashboardInfo(BaseModel):
    id: str = Field(description="requests-overview or llm-usage")
    title: str
    panels: list[str] = Field(description="its panels' ids, in layout order (GET /api/v1/panels/{id})")
    source: str = Field(description="builtin: declared in planoscope")


class MeasureInfo(BaseModel):
    id: str = Field(description="the value of the series label measure")
    title: str
    unit: str


class PanelInfo(BaseModel):
    id: str
    dashboard: str = Field(description="the dashboard it is on")
    title: str
    unit: str = Field(
        description="Grafana unit id (reqps, ms, short, percentunit, currencyUSD) or Grafana custom unit (suffix: tok/s)"
    )
    kind: str = Field(description="timeseries or stat")
    display: str = Field(description="how a stat panel is drawn: tiles, bars or table")
    measures: list[MeasureInfo] = Field(
        description="series told apart by their label measure: a stat table's columns besides the main value, "
        "or a timeseries' lines on the right-hand axis"
    )
    grid: tuple[int, int, int, int] = Field(description="x, y, w, h on a 24-column grid")
    description: str
    color: str | None
    promql: list[str] = Field(description="what the reference stack's Grafana panel queries")
    source: str = Field(description="spans, or scrape: the panel shows scraped samples (see /api/v1/targets)")
    drilldown: dict | None = Field(
        description="how a point or series maps to a trace search (GET /api/v1/traces): "
        "filters for every series, `labels`: the filter that takes the value of each series label, "
        "`series`: per-series filters by name, `unset`: per label, the filters standing for its empty value; "
        "`sort`; `failed`: the filters to add to open only the failed calls"
    )


class Series(BaseModel):
    name: str
    labels: dict[str, str]
    points: list[tuple[float, float]] = Field(description="[unix seconds, value] pairs")


class Truncated(BaseModel):
    shown: int = Field(description="groups drawn as their own series (the setting max_series_per_panel)")
    total: int = Field(description="groups in the range; the ones not shown are summed in the series named other")
    label: str = Field(description="the label the series are grouped by, e.g. llm_model")
    other: str = Field(
        description="how the rest is drawn: summed (rates, counts, sums), together (the quantiles of all their "
        "spans or calls together), none (not drawn: the costliest sessions)"
    )


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
    truncated: Truncated | None = Field(
        None,
        description="present when the panel has more groups than it draws: the top ones by value, the rest "
        'as one series named other (label other="true"): summed, or for latency the quantiles of their spans',
    )


class Dashboard(BaseModel):
    dashboard: str = Field(description="the dashboard's id")
    title: str
    start: float
    end: float
    step: float
    spans_stored: int = Field(description="All spans in the store, whatever the range (0: nothing received yet)")
    panels: list[PanelData]


def _targets(scraper: ScraperDep) -> list[str]:
    return [t.label for t in scraper.targets] if scraper else []


DashboardId = Annotated[
    str | None,
    Query(alias="id", description=f"a dashboard's id (GET /api/v1/dashboards); default {DEFAULT_DASHBOARD}"),
]


def _dashboard(dashboard_id: str | None):
    found = DASHBOARD_BY_ID.get(dashboard_id or DEFAULT_DASHBOARD)
    if found is None:
        raise HTTPException(404, f"no dashboard {dashboard_id[:100]!r}; GET /api/v1/dashboards lists them")
    return found


@router.get("/dashboards", response_model=list[DashboardInfo])
def list_dashboards() -> list[dict]:
    """The dashboards, in the top bar's order: Requests Overview, LLM Usage."""
    return [{"id": d.id, "title": d.title, "panels": [p.id for p in d.panels], "source": d.source} for d in DASHBOARDS]


@router.get("/panels", response_model=list[PanelInfo])
def list_panels(
    dashboard: Annotated[
        str | None, Query(description="only this dashboard's panels (default: every dashboard's)")
    ] = None,
) -> list[dict]:
    """The panels of every dashboard (or of one), each dashboard's in layout order."""
    dashboards = [_dashboard(dashboard)] if dashboard is not None else DASHBOARDS
    return [
        {
            "id": p.id,
            "dashboard": d.id,
            "title": p.title,
            "unit": p.unit,
            "kind": p.kind,
            "display": p.display,
            "measures": [{"id": m.id, "title": m.title, "unit": m.unit} for m in p.measures],
            "grid": p.grid,
            "description": p.description,
            "color": p.color,
            "promql": [t.expr for t in p.targets],
            "source": "scrape" if isinstance(p.query, ScrapedRate) else "spans",
            "drilldown": drilldown(p),
        }
        for d in dashboards
        for p in d.panels
    ]


@router.get("/panels/{panel_id}", response_model=PanelData, response_model_exclude_none=True)
def panel(
    store: StoreDep,
    scraper: ScraperDep,
    max_series: MaxSeriesDep,
    panel_id: Annotated[str, Path(description="e.g. llm_requests_per_second")],
    start: Start = None,
    end: End = None,
    step: Step = None,
) -> dict:
    """One panel's series over ``[start, end]``; a stat panel has one point per series, at ``end``."""
    if panel_id not in BY_ID:
        raise HTTPException(404, f"no panel {panel_id[:100]!r}; GET /api/v1/panels lists them")
    return evaluate(store, BY_ID[panel_id], *time_range(start, end, step), _targets(scraper), max_series)


@router.get("/dashboard", response_model=Dashboard, response_model_exclude_none=True)
def dashboard(
    store: StoreDep,
    scraper: ScraperDep,
    max_series: MaxSeriesDep,
    start: Start = None,
    end: End = None,
    step: Step = None,
    dashboard_id: DashboardId = None,
) -> dict:
    """Every panel of a dashboard over one range: what the UI asks for on each refresh."""
    board = _dashboard(dashboard_id)
    start, end, step = time_range(start, end, step)
    panels = evaluate_all(store, list(board.panels), start, end, step, _targets(scraper), max_series)
    return {
        "dashboard": board.id,
        "title": board.title,
        "start": start,
        "end": end,
        "step": step,
        "spans_stored": store.span_count(),
        "panels": panels,
    }
