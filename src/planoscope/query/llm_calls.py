"""Evaluating the panels over LLM calls (``panels.LlmQuery``, the "Plano - LLM Usage" dashboard):
the statement; ``llm_series.py`` makes the panels' series of its rows.

Every panel of a refresh is answered by one statement: ``c`` names the LLM calls of the range
(``schema.LLM_CALL``, ``(start - step, end]``) with the typed columns the panels need; each panel
then adds the parts it needs to a ``UNION ALL``, each part an aggregate of ``c`` (or of the per
step and model aggregate ``km``, which the per-model panels share) returned as uniform rows
``(part, k, other, keys, values)``. Panels that ask for the same part share it (the failure ratio
and the 429s read one aggregate of the failed calls). ``c`` is not materialized: each part's scan
reads only its own columns, of the calls only (the stored ``LlmCall`` flag is filtered in the
scan). Materialized, ``c`` copied every call's 18 columns first: at 7 days of 10 M spans (2.2 M
calls) the refresh took ~560 ms that way against ~475 (benchmarks/dashboard.py).

Steps follow ``steps.py``: the point at ``t`` covers the calls that started in ``(t - step, t]``.
Sums are exact (the tokens of a panel integrate to what was sent: the points times the step add up
to the calls' token counts) and so are the quantiles (DuckDB's ``quantile_cont``, from every
call's value). The stat panels cover ``(start, end]`` and answer one point per series, at ``end``.

Models are ranked once per refresh, by calls in the range: the top ``max_series`` are drawn by
every per-model panel (the same models everywhere), the rest as one series ``other`` (label
``other="true"``): summed for sums and counts, for quantiles the quantiles of all their calls
together (from ``rest``, read only when there are more models than that). Routes, model pairs and
signals qualities are ranked the same way, each by its calls; sessions are the top ``limit`` by cost.
A call without a model, route or requested model is grouped under the empty value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ..store import DuckDBStore
from ..store.schema import FAILURE_CLASS, LLM_CALL
from . import steps
from .panels import (
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

# The columns of ``c``: the call's step ``k`` and these, by short name, from the typed columns.
COLUMNS = {
    "m": "coalesce(LlmModel, '')",
    "p": "coalesce(LlmProvider, '')",
    "it": "PromptTokens",
    "ot": "CompletionTokens",
    "ct": "CachedInputTokens",
    "rt": "ReasoningTokens",
    "cs": "CostUsd",
    "ce": "EstimatedCostUsd",
    "ttft": "TimeToFirstTokenMs",
    "ms": "Duration / 1e6",
    "f": FAILURE_CLASS,
    "r": "coalesce(RouteName, '')",
    "rq": "RequestedModel",
    "rs": "ResolvedModel",
    "q": "SignalsQuality",
    "fl": "Flagged",
    "s": "SessionId",
}
# Generation speed is measured on the calls whose output streamed: Plano sets the time to first
# token on every response, and a response that was not streamed arrives whole at its first chunk,
# a few ms before the span ends (completion / 3 ms: 100,000 tok/s). A streamed one goes on for
# the generation: the calls with at least this long after the first token count.
MIN_GENERATION_MS = 100
# A value of each call that CallQuantiles can take the quantiles of: its SQL over ``c`` (NULL
# where the call has none) and the columns it reads. Generation speed: completion tokens over
# the time after the first token.
CALL_VALUES = {
    "ttft_ms": ("ttft", ("ttft",)),
    "output_tokens_per_second": (
        f"CASE WHEN ot > 0 AND ms - ttft >= {MIN_GENERATION_MS} THEN ot / ((ms - ttft) / 1000) END",
        ("ot", "ms", "ttft"),
    ),
}
# The sums per step and model (the part "sums"): the sum of each column and how many calls had it.
SUMMED = ("it", "ot", "ct", "rt", "cs", "ce")
TOKEN_KINDS = {"input": "it", "output": "ot", "cached_input": "ct", "reasoning": "rt"}
COST_SOURCES = {"sent": "cs", "estimated": "ce"}
QUALITIES = ("excellent", "good", "neutral", "poor", "severe")  # Plano's signals.quality, best first
_PER_MODEL = (TokenRate, CostRate, CostTotal, CallQuantiles, FailureRatio, FailureRate, CacheRatio)


@dataclass(frozen=True)
class _Part:
    """A part of the statement: ``sql`` selects rows ``(part, k, other, keys, values)`` (several
    SELECTs joined by UNION ALL at most), reading the columns ``columns`` of ``c``, the shared
    CTEs ``uses`` (``km``, ``top``, ``kmf``, ``rest``: see ``_statement``) with the per step and
    model aggregates ``km`` added to ``km`` by name, and its own CTEs ``ctes``."""

    name: str
    sql: str
    columns: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    km: tuple[tuple[str, str], ...] = ()
    ctes: tuple[str, ...] = ()


def _parts(q: LlmQuery, n: int) -> list[_Part]:
    """The parts ``q`` needs, ``n`` the number of groups drawn (max_series)."""
    if isinstance(q, (TokenRate, CostRate, CostTotal, CacheRatio)):
        return [_sums()]
    if isinstance(q, CallQuantiles):
        expr, cols = CALL_VALUES[q.value]
        qs = "[" + ", ".join(repr(float(x)) for x in q.quantiles) + "]"
        name = quantiles_part(q)
        return [
            _Part(
                name,
                f"SELECT '{name}', k, false, [g], {name} FROM kmf WHERE NOT other AND {name} IS NOT NULL"
                f" UNION ALL SELECT '{name}', k, true, [NULL], quantile_cont({expr}, {qs}) FROM rest"
                f" GROUP BY k HAVING count({expr}) > 0",
                cols,
                ("kmf", "rest"),
                ((name, f"quantile_cont({expr}, {qs})"),),
            )
        ]
    if isinstance(q, FailureRatio):
        return [_sums(), _failures(n)]
    if isinstance(q, FailureRate):
        return [_failures(n)]
    if isinstance(q, RouteShare):
        p = repr(float(q.quantile))
        return [
            _Part(
                "routes",
                f"SELECT 'routes', NULL, false, [r], [n, lat, failed, groups]::DOUBLE[] FROM routes WHERE rank <= {n}"
                f" UNION ALL SELECT 'routes', NULL, true, [NULL], [sum(n), (SELECT quantile_cont(ms, {p}) FROM c"
                f" WHERE k > 0 AND (SELECT max(groups) FROM routes) > {n} AND r NOT IN"
                f" (SELECT r FROM routes WHERE rank <= {n})), sum(failed), max(groups)]::DOUBLE[]"
                f" FROM routes WHERE rank > {n} HAVING count(*) > 0",
                ("r", "ms", "f"),
                ctes=(
                    f"routes AS (SELECT r, count(*) AS n, quantile_cont(ms, {p}) AS lat, count(f) AS failed,"
                    " row_number() OVER (ORDER BY count(*) DESC, r) AS rank, count(*) OVER () AS groups"
                    " FROM c WHERE k > 0 GROUP BY r)",
                ),
            )
        ]
    if isinstance(q, ModelSelection):
        return [
            _Part(
                "pairs",
                "SELECT 'pairs', NULL, other, [rq, rs], [n, groups]::DOUBLE[] FROM ("
                f"SELECT rank > {n} AS other, CASE WHEN rank <= {n} THEN rq END AS rq,"
                f" CASE WHEN rank <= {n} THEN rs END AS rs, sum(n) AS n, max(groups) AS groups FROM ("
                "SELECT rq, rs, count(*) AS n, row_number() OVER (ORDER BY count(*) DESC, rq, rs) AS rank,"
                " count(*) OVER () AS groups FROM c WHERE k > 0 AND rq IS NOT NULL GROUP BY rq, rs) GROUP BY ALL)",
                ("rq", "rs"),
            )
        ]
    if isinstance(q, SignalsQuality):
        return [
            _Part(
                "quality",
                "SELECT 'quality', k, other, [g], [n, groups]::DOUBLE[] FROM ("
                f"SELECT k, rank > {n} AS other, CASE WHEN rank <= {n} THEN q END AS g, sum(n) AS n,"
                " max(groups) AS groups FROM sq JOIN sqr USING (q) GROUP BY ALL)"
                " UNION ALL SELECT 'flagged', k, false, [], [count(*) FILTER (WHERE fl), count(*)]::DOUBLE[]"
                " FROM c WHERE fl IS NOT NULL GROUP BY k",
                ("q", "fl"),
                ctes=(
                    "sq AS (SELECT k, q, count(*) AS n FROM c WHERE q IS NOT NULL GROUP BY k, q)",
                    "sqr AS (SELECT q, row_number() OVER (ORDER BY sum(n) DESC, q) AS rank,"
                    " count(*) OVER () AS groups FROM sq GROUP BY q)",
                ),
            )
        ]
    if isinstance(q, TopSessions):
        name = f"sessions_{int(q.limit)}"
        return [
            _Part(
                name,
                f"(SELECT '{name}', NULL, false, [s], [cost, ce, total]::DOUBLE[] FROM ("
                "SELECT s, coalesce(sum(cs), 0) + coalesce(sum(ce), 0) AS cost, sum(ce) AS ce, count(*) OVER () AS total"
                " FROM c WHERE k > 0 AND s IS NOT NULL AND (cs IS NOT NULL OR ce IS NOT NULL) GROUP BY s)"
                f" ORDER BY cost DESC, s LIMIT {int(q.limit)})",
                ("s", "cs", "ce"),
            )
        ]
    raise TypeError(q)  # pragma: no cover - the LlmQuery union is closed


def quantiles_part(q: CallQuantiles) -> str:
    """The part (and ``km`` column) of ``q``'s quantiles: q_ttft_ms_500_950_990."""
    return f"q_{q.value}_" + "_".join(str(round(x * 1000)) for x in q.quantiles)


