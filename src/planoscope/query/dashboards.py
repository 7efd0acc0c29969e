"""The native dashboards: "Plano - Requests Overview" (the reference stack's six panels) and
"Plano - LLM Usage"; and ``Dashboards``, the set a server shows: these and the Grafana ones
(``grafana/dashboard.py``). ``GET /api/v1/dashboards`` lists them and the UI builds its top bar
from it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .llm_panels import LLM_PANELS
from .panels import PANELS, Panel


@dataclass(frozen=True)
class Dashboard:
    id: str
    title: str
    panels: tuple[Panel, ...]
    source: str = "builtin"  # builtin (native), grafana (a shipped Grafana dashboard), file:PATH


DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard("requests-overview", "Plano - Requests Overview", PANELS),
    Dashboard("llm-usage", "Plano - LLM Usage", LLM_PANELS),
)
DEFAULT_DASHBOARD = DASHBOARDS[0].id


class Dashboards:
    """The dashboards a server shows, in the top bar's order, and their panels by id (unique
    across dashboards: the API names a panel by id alone)."""

    def __init__(self, dashboards: Sequence[Dashboard]):
        self.all = tuple(dashboards)
        self.by_id = {d.id: d for d in self.all}
        self.panels = {p.id: p for d in self.all for p in d.panels}
        if len(self.by_id) != len(self.all) or len(self.panels) != sum(len(d.panels) for d in self.all):
            raise ValueError("a dashboard or panel id is used twice")
