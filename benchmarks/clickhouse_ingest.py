"""ClickHouse ingest benchmark: durable spans per second of one planoscope instance into ClickHouse.

Starts a real ClickHouse server on this machine (the tests' chDB-based one,
tests/support/clickhouse_server.py: the same cores as planoscope), then, per run, a fresh
database and a real ``planoscope serve --store clickhouse://…`` driven by ``planoscope load``
(Plano-shaped spans, batches of 512, several concurrent clients in a separate process), as
benchmarks/ingest.py does for DuckDB. Reports, medians over the runs:

- acknowledged spans/s (durable in planoscope's journal: what a client is told);
- spans/s into ClickHouse: the acknowledged spans over the load's time plus the time from its
  end until the last of them is in ClickHouse (counted there);
- CPU per span of planoscope (all its threads) and of the ClickHouse server (inserts, the
  materialized columns, merges while the run lasts), and both processes' peak RSS.

    python benchmarks/clickhouse_ingest.py [--runs 5] [--duration 20] [--concurrency 8] [--batch 512]
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def one_run(args, ch: ClickHouseServer, n: int) -> dict:
    database = f"bench_{os.getpid()}_{n}"
    admin = ch.client()
    admin.command(f"CREATE DATABASE `{database}`")
    os.environ["PLANOSCOPE_STORE"] = ch.url(database)  # inherited by the server: no password in ps
    try:
        with tempfile.TemporaryDirectory() as d:
            proc, addrs = start_server(d, "--retention", "0")
            try:
                cpu0, ch_cpu0 = cpu_seconds(proc.pid), cpu_seconds(ch.proc.pid)
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "planoscope",
                        "load",
                        "--target",
                        addrs["grpc"],
                        "--duration",
                        str(args.duration),
                        "--concurrency",
                        str(args.concurrency),
                        "--batch",
                        str(args.batch),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                acked_rate = float(re.search(r"acked spans/s: ([\d,]+)", out).group(1).replace(",", ""))
                acked = int(re.search(r"acknowledged: (\d+)", out).group(1))
                load_s = float(re.search(r"seconds: +([\d.]+)", out).group(1))  # the load's own clock
                t0 = time.monotonic()
                deadline = t0 + 300
                while in_clickhouse(admin, database) < acked:
                    if time.monotonic() > deadline:
                        sys.exit(f"ClickHouse did not get the {acked} acknowledged spans within 300 s")
                    time.sleep(0.05)
                seconds = load_s + time.monotonic() - t0
                with urllib.request.urlopen(f"http://{addrs['web']}/healthz", timeout=10) as r:
                    assert json.load(r)["pending_spans"] == 0
                stored = in_clickhouse(admin, database)
                result = {
                    "acked_rate": acked_rate,
                    "ch_rate": acked / seconds,
                    "acked": acked,
                    "stored": stored,
                    "cpu_us": (cpu_seconds(proc.pid) - cpu0) / acked * 1e6,
                    "ch_cpu_us": (cpu_seconds(ch.proc.pid) - ch_cpu0) / acked * 1e6,
                    "rss": peak_rss_mib(proc.pid),
                }
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    finally:
        admin.command(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch", type=int, default=512)
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
                    f"{r['cpu_us']:.1f} us, ClickHouse {r['ch_cpu_us']:.1f} us; planoscope peak RSS {r['rss']:,.0f} MiB",
                    flush=True,
                )
            ch_rss = ch.rss_bytes() >> 20
        finally:
            ch.close()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(
        f"median over {args.runs} runs: {med('ch_rate'):,.0f} durable spans/s into ClickHouse "
        f"({med('acked_rate'):,.0f} acknowledged spans/s); CPU a span: planoscope {med('cpu_us'):.1f} us, "
        f"ClickHouse {med('ch_cpu_us'):.1f} us, together {med('cpu_us') + med('ch_cpu_us'):.1f} us; "
        f"planoscope peak RSS {med('rss'):,.0f} MiB, ClickHouse RSS at the end {ch_rss:,} MiB"
    )


if __name__ == "__main__":
    main()
