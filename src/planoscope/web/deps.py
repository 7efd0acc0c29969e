"""What the routes take from the running app (``app.state``, set by ``create_web_app``) and the
query parameters they share, as FastAPI dependencies."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Query, Request

from ..promql import Limits
from ..promql.panels import PanelSeries
from ..promql.samples import StoredSamples
from ..query.dashboards import Dashboards
from ..query.params import check_bounds, default_step
from ..scrape.scraper import Scraper
from ..store import SpanStore


def _store(request: Request) -> SpanStore:
    return request.app.state.store


def _scraper(request: Request) -> Scraper | None:
    return request.app.state.scraper


def _max_series(request: Request) -> int:
    return request.app.state.max_series_per_panel


def _dashboards(request: Request) -> Dashboards:
    return request.app.state.dashboards


def promql_series(request: Request, limits: Limits | None = None) -> PanelSeries:
    """The series PromQL reads: the stored samples (scraped, and planoscope's own /metrics), with
    the scrape targets' ``instance`` labels, and the native panels' as ``planoscope_panel``,
    bounded by ``limits`` (default: the server's)."""
    state = request.app.state
    limits = limits or state.promql_limits
    stored = StoredSamples(state.store, state.scraper.instances() if state.scraper else {}, limits, state.promql_cache)
    return PanelSeries(stored, state.store, limits.max_series)


StoreDep = Annotated[SpanStore, Depends(_store)]
ScraperDep = Annotated[Scraper | None, Depends(_scraper)]
MaxSeriesDep = Annotated[int, Depends(_max_series)]
DashboardsDep = Annotated[Dashboards, Depends(_dashboards)]

Start = Annotated[float | None, Query(description="Range start, unix seconds. Default: end - 1 h.")]
End = Annotated[float | None, Query(description="Range end, unix seconds. Default: now.")]
Step = Annotated[float | None, Query(gt=0, description="Seconds between points. Default: ~250 points over the range.")]


def time_range(start: float | None, end: float | None, step: float | None = None) -> tuple[float, float, float]:
    """The range asked for, with its defaults (the last hour, ~250 points); raises QueryError (a 400)."""
    end = time.time() if end is None else end
    start = end - 3600 if start is None else start
    check_bounds(start, end)
    return start, end, step or default_step(start, end)
