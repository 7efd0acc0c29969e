"""ClickHouse ingest benchmark: durable spans per second of planoscope instances into ClickHouse.

Starts a real ClickHouse server on this machine (the tests' chDB-based one,
tests/support/clickhouse_server.py: the same cores as planoscope), then, per run, a fresh
database and a real ``planoscope serve --store clickhouse://…`` driven by ``planoscope load``
(Plano-shaped spans, batches of 512, several concurrent clients in a separate process), as
benchmarks/ingest.py does for DuckDB. Reports, medians over the runs:

- acknowledged spans/s (durable in planoscope's journal: what a client is told);
- spans/s into ClickHouse: the acknowledged spans over the load's time plus the time from its
  end until the last of them is in ClickHouse (counted there);
- CPU per span of planoscope (all its threads) and of the ClickHouse server (inserts, the
  materialized columns, merges while the run lasts), and both processes' peak RSS;
- the noise: how many CPUs other processes used meanwhile (/proc/stat's busy time less
  planoscope's, ClickHouse's, the load generators' and this process's), and the durable spans/s
  per CPU they left, which compares runs of a shared machine.

With ``--instances 2``, two instances on the one database (as ``deploy/scale-out/`` runs them),
each with its own data directory and its own ``planoscope load`` (the ``--concurrency`` clients
split between them), all at once: the figures are the totals, the CPU a span of both instances.

    python benchmarks/clickhouse_ingest.py [--runs 5] [--duration 20] [--concurrency 8] [--batch 512] [--instances 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from ingest import cpu_seconds, peak_rss_mib, start_server  # noqa: E402  (the DuckDB benchmark's parts)
from support.clickhouse_server import ClickHouseServer  # noqa: E402


def in_clickhouse(client, database: str) -> int:
    return client.query(f"SELECT count() FROM `{database}`.otel_traces").result_rows[0][0]


def pending(web: str) -> int:
    """The acknowledged spans an instance has not committed as stored (/healthz)."""
    with urllib.request.urlopen(f"http://{web}/healthz", timeout=10) as r:
        return json.load(r)["pending_spans"]


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all but idle and iowait, /proc/stat)."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process and of its children waited for (the load generators)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def load(args, target: str, concurrency: int) -> subprocess.Popen:
    """A ``planoscope load`` process on ``target`` (OTLP/gRPC), its report on stdout."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "planoscope",
            "load",
            "--target",
            target,
            "--duration",
            str(args.duration),
            "--concurrency",
            str(concurrency),
            "--batch",
            str(args.batch),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def one_run(args, ch: ClickHouseServer, n: int) -> dict:
    """One run: ``args.instances`` fresh instances on a fresh database, each loaded by its own
    ``planoscope load`` (the clients split between them), all at once."""
    database = f"bench_{os.getpid()}_{n}"
    admin = ch.client()
    admin.command(f"CREATE DATABASE `{database}`")
    os.environ["PLANOSCOPE_STORE"] = ch.url(database)  # inherited by the servers: no password in ps
    procs = []
    try:
        with contextlib.ExitStack() as dirs:
            for _ in range(args.instances):
                d = dirs.enter_context(tempfile.TemporaryDirectory())
                procs.append(start_server(d, "--retention", "0"))
            cpu0, ch_cpu0 = [cpu_seconds(p.pid) for p, _ in procs], cpu_seconds(ch.proc.pid)
            busy0, wall0, children0 = busy_seconds(), time.monotonic(), children_cpu()
            share = max(1, args.concurrency // args.instances)
            loads = [load(args, addrs["grpc"], share) for _, addrs in procs]
            outs = [lp.communicate()[0] for lp in loads]
            if any(lp.returncode for lp in loads):
                sys.exit("planoscope load failed:\n" + "\n".join(outs))
            acked = sum(int(re.search(r"acknowledged: (\d+)", out).group(1)) for out in outs)
            # The loads' own clocks; they run at once, the last to end bounds them.
            load_s = max(float(re.search(r"seconds: +([\d.]+)", out).group(1)) for out in outs)
            acked_rate = sum(float(re.search(r"acked spans/s: ([\d,]+)", o).group(1).replace(",", "")) for o in outs)
            t0 = time.monotonic()
            deadline = t0 + 300
            while in_clickhouse(admin, database) < acked:
                if time.monotonic() > deadline:
                    sys.exit(f"ClickHouse did not get the {acked} acknowledged spans within 300 s")
                time.sleep(0.05)
            seconds = load_s + time.monotonic() - t0
            cpu = sum(cpu_seconds(p.pid) - c for (p, _), c in zip(procs, cpu0))
            ch_cpu = cpu_seconds(ch.proc.pid) - ch_cpu0
            # The machine's noise: CPU of every other process (the load generators, waited for, apart).
            others = busy_seconds() - busy0 - cpu - ch_cpu - (children_cpu() - children0)
            other_cores = max(0.0, others / (time.monotonic() - wall0))
            for _, addrs in procs:
                # The rows are in ClickHouse before the instance commits their journal position.
                while pending(addrs["web"]):
                    if time.monotonic() > deadline:
                        sys.exit(f"{addrs['web']} still has acknowledged spans pending after they are in ClickHouse")
                    time.sleep(0.05)
            stored = in_clickhouse(admin, database)
            result = {
                "acked_rate": acked_rate,
                "ch_rate": acked / seconds,
                "acked": acked,
                "stored": stored,
                "cpu_us": cpu / acked * 1e6,
                "ch_cpu_us": ch_cpu / acked * 1e6,
                "other_cores": other_cores,
                # What the cores other processes left give: comparable across runs of a shared machine.
                "per_free_cpu": acked / seconds / max(0.1, (os.cpu_count() or 1) - other_cores),
                "rss": max(peak_rss_mib(p.pid) for p, _ in procs),
            }
            for p, _ in procs:
                p.terminate()
            for p, _ in procs:
                p.wait(timeout=60)
            procs.clear()
    finally:
        for p, _ in procs:
            p.kill()
            p.wait()
        admin.command(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--instances", type=int, default=1, help="planoscope instances on the one ClickHouse database")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        ch = ClickHouseServer(Path(d) / "clickhouse").start()
        try:
            runs = []
            for i in range(args.runs):
                r = one_run(args, ch, i)
                runs.append(r)
                print(
                    f"run {i + 1}/{args.runs}: {r['acked_rate']:,.0f} acked spans/s, {r['ch_rate']:,.0f} spans/s into "
                    f"ClickHouse ({r['acked']:,} acknowledged, {r['stored']:,} stored); CPU a span: planoscope "
                    f"{r['cpu_us']:.1f} us, ClickHouse {r['ch_cpu_us']:.1f} us; planoscope peak RSS {r['rss']:,.0f} MiB (the largest); other processes {r['other_cores']:.2f} CPUs, "
                    f"{r['per_free_cpu']:,.0f} durable spans/s per CPU they left",
                    flush=True,
                )
            ch_rss = ch.rss_bytes() >> 20
        finally:
            ch.close()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(
        f"median over {args.runs} runs, {args.instances} instance(s): {med('ch_rate'):,.0f} durable spans/s into ClickHouse "
        f"({med('acked_rate'):,.0f} acknowledged spans/s); CPU a span: planoscope {med('cpu_us'):.1f} us, "
        f"ClickHouse {med('ch_cpu_us'):.1f} us, together {med('cpu_us') + med('ch_cpu_us'):.1f} us; "
        f"planoscope peak RSS {med('rss'):,.0f} MiB, ClickHouse RSS at the end {ch_rss:,} MiB; "
        f"other processes (not planoscope, ClickHouse nor the load) used {med('other_cores'):.2f} of "
        f"{os.cpu_count()} CPUs (median; min {min(r['other_cores'] for r in runs):.2f}, max "
        f"{max(r['other_cores'] for r in runs):.2f}), {med('per_free_cpu'):,.0f} durable spans/s per CPU they "
        f"left (median; min {min(r['per_free_cpu'] for r in runs):,.0f}, max "
        f"{max(r['per_free_cpu'] for r in runs):,.0f}); durable spans/s min {min(r['ch_rate'] for r in runs):,.0f}, "
        f"max {max(r['ch_rate'] for r in runs):,.0f}"
    )


if __name__ == "__main__":
    main()
