"""Dashboard benchmark: one full refresh of each dashboard (Requests Overview's six panels, LLM
Usage's twelve) on a store of 1 M and 10 M spans.

Fills a fresh store per size with Plano-shaped spans spread evenly over the last 7 days, in
roughly increasing time order as real ingest writes them, then times one refresh of each
dashboard (``query.evaluate_all`` on every panel of ``dashboards.DASHBOARDS``' dashboard, the code
the API runs, with the range's default step) for the latest hour and the whole 7 days, with
reads on 1 and on 2 of DuckDB's threads (the server reads on all cores, 2 here), and one HTTP
round trip of ``GET /api/v1/dashboard?id=`` against a real ``planoscope serve`` on the same data.
Goals at 10 M spans (``GOALS``): Requests Overview under 300 ms for 1 h, under 1 s for 7 d; LLM
Usage under 100 ms for 1 h, under 500 ms for 7 d. Each figure is the median of several
repetitions (a 2-core VM is noisy), with min and max.

Then it looks at why: which panel dominates, whether the Timestamp zone maps prune the 1 h range,
and how fast per-minute rollups (prototyped here in TEMP tables, nothing is added to the store's
schema) would answer the panels that miss the goal.

    python benchmarks/dashboard.py [--spans 1000000,10000000] [--repeat 5] [--keep DIR]

How the store is filled, fast and without the network: ``planoscope.demo.simulate`` (the project's
model of Plano's traffic: 5 services, 7 models, 5 agents and 4 filters, per-model log-normal
latencies, errors, bursts) simulates a pool of 120-150 k spans in real OTLP requests of 512 spans
sorted by end time (as Plano's batch exporter sends them), which ``Decoder`` turns into the Arrow
batch the store inserts, with the LLM columns as ingest fills them (tokens, cost sent or estimated
from the price table, route, session, signals quality, flag, failure class). The pool is tiled
back to back over 7 days, one copy per ``DuckDBStore.append_spans`` transaction; each copy gets
its own ids (every hex digit of the trace and span ids XORed with a per-copy mask, so parent
links survive; its sessions suffixed with the copy's number) and its time offset. The
span metrics are computed as ingest would and snapshotted, so ``planoscope serve`` starts
without recomputing them. With ``--keep DIR`` the data is kept in ``DIR/spans-N`` and reused by
the next run with the same size.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from planoscope.demo.simulate import Simulation, export_requests
from planoscope.ingest.decode import Decoder
from planoscope.llm.prices import Prices
from planoscope.metrics.llm import LlmMetrics
from planoscope.metrics.spanmetrics import DEFAULT_CARDINALITY_LIMIT, SpanMetrics
from planoscope.query.dashboards import DASHBOARDS
from planoscope.query.evaluate import evaluate, evaluate_all
from planoscope.query.panels import PANELS, LatencyQuantiles, SpanCount, SpanRate
from planoscope.query.params import default_step
from planoscope.query.steps import window as step_window
from planoscope.store import DuckDBStore
from planoscope.store.duckdb import DB_FILE
from planoscope.store.schema import TYPED_COLUMNS

WEEK_S = 7 * 86400
HOUR_S = 3600
GOALS = {
    "requests-overview": {"1 h": 0.300, "7 d": 1.000},
    "llm-usage": {"1 h": 0.100, "7 d": 0.500},
}
POOL_SPANS = 150_000
SESSION_KEYS = next(c.keys for c in TYPED_COLUMNS if c.name == "SessionId")
SIM_EPOCH = 1_700_006_400  # simulated seconds of the pool start here (a Wednesday 00:00 UTC)
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


# ------------------------------------------------------------------------------------------
# Filling
# ------------------------------------------------------------------------------------------


def _simulate_part(rate: float, seed: int, start_s: int, end_s: int) -> list[bytes]:
    """OTLP requests of the spans of the traces starting in [start_s, end_s), by end time."""
    sim = Simulation(rate=rate, seed=seed)
    spans = [s for t in sim.traces(start_s, end_s) for s in t.spans]
    spans.sort(key=lambda s: s[1].end_time_unix_nano)
    return [r.SerializeToString() for r in export_requests(spans, 512)]


def make_pool(span_rate: float, pool_spans: int, seed: int = 1, maps: bool = False):
    """(table, span-metric dimension arrays, pool length in s) of ~pool_spans simulated spans at
    ``span_rate`` spans/s; the table's Timestamps are relative to the pool start (ns). ``maps``:
    with the attribute maps a store with ``attribute_maps`` (ClickHouse) inserts."""
    window = max(60, round(pool_spans / span_rate))
    trace_rate = span_rate / 5.65  # spans per trace in the simulation's default mix
    parts = 2 if window >= 120 else 1
    bounds = [SIM_EPOCH + window * i // parts for i in range(parts + 1)]
    with cf.ProcessPoolExecutor(parts, mp_context=multiprocessing.get_context("fork")) as ex:
        futures = [ex.submit(_simulate_part, trace_rate, seed, a, b) for a, b in zip(bounds, bounds[1:])]
        bodies = [b for f in futures for b in f.result()]
    metrics = SpanMetrics()
    decoder = Decoder(metrics.dimensions, prices=Prices(), maps=maps)
    batches = [decoder.decode_protobuf(b) for b in bodies]
    assert all(b.rejected == 0 for b in batches)
    table = decoder.estimate_costs(pa.concat_tables([b.table for b in batches]).combine_chunks())
    dims = [pa.concat_arrays([b.dimensions[i] for b in batches]) for i in range(len(metrics.dimensions))]
    ts = table.column("Timestamp").cast(pa.int64()).to_numpy() - SIM_EPOCH * 10**9
    table = table.set_column(0, "Timestamp", pa.array(ts, pa.int64()))
    return table, dims, window


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_NIBBLE = np.zeros(256, np.uint8)
_NIBBLE[_HEX] = np.arange(16, dtype=np.uint8)


class HexIds:
    """A column of hex ids (all ``width`` digits, or empty) whose digits can be XORed with a mask."""

    def __init__(self, arr: pa.StringArray, width: int):
        assert arr.null_count == 0 and arr.offset == 0
        _, offsets, data = arr.buffers()
        off = np.frombuffer(offsets, np.int32)[: len(arr) + 1]
        lengths = np.diff(off)
        assert np.all((lengths == 0) | (lengths == width)), "ids of unexpected length"
        self.n, self.width, self.offsets = len(arr), width, offsets
        self.nibbles = _NIBBLE[np.frombuffer(data, np.uint8)[off[0] : off[-1]]].reshape(-1, width)

    def masked(self, mask: np.ndarray) -> pa.Array:
        data = _HEX[self.nibbles ^ mask].tobytes()
        return pa.StringArray.from_buffers(self.n, self.offsets, pa.py_buffer(data))

    def trace_keys(self, mask: np.ndarray) -> pa.Array:
        """``schema.TraceKey`` of each masked trace id: its last 16 hex digits as an integer."""
        digits = (self.nibbles[:, 16:] ^ mask[16:]).astype(np.uint64)
        return pa.array(np.bitwise_or.reduce(digits << np.arange(60, -4, -4, dtype=np.uint64), axis=1), pa.uint64())


def _suffix_sessions(attrs: pa.MapArray, suffix: str) -> pa.MapArray:
    """The span attribute maps with ``suffix`` added to the session ids' values (a ClickHouse
    store reads ``SessionId`` from the map: its MATERIALIZED column)."""
    keys, items = attrs.keys, attrs.items
    is_session = pc.is_in(keys, pa.array(SESSION_KEYS))
    items = pc.if_else(is_session, pc.binary_join_element_wise(items, suffix, ""), items)
    return pa.MapArray.from_arrays(attrs.offsets, keys, items, type=attrs.type)


def fill(store, n_spans: int, pool_spans: int, t_end_s: int, progress: Progress) -> dict:
    """Fill ``store`` (a DuckDBStore or a ClickHouseStore) with ``n_spans`` spans over the 7 days
    up to ``t_end_s``; figures of the fill. The same arguments give both stores the same spans."""
    span_rate = n_spans / WEEK_S
    t0 = time.perf_counter()
    task = progress.add_task(f"simulating a pool of ~{min(pool_spans, n_spans):,} spans", total=None)
    pool, dims, window_s = make_pool(span_rate, min(pool_spans, n_spans), maps=store.attribute_maps)
    pool_s = time.perf_counter() - t0
    progress.remove_task(task)
    p = pool.num_rows
    copies = math.ceil(n_spans / p)
    # Copies are laid back to back; ``scale`` (≈ 1) stretches time so n_spans cover exactly 7 days.
    scale = WEEK_S / (n_spans / p * window_s)
    rel = pool.column("Timestamp").to_numpy().astype(np.float64)
    t_begin_ns, t_end_ns = (t_end_s - WEEK_S) * 10**9, t_end_s * 10**9
    trace_ids = HexIds(pool.column("TraceId").chunk(0), 32)
    span_ids = HexIds(pool.column("SpanId").chunk(0), 16)
    parent_ids = HexIds(pool.column("ParentSpanId").chunk(0), 16)
    cols = {
        name: pool.schema.get_field_index(name)
        for name in ("Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceKey", "SessionId")
    }
    session_ids = pool.column("SessionId")
    span_maps = pool.column("SpanAttributesMap").chunk(0) if store.attribute_maps else None
    # The span metrics and the LLM metrics, stored as the server keeps them (else its first start
    # would count them from the whole store).
    metric_sets = [SpanMetrics(), LlmMetrics(DEFAULT_CARDINALITY_LIMIT)]
    first = pool.set_column(0, "Timestamp", pool.column(0).cast(pa.timestamp("ns")))
    pool_deltas = [m.deltas(first, dims) for m in metric_sets]
    rng = np.random.default_rng(12345)
    append_s = 0.0
    task = progress.add_task(f"filling {n_spans:,} spans", total=n_spans)
    for c in range(copies):
        rows = min(p, n_spans - c * p)
        ts = t_begin_ns + np.round((c * window_s * 1e9 + rel) * scale).astype(np.int64)
        np.minimum(ts, t_end_ns, out=ts)
        span_mask, trace_mask = rng.integers(0, 16, 16, dtype=np.uint8), rng.integers(0, 16, 32, dtype=np.uint8)
        table = (
            pool.set_column(cols["Timestamp"], "Timestamp", pa.array(ts, pa.timestamp("ns")))
            .set_column(cols["TraceId"], "TraceId", trace_ids.masked(trace_mask))
            .set_column(cols["TraceKey"], "TraceKey", trace_ids.trace_keys(trace_mask))
            .set_column(cols["SpanId"], "SpanId", span_ids.masked(span_mask))
            .set_column(cols["ParentSpanId"], "ParentSpanId", parent_ids.masked(span_mask))
            # A copy's conversations are its own (a pool holds ~2 h of them): without this suffix
            # every session would recur in each copy and last the whole 7 days. The typed column
            # only; the attribute sets keep the pool's id.
            .set_column(cols["SessionId"], "SessionId", pc.binary_join_element_wise(session_ids, f"~{c}", ""))
        )
        if span_maps is not None:
            i = table.schema.get_field_index("SpanAttributesMap")
            table = table.set_column(i, "SpanAttributesMap", _suffix_sessions(span_maps, f"~{c}"))
        if rows < p:
            table = table.slice(0, rows)
            deltas = [m.deltas(table, [d.slice(0, rows) for d in dims]) for m in metric_sets]
        else:
            deltas = pool_deltas
        ingested = datetime.fromtimestamp(int(ts[:rows].max()) / 1e9 + 2, UTC).replace(tzinfo=None)
        a = time.perf_counter()
        # On ClickHouse each copy is an insert of its own journal range: its own deduplication token.
        store.append_spans(table, ingested, **({"journal_position": c + 1} if store.dialect == "clickhouse" else {}))
        append_s += time.perf_counter() - a
        for m, d in zip(metric_sets, deltas):
            m.apply(m.merge(d))
        progress.update(task, advance=rows)
    for m in metric_sets:
        store.save_metric_totals(m.snapshot(), store.last_ingested(), m.fingerprint, replace=True, name=m.name)
    a = time.perf_counter()
    if isinstance(store, DuckDBStore):
        store._con.execute("CHECKPOINT")
    checkpoint_s = time.perf_counter() - a
    total_s = time.perf_counter() - t0
    progress.remove_task(task)
    return {
        "pool_spans": p,
        "pool_s": pool_s,
        "append_s": append_s,
        "checkpoint_s": checkpoint_s,
        "total_s": total_s,
        "copies": copies,
    }


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------


def ranges(t_end: float) -> dict[str, tuple[float, float, float]]:
    out = {}
    for name, length in (("1 h", HOUR_S), ("7 d", WEEK_S)):
        start = t_end - length
        out[name] = (start, t_end, default_step(start, t_end))
    return out


def refresh_total(store: DuckDBStore, panels, start: float, end: float, step: float) -> float:
    """One dashboard refresh as the API does it (query.evaluate_all: the rate panels share a scan,
    the LLM panels one statement)."""
    t = time.perf_counter()
    evaluate_all(store, list(panels), start, end, step)
    return time.perf_counter() - t


def refresh(store: DuckDBStore, panels, start: float, end: float, step: float) -> dict[str, float]:
    """Each panel on its own: seconds per panel (a refresh shares the scans)."""
    times = {}
    for panel in panels:
        t = time.perf_counter()
        evaluate(store, panel, start, end, step)
        times[panel.id] = time.perf_counter() - t
    return times


class CpuMeter:
    """CPU used by other processes while timing: system busy time minus this process's."""

    def __enter__(self):
        self.t, self.sys, self.own = time.perf_counter(), self._busy(), time.process_time()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        other = (self._busy() - self.sys) - (time.process_time() - self.own)
        self.other_cores = max(0.0, other / wall)

    @staticmethod
    def _busy() -> float:
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def set_threads(store: DuckDBStore, n: int) -> None:
    """Reads run on ``n`` of DuckDB's threads (the store raises DuckDB's threads to this per read)."""
    store.read_threads = n
    assert int(store.query("SELECT current_setting('threads')")[0][0]) == n


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def fmt_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:,.0f} ms ({min(xs) * 1e3:,.0f}–{max(xs) * 1e3:,.0f})"


