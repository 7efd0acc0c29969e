"""Grafana export: every dashboard of ``query/dashboards.py`` as Grafana dashboard JSON over
Prometheus, one file each, with the provisioning files that load them (``planoscope grafana
export DIR``).

"Plano - Requests Overview" comes out as the reference stack has it (same uid, file, titles,
layout, PromQL, legends, units and colours), so a Grafana already provisioned with the reference
dashboard keeps working and one that is not gets the same thing. The other dashboards ("Plano -
LLM Usage": its PromQL over the LLM metrics of ``metrics/llm.py``) get uid and file
``plano-{id}``. A panel's PromQL is its ``targets``; a panel with none (what /metrics cannot
say: sessions, say) becomes a text panel that says so and links to planoscope.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..query.dashboards import DASHBOARDS, Dashboard
from ..query.panels import Panel

# The reference dashboard's uid and file, for the dashboard that replaces it.
REFERENCE = {"requests-overview": ("plano-requests-overview", "plano-requests.json")}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
AXIS_LABEL = {"reqps": "req/s", "ms": "ms", "currencyUSD": "USD"}


def grafana_uid(dashboard: Dashboard) -> str:
    return REFERENCE.get(dashboard.id, (f"plano-{dashboard.id}",))[0]


def file_name(dashboard: Dashboard) -> str:
    return REFERENCE[dashboard.id][1] if dashboard.id in REFERENCE else f"plano-{dashboard.id}.json"


def _timeseries(panel: Panel) -> dict:
    if panel.color:
        color, fill = {"mode": "fixed", "fixedColor": panel.color}, 20
    else:
        color, fill = {"mode": "palette-classic"}, 0 if panel.unit == "ms" else 15
    custom = {
        "axisBorderShow": False,
        "axisLabel": _axis_label(panel.unit),
        "drawStyle": "line",
        "fillOpacity": fill,
        "lineWidth": 2,
        "pointSize": 5,
        "showPoints": "auto",
        "stacking": {"mode": "none"},
    }
    return {
        "fieldConfig": {"defaults": {"color": color, "custom": custom, "unit": panel.unit}, "overrides": []},
        "options": {
            "legend": {"calcs": ["mean", "max", "lastNotNull"], "displayMode": "table", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def _stat(panel: Panel) -> dict:
    return {
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "palette-classic-by-name"},
                "mappings": [],
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
                "unit": panel.unit,
            },
            "overrides": [],
        },
        "options": {
            "colorMode": "background_gradient",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
            "wideLayout": True,
        },
    }


def _axis_label(unit: str) -> str:
    if unit in AXIS_LABEL:
        return AXIS_LABEL[unit]
    return unit.removeprefix("suffix:").strip() if unit.startswith("suffix:") else ""  # a custom unit


def _text(panel: Panel, planoscope_url: str | None) -> dict:
    """A panel /metrics cannot answer: what it shows (its description says why it is not there)."""
    link = f"\n\n[Open it in planoscope]({planoscope_url.rstrip('/')}/)" if planoscope_url else ""
    return {"options": {"mode": "markdown", "content": panel.description + link}}


def panel_json(panel: Panel, panel_id: int, planoscope_url: str | None = None) -> dict:
    x, y, w, h = panel.grid
    if not panel.targets:
        return {
            "id": panel_id,
            "title": panel.title,
            "description": panel.description,
            "type": "text",
            "gridPos": {"h": h, "w": w, "x": x, "y": y},
            **_text(panel, planoscope_url),
        }
    out = {
        "id": panel_id,
        "title": panel.title,
        "description": panel.description,
        "type": panel.kind,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "datasource": DATASOURCE,
        **(_stat(panel) if panel.kind == "stat" else _timeseries(panel)),
        "targets": [
            {"datasource": DATASOURCE, "expr": t.expr, "legendFormat": t.legend, "refId": chr(ord("A") + i)}
            for i, t in enumerate(panel.targets)
        ],
    }
    return out


def dashboard_json(dashboard: Dashboard = DASHBOARDS[0], planoscope_url: str | None = None) -> dict:
    """``dashboard`` for Grafana; with ``planoscope_url``, a link to planoscope's trace explorer on top."""
    links = []
    if planoscope_url:
        links.append(
            {
                "title": "Traces in planoscope",
                "type": "link",
                "icon": "external link",
                "url": planoscope_url.rstrip("/") + "/traces",
                "targetBlank": True,
                "tooltip": "Search the traces behind these panels",
                "asDropdown": False,
                "includeVars": False,
                "keepTime": False,
                "tags": [],
            }
        )
    return {
        "annotations": {"list": []},
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": links,
        "panels": [panel_json(p, i + 1, planoscope_url) for i, p in enumerate(dashboard.panels)],
        "refresh": "10s",
        "schemaVersion": 39,
        "tags": ["plano", "llm", "observability"],
        "templating": {
            "list": [
                {
                    "current": {"selected": False, "text": "Prometheus", "value": "Prometheus"},
                    "hide": 0,
                    "includeAll": False,
                    "label": "Data Source",
                    "multi": False,
                    "name": "datasource",
                    "options": [],
                    "query": "prometheus",
                    "refresh": 1,
                    "regex": "",
                    "skipUrlSync": False,
                    "type": "datasource",
                }
            ]
        },
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": dashboard.title,
        "uid": grafana_uid(dashboard),
        "version": 1,
    }


DATASOURCES_YAML = """\
# Grafana provisioning: the Prometheus API the dashboards query, a Prometheus that scrapes
# planoscope's /metrics (and Envoy's admin /stats/prometheus) or planoscope's own at /prometheus.
# Written by `planoscope grafana export`.
apiVersion: 1

datasources:
  - name: Prometheus
    type: prometheus
    access: proxy
    url: {prometheus_url}
    isDefault: true
    editable: true
"""

TEMPO_YAML = """
  - name: Tempo
    type: tempo
    access: proxy
    url: {tempo_url}
    editable: true
"""

DASHBOARDS_YAML = """\
# Grafana provisioning: load the dashboards in {path}. Written by `planoscope grafana export`.
apiVersion: 1

providers:
  - name: Plano
    orgId: 1
    folder: Plano
    type: file
    disableDeletion: false
    editable: true
    options:
      path: {path}
      foldersFromFilesStructure: false
"""


def export(
    out_dir: Path,
    prometheus_url: str,
    dashboards_path: str,
    planoscope_url: str | None,
    tempo_url: str | None = None,
    dashboards: Sequence[Dashboard] = DASHBOARDS,
) -> list[Path]:
    """Write each of ``dashboards`` and the provisioning files under ``out_dir``; the paths written.

    ``dashboards_path`` is where Grafana will find ``dashboards/`` (the provider's path, as
    mounted in Grafana's container or host); ``tempo_url`` adds a Tempo datasource (for the
    spans planoscope forwards there)."""
    files = {
        out_dir / "dashboards" / file_name(d): json.dumps(dashboard_json(d, planoscope_url), indent=2) + "\n"
        for d in dashboards
    }
    files |= {
        out_dir / "provisioning" / "datasources" / "planoscope.yaml": DATASOURCES_YAML.format(
            prometheus_url=prometheus_url
        )
        + (TEMPO_YAML.format(tempo_url=tempo_url) if tempo_url else ""),
        out_dir / "provisioning" / "dashboards" / "planoscope.yaml": DASHBOARDS_YAML.format(path=dashboards_path),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)
