"""Sessions benchmark: the sessions list over 24 h and one session's page on a store of 10 M spans (7 days).

The store is filled exactly as ``benchmarks/dashboard.py`` fills it (simulated Plano traffic
tiled over 7 days, each copy with its own sessions; pass the same ``--keep DIR`` to the three
benchmarks to fill it once). Then, against a real ``planoscope serve`` on that data, over HTTP as
the UI asks:

- ``GET /api/v1/sessions`` over the latest 24 h, sorted by cost, by last seen and by calls, a
  later page, and one user's sessions;
- ``GET /api/v1/sessions/{id}`` for random sessions of that day (the first, cold, apart).

Goals (issue 17): the list over 24 h under 200 ms, a session's page under 100 ms. Figures are
medians of ``--repeat`` runs with min and max (a 2-core VM is noisy).

    python benchmarks/sessions.py [--spans 10000000] [--repeat 7] [--sessions 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard import parse_sizes, start_server, stop_server  # noqa: E402
from planoscope.store import DuckDBStore  # noqa: E402
from traces import _store  # noqa: E402  (the same fill, the same kept stores)

console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
GOALS_MS = {"list": 200, "one": 100}
DAY_S = 86400


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


def list_cases(day: dict, users: list[str]) -> list[tuple[str, dict]]:
    """(what, the query's parameters) of the ``GET /api/v1/sessions`` lists timed over ``day``."""
    cases = [
        ("sort=cost", day),
        ("sort=last_seen", {**day, "sort": "last_seen"}),
        ("sort=calls", {**day, "sort": "calls"}),
        ("sort=cost, page 10 of 50", {**day, "limit": 50, "offset": 450}),
    ]
    if users:
        cases.append((f"user={users[0]}", {**day, "user": users[0]}))
    return cases


def run(n: int, args) -> None:
    data_dir, tmp = _store(n, args.keep)
    try:
        store = DuckDBStore(data_dir)
        end = math.ceil(store.query("SELECT epoch(max(Timestamp)) FROM otel_traces")[0][0])
        store.close()
        day = {"start": end - DAY_S, "end": end}
        proc, url, startup_s = start_server(data_dir)
        console.print(f"{n:,} spans in {data_dir}; planoscope serve ready in {startup_s:.1f} s")
        rows = []
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                cold, r = _timed(client, "/api/v1/sessions", day, 1)
                listed = r.json()
                ids = [
                    s["session_id"]
                    for s in _timed(client, "/api/v1/sessions", {**day, "limit": 500}, 1)[1].json()["sessions"]
                ]
                users = [s["user_id"] for s in listed["sessions"] if s["user_id"]]
                for what, params in list_cases(day, users):
                    times, r = _timed(client, "/api/v1/sessions", params, args.repeat)
                    body = r.json()
                    notes = f"{body['total']:,} sessions"
                    if what == "sort=cost":
                        notes += f"; cold first: {cold[0] * 1e3:,.0f} ms"
                    rows.append(("list 24 h", what, _fmt(times), notes, GOALS_MS["list"], statistics.median(times)))
                random.Random(1).shuffle(ids)
                picked = ids[: args.sessions]
                if picked:
                    one, calls = [], []
                    for sid in picked:
                        t, r = _timed(client, f"/api/v1/sessions/{quote(sid, safe='')}", None, 1)
                        one += t
                        calls.append(len(r.json()["calls"]))
                    rows.append(
                        (
                            "one session",
                            f"{len(picked)} random sessions of the day",
                            _fmt(one),
                            f"{statistics.median(calls):.0f} calls (median), {max(calls)} at most",
                            GOALS_MS["one"],
                            statistics.median(one),
                        )
                    )
        finally:
            stop_server(proc)
        table = Table(title=f"sessions over HTTP, {n:,} spans: median (min–max) of {args.repeat}")
        for col in ("query", "what", "time", "notes", "goal"):
            table.add_column(col)
        for query, what, t, notes, goal, med in rows:
            mark = f"{goal} ms [green]met[/]" if med * 1e3 < goal else f"{goal} ms [red]missed[/]"
            table.add_row(query, what, t, notes, mark)
        console.print(table)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", default="10000000", help="store sizes, comma-separated (1M, 500k allowed)")
    ap.add_argument("--repeat", type=int, default=7, help="runs per list query; the median is reported")
    ap.add_argument("--sessions", type=int, default=30, help="random sessions whose page is read")
    ap.add_argument("--keep", metavar="DIR", help="keep the filled stores in DIR/spans-N (shared with dashboard.py)")
    args = ap.parse_args()
    for n in parse_sizes(args.spans):
        run(n, args)


if __name__ == "__main__":
    main()
