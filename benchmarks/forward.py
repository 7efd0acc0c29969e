"""Forwarding benchmark: what --forward-otlp costs ingest, and how fast it drains a backlog.

Three real servers on free ports: a backend planoscope, and a front planoscope with and without
``--forward-otlp`` to it. ``planoscope load`` drives the front for ``--duration`` seconds at
full speed; the script prints the front's acknowledged spans/s with and without forwarding, then
how long the backend takes to hold every span (forwarded spans/s, including the backlog left
when the load stopped).

    python benchmarks/forward.py [--duration 15] [--protocol grpc|http]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

import httpx

sys.path.insert(0, __import__("os").path.dirname(__file__))
from ingest import start_server  # noqa: E402


def load(target: str, seconds: float) -> float:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "planoscope",
            "load",
            "--target",
            target,
            "--duration",
            str(seconds),
            "--concurrency",
            "8",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(re.search(r"acked spans/s: ([\d,]+)", out).group(1).replace(",", ""))


def spans_written(web: str) -> int:
    return httpx.get(f"http://{web}/healthz", timeout=30).json()["spans_written"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain, addrs = start_server(f"{tmp}/plain")
        try:
            baseline = load(addrs["grpc"], args.duration)
        finally:
            plain.terminate(), plain.wait()
        backend, b = start_server(f"{tmp}/backend")
        url = f"grpc://{b['grpc']}" if args.protocol == "grpc" else b["http"]
        front, f = start_server(f"{tmp}/front", "--forward-otlp", url)
        try:
            with_forwarding = load(f["grpc"], args.duration)
            stopped = time.monotonic()
            target = spans_written(f["web"])
            while spans_written(b["web"]) < target:
                time.sleep(0.5)
            drained = time.monotonic() - stopped
            health = httpx.get(f"http://{f['web']}/healthz").json()["forwarding"][0]
        finally:
            for p in (front, backend):
                p.terminate()
                p.wait()
    print(f"ingest without forwarding: {baseline:,.0f} spans/s")
    print(
        f"ingest while forwarding ({args.protocol}): {with_forwarding:,.0f} spans/s "
        f"({with_forwarding / baseline - 1:+.0%})"
    )
    print(
        f"backend held all {target:,} spans {drained:.1f} s after the load stopped: "
        f"{target / (args.duration + drained):,.0f} forwarded spans/s on average; "
        f"forwarder: {health['forwarded']:,} forwarded, {health['dropped']} dropped"
    )


if __name__ == "__main__":
    main()
