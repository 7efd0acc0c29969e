"""The statement over LLM calls on DuckDB (``llm_calls.py`` says what it answers): one SELECT,
``c`` not materialized (each part's scan reads only its own columns, of the calls only: the stored
``LlmCall`` flag is filtered in the scan; materialized, ``c`` copied every call's 18 columns
first: at 7 days of 10 M spans the refresh took ~560 ms that way against ~475,
benchmarks/dashboard.py), ``km`` materialized, quantiles by ``quantile_cont``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..store.schema import LLM_CALL
from . import steps
from .llm_columns import CALL_VALUES, COLUMNS, PER_MODEL, SUMMED, Part, quantiles_part
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

if TYPE_CHECKING:
    from ..store import SpanStore


def _parts(q: LlmQuery, n: int) -> list[Part]:
    """The parts ``q`` needs, ``n`` the number of groups drawn (max_series)."""
    if isinstance(q, (TokenRate, CostRate, CostTotal, CacheRatio)):
        return [_sums()]
    if isinstance(q, CallQuantiles):
        expr, cols = CALL_VALUES[q.value]
        qs = "[" + ", ".join(repr(float(x)) for x in q.quantiles) + "]"
        name = quantiles_part(q)
        return [
            Part(
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
            Part(
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
            Part(
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
            Part(
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
            Part(
                name,
                f"(SELECT '{name}', NULL, false, [s], [cost, ce, total]::DOUBLE[] FROM ("
                "SELECT s, coalesce(sum(cs), 0) + coalesce(sum(ce), 0) AS cost, sum(ce) AS ce, count(*) OVER () AS total"
                " FROM c WHERE k > 0 AND s IS NOT NULL AND (cs IS NOT NULL OR ce IS NOT NULL) GROUP BY s)"
                f" ORDER BY cost DESC, s LIMIT {int(q.limit)})",
                ("s", "cs", "ce"),
            )
        ]
    raise TypeError(q)  # pragma: no cover - the LlmQuery union is closed


def _sums() -> Part:
    sums = ", ".join(f"sum({c})" for c in SUMMED)
    counts = ", ".join(f"sum(n_{c})" for c in SUMMED)
    return Part(
        "sums",
        f"SELECT 'sums', k, other, [g], [sum(n), {sums}, {counts}]::DOUBLE[] FROM kmf GROUP BY k, other, g",
        SUMMED,
        ("kmf",),
        tuple((c, f"sum({c})") for c in SUMMED) + tuple((f"n_{c}", f"count({c})") for c in SUMMED),
    )


def _failures(n: int) -> Part:
    return Part(
        "failures",
        "SELECT 'failures', k, other, [g, f, p], [n]::DOUBLE[] FROM ("
        f"SELECT c.k, rank > {n} AS other, CASE WHEN rank <= {n} THEN c.m END AS g, c.f, c.p, count(*) AS n"
        " FROM c JOIN top USING (m) WHERE c.f IS NOT NULL GROUP BY ALL)",
        ("f", "p"),
        ("top",),
    )


_MODELS = Part("models", "SELECT 'models', NULL, false, [], [max(groups)]::DOUBLE[] FROM top", (), ("top",))


def _statement(queries: Sequence[LlmQuery], k: str, n: int) -> str:
    """One SELECT answering every query. ``c``: the LLM calls of the range; ``km``: per step and
    model, the calls and the aggregates the parts ask for; ``top``: the models ranked by calls;
    ``kmf``: ``km`` with the models past the top ``n`` folded into ``other``; ``rest``: the calls
    of those models."""
    parts: dict[str, Part] = {}
    for q in queries:
        for part in _parts(q, n):
            parts.setdefault(part.name, part)
    if any(isinstance(q, PER_MODEL) for q in queries):
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


class DuckDBCalls:
    """``llm_calls.CallReads`` on a ``DuckDBStore``."""

    def __init__(self, store: SpanStore):
        self.store = store

    def rows(self, queries: Sequence[LlmQuery], start: float, end: float, step: float, n: int) -> list[tuple]:
        params, k = steps.window(start, end, step)
        return self.store.query(_statement(queries, k, n), params)
