"""Grafana dashboards read into planoscope's: a dashboard JSON whose panels query a Prometheus
datasource becomes a ``Dashboard`` of ``PromQL`` panels, drawn by ``render.py`` through the
PromQL engine over the stored samples. Plano's own "Brightstaff (Plano dataplane)" dashboard
ships in ``dashboards/`` as the built-in ``brightstaff``; ``--dashboard FILE`` adds others.

What is kept of a panel: type (timeseries; stat, gauge, bargauge and table as stat panels:
tiles, tiles, bars and a table), title, description, grid position, unit, the targets' ``expr``
and ``legendFormat``, a stat's reducer, absolute thresholds, and per-series units ("fields with
name" overrides, drawn against the right-hand axis). Rows are headings; a collapsed row's
panels are laid out below it, open. Panels of other types (text, logs, …) and targets of other
datasources are left out; a dashboard with nothing left to draw is an error.

    board = load_dashboard(Path("my-dashboard.json"))
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from ..query.dashboards import DASHBOARDS, Dashboard
from ..query.panels import Measure, Panel, PromQL, Target

# Grafana's panel types and how planoscope draws them: kind and display.
KINDS = {
    "timeseries": ("timeseries", "tiles"),
    "graph": ("timeseries", "tiles"),  # Grafana's old time series panel
    "stat": ("stat", "tiles"),
    "singlestat": ("stat", "tiles"),
    "gauge": ("stat", "tiles"),
    "bargauge": ("stat", "bars"),
    "table": ("stat", "table"),
}
REDUCERS = ("lastNotNull", "last", "firstNotNull", "first", "mean", "max", "min", "sum", "count")
BUILTIN = ("brightstaff",)  # files in dashboards/, shipped with the package


class DashboardError(ValueError):
    """A dashboard file planoscope cannot use, in one line naming the file and why."""


def all_dashboards(files: Sequence[str | Path] = ()) -> list[Dashboard]:
    """Every dashboard, in the top bar's order: the native ones (``query/dashboards.py``), the
    shipped Grafana ones, then the user's ``files`` (``--dashboard``). Raises ``DashboardError``."""
    boards = [*DASHBOARDS, *builtin_dashboards()]
    for f in files:
        boards.append(load_dashboard(Path(f), {b.id for b in boards}))
    return boards


def builtin_dashboards() -> list[Dashboard]:
    """The Grafana dashboards shipped with planoscope: Plano's brightstaff dashboard."""
    folder = resources.files(__package__) / "dashboards"
    return [parse_dashboard(json.loads((folder / f"{name}.json").read_text()), name, "grafana") for name in BUILTIN]


def load_dashboard(path: Path, taken: set[str] = frozenset()) -> Dashboard:
    """A user's Grafana dashboard file (its id from its uid or title, unlike any in ``taken``).
    Raises ``DashboardError``."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DashboardError(f"dashboard {path}: cannot read it as JSON: {e}") from None
    if isinstance(doc, dict) and isinstance(doc.get("dashboard"), dict):  # as Grafana's API exports it
        doc = doc["dashboard"]
    if not isinstance(doc, dict) or not isinstance(doc.get("panels"), list):
        raise DashboardError(f"dashboard {path}: not a Grafana dashboard (no panels list)")
    base = slug(str(doc.get("uid") or doc.get("title") or path.stem)) or "dashboard"
    dashboard_id, n = base, 1
    while dashboard_id in taken:
        n += 1
        dashboard_id = f"{base}-{n}"
    try:
        return parse_dashboard(doc, dashboard_id, f"file:{path}")
    except DashboardError as e:
        raise DashboardError(f"dashboard {path}: {e}") from None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64]


def parse_dashboard(doc: dict, dashboard_id: str, source: str) -> Dashboard:
    """A Grafana dashboard document (the ``dashboard`` object) as planoscope's ``Dashboard``."""
    panels: list[Panel] = []
    ids: set[str] = set()
    for n, raw in enumerate(_flat(doc.get("panels") or []), 1):
        panel_id = f"{dashboard_id}:{raw.get('id', n)}"
        if panel_id in ids:  # Grafana keeps ids unique, a hand-edited file may not
            panel_id = f"{dashboard_id}:{n}"
        panel = _panel(raw, panel_id)
        if panel is not None:
            panels.append(panel)
            ids.add(panel.id)
    if not any(p.kind != "row" for p in panels):
        raise DashboardError("no panel planoscope can draw (timeseries, stat, gauge, bargauge or table over PromQL)")
    return Dashboard(dashboard_id, str(doc.get("title") or dashboard_id), tuple(panels), source)


