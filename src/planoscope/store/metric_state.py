"""The cumulative metric sets' saved totals in a DuckDB file (span metrics, LLM metrics:
``metrics/cumulative.py``).

They are snapshotted every few seconds with a watermark: the IngestedAt of the last commit they
include. On start, the spans ingested after the watermark are replayed on top, so the totals are
exact without writing them in every commit (~8 ms of DuckDB statement overhead each, a fifth of a
4,000-span commit). Each set of metrics keeps its own: table ``{name}_state``, meta keys
``{name}`` (the settings' fingerprint) and ``{name}_watermark`` (``DuckDBStore.save_metric_totals``,
``metric_totals`` and ``commit_state``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import duckdb
import pyarrow as pa

from .spanstore import Totals


def state_table(name: str) -> str:
    """The table of the metric set ``name``'s totals. The name is planoscope's own (spanmetrics,
    llmmetrics), never from input; checked all the same, as it goes into SQL."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"not a metric set name: {name!r}")
    return f"{name}_state"


def state_ddl(name: str) -> str:
    """Per series: its observations (``calls``), their sum (in the family's unit: milliseconds
    for span metrics, as the name says) and the per-bucket counts."""
    return (
        f"CREATE TABLE IF NOT EXISTS {state_table(name)} ("
        " series VARCHAR PRIMARY KEY, calls BIGINT NOT NULL, sum_ms DOUBLE NOT NULL,"
        " buckets BIGINT[] NOT NULL)"
    )


def put_totals(con: duckdb.DuckDBPyConnection, name: str, totals: Sequence[Totals]) -> None:
    """Write (or replace) these series' totals of the metric set ``name``, in the caller's transaction."""
    series, calls, sums, buckets = zip(*totals)
    rows = pa.table(
        {
            "series": pa.array(series, pa.string()),
            "calls": pa.array(calls, pa.int64()),
            "sum": pa.array(sums, pa.float64()),
            "buckets": pa.array(buckets, pa.list_(pa.int64())),
        }
    )
    con.register("_totals", rows)
    try:
        con.execute(f"INSERT OR REPLACE INTO {state_table(name)} SELECT * FROM _totals")
    finally:
        con.unregister("_totals")
