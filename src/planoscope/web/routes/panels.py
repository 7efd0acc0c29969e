"""``/api/v1/dashboards``, ``/api/v1/panels`` and ``/api/v1/dashboard``: the server's dashboards
(``query/dashboards.py``'s native ones, evaluated on the store; Grafana ones, whose PromQL the
engine evaluates over the stored samples: ``grafana/render.py``) and their panels."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from ...grafana.render import evaluate_promql
from ...promql import Engine
from ...query.dashboards import DEFAULT_DASHBOARD, Dashboards
from ...query.evaluate import evaluate_all
from ...query.panels import Panel, PromQL, ScrapedRate, drilldown
from ..deps import DashboardsDep, End, Start, Step, StoreDep, promql_series, time_range

router = APIRouter(tags=["dashboard"])


class DashboardInfo(BaseModel):
    id: str = Field(description="requests-overview, llm-usage, brightstaff, or a --dashboard file's")
    title: str
    panels: list[str] = Field(description="its panels' ids, in layout order (GET /api/v1/panels/{id})")
    source: str = Field(
        description="builtin: declared in planoscope; grafana: a Grafana dashboard shipped with it "
        "(Plano's brightstaff dashboard); file:PATH: a --dashboard file. The last two are PromQL."
    )


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
    kind: str = Field(description="timeseries, stat, or row (a Grafana row's heading, no data)")
    display: str = Field(description="how a stat panel is drawn: tiles, bars or table")
    measures: list[MeasureInfo] = Field(
        description="series told apart by their label measure: a stat table's columns besides the main value, "
        "or a timeseries' lines on the right-hand axis"
    )
    grid: tuple[int, int, int, int] = Field(description="x, y, w, h on a 24-column grid")
    description: str
    color: str | None
    thresholds: list[tuple[float | None, str]] = Field(
        description="a stat's colour by value: [from, colour] steps as Grafana's absolute thresholds, "
        "the first from null"
    )
    promql: list[str] = Field(
        description="what the reference stack's Grafana panel queries; a PromQL panel: what it draws"
    )
    legends: list[str] = Field(description="each PromQL target's legendFormat, as Grafana's")
    source: str = Field(
        description="spans; scrape: the panel shows scraped samples (see /api/v1/targets); "
        "promql: its targets' PromQL over the stored samples"
    )
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


DashboardId = Annotated[
    str | None,
    Query(alias="id", description=f"a dashboard's id (GET /api/v1/dashboards); default {DEFAULT_DASHBOARD}"),
]


def _dashboard(dashboards: Dashboards, dashboard_id: str | None):
    found = dashboards.by_id.get(dashboard_id or DEFAULT_DASHBOARD)
    if found is None:
        raise HTTPException(404, f"no dashboard {dashboard_id[:100]!r}; GET /api/v1/dashboards lists them")
    return found


def _source(p: Panel) -> str:
    return "promql" if isinstance(p.query, PromQL) else "scrape" if isinstance(p.query, ScrapedRate) else "spans"


@router.get("/dashboards", response_model=list[DashboardInfo])
def list_dashboards(dashboards: DashboardsDep) -> list[dict]:
    """The dashboards, in the top bar's order: Requests Overview, LLM Usage, Plano's brightstaff
    dashboard, then the --dashboard files'."""
    return [
        {"id": d.id, "title": d.title, "panels": [p.id for p in d.panels], "source": d.source} for d in dashboards.all
    ]


@router.get("/panels", response_model=list[PanelInfo])
def list_panels(
    dashboards: DashboardsDep,
    dashboard: Annotated[
        str | None, Query(description="only this dashboard's panels (default: every dashboard's)")
    ] = None,
) -> list[dict]:
    """The panels of every dashboard (or of one), each dashboard's in layout order."""
    chosen = [_dashboard(dashboards, dashboard)] if dashboard is not None else dashboards.all
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
            "thresholds": list(p.thresholds),
            "promql": [t.expr for t in p.targets],
            "legends": [t.legend for t in p.targets],
            "source": _source(p),
            "drilldown": drilldown(p),
        }
        for d in chosen
        for p in d.panels
    ]


def _evaluate(request: Request, panels: list[Panel], start: float, end: float, step: float) -> list[dict]:
    """Each panel over the range: the native ones on the store (their shared reads together),
    the PromQL ones by the engine; in the order given."""
    state = request.app.state
    native = [p for p in panels if not isinstance(p.query, PromQL)]
    promql = [p for p in panels if isinstance(p.query, PromQL)]
    scraper = state.scraper
    targets = [t.label for t in scraper.targets] if scraper else []
    done = (
        dict(
            zip(
                (p.id for p in native),
                evaluate_all(state.store, native, start, end, step, targets, state.max_series_per_panel),
            )
        )
        if native
        else {}
    )
    if promql:
        interval = scraper.interval if scraper else 15.0
        engine = Engine(limits=state.promql_limits)
        done |= {
            d["id"]: d for d in evaluate_promql(promql_series(request), promql, start, end, step, interval, engine)
        }
    return [done[p.id] for p in panels]


@router.get("/panels/{panel_id}", response_model=PanelData, response_model_exclude_none=True)
def panel(
    request: Request,
    dashboards: DashboardsDep,
    panel_id: Annotated[str, Path(description="e.g. llm_requests_per_second")],
    start: Start = None,
    end: End = None,
    step: Step = None,
) -> dict:
    """One panel's series over ``[start, end]``; a stat panel has one point per series, at ``end``."""
    if panel_id not in dashboards.panels:
        raise HTTPException(404, f"no panel {panel_id[:100]!r}; GET /api/v1/panels lists them")
    return _evaluate(request, [dashboards.panels[panel_id]], *time_range(start, end, step))[0]


@router.get("/dashboard", response_model=Dashboard, response_model_exclude_none=True)
def dashboard(
    request: Request,
    store: StoreDep,
    dashboards: DashboardsDep,
    start: Start = None,
    end: End = None,
    step: Step = None,
    dashboard_id: DashboardId = None,
) -> dict:
    """Every panel of a dashboard over one range: what the UI asks for on each refresh."""
    board = _dashboard(dashboards, dashboard_id)
    start, end, step = time_range(start, end, step)
    return {
        "dashboard": board.id,
        "title": board.title,
        "start": start,
        "end": end,
        "step": step,
        "spans_stored": store.span_count(),
        "panels": _evaluate(request, list(board.panels), start, end, step),
    }
