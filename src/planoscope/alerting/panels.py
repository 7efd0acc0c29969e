"""Which dashboard panels a rule or an alert concerns, so that the dashboards mark the panels of
what fires and draw its alerts on their charts.

A rule concerns a panel when

1. its annotation ``panel`` names it: comma-separated panel ids, or a dashboard id for all of that
   dashboard's panels (an explicit link, as Grafana's ``__panelId__``). When the annotation is
   set it alone decides; like every annotation it is a template, expanded per alert;
2. else, when one of its selectors and one of the panel's PromQL targets (``Panel.targets``: what
   Grafana would run) can select the same series: the same metric name, and no label that one of
   them fixes (``=``) to a value the other's matchers on that label refuse. So a rule over
   ``x_count{error_type="429"}`` concerns a panel over ``x_count{error_type!="none"}``, not one
   over ``x_count{error_type="500"}``, nor one over ``x_sum``;
3. or when it selects ``planoscope_panel``, the native panels' series as PromQL series: the
   panels whose id its matchers on ``panel`` accept.

An alert concerns what its rule concerns; one that carries a ``panel`` label naming one of them
(a rule over ``planoscope_panel`` that keeps the label) concerns that panel alone. Ids that name
no panel of the server's dashboards are left out.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping

from ..promql import PromQLError, parse
from ..promql.storage import Matcher, metric_name
from ..promql.syntax import Expr, VectorSelector, children
from ..query.dashboards import Dashboards
from .rules import Rule

PANEL_ANNOTATION = "panel"
PANEL_METRIC, PANEL_LABEL = "planoscope_panel", "panel"
# A Grafana variable inside a label value: that matcher says nothing about the series.
_UNKNOWN = "__planoscope_grafana_variable__"
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|\$(?:\{\w+(?::\w+)?\}|\w+)')
_VARIABLE = re.compile(r"\$(?:\{\w+(?::\w+)?\}|\w+)")

Selector = tuple[Matcher, ...]


def concerned_panels(
    rule: Rule,
    dashboards: Dashboards,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> list[str]:
    """The ids of the panels of ``dashboards`` that ``rule`` concerns, in the dashboards' order;
    with ``labels``, those an alert of it with these labels concerns (its ``annotations`` as
    expanded, if known; else the rule's ``panel`` annotation is expanded with ``labels``)."""
    if PANEL_ANNOTATION in rule.annotations:
        text = rule.annotations[PANEL_ANNOTATION]
        if annotations is not None and PANEL_ANNOTATION in annotations:
            text = annotations[PANEL_ANNOTATION]
        elif labels is not None:
            template = rule.annotation_templates[PANEL_ANNOTATION]
            base = {k: v for k, v in labels.items() if k != "alertname"}
            try:
                text = template.expand(base, math.nan, {})
            except (ValueError, TypeError):
                text = ""
        return _named(text, dashboards)
    found = set()
    rule_selectors = _selectors_of(rule.query)
    for panel_id, selectors in _panel_selectors(dashboards).items():
        if any(_may_overlap(a, b) for a in rule_selectors for b in selectors):
            found.add(panel_id)
    for sel in rule_selectors:
        if metric_name(sel) == PANEL_METRIC:
            on_panel = [m for m in sel if m.name == PANEL_LABEL]
            found |= {p for p in _drawn(dashboards) if all(m.matches(p) for m in on_panel)}
    ordered = [p for p in _drawn(dashboards) if p in found]
    own = (labels or {}).get(PANEL_LABEL)
    return [own] if own in found else ordered


def _named(text: str, dashboards: Dashboards) -> list[str]:
    """The panels a ``panel`` annotation names: panel ids, and dashboard ids for all their panels."""
    named = set()
    for word in (w.strip() for w in text.split(",")):
        if word in dashboards.panels:
            named.add(word)
        elif word in dashboards.by_id:
            named |= {p.id for p in dashboards.by_id[word].panels if p.kind != "row"}
    return [p for p in _drawn(dashboards) if p in named]


def _drawn(dashboards: Dashboards) -> list[str]:
    return [p.id for p in dashboards.panels.values() if p.kind != "row"]


def _may_overlap(a: Selector, b: Selector) -> bool:
    """Whether two selectors can select a common series (as far as their matchers tell)."""
    name = metric_name(a)
    if name is None or name != metric_name(b):
        return False
    for fixed, other in ((a, b), (b, a)):
        for m in fixed:
            if m.op == "=" and not all(n.matches(m.value) for n in other if n.name == m.name):
                return False
    return True


@functools.lru_cache(maxsize=64)
def _panel_selectors(dashboards: Dashboards) -> dict[str, list[Selector]]:
    """Each panel's targets' selectors (the dashboards do not change while a server runs)."""
    return {
        p.id: [s for t in p.targets for s in _selectors_of(_fill(t.expr))]
        for p in dashboards.panels.values()
        if p.kind != "row"
    }


@functools.lru_cache(maxsize=4096)
def _selectors_of(query: str) -> tuple[Selector, ...]:
    """The matchers of every selector of ``query`` (none if it does not parse), without those
    whose value holds a Grafana variable."""
    try:
        expr = parse(query)
    except PromQLError:
        return ()
    return tuple(tuple(m for m in s.matchers if _UNKNOWN not in m.value) for s in _walk(expr))


def _walk(e: Expr) -> Iterator[VectorSelector]:
    if isinstance(e, VectorSelector):
        yield e
    for c in children(e):
        yield from _walk(c)


def _fill(expr: str) -> str:
    """A Grafana target's PromQL made parseable: ``$__rate_interval`` and the like as a duration
    where one goes (a range, a subquery's step, an offset), else a number; a variable inside a
    string marks its matcher unknown."""

    def sub(m: re.Match) -> str:
        token = m.group(0)
        if token[0] in "\"'`":
            return _VARIABLE.sub(_UNKNOWN, token)
        before = expr[: m.start()].rstrip()
        return "1m" if before.endswith(("[", ":")) or before.endswith("offset") else "1"

    return _TOKEN.sub(sub, expr)
