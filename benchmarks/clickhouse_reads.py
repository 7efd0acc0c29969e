"""ClickHouse reads benchmark: the views over 10 M spans in ClickHouse, side by side with DuckDB on the same spans.

The DuckDB store is the one ``benchmarks/dashboard.py`` fills (simulated Plano traffic tiled over
7 days; ``--keep DIR`` shares ``DIR/spans-N`` with the dashboard, traces and sessions benchmarks).
ClickHouse is a real server on this machine (the tests' chDB-based one,
tests/support/clickhouse_server.py, on the same cores), its data kept in ``DIR/clickhouse-N``
with ``--keep``. It gets the same spans by the same fill (``dashboard.fill``, with the end of the
DuckDB store's 7 days): each copy of the simulated pool goes through ``ClickHouseStore.append_spans``,
as ingest inserts (the exporter's rows, an Arrow block a copy), into the table planoscope creates,
so ClickHouse computes every MATERIALIZED column on insert. The benchmark checks that both stores
hold the same spans (counts, sums, each typed column's non-null count) and that every
MATERIALIZED column is written in the parts, then reports ClickHouse's bytes a span (system.parts).

Then a real ``planoscope serve`` on each store, both running, and over HTTP as the UI asks, each
request timed on one store then the other: both dashboards (``GET /api/v1/dashboard?id=``, 1 h and
7 d), trace by id (random stored ids), the trace searches of ``benchmarks/traces.py`` (1 h, 24 h,
7 d), the facets, the sessions lists of ``benchmarks/sessions.py`` (24 h) and sessions' pages.
Reported: median (min–max) of ``--repeat`` runs after a first (cold) one, ClickHouse / DuckDB, and
the CPU a request took (planoscope serve; on ClickHouse plus the ClickHouse server), and how much
CPU other processes took meanwhile (the machine's noise).

    python benchmarks/clickhouse_reads.py [--spans 10000000] [--repeat 5] [--ids 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dashboard import POOL_SPANS, CpuMeter, fill, parse_sizes, ranges, start_server, stop_server  # noqa: E402
from ingest import cpu_seconds  # noqa: E402
from planoscope.query.dashboards import DASHBOARDS  # noqa: E402
from planoscope.query.traces import IN_FLIGHT_S  # noqa: E402
from planoscope.store import DuckDBStore  # noqa: E402
from planoscope.store.clickhouse import ClickHouseStore  # noqa: E402
from planoscope.store.clickhouse_columns import MATERIALIZED_COLUMNS  # noqa: E402
from sessions import DAY_S, list_cases  # noqa: E402
from support.clickhouse_server import ClickHouseServer  # noqa: E402
from traces import _store, searches  # noqa: E402

console = Console(highlight=False, width=None if sys.stdout.isatty() else 180)
DATABASE = "planoscope_bench"
MERGES_WAIT_S = 900


# ------------------------------------------------------------------------------------------
# ClickHouse with the DuckDB store's spans
# ------------------------------------------------------------------------------------------


def fingerprint_duckdb(store: DuckDBStore) -> dict:
    typed = [n for n, _, _ in MATERIALIZED_COLUMNS]
    row = store.query(
        "SELECT count(*), sum(Duration)::HUGEINT, epoch_ns(min(Timestamp)), epoch_ns(max(Timestamp)),"
        " count(DISTINCT TraceId), count(DISTINCT SessionId), "
        + ", ".join(f"count({c})" for c in typed)
        + " FROM otel_traces"
    )[0]
    return dict(zip(["spans", "duration", "min_ts", "max_ts", "traces", "sessions", *typed], map(int, row)))


def fingerprint_clickhouse(client) -> dict:
    typed = [n for n, _, _ in MATERIALIZED_COLUMNS]
    row = client.query(
        "SELECT count(), sum(Duration), toUnixTimestamp64Nano(min(Timestamp)), toUnixTimestamp64Nano(max(Timestamp)),"
        " uniqExact(TraceId), uniqExact(SessionId), "
        + ", ".join(f"count({c})" for c in typed)
        + f" FROM {DATABASE}.otel_traces"
    ).result_rows[0]
    return dict(zip(["spans", "duration", "min_ts", "max_ts", "traces", "sessions", *typed], map(int, row)))


def clickhouse_with(ch: ClickHouseServer, n: int, want: dict) -> dict:
    """ClickHouse's database holding the DuckDB store's spans (filled unless it holds n already);
    the fill's figures, or {} when reused."""
    admin = ch.client()
    try:
        have = admin.query(
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'otel_traces'",
            parameters={"db": DATABASE},
        ).result_rows[0][0]
        if have and admin.query(f"SELECT count() FROM {DATABASE}.otel_traces").result_rows[0][0] == n:
            return {}
        admin.command(f"DROP DATABASE IF EXISTS {DATABASE}")
    finally:
        admin.close()
    t_end_s = math.ceil(want["max_ts"] / 1e9)
    with tempfile.TemporaryDirectory() as state:
        store = ClickHouseStore(ch.url(DATABASE), Path(state), 0)
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                cpu0 = cpu_seconds(ch.proc.pid)
                figures = fill(store, n, POOL_SPANS, t_end_s, progress)
                figures["ch_cpu_s"] = cpu_seconds(ch.proc.pid) - cpu0
        finally:
            store.close()
    return figures


