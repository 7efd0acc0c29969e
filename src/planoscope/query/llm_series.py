"""The series of the panels over LLM calls, from the rows of ``llm_calls.query_calls``: per
panel, its series in the API's shape (``{"name", "labels", "points"}``), named and labelled as
``llm_panels.py`` says, and what it left out (``truncated``). The semantics (steps, folding into
``other``) are ``llm_calls.py``'s."""

from __future__ import annotations

from collections import defaultdict

from . import steps
from .llm_calls import COST_SOURCES, QUALITIES, SUMMED, TOKEN_KINDS, quantiles_part
from .panels import (
    FLAGGED,
    FLAGGED_SERIES,
    CacheRatio,
    CallQuantiles,
    CostRate,
    CostTotal,
    FailureRate,
    FailureRatio,
    LlmQuery,
    ModelSelection,
    RouteShare,
    SignalsQuality,
    TokenRate,
    TopSessions,
)
from .steps import OTHER, OTHER_LABELS


def series(
    q: LlmQuery, rows: dict[str, list], start: float, end: float, step: float, max_series: int
) -> tuple[list[dict], dict | None]:
    """``q``'s series from the rows of ``query_calls``, and what was left out (``truncated``) if anything."""
    n_points = steps.n_points(start, end, step)
    if isinstance(q, (TokenRate, CostRate, CacheRatio)):
        return _per_step_sums(q, rows["sums"], start, step, n_points), _models_truncated(rows, max_series)
    if isinstance(q, CostTotal):
        return _cost_total(rows["sums"], end), _models_truncated(rows, max_series)
    if isinstance(q, CallQuantiles):
        return _quantiles(q, rows, start, step, n_points), _models_truncated(rows, max_series, "together")
    if isinstance(q, FailureRatio):
        return _failure_ratio(rows, start, step, n_points), _models_truncated(rows, max_series)
    if isinstance(q, FailureRate):
        return _failure_rate(q, rows["failures"], start, step, n_points), _models_truncated(rows, max_series)
    if isinstance(q, RouteShare):
        return _route_share(rows["routes"], end, max_series)
    if isinstance(q, ModelSelection):
        return _pairs(rows["pairs"], end, max_series)
    if isinstance(q, SignalsQuality):
        return _signals(rows, start, step, n_points, max_series)
    if isinstance(q, TopSessions):
        return _sessions(q, rows[f"sessions_{int(q.limit)}"], end)
    raise TypeError(q)  # pragma: no cover - the LlmQuery union is closed


def _models_truncated(rows: dict[str, list], max_series: int, other: str = "summed") -> dict | None:
    total = int(rows["models"][0][3][0] or 0) if rows.get("models") else 0
    return _truncated(max_series, total, "llm_model", other)


def _truncated(shown: int, total: int, label: str, other: str = "summed") -> dict | None:
    """What a panel left out: ``other`` says how the rest is drawn (summed, together: the
    quantiles of all their calls, none: not drawn)."""
    return {"shown": shown, "total": total, "label": label, "other": other} if total > shown else None


def _model_labels(other: bool, g: str | None) -> dict:
    return dict(OTHER_LABELS) if other else {"llm_model": g or ""}


def _model_name(other: bool, g: str | None) -> str:
    return OTHER if other else (g or "(no model)")


def _order(key: tuple[bool, str | None]) -> tuple:
    return (key[0], key[1] or "")  # by name, the rest ("other") last


