"""The statement over LLM calls on ClickHouse (``llm_calls.py`` says what it answers): the same
parts, CTEs and rows as ``llm_calls_duckdb.py``, in ClickHouse's SQL over the exporter's
``otel_traces`` (planoscope's MATERIALIZED columns; ``LlmCall`` the stored flag), the window's
bounds and steps server-side parameters (``steps.clickhouse_window``).

Where the SQL differs: quantiles are ``quantilesExactInclusive`` (linear interpolation between
closest ranks: DuckDB's ``quantile_cont``); the rows' arrays are built of one type each (keys
``Nullable(String)``, values ``Nullable(Float64)``) so that the parts' UNION ALL has one; every
alias is new (ClickHouse resolves an alias anywhere in its SELECT, so ``sum(n) AS n`` would refer
to itself). ClickHouse runs a CTE where it is named, so ``c`` and ``km`` are computed per use,
where DuckDB materializes ``km`` once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..store.clickhouse import SPANS
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

NO_K = "CAST(NULL AS Nullable(Int64))"


def _keys(*exprs: str) -> str:
    return f"CAST([{', '.join(f'CAST({e} AS Nullable(String))' for e in exprs)}] AS Array(Nullable(String)))"


def _values(*exprs: str) -> str:
    return f"CAST([{', '.join(f'toFloat64({e})' for e in exprs)}] AS Array(Nullable(Float64)))"


def _row(part: str, k: str, other: str, keys: str, values: str) -> str:
    return f"'{part}' AS part, {k} AS kk, toBool({other}) AS oo, {keys} AS keys, {values} AS vals"


def _levels(qs: Sequence[float]) -> str:
    return ", ".join(repr(float(x)) for x in qs)  # the panel's own constants


def _parts(q: LlmQuery, n: int) -> list[Part]:
    """``llm_calls_duckdb._parts`` on ClickHouse."""
    if isinstance(q, (TokenRate, CostRate, CostTotal, CacheRatio)):
        return [_sums()]
    if isinstance(q, CallQuantiles):
        expr, cols = CALL_VALUES[q.value]
        name = quantiles_part(q)
        quantiles = f"quantilesExactInclusive({_levels(q.quantiles)})"
        return [
            Part(
                name,
                f"SELECT {_row(name, 'toNullable(k)', 'false', _keys('g'), name)} FROM kmf"
                f" WHERE NOT other AND notEmpty({name})"
                f" UNION ALL SELECT {_row(name, 'toNullable(k)', 'true', _keys('NULL'), f'{quantiles}({expr})')}"
                f" FROM rest GROUP BY k HAVING count({expr}) > 0",
                cols,
                ("kmf", "rest"),
                ((name, f"if(count({expr}) > 0, {quantiles}({expr}), [])"),),
            )
        ]
    if isinstance(q, FailureRatio):
        return [_sums(), _failures(n)]
    if isinstance(q, FailureRate):
        return [_failures(n)]
    if isinstance(q, RouteShare):
        p = repr(float(q.quantile))
        others = (
            f"(SELECT quantileExactInclusive({p})(ms) FROM c WHERE k > 0 AND (SELECT max(groups) FROM routes) > {n}"
            f" AND r NOT IN (SELECT r FROM routes WHERE rank <= {n}))"
        )
        return [
            Part(
                "routes",
                f"SELECT {_row('routes', NO_K, 'false', _keys('r'), _values('rn', 'lat', 'failed', 'groups'))}"
                f" FROM routes WHERE rank <= {n} UNION ALL SELECT"
                f" {_row('routes', NO_K, 'true', _keys('NULL'), _values('sum(rn)', others, 'sum(failed)', 'max(groups)'))}"
                f" FROM routes WHERE rank > {n} HAVING count() > 0",
                ("r", "ms", "f"),
                ctes=(
                    f"routes AS (SELECT r, count() AS rn, quantileExactInclusive({p})(ms) AS lat, count(f) AS failed,"
                    " row_number() OVER (ORDER BY count() DESC, r) AS rank, count() OVER () AS groups"
                    " FROM c WHERE k > 0 GROUP BY r)",
                ),
            )
        ]
    if isinstance(q, ModelSelection):
        return [
            Part(
                "pairs",
                f"SELECT {_row('pairs', NO_K, 'other', _keys('rq2', 'rs2'), _values('pn', 'pg'))} FROM ("
                f"SELECT rank > {n} AS other, if(rank <= {n}, rq, NULL) AS rq2, if(rank <= {n}, rs, NULL) AS rs2,"
                " sum(pairn) AS pn, max(groups) AS pg FROM ("
                "SELECT rq, rs, count() AS pairn, row_number() OVER (ORDER BY count() DESC, rq, rs) AS rank,"
                " count() OVER () AS groups FROM c WHERE k > 0 AND rq IS NOT NULL GROUP BY rq, rs)"
                " GROUP BY other, rq2, rs2)",
                ("rq", "rs"),
            )
        ]
    if isinstance(q, SignalsQuality):
        return [
            Part(
                "quality",
                f"SELECT {_row('quality', 'toNullable(k)', 'other', _keys('g'), _values('qn', 'qg'))} FROM ("
                f"SELECT k, rank > {n} AS other, if(rank <= {n}, q, NULL) AS g, sum(sqn) AS qn,"
                " max(groups) AS qg FROM sq INNER JOIN sqr USING (q) GROUP BY k, other, g)"
                f" UNION ALL SELECT {_row('flagged', 'toNullable(k)', 'false', _keys(), _values('countIf(fl)', 'count()'))}"
                " FROM c WHERE fl IS NOT NULL GROUP BY k",
                ("q", "fl"),
                ctes=(
                    "sq AS (SELECT k, q, count() AS sqn FROM c WHERE q IS NOT NULL GROUP BY k, q)",
                    "sqr AS (SELECT q, row_number() OVER (ORDER BY sum(sqn) DESC, q) AS rank,"
                    " count() OVER () AS groups FROM sq GROUP BY q)",
                ),
            )
        ]
    if isinstance(q, TopSessions):
        name = f"sessions_{int(q.limit)}"
        return [
            Part(
                name,
                f"SELECT {_row(name, NO_K, 'false', _keys('s'), _values('cost', 'sce', 'total'))} FROM ("
                "SELECT s, coalesce(sum(cs), 0) + coalesce(sum(ce), 0) AS cost, sum(ce) AS sce,"
                " count() OVER () AS total FROM c WHERE k > 0 AND s IS NOT NULL AND (cs IS NOT NULL OR ce IS NOT NULL)"
                f" GROUP BY s) ORDER BY cost DESC, s LIMIT {int(q.limit)}",
                ("s", "cs", "ce"),
            )
        ]
    raise TypeError(q)  # pragma: no cover - the LlmQuery union is closed


def _sums() -> Part:
    sums = [f"sum(k_{c})" for c in SUMMED]
    counts = [f"sum(n_{c})" for c in SUMMED]
    return Part(
        "sums",
        f"SELECT {_row('sums', 'toNullable(k)', 'other', _keys('g'), _values('sum(n)', *sums, *counts))}"
        " FROM kmf GROUP BY k, other, g",
        SUMMED,
        ("kmf",),
        # named apart from c's columns: an alias is seen everywhere in its SELECT
        tuple((f"k_{c}", f"sum({c})") for c in SUMMED) + tuple((f"n_{c}", f"count({c})") for c in SUMMED),
    )


def _failures(n: int) -> Part:
    return Part(
        "failures",
        f"SELECT {_row('failures', 'toNullable(fk)', 'fo', _keys('fg', 'ff', 'fp'), _values('fn'))} FROM ("
        f"SELECT c.k AS fk, rank > {n} AS fo, if(rank <= {n}, c.m, NULL) AS fg, c.f AS ff, c.p AS fp, count() AS fn"
        " FROM c INNER JOIN top USING (m) WHERE c.f IS NOT NULL GROUP BY fk, fo, fg, ff, fp)",
        ("f", "p"),
        ("top",),
    )


_MODELS = Part(
    "models", f"SELECT {_row('models', NO_K, 'false', _keys(), _values('max(groups)'))} FROM top", (), ("top",)
)


def _statement(queries: Sequence[LlmQuery], k: str, window: str, n: int) -> str:
    """``llm_calls_duckdb._statement`` on ClickHouse: the same CTEs."""
    parts: dict[str, Part] = {}
    for q in queries:
        for part in _parts(q, n):
            parts.setdefault(part.name, part)
    if any(isinstance(q, PER_MODEL) for q in queries):
        parts.setdefault("models", _MODELS)
    columns = {"m"} | {c for part in parts.values() for c in part.columns}
    cols = ", ".join(f"{sql} AS {c}" for c, sql in COLUMNS.items() if c in columns)
    ctes = [f"c AS (SELECT {k} AS k, {cols} FROM {SPANS} WHERE {window} AND {LLM_CALL})"]
    if any(part.uses for part in parts.values()):
        km = dict(agg for part in parts.values() for agg in part.km)
        aggs = "".join(f", {sql} AS {name}" for name, sql in km.items())
        ctes += [
            f"km AS (SELECT k, m, count() AS n{aggs} FROM c GROUP BY k, m)",
            "top AS (SELECT m, row_number() OVER (ORDER BY sum(n) DESC, m) AS rank, count() OVER () AS groups"
            " FROM km GROUP BY m)",
            f"kmf AS (SELECT *, rank > {n} AS other, if(rank <= {n}, m, NULL) AS g FROM km INNER JOIN top USING (m))",
            f"rest AS (SELECT * FROM c WHERE (SELECT max(groups) FROM top) > {n}"
            f" AND m NOT IN (SELECT m FROM top WHERE rank <= {n}))",
        ]
    ctes += [cte for part in parts.values() for cte in part.ctes]
    union = " UNION ALL ".join(f"({part.sql})" for part in parts.values())
    return "WITH " + ", ".join(ctes) + f" SELECT part, kk, oo, keys, vals FROM ({union})"


class ClickHouseCalls:
    """``llm_calls.CallReads`` on a ``ClickHouseStore`` (its ``read``)."""

    def __init__(self, store: SpanStore):
        self.store = store

    def rows(self, queries: Sequence[LlmQuery], start: float, end: float, step: float, n: int) -> list[tuple]:
        params, window, k = steps.clickhouse_window(start, end, step)
        return self.store.read(_statement(queries, k, window, n), params)
