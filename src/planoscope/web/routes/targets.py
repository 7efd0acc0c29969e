"""``/api/v1/targets``: the health of every scrape target."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..deps import ScraperDep

router = APIRouter(tags=["scraping"])


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


@router.get("/targets", response_model=list[TargetHealth])
def scrape_targets(scraper: ScraperDep) -> list[dict]:
    """Health of every scrape target (``--scrape``): up, last scrape, its duration and error."""
    return scraper.health() if scraper else []