def wait_for_merges(client) -> float:
    """Seconds waited until no merge of the table runs (the data as a store that has aged has it)."""
    t = time.monotonic()
    while client.query(
        "SELECT count() FROM system.merges WHERE database = {db:String}", parameters={"db": DATABASE}
    ).result_rows[0][0]:
        if time.monotonic() - t > MERGES_WAIT_S:
            console.print(f"[yellow]merges still running after {MERGES_WAIT_S} s[/]")
            break
        time.sleep(1)
    return time.monotonic() - t


def storage(client, n: int) -> dict:
    """Bytes on disk a span (system.parts), the parts, and which MATERIALIZED columns the parts lack."""
    tables = {}
    for table, parts, rows, disk, data, raw in client.query(
        "SELECT table, count(), sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes), sum(data_uncompressed_bytes)"
        " FROM system.parts WHERE database = {db:String} AND active GROUP BY table ORDER BY table",
        parameters={"db": DATABASE},
    ).result_rows:
        tables[table] = {"parts": parts, "rows": rows, "disk": disk, "compressed": data, "raw": raw}
    columns = dict(
        client.query(
            "SELECT column, sum(column_data_compressed_bytes) FROM system.parts_columns"
            " WHERE database = {db:String} AND table = 'otel_traces' AND active GROUP BY column",
            parameters={"db": DATABASE},
        ).result_rows
    )
    materialized = [name for name, _, _ in MATERIALIZED_COLUMNS]
    return {
        "tables": tables,
        "per_span": sum(t["disk"] for t in tables.values()) / n,
        "missing": [c for c in materialized if not columns.get(c)],
        "largest": sorted(columns.items(), key=lambda kv: -kv[1])[:8],
    }


# ------------------------------------------------------------------------------------------
# Timing both servers
# ------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One store's ``planoscope serve`` and the processes whose CPU its requests use."""

    name: str
    client: httpx.Client
    pids: list[int]
    times: dict = field(default_factory=dict)

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)

    def get(self, path: str, params: dict | None) -> tuple[float, float, httpx.Response]:
        c, t = self.cpu(), time.perf_counter()
        r = self.client.get(path, params=params)
        wall = time.perf_counter() - t
        r.raise_for_status()
        return wall, self.cpu() - c, r


def _total(r: httpx.Response):
    body = r.json()
    return body.get("total") if isinstance(body, dict) else None


def compare(targets: list[Target], cases: list[tuple[str, str, str, dict | None]], repeat: int) -> list[dict]:
    """Each case: a cold request per store, then ``repeat`` rounds, each store in turn."""
    rows = []
    for kind, what, path, params in cases:
        row = {"kind": kind, "what": what, "first": {}, "wall": {}, "cpu": {}, "total": {}}
        for t in targets:
            wall, _, r = t.get(path, params)
            row["first"][t.name], row["total"][t.name] = wall, _total(r)
            row["wall"][t.name], row["cpu"][t.name] = [], []
        for _ in range(repeat):
            for t in targets:
                wall, cpu, _ = t.get(path, params)
                row["wall"][t.name].append(wall)
                row["cpu"][t.name].append(cpu)
        rows.append(row)
    return rows


