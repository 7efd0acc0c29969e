"""The JSON query API under ``/api/v1`` (OpenAPI at ``/docs``): the panels of ``panels.py``
evaluated on the store. Other tools rely on these shapes; see DESIGN.md's query API contract."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from .panels import BY_ID, PANELS
from .query import QueryError, check_bounds, default_step, evaluate, evaluate_all
from .store import DuckDBStore


class PanelInfo(BaseModel):
    id: str
    title: str
    unit: str = Field(description="Grafana unit id: reqps, ms, short")
    kind: str = Field(description="timeseries or stat")
    grid: tuple[int, int, int, int] = Field(description="x, y, w, h on a 24-column grid")
    description: str
    color: str | None
    promql: list[str] = Field(description="what the reference stack's Grafana panel queries")


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


def create_api(store: DuckDBStore) -> APIRouter:
    """The ``/api/v1`` router over ``store``."""
    api = APIRouter(prefix="/api/v1", tags=["dashboard"])

    def run(panel_id: str, start: float, end: float, step: float) -> dict:
        try:
            return evaluate(store, BY_ID[panel_id], start, end, step)
        except QueryError as e:
            raise HTTPException(400, str(e)) from None

    @api.get("/panels", response_model=list[PanelInfo])
    def list_panels() -> list[dict]:
        """The dashboard's panels, in layout order."""
        return [
            {"id": p.id, "title": p.title, "unit": p.unit, "kind": p.kind, "grid": p.grid,
             "description": p.description, "color": p.color, "promql": [t.expr for t in p.targets]}
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
            panels = evaluate_all(store, list(PANELS), start, end, step)
        except QueryError as e:
            raise HTTPException(400, str(e)) from None
        return {"start": start, "end": end, "step": step, "spans_stored": store.span_count(), "panels": panels}

    return api
