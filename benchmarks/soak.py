"""Soak test (not in CI): a real ``planoscope serve`` under a steady OTLP load for N minutes with
retention running, printing the ingest rate, the server's RSS and the data directory's size over
time, so leaks, unbounded growth and retention's effect on ingest show.

    python benchmarks/soak.py [--minutes 10] [--rate 5000] [--retention 2m] [--every 10]

``planoscope load`` sends Plano-shaped spans at ``--rate`` spans/s. It stamps every copy with the
times of its template, made when the load starts, so once the run is older than the retention,
retention deletes spans as fast as they arrive: the worst case for retention's share of the
writer, and the store levels off at what arrives within one pass.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import start_server  # noqa: E402


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def healthz(web: str) -> dict:
    with urllib.request.urlopen(web + "/healthz", timeout=30) as r:
        return json.load(r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=5000, help="spans per second")
    ap.add_argument("--retention", default="2m")
    ap.add_argument("--every", type=float, default=10, help="seconds between two report lines")
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as d:
        proc, addrs = start_server(d, "--retention", args.retention)
        web = "http://" + addrs["web"]
        load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "planoscope",
                "load",
                "--target",
                addrs["grpc"],
                "--duration",
                str(seconds),
                "--rate",
                str(args.rate),
                "--concurrency",
                str(args.concurrency),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        print(f"soak: {args.minutes:g} min at {args.rate:,.0f} spans/s, retention {args.retention}, data in {d}")
        print(
            f"{'t_s':>6} {'spans/s':>9} {'written':>10} {'deleted':>10} {'oldest_s':>9} {'rss_mib':>8} "
            f"{'peak_mib':>8} {'disk_mib':>9}"
        )
        started = time.monotonic()
        last_t, last_written = started, 0
        rates = []
        try:
            while load.poll() is None:
                time.sleep(args.every)
                h = healthz(web)
                now = time.monotonic()
                rate = (h["spans_written"] - last_written) / (now - last_t)
                rates.append(rate)
                last_t, last_written = now, h["spans_written"]
                rss, peak = rss_mib(proc.pid)
                oldest = time.time() - h["oldest_span"] if h["oldest_span"] else float("nan")
                print(
                    f"{now - started:6.0f} {rate:9,.0f} {h['spans_written']:10,} "
                    f"{h['retention_deleted']['spans']:10,} {oldest:9.0f} {rss:8.0f} {peak:8.0f} "
                    f"{h['disk_bytes'] / 2**20:9.1f}",
                    flush=True,
                )
            out = load.stdout.read()
            print(out.strip())
            if load.returncode:
                sys.exit(f"load failed with {load.returncode}")
        finally:
            if load.poll() is None:
                load.terminate()
            proc.terminate()
            proc.wait(timeout=60)
        steady = rates[1:-1] or rates  # without the first and the last, partial intervals
        print(
            f"soak: ingest {min(steady):,.0f}-{max(steady):,.0f} spans/s per interval, server exit code "
            f"{proc.returncode}"
        )


if __name__ == "__main__":
    main()