def compare_each(targets: list[Target], kind: str, what: str, paths: list[str]) -> dict:
    """One request a path per store (trace by id, a session's page), the first (cold) apart."""
    row = {"kind": kind, "what": what, "first": {}, "wall": {}, "cpu": {}, "total": {}}
    for t in targets:
        row["first"][t.name] = t.get(paths[0], None)[0]
        row["wall"][t.name], row["cpu"][t.name], row["total"][t.name] = [], [], None
    for path in paths[1:]:
        for t in targets:
            wall, cpu, _ = t.get(path, None)
            row["wall"][t.name].append(wall)
            row["cpu"][t.name].append(cpu)
    return row


def _ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:,.1f} ({min(xs) * 1e3:,.1f}–{max(xs) * 1e3:,.1f})"


def report(rows: list[dict], repeat: int, n: int) -> None:
    table = Table(
        title=f"over HTTP, {n:,} spans: median (min–max) ms of {repeat} after a cold first; CPU ms a request (mean; /proc's 10 ms ticks)",
        title_justify="left",
    )
    for col in (
        "query",
        "what",
        "DuckDB",
        "ClickHouse",
        "CH / DuckDB",
        "CPU DuckDB",
        "CPU CH (planoscope+CH)",
        "notes",
    ):
        table.add_column(col, justify="left" if col in ("query", "what", "notes") else "right")
    for r in rows:
        d, c = statistics.median(r["wall"]["duckdb"]), statistics.median(r["wall"]["clickhouse"])
        totals = r["total"]
        notes = f"cold {r['first']['duckdb'] * 1e3:,.0f} / {r['first']['clickhouse'] * 1e3:,.0f} ms"
        if totals["duckdb"] is not None:
            same = "same" if totals["duckdb"] == totals["clickhouse"] else f"DuckDB {totals['duckdb']:,}"
            notes += f"; total {totals['clickhouse']:,} ({same})"
        table.add_row(
            r["kind"],
            r["what"],
            _ms(r["wall"]["duckdb"]),
            _ms(r["wall"]["clickhouse"]),
            f"{c / d:.1f}×",
            f"{statistics.mean(r['cpu']['duckdb']) * 1e3:,.0f}",
            f"{statistics.mean(r['cpu']['clickhouse']) * 1e3:,.0f}",
            notes,
        )
    console.print(table)


def run(n: int, args) -> None:
    data_dir, tmp = _store(n, args.keep)
    ch_dir = Path(args.keep) / f"clickhouse-{n}" if args.keep else Path(tempfile.mkdtemp(prefix="planoscope-ch-"))
    try:
        store = DuckDBStore(data_dir)
        want = fingerprint_duckdb(store)
        ids = [r[0] for r in store.query("SELECT DISTINCT TraceId FROM otel_traces USING SAMPLE 2000 ROWS")]
        store.close()
        random.Random(1).shuffle(ids)
        ch = ClickHouseServer(ch_dir).start()
        try:
            t = time.perf_counter()
            filled = clickhouse_with(ch, n, want)
            admin = ch.client()
            if filled:
                console.print(
                    f"ClickHouse filled with {n:,} spans in {time.perf_counter() - t:.0f} s "
                    f"({n / filled['append_s']:,.0f} spans/s in {filled['copies']} inserts of "
                    f"{filled['pool_spans']:,}; ClickHouse CPU {filled['ch_cpu_s'] / n * 1e6:.1f} µs a span); "
                    f"merges then ran {wait_for_merges(admin):.0f} s"
                )
                # Until then the last insert's traces are in flight to the searches (IngestedAt is the fill's).
                time.sleep(max(0.0, IN_FLIGHT_S + 1 - (time.perf_counter() - t - filled["total_s"])))
            have = fingerprint_clickhouse(admin)
            differ = {k: (v, have[k]) for k, v in want.items() if have[k] != v}
            if differ:
                console.print(f"[red]the stores differ (DuckDB, ClickHouse): {differ}[/]")
            else:
                console.print(
                    f"same spans in both stores: {', '.join(f'{k} {v:,}' for k, v in list(want.items())[:6])}"
                )
            s = storage(admin, n)
            admin.close()
            for name, tb in s["tables"].items():
                console.print(
                    f"ClickHouse {name}: {tb['parts']} active parts, {tb['rows']:,} rows, {tb['disk'] / 2**20:,.0f} MiB "
                    f"on disk ({tb['disk'] / n:,.1f} bytes a span; {tb['raw'] / max(tb['compressed'], 1):.1f}× compressed)"
                )
            console.print(
                f"ClickHouse on disk: [bold]{s['per_span']:,.1f} bytes a span[/] (both tables); largest columns: "
                + ", ".join(f"{c} {b / n:,.1f}" for c, b in s["largest"])
                + " bytes a span"
            )
            if s["missing"]:
                console.print(f"[red]MATERIALIZED columns not written in the parts: {s['missing']}[/]")
            else:
                console.print(f"all {len(MATERIALIZED_COLUMNS)} MATERIALIZED columns are written in the parts")
            time_both(data_dir, ch, want, ids, args, n)
        finally:
            ch.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(ch_dir, ignore_errors=True)


