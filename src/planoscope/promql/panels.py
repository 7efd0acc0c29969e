"""``planoscope_panel``: the exact series of the native panels as PromQL series, for the queries
and rules that want what PromQL can only estimate (a model's exact p95 latency or TTFT, not an
interpolation between histogram buckets).

``PanelSeries`` is a ``Queryable`` over another (``StoredSamples``) that adds one metric:

    planoscope_panel{panel="llm_ttft_ms", llm_model="gpt-4o", quantile="0.95", window="5m"}

is the series of the native panel ``llm_ttft_ms`` (``GET /api/v1/panels`` lists them; the
Requests Overview and LLM Usage dashboards), evaluated on the store by the panels' own queries,
labelled as the panel's API series are, plus ``panel`` and ``window``. A sample at ``t`` is the
panel's point for ``(t - window, t]``; the samples sit every ``window`` back from the end of what
is selected, so an instant query at ``t`` (a rule's evaluation) sees the window that ends at ``t``.
``window`` is the value of an equality matcher on it (a Prometheus duration), else 1m. A stat
panel has one sample, at the end: its value over the window before it.

Only a selector naming the metric exactly (``__name__`` equal to ``planoscope_panel``) reads
panels, and only those its ``panel`` matchers accept: a panel's evaluation is a store query, so
``{__name__=~".+"}`` does not run every panel. Everything else is the base's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..query.dashboards import DASHBOARDS
from ..query.evaluate import evaluate_all
from ..query.panels import Panel, PromQL
from ..query.params import QueryError
from ..store import SpanStore
from .storage import STALE_NAN, Matcher, matches_all, metric_name
from .syntax import parse_duration
from .values import METRIC_NAME, EvalError

PANEL_METRIC = "planoscope_panel"
PANEL, WINDOW = "panel", "window"
DEFAULT_WINDOW = "1m"


def native_panels() -> dict[str, Panel]:
    """The panels evaluated on the store (not a Grafana dashboard's PromQL, not a row), by id."""
    return {p.id: p for d in DASHBOARDS for p in d.panels if p.kind != "row" and not isinstance(p.query, PromQL)}


def window_ms(text: str) -> int:
    """A Prometheus duration (``5m``, ``1h30m``) in ms; ``EvalError`` if it is none or zero."""
    try:
        ms = parse_duration(text)
    except ValueError:
        raise EvalError(f'{PANEL_METRIC}: window="{text}" is not a duration (e.g. 30s, 5m, 1h)') from None
    if ms <= 0:
        raise EvalError(f'{PANEL_METRIC}: window="{text}" must be positive')
    return ms


class PanelSeries:
    """A ``Queryable``: ``base``'s series and the native panels' as ``planoscope_panel`` (see the
    module docstring), evaluated on ``store``; a panel's series are all of them (``max_series``
    bounds a grouped panel's, the rest summed as ``other="true"``, as the API draws them)."""

    def __init__(self, base, store: SpanStore, max_series: int = 10_000):
        self.base, self.store, self.max_series = base, store, max_series
        self.panels = native_panels()

    def select_block(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int):
        """The base's whole answer (see ``StoredSamples.select_block``), for what ``select``
        leaves to the base."""
        if metric_name(matchers) == PANEL_METRIC:
            return None
        block = getattr(self.base, "select_block", None)
        return block(matchers, start_ms, end_ms) if block else None

    volatile_metrics = frozenset({PANEL_METRIC})  # computed from the spans at each query: never cached

    @property
    def rollup_resolutions(self) -> tuple[int, ...]:
        return getattr(self.base, "rollup_resolutions", ())

    @property
    def cache(self):
        return getattr(self.base, "cache", None)

    @property
    def cache_scope(self):
        return getattr(self.base, "cache_scope", ())

    def select_thinned(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, resolution_ms: int):
        """The base's rollups (see ``StoredSamples.select_thinned``), for what ``select`` leaves
        to the base; a panel's series have none."""
        if metric_name(matchers) == PANEL_METRIC:
            return None
        return self.base.select_thinned(matchers, start_ms, end_ms, resolution_ms)

    def select(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> Iterable[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        if metric_name(matchers) != PANEL_METRIC:
            return self.base.select(matchers, start_ms, end_ms)
        window = next((m.value for m in matchers if m.name == WINDOW and m.op == "="), DEFAULT_WINDOW)
        step_ms = window_ms(window)
        chosen = [p for pid, p in self.panels.items() if all(m.matches(pid) for m in matchers if m.name == PANEL)]
        out = []
        for panel, data, grid in self._evaluate(chosen, start_ms, end_ms, step_ms):
            for s in data["series"]:
                labels = {**s["labels"], METRIC_NAME: PANEL_METRIC, PANEL: panel.id, WINDOW: window}
                if not matches_all(labels, matchers) or not s["points"]:
                    continue
                # A step without a point (no calls of that model then) is a staleness marker: the
                # engine's lookback must not carry the step before it over.
                vs = np.full(len(grid), STALE_NAN)
                at = {round(t * 1000): v for t, v in s["points"]}
                for i, t in enumerate(grid.tolist()):
                    if t in at:
                        vs[i] = at[t]
                keep = grid >= start_ms
                out.append((labels, grid[keep], vs[keep]))
        return out

    def _evaluate(self, panels: list[Panel], start_ms: int, end_ms: int, step_ms: int):
        """(panel, its evaluation, the times of its points) for each panel: every ``step_ms`` back
        from ``end_ms`` as far as ``start_ms`` for a timeseries panel, the last window for a stat."""
        n = max(1, (end_ms - start_ms) // step_ms)  # a range's start must be before its end
        step, end = step_ms / 1000, end_ms / 1000
        done = {}
        try:
            for kind, start in (("timeseries", end - n * step), ("stat", end - step)):
                chosen = [p for p in panels if (p.kind == "stat") == (kind == "stat")]
                if chosen:
                    done |= zip(chosen, evaluate_all(self.store, chosen, start, end, step, (), self.max_series))
        except QueryError as e:
            raise EvalError(f"{PANEL_METRIC}: {e}") from None
        grid = end_ms - step_ms * np.arange(n, -1, -1, dtype=np.int64)
        return [(p, done[p], grid if p.kind != "stat" else grid[-1:]) for p in panels]

    # --- the Prometheus API's series and label endpoints: the base's, and the metric's name ---
    def series(self, matcher_sets, start_ms: int, end_ms: int) -> list[dict[str, str]]:
        ours = [ms for ms in matcher_sets if metric_name(ms) == PANEL_METRIC]
        found = {tuple(sorted(ls.items())) for ms in ours for ls, _, _ in self.select(ms, start_ms, end_ms)}
        rest = [ms for ms in matcher_sets if metric_name(ms) != PANEL_METRIC]
        base = self.base.series(rest, start_ms, end_ms) if rest or not matcher_sets else []
        return sorted([*base, *(dict(k) for k in found)], key=lambda ls: sorted(ls.items()))

    def label_names(self, matcher_sets, start_ms: int, end_ms: int) -> list[str]:
        if matcher_sets:
            return sorted({k for ls in self.series(matcher_sets, start_ms, end_ms) for k in ls})
        return self.base.label_names(matcher_sets, start_ms, end_ms)

    def label_values(self, name: str, matcher_sets, start_ms: int, end_ms: int) -> list[str]:
        if matcher_sets:
            return sorted({ls[name] for ls in self.series(matcher_sets, start_ms, end_ms) if ls.get(name)})
        found = self.base.label_values(name, matcher_sets, start_ms, end_ms)
        return sorted({*found, PANEL_METRIC}) if name == METRIC_NAME else found
