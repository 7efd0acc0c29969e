"""The dashboards: "Plano - Requests Overview" (the reference stack's six panels). The Grafana
export writes each of them; ``GET /api/v1/dashboards`` lists them.

(The same ``Dashboard`` and ``DASHBOARDS`` as branch llm-panels' module, which adds "Plano - LLM
Usage": on merging, that module replaces this one.)"""

from __future__ import annotations

from dataclasses import dataclass

from .panels import PANELS, Panel


@dataclass(frozen=True)
class Dashboard:
    id: str
    title: str
    panels: tuple[Panel, ...]
    source: str = "builtin"


DASHBOARDS: tuple[Dashboard, ...] = (Dashboard("requests-overview", "Plano - Requests Overview", PANELS),)