def med_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:,.1f}"


def time_in_process(store: DuckDBStore, rngs: dict, repeat: int) -> dict:
    """{(dashboard, range, threads): {"first": s, "totals": [s], "panels": {id: [s]}}}; runs interleaved."""
    res = {}
    for board in DASHBOARDS:
        for name, (start, end, step) in rngs.items():
            set_threads(store, 1)  # the first refresh after opening reads the blocks into DuckDB's cache
            first = refresh_total(store, board.panels, start, end, step)
            for threads in (1, 2):
                res[(board.id, name, threads)] = {
                    "first": first,
                    "totals": [],
                    "cpu": [],
                    "panels": {p.id: [] for p in board.panels},
                }
            for _ in range(repeat):
                for threads in (1, 2):
                    set_threads(store, threads)
                    cpu = time.process_time()
                    total = refresh_total(store, board.panels, start, end, step)
                    r = res[(board.id, name, threads)]
                    r["cpu"].append(time.process_time() - cpu)
                    r["totals"].append(total)
                    times = refresh(store, board.panels, start, end, step)
                    for pid, s in times.items():
                        r["panels"][pid].append(s)
    set_threads(store, 1)
    return res


# ------------------------------------------------------------------------------------------
# The real server
# ------------------------------------------------------------------------------------------