def _per_step_sums(q, rows: list, start: float, step: float, n_points: int) -> list[dict]:
    """Tokens per second (TokenRate), USD per hour (CostRate), cached / input tokens (CacheRatio)."""
    index = {c: i + 1 for i, c in enumerate(SUMMED)}  # the sum of column c; + len(SUMMED): how many calls had it
    groups: dict[tuple, dict[int, list]] = defaultdict(dict)
    for k, other, (g,), values in rows:
        groups[(other, g)][k] = values
    out = []
    for key in sorted(groups, key=_order):
        by_k = groups[key]
        other, g = key
        labels, name = _model_labels(other, g), _model_name(other, g)
        if isinstance(q, CacheRatio):
            ct, it = index["ct"], index["it"]
            if not sum(v[ct + len(SUMMED)] for v in by_k.values()):
                continue  # a model that never reports cached tokens has no ratio to show
            ratio = {k: (v[ct] or 0.0) / v[it] for k, v in by_k.items() if v[it]}
            out.append({"name": name, "labels": labels, "points": steps.points(start, step, n_points, ratio, None)})
            continue
        kinds, per = (TOKEN_KINDS, 1) if isinstance(q, TokenRate) else (COST_SOURCES, 3600)  # per second, per hour
        label = "kind" if isinstance(q, TokenRate) else "cost_source"
        for kind, column in kinds.items():
            i = index[column]
            if not sum(v[i + len(SUMMED)] for v in by_k.values()):
                continue  # no call of this model had it
            values = {k: (v[i] or 0.0) * per / step for k, v in by_k.items()}
            series_name = f"{name} {kind}" if isinstance(q, TokenRate) else _cost_name(name, kind)
            out.append(
                {
                    "name": series_name,
                    "labels": {**labels, label: kind},
                    "points": steps.points(start, step, n_points, values, 0.0),
                }
            )
    return out


def _cost_name(name: str, source: str) -> str:
    return f"{name} (estimated)" if source == "estimated" else name


def _cost_total(rows: list, end: float) -> list[dict]:
    totals: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0])
    cs, ce = 1 + SUMMED.index("cs"), 1 + SUMMED.index("ce")
    for k, other, (g,), v in rows:
        if k > 0:  # the stat covers (start, end]; step 0 ends at start
            t = totals[(other, g)]
            t[0] += v[cs] or 0.0
            t[1] += v[ce] or 0.0
            t[2] += v[cs + len(SUMMED)]
            t[3] += v[ce + len(SUMMED)]
    out = []
    for other, g in sorted(totals, key=_order):
        sent, estimated, n_sent, n_estimated = totals[(other, g)]
        name = _model_name(other, g)
        for source, value, n in (("sent", sent, n_sent), ("estimated", estimated, n_estimated)):
            if n:
                labels = {**_model_labels(other, g), "cost_source": source}
                out.append({"name": _cost_name(name, source), "labels": labels, "points": [[end, value]]})
    return out


def _quantiles(q: CallQuantiles, rows: dict, start: float, step: float, n_points: int) -> list[dict]:
    by_series: dict[tuple, dict[int, float]] = defaultdict(dict)
    for k, other, (g,), values in rows.get(quantiles_part(q), []):
        for quantile, v in zip(q.quantiles, values):
            by_series[(other, g or "", quantile)][k] = v
    out = []
    for other, g, quantile in sorted(by_series):
        labels, name = _model_labels(other, g), _model_name(other, g)
        if len(q.quantiles) > 1:
            labels, name = {"quantile": str(quantile), **labels}, f"p{round(quantile * 100)} {name}"
        points = steps.points(start, step, n_points, by_series[(other, g, quantile)], None)
        out.append({"name": name, "labels": labels, "points": points})
    return out