def _flat(panels: list) -> list[dict]:
    """Panels in order, a collapsed row's own panels after it."""
    out = []
    for p in panels:
        if isinstance(p, dict):
            out.append(p)
            if p.get("type") == "row":
                out.extend(q for q in p.get("panels") or [] if isinstance(q, dict))
    return out


def _panel(raw: dict, panel_id: str) -> Panel | None:
    grid = raw.get("gridPos") or {}
    try:
        pos = tuple(int(grid.get(k, d)) for k, d in (("x", 0), ("y", 0), ("w", 12), ("h", 8)))
    except (TypeError, ValueError):
        raise DashboardError(f"panel {raw.get('title')!r}: gridPos is not numbers") from None
    title = str(raw.get("title") or "")
    if raw.get("type") == "row":
        return Panel(panel_id, title, "", "row", (0, pos[1], 24, 1), PromQL(), ())
    kind = KINDS.get(str(raw.get("type")))
    targets = tuple(
        Target(str(t["expr"]), str(t.get("legendFormat") or ""))
        for t in raw.get("targets") or []
        if isinstance(t, dict) and t.get("expr") and not t.get("hide")
    )
    if kind is None or not targets:
        return None
    defaults = (raw.get("fieldConfig") or {}).get("defaults") or {}
    units = _overrides(raw)
    unit = str(defaults.get("unit") or "")
    if not unit and units:  # the first series' own unit is the panel's, the others' on the right
        unit = units.pop(0)[1]
    calcs = ((raw.get("options") or {}).get("reduceOptions") or {}).get("calcs") or []
    reducer = next((c for c in calcs if c in REDUCERS), "lastNotNull")
    return Panel(
        panel_id,
        title,
        _unit(unit),
        kind[0],
        pos,
        PromQL(reducer),
        targets,
        description=str(raw.get("description") or ""),
        measures=tuple(Measure(name, name, _unit(u)) for name, u in units),
        display=kind[1],
        thresholds=_thresholds(defaults),
    )


def _overrides(raw: dict) -> list[tuple[str, str]]:
    out = []
    for o in (raw.get("fieldConfig") or {}).get("overrides") or []:
        matcher = o.get("matcher") or {}
        if matcher.get("id") != "byName":
            continue
        for prop in o.get("properties") or []:
            if prop.get("id") == "unit" and prop.get("value"):
                out.append((str(matcher.get("options")), str(prop["value"])))
    return out


def _unit(unit: str) -> str:
    """Grafana's unit id, or a custom unit ("tokens/s") as Grafana shows it: a suffix."""
    if not unit or unit in ("none", "short") or re.fullmatch(r"[a-zA-Z]+(:.*)?", unit):
        return unit or "short"
    return f"suffix:{unit}"


def _thresholds(defaults: dict) -> tuple[tuple[float | None, str], ...]:
    if (defaults.get("color") or {}).get("mode") != "thresholds":
        return ()
    spec = defaults.get("thresholds") or {}
    if spec.get("mode", "absolute") != "absolute":
        return ()
    steps = []
    for s in spec.get("steps") or []:
        try:
            steps.append((None if s.get("value") is None else float(s["value"]), str(s.get("color") or "green")))
        except (TypeError, ValueError):
            continue
    return tuple(steps)
