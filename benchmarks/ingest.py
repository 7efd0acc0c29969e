"""Ingest benchmark: durable OTLP/gRPC spans per second on this machine.

Starts a real ``planoscope serve`` on free ports with a fresh data directory, drives it with
``planoscope load`` (Plano-shaped spans, ~15 attributes, batches of 512, several concurrent
clients in a separate process), and reports acknowledged spans/s, the server's CPU time per
acknowledged span (all its threads; a figure that moves far less than the rate when other jobs
share the machine) and its peak RSS. Runs several times and prints the medians, since a 2-core
machine is noisy.

    python benchmarks/ingest.py [--runs 5] [--duration 20] [--concurrency 8] [--protocol grpc]
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


def start_server(data_dir: str, *extra: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """A ``planoscope serve`` on free ports; its addresses: grpc, http (the URL), web (HOST:PORT)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "planoscope",
            "serve",
            "--data-dir",
            data_dir,
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warning",
            "--scrape",
            "",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    addrs: dict[str, str] = {}
    lines = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.search(r"OTLP/gRPC listening on (\S+)", line):
            addrs["grpc"] = m.group(1)
        if m := re.search(r"OTLP/HTTP listening on (\S+)", line):
            addrs["http"] = m.group(1)
        if m := re.search(r"UI, API and /metrics on http://(\S+)", line):
            addrs["web"] = m.group(1)
        if "ready" in line:
            return proc, addrs
    proc.kill()
    sys.exit("server did not start:\n" + "".join(lines))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(args) -> tuple[float, float, int, float]:
    with tempfile.TemporaryDirectory() as d:
        proc, addrs = start_server(d)
        try:
            cpu_before = cpu_seconds(proc.pid)
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "planoscope",
                    "load",
                    "--target",
                    addrs[args.protocol],
                    "--protocol",
                    args.protocol,
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
            rate = float(re.search(r"acked spans/s: ([\d,]+)", out).group(1).replace(",", ""))
            acked = int(re.search(r"acknowledged: (\d+)", out).group(1))
            drain_s = wait_until_inserted(addrs["web"], acked)
            cpu_us = (cpu_seconds(proc.pid) - cpu_before) / max(acked, 1) * 1e6
            rss = peak_rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        return rate, rss, acked, cpu_us, drain_s


def wait_until_inserted(web: str, acked: int) -> float:
    """Seconds until every acknowledged span is in DuckDB (they are journaled first), so the
    server's CPU figure includes inserting them."""
    start = time.monotonic()
    while time.monotonic() - start < 300:
        with urllib.request.urlopen(f"http://{web}/healthz", timeout=10) as r:
            if json.load(r)["spans_written"] >= acked:
                return time.monotonic() - start
        time.sleep(0.05)
    sys.exit(f"the server did not insert {acked} acknowledged spans within 300 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    args = ap.parse_args()
    rates, rsss, cpus = [], [], []
    for i in range(args.runs):
        rate, rss, acked, cpu_us, drain_s = one_run(args)
        rates.append(rate)
        rsss.append(rss)
        cpus.append(cpu_us)
        print(
            f"run {i + 1}/{args.runs}: {rate:,.0f} acked spans/s ({acked:,} spans, all in DuckDB {drain_s:.1f} s "
            f"after the last acknowledgement), server CPU {cpu_us:.1f} us a span, server peak RSS {rss:,.0f} MiB",
            flush=True,
        )
    print(
        f"median: {statistics.median(rates):,.0f} durable spans/s over {args.runs} runs "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}); server CPU median {statistics.median(cpus):.1f} us a span "
        f"({min(cpus):.1f}-{max(cpus):.1f}); peak RSS median {statistics.median(rsss):,.0f} MiB, "
        f"max {max(rsss):,.0f} MiB"
    )


if __name__ == "__main__":
    main()