def start_server(data_dir: Path, *extra: str, store: str | None = None) -> tuple[subprocess.Popen, str, float]:
    """A ``planoscope serve`` on ``data_dir`` (and the ``store`` URL, else DuckDB there) with
    ``extra`` flags: (process, web URL, start s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANOSCOPE_")}
    if store:
        env["PLANOSCOPE_STORE"] = store  # not a flag: the URL holds the password
    t = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "planoscope",
            "serve",
            "--data-dir",
            str(data_dir),
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warning",
            # The data spans exactly 7 days up to the fill: the default 7-day retention would delete
            # its oldest spans, change the figures and force the next run to fill again.
            "--retention",
            "0",
            "--scrape",
            "",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines, url = [], None
    timer = threading.Timer(300, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"UI, API and /metrics on (http://\S+)", line):
                url = m.group(1)
            if "ready" in line and url:
                threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain
                return proc, url, time.perf_counter() - t
    finally:
        timer.cancel()
    proc.kill()
    raise RuntimeError("planoscope serve did not start:\n" + "".join(lines))


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def time_http(data_dir: Path, rngs: dict, repeat: int) -> dict:
    proc, url, startup_s = start_server(data_dir)
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            return {"startup_s": startup_s, **http_refreshes(client, rngs, repeat)}
    finally:
        stop_server(proc)


def http_refreshes(client: httpx.Client, rngs: dict, repeat: int) -> dict:
    """{(dashboard, range): {"first": s, "times": [s], "bytes": n}} of ``GET /api/v1/dashboard?id=``."""
    out = {}
    for board in DASHBOARDS:
        for name, (start, end, _) in rngs.items():

            def get(start=start, end=end, board=board.id):
                r = client.get("/api/v1/dashboard", params={"id": board, "start": start, "end": end})
                r.raise_for_status()
                return r

            first = timed(get, 1)
            body = get()
            out[(board.id, name)] = {"first": first[0], "times": timed(get, repeat), "bytes": len(body.content)}
    return out


# ------------------------------------------------------------------------------------------
# Why: zone maps, query shapes, rollups
# ------------------------------------------------------------------------------------------


def _ts(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC).replace(tzinfo=None)


def zone_maps(store: DuckDBStore, rngs: dict, repeat: int) -> dict:
    """How many row groups the 1 h range can touch by their Timestamp min/max, and the 1 h latency
    query with its Timestamp filter as query/evaluate.py writes it vs one no zone map can prune (the same
    rows, filtered on Timestamp + INTERVAL 0 SECOND; DuckDB 2 prunes even epoch_ns(Timestamp))."""
    start, end, step = rngs["1 h"]
    lo, hi = _ts(start - step), _ts(end)
    stats = store.query(
        "SELECT row_group_id, min(stats.min), max(stats.max) FROM pragma_storage_info('otel_traces')"
        " WHERE column_name = 'Timestamp' AND segment_type = 'TIMESTAMP_NS' GROUP BY ALL"
    )
    touching = sum(1 for _, a, b in stats if b > lo and a <= hi)
    spans_1h = store.query("SELECT count(*) FROM otel_traces WHERE Timestamp > ? AND Timestamp <= ?", [lo, hi])[0][0]
    _, k = step_window(start, end, step)
    base = (
        f"SELECT {k} AS k, LlmModel AS g, quantile_cont(Duration, [0.5, 0.95, 0.99]) FROM otel_traces"
        " WHERE ServiceName = 'plano(llm)' AND "
    )
    pruned = base + "Timestamp > ? AND Timestamp <= ? GROUP BY ALL"
    unpruned = base + "Timestamp + INTERVAL 0 SECOND > ? AND Timestamp + INTERVAL 0 SECOND <= ? GROUP BY ALL"
    assert sorted(store.query(pruned, [lo, hi])) == sorted(store.query(unpruned, [lo, hi]))

    def scanned(sql: str) -> str:
        plan = "\n".join(r[1] for r in store.query("EXPLAIN ANALYZE " + sql, [lo, hi]))
        m = re.search(r"Row Groups Scanned: ([\d,]+ / [\d,]+)", plan)
        return m.group(1) if m else "?"

    return {
        "row_groups": len(stats),
        "touching": touching,
        "spans_1h": spans_1h,
        "scanned": scanned(pruned),
        "scanned_unpruned": scanned(unpruned),
        "pruned": timed(lambda: store.query(pruned, [lo, hi]), repeat),
        "unpruned": timed(lambda: store.query(unpruned, [lo, hi]), repeat),
    }


def query_shapes(store: DuckDBStore, rngs: dict, repeat: int) -> dict:
    """Variants of the 7 d queries (threads=1), to see where the time goes."""
    start, end, step = rngs["7 d"]
    (lo, hi), k = step_window(start, end, step)
    rng = "FROM otel_traces WHERE Timestamp > $lo AND Timestamp <= $hi AND "
    llm = rng + "ServiceName = 'plano(llm)'"
    three = rng + "ServiceName IN ('plano(llm)', 'plano(agent)', 'plano(orchestrator)')"
    variants = {
        "latency: quantile_cont, exact (as query/evaluate.py)": f"SELECT {k}, LlmModel, quantile_cont(Duration, [0.5, 0.95, 0.99]) {llm} GROUP BY ALL",
        "latency: approx_quantile (t-digest)": f"SELECT {k}, LlmModel, approx_quantile(Duration, [0.5, 0.95, 0.99]) {llm} GROUP BY ALL",
        "latency: reservoir_quantile (1024)": f"SELECT {k}, LlmModel, reservoir_quantile(Duration, [0.5, 0.95, 0.99], 1024) {llm} GROUP BY ALL",
        "llm spans: count(*) by the same (step, model)": f"SELECT {k}, LlmModel, count(*) {llm} GROUP BY ALL",
        "llm spans: sum of the step index, no grouping": f"SELECT sum({k}) {llm}",
        "llm spans: count(*), scan and filter only": f"SELECT count(*) {llm}",
        "3 rate panels as query/evaluate.py runs them (3 scans)": [
            f"SELECT {k}, LlmModel, count(*) {rng} ServiceName IN ('plano(llm)') GROUP BY ALL",
            f"SELECT {k}, AgentId, count(*) {rng} ServiceName IN ('plano(agent)') GROUP BY ALL",
            f"SELECT {k}, ServiceName, count(*) {three} GROUP BY ALL",
        ],
        "3 rate panels in one scan (by step, service, model, agent)": f"SELECT {k}, ServiceName, LlmModel, AgentId, count(*) {three} GROUP BY ALL",
        "cumulative count (all time, as query/evaluate.py)": "SELECT LlmModel, count(*) FROM otel_traces WHERE Timestamp <= $hi AND ServiceName = 'plano(llm)' GROUP BY ALL",
    }
    out = {}
    for name, sqls in variants.items():
        sqls = [sqls] if isinstance(sqls, str) else sqls

        def run(sqls=sqls):
            for sql in sqls:
                store.query(sql, {"lo": lo, "hi": hi} if "$lo" in sql else {"hi": hi})

        out[name] = timed(run, repeat)
    return out


ROLLUP_RATE = """
CREATE OR REPLACE TEMP TABLE rollup_counts AS
SELECT ((epoch_ns(Timestamp) + 59999999999) // 60000000000) * 60 AS t_end,
       ServiceName, LlmModel, AgentId, count(*)::BIGINT AS n
FROM otel_traces GROUP BY ALL
"""
# DDSketch-style latency histograms of plano(llm) per (grain, model): log buckets of 2 % relative
# width, so a quantile read from them is within 1 % of the exact one. 5 minutes divides every
# default step from 300 s up (ranges of ~21 h and more; shorter ones would stay on raw spans);
# 1 hour only the steps of ranges from ~5 days up.
GAMMA = 1.02
LATENCY_GRAINS = (300, 3600)


def rollup_latency_sql(grain: int) -> str:
    return f"""
CREATE OR REPLACE TEMP TABLE rollup_latency_{grain} AS
SELECT ((epoch_ns(Timestamp) + {grain * 10**9 - 1}) // {grain * 10**9}) * {grain} AS t_end,
       LlmModel, ceil(ln(greatest(Duration, 1000)) / ln({GAMMA}))::INTEGER AS b, count(*)::BIGINT AS n
FROM otel_traces WHERE ServiceName = 'plano(llm)' GROUP BY ALL
"""


def rollups(store: DuckDBStore, t_end: float, repeat: int) -> dict:
    """Rollups (in TEMP tables) answering the 7 d panels, checked against query.py.

    A rollup of grain G answers a range exactly when G divides the step and the start (Grafana
    aligns Prometheus ranges to the step; every default step from 60 s up is a multiple of 60 and
    from 300 s up of 300), so the range here ends on the hour. Its bucket (t - G, t] holds the
    spans of the step that ends at or after t, as query/evaluate.py's (t - step, t] does."""
    end = math.floor(t_end / HOUR_S) * HOUR_S
    start = end - WEEK_S
    step = default_step(start, end)
    out = {"aligned_range": (start, end, step)}
    t = time.perf_counter()
    store.query(ROLLUP_RATE)
    out["build_rate_s"] = time.perf_counter() - t
    out["rows_rate"] = store.query("SELECT count(*) FROM rollup_counts")[0][0]
    out["latency"] = {}
    for grain in LATENCY_GRAINS:
        t = time.perf_counter()
        store.query(rollup_latency_sql(grain))
        out["latency"][grain] = {
            "build_s": time.perf_counter() - t,
            "rows": store.query(f"SELECT count(*) FROM rollup_latency_{grain}")[0][0],
        }
    out["spans"] = store.span_count()
    out["llm_spans"] = store.query("SELECT count(*) FROM otel_traces WHERE ServiceName = 'plano(llm)'")[0][0]
    k = f"(t_end - {start:.0f} + {step:.0f} - 1) // {step:.0f}"
    in_range = f"t_end > {start - step:.0f} AND t_end <= {end:.0f}"

    def rate(q: SpanRate):
        svc = ", ".join(f"'{s}'" for s in q.services)
        return store.query(
            f"SELECT {k} AS k, {q.by or 'ServiceName'} AS g, sum(n) FROM rollup_counts"
            f" WHERE {in_range} AND ServiceName IN ({svc}) GROUP BY ALL"
        )

    def count(q: SpanCount):
        return store.query(
            f"SELECT {q.by}, sum(n) FROM rollup_counts WHERE t_end <= {end:.0f}"
            f" AND ServiceName = '{q.service}' GROUP BY ALL"
        )

    def latency(q: LatencyQuantiles, grain: int = LATENCY_GRAINS[0]):
        # quantile_cont interpolates between the values of rank floor(h) and floor(h) + 1,
        # h = q (n - 1); take the buckets holding those ranks and interpolate their log-midpoints.
        picks = []
        for x in q.quantiles:
            h = f"{x} * (total - 1)"
            picks += [
                f"arg_min(b, CASE WHEN cum > floor({h}) THEN cum END)",
                f"arg_min(b, CASE WHEN cum > floor({h}) + 1 THEN cum END)",
                f"any_value(({h} - floor({h}))::DOUBLE)",
            ]
        # Sum the grains into steps in SQL, read the cumulative counts with numpy.
        t = (
            store._cursor()
            .sql(
                f"SELECT {k} AS k, LlmModel AS g, b, sum(n)::BIGINT AS n FROM rollup_latency_{grain}"
                f" WHERE {in_range} GROUP BY ALL ORDER BY k, g, b"
            )
            .to_arrow_table()
        )
        if t.num_rows == 0:
            return []
        kk = t.column("k").to_numpy()
        g = np.asarray(t.column("g").to_pylist(), dtype=object)
        b = t.column("b").to_numpy().astype(np.float64)
        cum = np.cumsum(t.column("n").to_numpy())
        first = np.flatnonzero(np.r_[True, (kk[1:] != kk[:-1]) | (g[1:] != g[:-1])])
        last = np.r_[first[1:], len(kk)] - 1
        base = np.where(first > 0, cum[first - 1], 0)
        total = cum[last] - base
        values = []
        for x in q.quantiles:
            h = x * (total - 1)
            r = np.floor(h)
            i_lo = np.searchsorted(cum, base + r, side="right")
            i_hi = np.searchsorted(cum, base + np.minimum(r + 1, total - 1), side="right")
            m_lo, m_hi = GAMMA ** (b[i_lo] - 0.5), GAMMA ** (b[i_hi] - 0.5)
            values.append((m_lo + (h - r) * (m_hi - m_lo)) / 1e6)
        return [(kk[i], g[i], [v[j] for v in values]) for j, i in enumerate(first)]

    counts = {SpanRate: rate, SpanCount: count}
    lat_panel = next(p for p in PANELS if isinstance(p.query, LatencyQuantiles))

    def refresh_counts():  # the rate and count panels from the count rollup
        return {p.id: counts[type(p.query)](p.query) for p in PANELS if type(p.query) in counts}

    got = refresh_counts()
    n_points = round((end - start) / step) + 1
    for p in PANELS:  # the same answers as query/evaluate.py over the same range
        if type(p.query) not in counts:
            continue
        ref = evaluate(store, p, start, end, step)
        if isinstance(p.query, SpanRate):
            want = {(s["name"], pt[0]): pt[1] for s in ref["series"] for pt in s["points"] if pt[1]}
            names = dict(zip(p.query.services, p.query.names))
            have = {
                ((g or "") if p.query.by else names[g], start + kk * step): n / step
                for kk, g, n in got[p.id]
                if 0 <= kk < n_points
            }
            assert have == want, f"rollup differs from query/evaluate.py on {p.id}"
        else:
            assert {(g or ""): n for g, n in got[p.id]} == {s["name"]: s["points"][0][1] for s in ref["series"]}
    exact = {
        (s["labels"]["llm_model"], float(s["labels"]["quantile"]), pt[0]): pt[1]
        for s in evaluate(store, lat_panel, start, end, step)["series"]
        for pt in s["points"]
    }
    for grain in LATENCY_GRAINS:
        errs = [
            abs(v - exact[key]) / exact[key]
            for kk, g, values in latency(lat_panel.query, grain)
            if 0 <= kk < n_points
            for x, v in zip(lat_panel.query.quantiles, values)
            for key in [(g or "", x, start + kk * step)]
        ]
        assert len(errs) == len(exact)
        lat = out["latency"][grain]
        lat["rel_err"] = (statistics.median(errs), float(np.quantile(errs, 0.99)), max(errs))
        lat["query"] = timed(lambda grain=grain: latency(lat_panel.query, grain), repeat)
    out["panels"] = {
        p.id: timed(lambda p=p: counts[type(p.query)](p.query), repeat) for p in PANELS if type(p.query) in counts
    }
    out["counts_refresh"] = timed(refresh_counts, repeat)
    out["raw_latency"] = timed(lambda: evaluate(store, lat_panel, start, end, step), repeat)
    out["mixed_refresh"] = timed(lambda: (refresh_counts(), evaluate(store, lat_panel, start, end, step)), repeat)
    store.query("DROP TABLE rollup_counts")
    for grain in LATENCY_GRAINS:
        store.query(f"DROP TABLE rollup_latency_{grain}")
    return out


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def report_size(n: int, figures: dict) -> None:
    f, rngs = figures, figures["ranges"]
    console.rule(f"[bold]{n:,} spans")
    if f.get("fill"):
        fl = f["fill"]
        console.print(
            f"fill: {n:,} spans in {fl['total_s']:.1f} s = [bold]{n / fl['total_s']:,.0f} spans/s[/] overall "
            f"(pool of {fl['pool_spans']:,} simulated spans {fl['pool_s']:.1f} s; append_spans {fl['append_s']:.1f} s "
            f"= {n / fl['append_s']:,.0f} spans/s in {fl['copies']} transactions; final checkpoint {fl['checkpoint_s']:.1f} s)"
        )
    else:
        console.print("fill: reused the data kept by an earlier run")
    free = f["db_bytes"] - f["db_used_bytes"]
    console.print(
        f"database on disk: [bold]{f['db_bytes'] / 2**20:,.0f} MiB[/] ({f['db_bytes'] / n:,.0f} bytes/span)"
        + (
            f"; {f['db_used_bytes'] / 2**20:,.0f} MiB in use ({f['db_used_bytes'] / n:,.0f} bytes/span), the rest "
            "free blocks left by the fill's checkpoints, reused by later writes"
            if free > 2**20
            else ""
        )
    )
    for name, (_, _, step) in rngs.items():
        console.print(f"range {name}: step {step:g} s, {f['range_spans'][name]:,} spans in range")

    t = Table(title=f"dashboard refresh, {n:,} spans: median (min–max) of {f['repeat']}", title_justify="left")
    for col in (
        "dashboard",
        "range",
        "goal",
        "in-process threads=1",
        "in-process threads=2",
        "HTTP GET /api/v1/dashboard?id=",
        "first refresh: in process / HTTP",
    ):
        t.add_column(col, justify="right" if col not in ("dashboard", "range") else "left")
    for board in DASHBOARDS:
        for name in rngs:
            one, two = f["inproc"][(board.id, name, 1)], f["inproc"][(board.id, name, 2)]
            http = f["http"][(board.id, name)]
            t.add_row(
                board.id,
                name,
                f"{GOALS[board.id][name] * 1e3:.0f} ms",
                fmt_ms(one["totals"]),
                fmt_ms(two["totals"]),
                fmt_ms(http["times"]) + f", {http['bytes'] / 1024:,.0f} KiB",
                f"{one['first'] * 1e3:,.0f} / {http['first'] * 1e3:,.0f} ms",
            )
    console.print(t)
    console.print(
        f"(planoscope serve started on this data in {f['http']['startup_s']:.1f} s; the server reads on all of DuckDB's threads, one per core)"
    )

    console.print(
        "CPU time of this process / wall time of a refresh, median: "
        + ", ".join(
            f"{board} {name} t={th} {statistics.median(c / w for c, w in zip(r['cpu'], r['totals'])):.2f}"
            for (board, name, th), r in f["inproc"].items()
        )
    )
    for board in DASHBOARDS:
        t = Table(title=f"{board.id}: per panel on its own, median ms", title_justify="left")
        t.add_column("panel")
        for name in rngs:
            for threads in (1, 2):
                t.add_column(f"{name} t={threads}", justify="right")
        for p in board.panels:
            t.add_row(
                p.id, *[med_ms(f["inproc"][(board.id, name, th)]["panels"][p.id]) for name in rngs for th in (1, 2)]
            )
        console.print(t)

    if "zone" in f:
        z = f["zone"]
        console.print(
            f"zone maps: the 1 h range ({z['spans_1h']:,} spans) overlaps {z['touching']} of {z['row_groups']} row groups "
            f"by their Timestamp min/max. The 1 h latency query as query/evaluate.py writes it: {fmt_ms(z['pruned'])}, row groups "
            f"scanned {z['scanned']} (EXPLAIN ANALYZE); with a Timestamp filter zone maps cannot use: "
            f"{fmt_ms(z['unpruned'])}, row groups scanned {z['scanned_unpruned']}"
        )
    if "shapes" in f:
        t = Table(title="7 d query variants (threads=1), median (min–max)", title_justify="left")
        t.add_column("variant")
        t.add_column("time", justify="right")
        for name, xs in f["shapes"].items():
            t.add_row(name, fmt_ms(xs))
        console.print(t)
    if "rollup" in f:
        r = f["rollup"]
        s, e, st = r["aligned_range"]
        console.print(
            f"rollup prototype (TEMP tables; 7 d range ending on the hour, step {st:g} s; threads=1):\n"
            f"  counts per (minute, service, model, agent): {r['rows_rate']:,} rows, {r['spans'] / r['rows_rate']:,.1f} "
            f"spans a row, built from all spans in {r['build_rate_s'] * 1e3:,.0f} ms "
            f"({r['spans'] / r['build_rate_s'] / 1e6:,.1f} M spans/s); rates and counts equal query/evaluate.py's exactly; "
            f"the 4 rate/count panels from it: [bold]{fmt_ms(r['counts_refresh'])}[/] ("
            + ", ".join(f"{pid} {med_ms(xs)}" for pid, xs in r["panels"].items())
            + " ms)"
        )
        for grain, lat in r["latency"].items():
            med, p99, mx = lat["rel_err"]
            console.print(
                f"  plano(llm) latency histograms per ({grain // 60} min, model), log buckets γ={GAMMA}: {lat['rows']:,} rows, "
                f"{r['llm_spans'] / lat['rows']:,.1f} spans a row, built in {lat['build_s'] * 1e3:,.0f} ms; p50/p95/p99 "
                f"within {med * 100:.2f} % (median), {p99 * 100:.2f} % (p99), {mx * 100:.2f} % (max) of the exact; "
                f"latency panel {fmt_ms(lat['query'])} vs {fmt_ms(r['raw_latency'])} exact from raw spans"
            )
        console.print(
            f"  refresh with rate/count panels from the count rollup and exact latency from raw spans: "
            f"[bold]{fmt_ms(r['mixed_refresh'])}[/]"
        )
    if "cpu" in f:
        console.print(
            f"[dim]other processes used {f['cpu']['other_cores']:.2f} of {os.cpu_count()} CPUs on average while "
            f"this size was timed in process (/proc/stat); figures are noisier when that is high[/]"
        )


def parse_sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        mult = {"k": 10**3, "m": 10**6}.get(part[-1:], 1)
        out.append(int(float(part.rstrip("km")) * mult))
    return out


def run_size(n: int, args, progress_console: Console) -> dict:
    keep_dir = Path(args.keep) / f"spans-{n}" if args.keep else None
    tmp = None
    if keep_dir is None:
        tmp = tempfile.mkdtemp(prefix=f"planoscope-dash-{n}-", dir="/tmp")
        data_dir = Path(tmp)
    else:
        data_dir = keep_dir
    figures = {"repeat": args.repeat}
    try:
        reuse = (data_dir / DB_FILE).exists()
        store = DuckDBStore(data_dir)
        if reuse and store.span_count() != n:
            store.close()
            shutil.rmtree(data_dir)
            store, reuse = DuckDBStore(data_dir), False
        if not reuse:
            t_end_s = int(time.time())
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=progress_console,
                transient=True,
            ) as progress:
                figures["fill"] = fill(store, n, args.pool, t_end_s, progress)
        store.close()  # checkpointed: the file is what the server opens
        figures["db_bytes"] = sum(p.stat().st_size for p in data_dir.iterdir() if p.name.startswith(DB_FILE))

        store = DuckDBStore(data_dir)  # a fresh open, as the server has: cold DuckDB buffer cache
        _, _, block, total, used, *_ = store.query("PRAGMA database_size")[0]
        figures["db_used_bytes"] = used * block
        max_ts = store.query("SELECT max(Timestamp) FROM otel_traces")[0][0]
        t_end = math.ceil(max_ts.replace(tzinfo=UTC).timestamp())
        rngs = figures["ranges"] = ranges(t_end)
        figures["range_spans"] = {
            name: store.query(
                "SELECT count(*) FROM otel_traces WHERE Timestamp > ? AND Timestamp <= ?", [_ts(s), _ts(e)]
            )[0][0]
            for name, (s, e, _) in rngs.items()
        }
        with console.status(f"{n:,} spans: timing dashboard refreshes in process"), CpuMeter() as cpu:
            figures["inproc"] = time_in_process(store, rngs, args.repeat)
        figures["cpu"] = {"other_cores": cpu.other_cores}
        if not args.quick:
            with console.status(f"{n:,} spans: zone maps, query variants, rollup prototype"):
                figures["zone"] = zone_maps(store, rngs, args.repeat)
                figures["shapes"] = query_shapes(store, rngs, args.repeat)
                figures["rollup"] = rollups(store, t_end, args.repeat)
        store.close()
        with console.status(f"{n:,} spans: planoscope serve, GET /api/v1/dashboard"):
            figures["http"] = time_http(data_dir, rngs, args.repeat)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    report_size(n, figures)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", default="1000000,10000000", help="store sizes, comma-separated (1M, 500k allowed)")
    ap.add_argument("--repeat", type=int, default=5, help="refreshes timed per figure; the median is reported")
    ap.add_argument("--keep", metavar="DIR", help="keep the filled stores in DIR/spans-N (reused when present)")
    ap.add_argument("--pool", type=int, default=POOL_SPANS, help="simulated spans tiled over the 7 days")
    ap.add_argument("--quick", action="store_true", help="skip the zone-map, query-variant and rollup studies")
    args = ap.parse_args()
    console.print(f"planoscope dashboard benchmark: {os.cpu_count()} CPUs, DuckDB {__import__('duckdb').__version__}")
    for n in parse_sizes(args.spans):
        run_size(n, args, console)


if __name__ == "__main__":
    main()
