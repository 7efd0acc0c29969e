"""``/api/v1/panels`` and ``/api/v1/dashboard``: the panels of ``query/panels.py`` evaluated on the store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from ...query.evaluate import evaluate, evaluate_all
from ...query.panels import BY_ID, PANELS, ScrapedRate, drilldown
from ..deps import End, MaxSeriesDep, ScraperDep, Start, Step, StoreDep, time_range

router = APIRouter(tags=["dashboard"])


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
    drilldown: dict | None = Field(
        description="how a point or series maps to a trace search (GET /api/v1/traces): "
        "filters for every series, plus the filter `by` taking the value of "
        "series label `label`, or per-series filters `series`; `sort`; `failed`: the filters to add "
        "to open only the failed calls"
    )


class Series(BaseModel):
    name: str
    labels: dict[str, str]
    points: list[tuple[float, float]] = Field(description="[unix seconds, value] pairs")


class Truncated(BaseModel):
    shown: int = Field(description="groups drawn as their own series (the setting max_series_per_panel)")
    total: int = Field(description="groups in the range; the ones not shown are summed in the series named other")
    label: str = Field(description="the label the series are grouped by, e.g. llm_model")


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
    start: float
    end: float
    step: float
    spans_stored: int = Field(description="All spans in the store, whatever the range (0: nothing received yet)")
    panels: list[PanelData]


def _targets(scraper: ScraperDep) -> list[str]:
    return [t.label for t in scraper.targets] if scraper else []


@router.get("/panels", response_model=list[PanelInfo])
def list_panels() -> list[dict]:
    """The dashboard's panels, in layout order."""
    return [
        {
            "id": p.id,
            "title": p.title,
            "unit": p.unit,
            "kind": p.kind,
            "grid": p.grid,
            "description": p.description,
            "color": p.color,
            "promql": [t.expr for t in p.targets],
            "source": "scrape" if isinstance(p.query, ScrapedRate) else "spans",
            "drilldown": drilldown(p),
        }
        for p in PANELS
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
) -> dict:
    """Every panel over one range: what the UI asks for on each refresh."""
    start, end, step = time_range(start, end, step)
    panels = evaluate_all(store, list(PANELS), start, end, step, _targets(scraper), max_series)
    return {"start": start, "end": end, "step": step, "spans_stored": store.span_count(), "panels": panels}
