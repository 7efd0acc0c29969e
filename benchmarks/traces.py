"""Trace explorer benchmark: trace by id and trace searches on a store of 10 M spans (7 days).

The store is filled exactly as ``benchmarks/dashboard.py`` fills it (simulated Plano traffic
tiled over 7 days; pass the same ``--keep DIR`` to both to fill it once). Then, against a real
``planoscope serve`` on that data, over HTTP as the UI asks:

- ``GET /api/v1/traces/{id}`` for random stored trace ids (the first, cold, look-up apart);
- ``GET /api/v1/traces`` searches over the latest hour (no filter, a model, a slow-span
  filter sorted by duration, an attribute, errors only), the latest day and all 7 days;
- ``GET /api/v1/traces/facets`` over the hour.

Goals (issue 6): a trace by id under 50 ms, a filtered search over 1 h under 500 ms. Figures
are medians of ``--repeat`` runs with min and max (a 2-core VM is noisy).

    python benchmarks/traces.py [--spans 10000000] [--repeat 7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard import POOL_SPANS, fill, parse_sizes, start_server, stop_server  # noqa: E402
from planoscope.store import DuckDBStore  # noqa: E402
from planoscope.store.duckdb import DB_FILE  # noqa: E402

console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
GOALS_MS = {"by id": 50, "1 h": 500}


def _store(n: int, keep: str | None) -> tuple[Path, Path | None]:
    data_dir = Path(keep) / f"spans-{n}" if keep else Path(tempfile.mkdtemp(prefix=f"planoscope-traces-{n}-"))
    reuse = (data_dir / DB_FILE).exists()
    store = DuckDBStore(data_dir)  # an earlier store gets its TraceKey column here
    if reuse and store.span_count() != n:
        store.close()
        shutil.rmtree(data_dir)
        store, reuse = DuckDBStore(data_dir), False
    if not reuse:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            figures = fill(store, n, POOL_SPANS, int(time.time()), progress)
        console.print(f"filled {n:,} spans in {figures['total_s']:.0f} s")
    store.close()
    return data_dir, None if keep else data_dir


def _timed(client: httpx.Client, path: str, params: dict | None, repeat: int) -> tuple[list[float], httpx.Response]:
    times, r = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        r = client.get(path, params=params)
        times.append(time.perf_counter() - t)
        r.raise_for_status()
    return times, r


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:,.1f} ms ({min(xs) * 1e3:,.1f}–{max(xs) * 1e3:,.1f})"


def searches(end: float) -> list[tuple[str, str, dict]]:
    """(range, what, the query's parameters) of the ``GET /api/v1/traces`` searches timed, up to ``end``."""
    hour = {"start": end - 3600, "end": end}
    return [
        ("1 h", "no filter", hour),
        ("1 h", "model=gpt-4o", {**hour, "service": "plano(llm)", "model": "gpt-4o"}),
        (
            "1 h",
            "llm spans ≥ 2 s, longest first",
            {**hour, "service": "plano(llm)", "min_duration": "2s", "sort": "duration"},
        ),
        ("1 h", "attr http.status_code=429", {**hour, "attr": "http.status_code=429"}),
        ("1 h", "errors only", {**hour, "errors": "true"}),
        ("1 h", "no filter, page 10 of 50", {**hour, "limit": 50, "offset": 450}),
        ("24 h", "model=gpt-4o", {"start": end - 86400, "end": end, "model": "gpt-4o"}),
        ("7 d", "no filter", {"start": end - 7 * 86400, "end": end}),
        ("7 d", "errors only", {"start": end - 7 * 86400, "end": end, "errors": "true"}),
    ]


def run(n: int, args) -> None:
    data_dir, tmp = _store(n, args.keep)
    try:
        store = DuckDBStore(data_dir)
        end = math.ceil(store.query("SELECT epoch(max(Timestamp)) FROM otel_traces")[0][0])
        ids = [r[0] for r in store.query("SELECT DISTINCT TraceId FROM otel_traces USING SAMPLE 2000 ROWS")]
        store.close()
        random.Random(1).shuffle(ids)
        proc, url, startup_s = start_server(data_dir)
        console.print(f"{n:,} spans in {data_dir}; planoscope serve ready in {startup_s:.1f} s")
        rows = []
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                cold = _timed(client, f"/api/v1/traces/{ids[0]}", None, 1)[0]
                by_id = []
                for tid in ids[1 : 1 + args.ids]:
                    t, r = _timed(client, f"/api/v1/traces/{tid}", None, 1)
                    by_id += t
                rows.append(
                    (
                        "trace by id",
                        f"{args.ids} random ids",
                        _fmt(by_id),
                        f"cold first: {cold[0] * 1e3:,.0f} ms",
                        GOALS_MS["by id"],
                        statistics.median(by_id),
                    )
                )
                hour = {"start": end - 3600, "end": end}
                for rng, what, params in searches(end):
                    times, r = _timed(client, "/api/v1/traces", params, args.repeat)
                    body = r.json()
                    rows.append(
                        (
                            f"search {rng}",
                            what,
                            _fmt(times),
                            f"{body['total']:,} traces match",
                            GOALS_MS.get(rng),
                            statistics.median(times),
                        )
                    )
                times, r = _timed(client, "/api/v1/traces/facets", hour, args.repeat)
                rows.append(("facets 1 h", "the pickers' values", _fmt(times), "", None, statistics.median(times)))
        finally:
            stop_server(proc)
        table = Table(title=f"trace explorer over HTTP, {n:,} spans: median (min–max) of {args.repeat}")
        for col in ("query", "what", "time", "notes", "goal"):
            table.add_column(col)
        for query, what, t, notes, goal, med in rows:
            mark = (
                ""
                if goal is None
                else (f"{goal} ms [green]met[/]" if med * 1e3 < goal else f"{goal} ms [red]missed[/]")
            )
            table.add_row(query, what, t, notes, mark)
        console.print(table)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", default="10000000", help="store sizes, comma-separated (1M, 500k allowed)")
    ap.add_argument("--repeat", type=int, default=7, help="runs per search; the median is reported")
    ap.add_argument("--ids", type=int, default=50, help="random trace ids looked up")
    ap.add_argument("--keep", metavar="DIR", help="keep the filled stores in DIR/spans-N (shared with dashboard.py)")
    args = ap.parse_args()
    for n in parse_sizes(args.spans):
        run(n, args)


if __name__ == "__main__":
    main()
