"""``/api/v1/metrics``: the scraped metrics (Envoy's samples) held in the store, their rates and samples."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from ...query.evaluate import has_samples, scraped_metrics, scraped_rate, scraped_samples
from ...store import SpanStore
from ..deps import End, Start, Step, StoreDep, time_range
from .panels import Series

router = APIRouter(tags=["scraping"])


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


def _known(store: SpanStore, name: str) -> None:
    if not has_samples(store, name):
        raise HTTPException(404, f"no samples of {name!r} stored; GET /api/v1/metrics lists the metrics")


@router.get("/metrics", response_model=list[ScrapedMetric])
def list_metrics(store: StoreDep) -> list[dict]:
    """The scraped metric names held in the store."""
    return scraped_metrics(store)


@router.get("/metrics/{name}/rate", response_model=MetricData)
def metric_rate(store: StoreDep, name: str, start: Start = None, end: End = None, step: Step = None) -> dict:
    """Per-second rate of a scraped counter, counter resets handled (see the README)."""
    start, end, step = time_range(start, end, step)
    _known(store, name)
    series = scraped_rate(store, name, start, end, step)
    return {"metric": name, "start": start, "end": end, "step": step, "series": series}


@router.get("/metrics/{name}/samples", response_model=MetricData)
def metric_samples(store: StoreDep, name: str, start: Start = None, end: End = None) -> dict:
    """The stored samples of a scraped metric in ``(start, end]``, as scraped."""
    start, end, _ = time_range(start, end)
    _known(store, name)
    return {"metric": name, "start": start, "end": end, "series": scraped_samples(store, name, start, end)}