def _sums() -> _Part:
    sums = ", ".join(f"sum({c})" for c in SUMMED)
    counts = ", ".join(f"sum(n_{c})" for c in SUMMED)
    return _Part(
        "sums",
        f"SELECT 'sums', k, other, [g], [sum(n), {sums}, {counts}]::DOUBLE[] FROM kmf GROUP BY k, other, g",
        SUMMED,
        ("kmf",),
        tuple((c, f"sum({c})") for c in SUMMED) + tuple((f"n_{c}", f"count({c})") for c in SUMMED),
    )


def _failures(n: int) -> _Part:
    return _Part(
        "failures",
        "SELECT 'failures', k, other, [g, f, p], [n]::DOUBLE[] FROM ("
        f"SELECT c.k, rank > {n} AS other, CASE WHEN rank <= {n} THEN c.m END AS g, c.f, c.p, count(*) AS n"
        " FROM c JOIN top USING (m) WHERE c.f IS NOT NULL GROUP BY ALL)",
        ("f", "p"),
        ("top",),
    )


_MODELS = _Part("models", "SELECT 'models', NULL, false, [], [max(groups)]::DOUBLE[] FROM top", (), ("top",))


def _statement(queries: Sequence[LlmQuery], k: str, n: int) -> str:
    """One SELECT answering every query. ``c``: the LLM calls of the range; ``km``: per step and
    model, the calls and the aggregates the parts ask for; ``top``: the models ranked by calls;
    ``kmf``: ``km`` with the models past the top ``n`` folded into ``other``; ``rest``: the calls
    of those models."""
    parts: dict[str, _Part] = {}
    for q in queries:
        for part in _parts(q, n):
            parts.setdefault(part.name, part)
    if any(isinstance(q, _PER_MODEL) for q in queries):
        parts.setdefault("models", _MODELS)  # how many models there were, for ``truncated``
    columns = {"m"} | {c for part in parts.values() for c in part.columns}
    cols = ", ".join(f"{sql} AS {c}" for c, sql in COLUMNS.items() if c in columns)
    ctes = [
        f"c AS NOT MATERIALIZED (SELECT {k} AS k, {cols} FROM otel_traces"
        f" WHERE Timestamp > ? AND Timestamp <= ? AND {LLM_CALL})"
    ]
    if any(part.uses for part in parts.values()):
        km = dict(agg for part in parts.values() for agg in part.km)
        aggs = "".join(f", {sql} AS {name}" for name, sql in km.items())
        ctes += [
            f"km AS MATERIALIZED (SELECT k, m, count(*) AS n{aggs} FROM c GROUP BY k, m)",
            "top AS (SELECT m, row_number() OVER (ORDER BY sum(n) DESC, m) AS rank, count(*) OVER () AS groups"
            " FROM km GROUP BY m)",
            f"kmf AS (SELECT km.*, rank > {n} AS other, CASE WHEN rank <= {n} THEN m END AS g FROM km JOIN top USING (m))",
            # Read only when there are more models than drawn: the filter's first term is false otherwise.
            f"rest AS (SELECT * FROM c WHERE (SELECT max(groups) FROM top) > {n}"
            f" AND m NOT IN (SELECT m FROM top WHERE rank <= {n}))",
        ]
    ctes += [cte for part in parts.values() for cte in part.ctes]
    return "WITH " + ", ".join(ctes) + " " + " UNION ALL ".join(part.sql for part in parts.values())


def query_calls(
    store: DuckDBStore, queries: Sequence[LlmQuery], start: float, end: float, step: float, max_series: int
) -> dict[str, list]:
    """The rows of every part the ``queries`` need, by part: ``(k, other, keys, values)``."""
    params, k = steps.window(start, end, step)
    rows = store.query(_statement(queries, k, int(max_series)), params)
    out: dict[str, list] = defaultdict(list)
    for part, kk, other, keys, values in rows:
        out[part].append((kk, other, keys, values))
    return out
