"""Filling the columns a newer planoscope added for the spans an earlier one stored.

A column added to an existing store (``schema.ADDED_COLUMNS``) holds NULL in the rows stored
before. Those whose value comes from the span itself (a typed column, from the stored attributes;
a derived one, from the other columns; the estimated cost, from the price table) are filled on
start, in slices of the span start time, each slice and the position reached committed together:
a start killed midway loses nothing and the next start goes on from the slice it was in.

What is left to do is one ``planoscope_meta`` row, written in the transaction that adds the
columns (``Fill.pending``): ``{"columns": [...], "cutoff": <IngestedAt of the last old span>,
"next": <start time (ns) of the first span not done>}``. Spans ingested after the columns were
added are filled as they are inserted, and never touched here (``IngestedAt > cutoff``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .schema import DERIVED_COLUMNS, ESTIMATED_COST, TYPED_COLUMNS

log = logging.getLogger("planoscope.store")

META_KEY = "fill_columns"
# Spans a slice aims at: a 10 M-span store fills in ~50 commits, each a few seconds at most.
SLICE_SPANS = 200_000
# The columns an estimate needs, read for the spans that have tokens and no sent cost.
_PRICED = ("LlmModel", "LlmProvider", "PromptTokens", "CachedInputTokens", "CacheCreationTokens", "CompletionTokens")

# The spans still to fill: stored before the columns were added, from the position reached.
_OLD = "IngestedAt <= CAST(? AS TIMESTAMP) AND Timestamp >= make_timestamp_ns(?)"

Estimate = Callable[[pa.Table], pa.Array]  # llm.prices.Prices.estimate
Progress = Callable[[int, int], None]  # (spans done, spans in all)


def fillable(name: str) -> bool:
    """Whether an added column's value for an old span can be computed from what it stored."""
    return name == ESTIMATED_COST[0] or any(c.name == name for c in TYPED_COLUMNS + DERIVED_COLUMNS)


@dataclass
class Fill:
    columns: list[str]
    cutoff: str  # the newest IngestedAt among the spans to fill (a timestamp literal)
    next: int  # epoch ns: the spans starting at or after it are not filled yet

    @staticmethod
    def pending(con: duckdb.DuckDBPyConnection) -> Fill | None:
        rows = con.execute("SELECT value FROM planoscope_meta WHERE key = ?", [META_KEY]).fetchall()
        return Fill(**json.loads(rows[0][0])) if rows else None

    @staticmethod
    def plan(con: duckdb.DuckDBPyConnection, columns: list[str]) -> None:
        """Record that ``columns`` (just added, in the open transaction) are to be filled for
        every span stored so far; a fill still pending is merged into it and starts over (filling
        is idempotent)."""
        before = Fill.pending(con)
        cutoff, first = con.execute(
            "SELECT max(IngestedAt)::VARCHAR, epoch_ns(min(Timestamp)) FROM otel_traces"
        ).fetchall()[0]
        if cutoff is None:  # no span stored: nothing to fill
            con.execute("DELETE FROM planoscope_meta WHERE key = ?", [META_KEY])
            return
        if before is not None:
            columns = list(dict.fromkeys(before.columns + columns))
            cutoff = max(cutoff, before.cutoff)
        con.execute(
            "INSERT OR REPLACE INTO planoscope_meta VALUES (?, ?)", [META_KEY, Fill(columns, cutoff, first)._json()]
        )

    def run(self, con: duckdb.DuckDBPyConnection, estimate: Estimate | None, progress: Progress) -> int:
        """Fill what is left, slice by slice, calling ``progress`` after each; returns the spans
        filled. The estimated cost is computed last: it reads the cached-token columns."""
        # Every key the typed columns read, pulled out of each span's attributes in one parse
        # (DuckDB computes the list once a row: ~5x faster than a json_extract a key).
        typed = [c for c in TYPED_COLUMNS if c.name in self.columns]
        keys = list(dict.fromkeys(k for c in typed for k in c.keys))
        pointers = ", ".join("'/" + k.replace("~", "~0").replace("/", "~1") + "'" for k in keys)
        values = f"json_extract_string(SpanAttributes, [{pointers}])"
        sql = {c.name: c.sql(lambda key: f"{values}[{keys.index(key) + 1}]") for c in typed}
        sql |= {c.name: c.sql for c in DERIVED_COLUMNS}
        # Derived columns read only columns older than them, so one UPDATE sets every column.
        sets = ", ".join(f'"{c}" = {sql[c]}' for c in self.columns if c in sql)
        total, last = self.remaining(con)
        old = _OLD
        started, done = time.monotonic(), 0
        progress(done, total)
        if not total:
            con.execute("DELETE FROM planoscope_meta WHERE key = ?", [META_KEY])
            return 0
        width = max(1, math.ceil((last + 1 - self.next) / math.ceil(total / SLICE_SPANS)))
        while self.next <= last:
            hi = min(self.next + width, last + 1)
            where, params = f"{old} AND Timestamp < make_timestamp_ns(?)", [self.cutoff, self.next, hi]
            con.begin()
            try:
                if sets:
                    con.execute(f"UPDATE otel_traces SET {sets} WHERE {where}", params)
                if ESTIMATED_COST[0] in self.columns and estimate is not None:
                    _estimate(con, where, params, estimate)
                (n,) = con.execute(f"SELECT count(*) FROM otel_traces WHERE {where}", params).fetchall()[0]
                self.next = hi
                if self.next > last:
                    con.execute("DELETE FROM planoscope_meta WHERE key = ?", [META_KEY])
                else:
                    con.execute("INSERT OR REPLACE INTO planoscope_meta VALUES (?, ?)", [META_KEY, self._json()])
                con.commit()
            except BaseException:
                con.rollback()
                raise
            done += n
            progress(done, total)
        log.info(
            "filled the new columns (%s) of %d spans stored by an earlier version in %.1f s",
            ", ".join(self.columns),
            done,
            time.monotonic() - started,
        )
        return done

    def remaining(self, con: duckdb.DuckDBPyConnection) -> tuple[int, int | None]:
        """The spans left to fill, and the start time (epoch ns) of the last."""
        return con.execute(
            f"SELECT count(*), epoch_ns(max(Timestamp)) FROM otel_traces WHERE {_OLD}", [self.cutoff, self.next]
        ).fetchall()[0]

    def _json(self) -> str:
        return json.dumps({"columns": self.columns, "cutoff": self.cutoff, "next": self.next})


def _estimate(con: duckdb.DuckDBPyConnection, rng: str, params: list, estimate: Estimate) -> None:
    """Set the estimated cost of the slice's calls that have tokens and no sent cost."""
    calls = con.sql(
        f"SELECT rowid AS r, {', '.join(_PRICED)}, CostUsd FROM otel_traces WHERE {rng} AND CostUsd IS NULL"
        " AND LlmModel IS NOT NULL AND (PromptTokens IS NOT NULL OR CompletionTokens IS NOT NULL)",
        params=params,
    ).to_arrow_table()
    if calls.num_rows == 0:
        return
    cost = estimate(calls)
    costs = pa.table({"r": calls.column("r"), "cost": cost}).filter(pc.is_valid(cost))
    if costs.num_rows:
        con.register("_planoscope_costs", costs)
        try:
            con.execute(
                f'UPDATE otel_traces SET "{ESTIMATED_COST[0]}" = c.cost FROM _planoscope_costs c'
                " WHERE otel_traces.rowid = c.r"
            )
        finally:
            con.unregister("_planoscope_costs")
