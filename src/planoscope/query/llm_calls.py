"""Evaluating the panels over LLM calls (``panels.LlmQuery``, the "Plano - LLM Usage" dashboard):
the statement; ``llm_series.py`` makes the panels' series of its rows. The statement is the
store's, by its ``dialect`` (``llm_calls_duckdb.py``, ``llm_calls_clickhouse.py``: the same parts
and rows); what it reads and answers is ``llm_columns.py``'s.

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
from typing import Protocol

from ..store import SpanStore
from .llm_calls_clickhouse import ClickHouseCalls
from .llm_calls_duckdb import DuckDBCalls
from .llm_columns import COST_SOURCES, QUALITIES, SUMMED, TOKEN_KINDS, quantiles_part
from .panels import LlmQuery

__all__ = ["COST_SOURCES", "QUALITIES", "SUMMED", "TOKEN_KINDS", "query_calls", "quantiles_part"]


class CallReads(Protocol):
    """The statement on a store (``llm_calls_duckdb.DuckDBCalls``, ``llm_calls_clickhouse.ClickHouseCalls``)."""

    def rows(self, queries: Sequence[LlmQuery], start: float, end: float, step: float, n: int) -> list[tuple]:
        """The rows ``(part, k, other, keys, values)`` of every part the ``queries`` need, ``n``
        the groups drawn (max_series)."""


_READS: dict[str, type] = {"duckdb": DuckDBCalls, "clickhouse": ClickHouseCalls}


def query_calls(
    store: SpanStore, queries: Sequence[LlmQuery], start: float, end: float, step: float, max_series: int
) -> dict[str, list]:
    """The rows of every part the ``queries`` need, by part: ``(k, other, keys, values)``."""
    rows = _READS[store.dialect](store).rows(queries, start, end, step, int(max_series))
    out: dict[str, list] = defaultdict(list)
    for part, kk, other, keys, values in rows:
        out[part].append((kk, bool(other), keys, values))
    return out
