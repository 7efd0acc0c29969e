"""Upgrade benchmark: how long the first start after an upgrade spends filling the new columns.

Builds a store of N simulated Plano spans as benchmarks/dashboard.py does (a pool of real OTLP
requests decoded and tiled over 7 days), turns it into one an earlier version wrote (the LLM
columns dropped), then times what a start does with it: ``DuckDBStore`` open (the ALTER TABLEs
and the plan) and ``fill`` (the typed and derived columns from the stored attributes, and the
estimated costs), and reports spans per second and the slices committed. Each size is run
``--repeat`` times on a fresh copy of the old store; the median, min and max are printed.

    python benchmarks/upgrade.py [--spans 1000000,10000000] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).parent))
from dashboard import fill as fill_store  # noqa: E402  (the dashboard benchmark's store filler)

from planoscope.llm.prices import Prices  # noqa: E402
from planoscope.store import DuckDBStore  # noqa: E402
from planoscope.store.duckdb import DB_FILE  # noqa: E402
from planoscope.store.fill import SLICE_SPANS  # noqa: E402
from planoscope.store.schema import ADDED_COLUMNS  # noqa: E402

# The columns the LLM usage dashboard added (after ScopeAttributes).
LLM_COLUMNS = [n for n, _, _ in ADDED_COLUMNS][1:]


def old_store(dir: Path, n: int, progress: Progress) -> Path:
    """A store of ``n`` spans without the LLM columns, made once per size under ``dir``."""
    done = dir / f"old-{n}"
    if (done / DB_FILE).exists():
        return done
    tmp = dir / f"building-{n}"
    shutil.rmtree(tmp, ignore_errors=True)
    store = DuckDBStore(tmp)
    try:
        fill_store(store, n, 150_000, int(time.time()), progress)
    finally:
        store.close()
    con = duckdb.connect(str(tmp / DB_FILE))
    for c in LLM_COLUMNS:
        con.execute(f'ALTER TABLE otel_traces DROP COLUMN "{c}"')
    con.execute("DELETE FROM planoscope_meta WHERE key = 'fill_columns'")
    con.execute("CHECKPOINT")
    con.close()
    tmp.rename(done)
    return done


def upgrade(src: Path, work: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copy(src / DB_FILE, work / DB_FILE)
    slices = []
    t0 = time.perf_counter()
    store = DuckDBStore(work)
    t_open = time.perf_counter() - t0
    try:
        pending = store.fill_pending()
        t1 = time.perf_counter()
        n = store.fill(Prices().estimate, lambda done, total: slices.append(done))
        t_fill = time.perf_counter() - t1
        priced = store.query("SELECT count(EstimatedCostUsd), count(FailureClass), count(SessionId) FROM otel_traces")[0]
    finally:
        store.close()
    assert n == pending
    return {"open": t_open, "fill": t_fill, "spans": n, "slices": len(slices) - 1, "counts": priced}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", default="1000000,10000000", help="store sizes, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="keep the old stores here and reuse them")
    args = ap.parse_args()
    console = Console()
    base = args.keep or Path(tempfile.mkdtemp(prefix="planoscope-upgrade-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        for n in (int(x) for x in args.spans.split(",")):
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
            with Progress(*columns, console=console, transient=True) as progress:
                src = old_store(base, n, progress)
            runs = [upgrade(src, base / "work") for _ in range(args.repeat)]
            fills = [r["fill"] for r in runs]
            med = statistics.median(fills)
            console.print(
                f"{n:,} spans: open {statistics.median(r['open'] for r in runs) * 1000:.0f} ms; fill median "
                f"{med:.1f} s (min {min(fills):.1f}, max {max(fills):.1f}), {n / med:,.0f} spans/s, "
                f"{runs[0]['slices']} slices of ~{SLICE_SPANS:,}; filled: {runs[0]['counts'][0]:,} estimated costs, "
                f"{runs[0]['counts'][1]:,} failure classes, {runs[0]['counts'][2]:,} session ids"
            )
            shutil.rmtree(base / "work", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