def _failure_ratio(rows: dict, start: float, step: float, n_points: int) -> list[dict]:
    calls: dict[tuple, dict[int, float]] = defaultdict(dict)  # (other, model): {k: calls}
    total: dict[int, float] = defaultdict(float)  # k: all calls
    for k, other, (g,), v in rows["sums"]:
        calls[(other, g)][k] = v[0]
        total[k] += v[0]
    failed: dict[tuple, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for k, other, (g, f, _provider), (n,) in rows["failures"]:
        failed[(other, g, f)][k] += n
    out = []
    for other, g, f in sorted(failed, key=lambda s: (s[0], s[1] or "", s[2])):
        # Calls without a model have no model's calls to be a share of: theirs is of all calls.
        denominators = total if (g == "" and not other) else calls[(other, g)]
        n_failed = failed[(other, g, f)]
        ratio = {k: n_failed.get(k, 0.0) / d for k, d in denominators.items() if d}
        out.append(
            {
                "name": f"{_model_name(other, g)} {f}",
                "labels": {**_model_labels(other, g), "class": f},
                "points": steps.points(start, step, n_points, ratio, None),
            }
        )
    return out


def _failure_rate(q: FailureRate, rows: list, start: float, step: float, n_points: int) -> list[dict]:
    counts: dict[tuple, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for k, other, (g, f, provider), (n,) in rows:
        if f == q.failure:
            counts[(other, g or "", provider)][k] += n / step
    out = []
    for other, g, provider in sorted(counts):
        name = _model_name(other, g)
        if provider and not name.startswith(provider + "/"):  # Plano's models carry their provider: openai/gpt-4o
            name = f"{name} ({provider})"
        out.append(
            {
                "name": name,
                "labels": {**_model_labels(other, g), "llm_provider": provider},
                "points": steps.points(start, step, n_points, counts[(other, g, provider)], 0.0),
            }
        )
    return out


def _route_share(rows: list, end: float, max_series: int) -> tuple[list[dict], dict | None]:
    all_calls = sum(v[0] for _, _, _, v in rows)
    rows = sorted(rows, key=lambda r: (r[1], -r[3][0], r[2][0] or ""))
    out, groups = [], 0
    for _, other, (route,), (n, latency, failed, n_groups) in rows:
        groups = max(groups, int(n_groups))
        labels = dict(OTHER_LABELS) if other else {"route": route}
        name = OTHER if other else (route or "(no route)")
        measures = {"share": n / all_calls, "latency_p95_ms": latency, "failure_ratio": failed / n}
        out.append({"name": name, "labels": labels, "points": [[end, n]]})
        out += [
            {"name": name, "labels": {**labels, "measure": m}, "points": [[end, v]]}
            for m, v in measures.items()
            if v is not None
        ]
    return out, _truncated(max_series, groups, "route", "together")


def _pairs(rows: list, end: float, max_series: int) -> tuple[list[dict], dict | None]:
    rows = sorted(rows, key=lambda r: (r[1], -r[3][0], r[2][0] or "", r[2][1] or ""))
    out = []
    for _, other, (requested, resolved), (n, _groups) in rows:
        if other:
            out.append({"name": OTHER, "labels": dict(OTHER_LABELS), "points": [[end, n]]})
        else:
            labels = {"requested_model": requested, "resolved_model": resolved}
            out.append({"name": f"{requested} → {resolved}", "labels": labels, "points": [[end, n]]})
    groups = max((int(v[1]) for _, _, _, v in rows), default=0)
    return out, _truncated(max_series, groups, "model_pair")


def _signals(rows: dict, start: float, step: float, n_points: int, max_series: int) -> tuple[list[dict], dict | None]:
    counts: dict[tuple, dict[int, float]] = defaultdict(dict)
    groups = 0
    for k, other, (g,), (n, n_groups) in rows["quality"]:
        counts[(other, g)][k] = n
        groups = max(groups, int(n_groups))
    rank = {q: i for i, q in enumerate(QUALITIES)}
    out = [
        {
            "name": OTHER if other else g,
            "labels": dict(OTHER_LABELS) if other else {"quality": g},
            "points": steps.points(start, step, n_points, counts[(other, g)], 0.0),
        }
        for other, g in sorted(counts, key=lambda s: (s[0], rank.get(s[1], len(QUALITIES)), s[1] or ""))
    ]
    flagged = {k: f / n for k, _, _, (f, n) in rows["flagged"] if n}
    if flagged:
        points = steps.points(start, step, n_points, flagged, None)
        out.append({"name": FLAGGED_SERIES, "labels": {"measure": FLAGGED}, "points": points})
    return out, _truncated(max_series, groups, "quality")


def _sessions(q: TopSessions, rows: list, end: float) -> tuple[list[dict], dict | None]:
    out = []
    for _, _, (session,), (cost, estimated, _total) in rows:
        labels = {"session_id": session, "cost_estimated": "true" if estimated is not None else "false"}
        out.append({"name": session, "labels": labels, "points": [[end, cost]]})
    total = int(rows[0][3][2]) if rows else 0
    return out, _truncated(q.limit, total, "session_id", "none")
