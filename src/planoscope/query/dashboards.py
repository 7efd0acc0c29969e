"""The dashboards: "Plano - Requests Overview" (the reference stack's six panels) and
"Plano - LLM Usage". ``GET /api/v1/dashboards`` lists them and the UI builds its top bar from it."""

from __future__ import annotations

from dataclasses import dataclass

from .llm_panels import LLM_PANELS
from .panels import PANELS, Panel


@dataclass(frozen=True)
class Dashboard:
    id: str
    title: str
    panels: tuple[Panel, ...]
    source: str = "builtin"


DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard("requests-overview", "Plano - Requests Overview", PANELS),
    Dashboard("llm-usage", "Plano - LLM Usage", LLM_PANELS),
)
DASHBOARD_BY_ID = {d.id: d for d in DASHBOARDS}
DEFAULT_DASHBOARD = DASHBOARDS[0].id
# Every panel of every dashboard, by id (ids are unique across dashboards: the API names a panel by id alone).
ALL_PANELS: tuple[Panel, ...] = tuple(p for d in DASHBOARDS for p in d.panels)
BY_ID = {p.id: p for p in ALL_PANELS}
assert len(BY_ID) == len(ALL_PANELS), "a panel id is used twice"