def time_both(data_dir: Path, ch: ClickHouseServer, want: dict, ids: list[str], args, n: int) -> None:
    end = math.ceil(want["max_ts"] / 1e9)
    duck, duck_url, duck_s = start_server(data_dir)
    ch_state = tempfile.mkdtemp(prefix="planoscope-chstate-")
    try:
        chp, ch_url, ch_s = start_server(Path(ch_state), store=ch.url(DATABASE))
        try:
            console.print(f"planoscope serve ready in {duck_s:.1f} s on DuckDB, {ch_s:.1f} s on ClickHouse")
            with (
                httpx.Client(base_url=duck_url, timeout=600) as dc,
                httpx.Client(base_url=ch_url, timeout=600) as cc,
                CpuMeter() as meter,
            ):
                targets = [Target("duckdb", dc, [duck.pid]), Target("clickhouse", cc, [chp.pid, ch.proc.pid])]
                busy0 = sum(t.cpu() for t in targets)
                cases = [
                    ("dashboard", f"{board.id} {name}", "/api/v1/dashboard", {"id": board.id, "start": s, "end": e})
                    for board in DASHBOARDS
                    for name, (s, e, _) in ranges(end).items()
                ]
                cases += [(f"search {rng}", what, "/api/v1/traces", p) for rng, what, p in searches(end)]
                cases.append(
                    ("facets 1 h", "the pickers' values", "/api/v1/traces/facets", {"start": end - 3600, "end": end})
                )
                day = {"start": end - DAY_S, "end": end}
                listed = dc.get("/api/v1/sessions", params={**day, "limit": 500}).raise_for_status().json()["sessions"]
                users = [s["user_id"] for s in listed if s["user_id"]]
                cases += [("sessions 24 h", what, "/api/v1/sessions", p) for what, p in list_cases(day, users)]
                rows = [
                    compare_each(
                        targets,
                        "trace by id",
                        f"{args.ids} random ids",
                        [f"/api/v1/traces/{i}" for i in ids[: args.ids + 1]],
                    )
                ]
                rows += compare(targets, cases, args.repeat)
                sids = [s["session_id"] for s in listed]
                random.Random(1).shuffle(sids)
                rows.append(
                    compare_each(
                        targets,
                        "one session",
                        f"{min(args.ids, len(sids) - 1)} random sessions of the day",
                        [f"/api/v1/sessions/{quote(s, safe='')}" for s in sids[: args.ids + 1]],
                    )
                )
                servers = sum(t.cpu() for t in targets) - busy0
            wall = time.perf_counter() - meter.t
            report(rows, args.repeat, n)
            console.print(
                f"other processes (not the two planoscope servers, ClickHouse or this one) used "
                f"{max(0.0, meter.other_cores - servers / wall):.2f} of {os.cpu_count()} CPUs on average while timing"
            )
        finally:
            stop_server(chp)
    finally:
        stop_server(duck)
        shutil.rmtree(ch_state, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", default="10000000", help="store sizes, comma-separated (1M, 500k allowed)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per query and store; the median is reported")
    ap.add_argument("--ids", type=int, default=30, help="random trace ids (and sessions) looked up")
    ap.add_argument("--keep", metavar="DIR", help="keep the stores in DIR/spans-N and DIR/clickhouse-N (reused)")
    args = ap.parse_args()
    for n in parse_sizes(args.spans):
        run(n, args)


if __name__ == "__main__":
    main()
