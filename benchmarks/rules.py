"""Rules benchmark: what evaluating Plano's shipped rules (``--rules plano``) every 15 s costs a
``planoscope serve`` under ingest, and whether it delays an OTLP acknowledgement.

Per run, two servers in turn on the same data directory, the same load and the same probe: one
with ``--rules plano`` (evaluation_interval 15 s), one without. Each takes ``planoscope load`` at
``--rate`` spans/s (default 10,000; Plano-shaped spans, a separate process) while planoscope
samples its own ``/metrics`` every 15 s, as by default (the series the rules read); after
``--warmup`` seconds the server's CPU (all its threads: /proc) is counted for ``--duration``
seconds. The rules' cost is the difference, as a share of one core (medians over ``--runs``; the
runs interleave the two, so the machine's drift hits both). Meanwhile a probe sends a one-span
OTLP/gRPC export every 0.2 s and times its acknowledgement: the two servers' percentiles say
whether an evaluation ever holds one up. The evaluations' own CPU, on the rules' thread, is read
from ``planoscope_rule_group_cpu_seconds_total`` (the A/B difference is within the noise of
ingest's CPU), their wall time per group from ``/prometheus/api/v1/rules`` (``evaluationTime``:
writing their samples included, behind the writer's span inserts).

``--store DIR``: a data directory to run on, used in place (the runs add their spans and
samples to it): for the issue's figure, a copy of ``benchmarks/dashboard.py --keep``'s 10 M
spans. What the rules read is planoscope's own ``/metrics`` as sampled every 15 s, and a
server that has run for a while has much of it: the first run on DIR writes ``--history``
(default 24 h) of it, every series a server under this load exposes (read from a warmed-up
server's ``/metrics``: counters rising to their value, gauges as they are), straight into the
store's samples table, as ``benchmarks/promql.py`` writes its history (once: ``rules-bench.json``
in DIR marks it). Without ``--store``, a fresh empty directory per run and no history.

    python benchmarks/rules.py [--store DIR] [--runs 3] [--duration 120] [--warmup 30] [--rate 10000] [--history 24]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from ingest import cpu_seconds, start_server  # noqa: E402  (the ingest benchmark's parts)
from planoscope.store import DuckDBStore  # noqa: E402
from promql import SCRAPE_S, append_history  # noqa: E402  (the PromQL benchmark's history writer)

MARK = "rules-bench.json"


def exposed_series(data_dir: str, rate: float) -> list[tuple[str, str, float, bool]]:
    """(name, labels JSON, value, is a counter) of every sample a server on ``data_dir`` shows on
    /metrics after 20 s of the load."""
    proc, addrs = start_server(data_dir, "--retention", "0", "--scrape-self-metrics", "")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    try:
        subprocess.run(
            [sys.executable, "-m", "planoscope", "load", "--target", addrs["grpc"], "--duration", "20"]
            + ["--rate", str(rate)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(2)
        text = httpx.get(f"http://{addrs['web']}/metrics", timeout=60).text
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    out = []
    for family in text_string_to_metric_families(text):
        counter = family.type in ("counter", "histogram", "summary")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out.append((sample.name, json.dumps(sample.labels, sort_keys=True), float(sample.value), counter))
    return out


def self_metric_history(data_dir: str, series: list[tuple[str, str, float, bool]], hours: float) -> int:
    """``hours`` of those series up to now, every 15 s, as planoscope's sampling of its own
    /metrics stores them (job ``planoscope``), an hour at a time in time order."""
    store = DuckDBStore(Path(data_dir))
    try:
        end = time.time() - 60
        times = np.arange(end - hours * 3600, end, SCRAPE_S, dtype=np.float64)
        names = np.array([n for n, _, _, _ in series], dtype=object)
        labels = np.array([ls for _, ls, _, _ in series], dtype=object)
        finals = np.array([v for _, _, v, _ in series], dtype=np.float64)
        counter = np.array([c for _, _, _, c in series])

        def values_at(chunk: np.ndarray) -> np.ndarray:  # counters climb to their values; gauges hold theirs
            share = (chunk - times[0] + SCRAPE_S) / (end - times[0])
            return np.where(counter, np.outer(share, finals).round(), finals)

        return append_history(store, "planoscope", times, names, labels, values_at)
    finally:
        store.close()


def probe_request(n: int) -> trace_service_pb2.ExportTraceServiceRequest:
    now = time.time_ns()
    span = trace_pb2.Span(
        trace_id=n.to_bytes(16, "big"),
        span_id=n.to_bytes(8, "big"),
        name="probe",
        start_time_unix_nano=now - 1_000_000,
        end_time_unix_nano=now,
    )
    service = common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="rules-probe"))
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=[service]),
                scope_spans=[trace_pb2.ScopeSpans(spans=[span])],
            )
        ]
    )


class Probe(threading.Thread):
    """One-span exports every ``every`` s, each acknowledgement's latency in ``latencies_ms``."""

    def __init__(self, target: str, every: float = 0.2):
        super().__init__(daemon=True)
        self.target, self.every = target, every
        self.latencies_ms: list[float] = []
        self.measuring = False
        self.stopped = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            n = 1 << 40
            while not self.stopped.wait(self.every):
                n += 1
                t = time.perf_counter()
                stub.Export(probe_request(n), timeout=30)
                if self.measuring:
                    self.latencies_ms.append((time.perf_counter() - t) * 1000)


def one(data_dir: str, rules: bool, args) -> dict:
    """One server's figures: CPU cores used while measured, probe latencies, evaluation times."""
    extra = ["--retention", "0", "--rules", "plano" if rules else ""]
    proc, addrs = start_server(data_dir, *extra)
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain its output
    web = f"http://{addrs['web']}"
    load = subprocess.Popen(
        [sys.executable, "-m", "planoscope", "load", "--target", addrs["grpc"]]
        + ["--duration", str(args.warmup + args.duration + 5), "--rate", str(args.rate), "--concurrency", "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = Probe(addrs["grpc"])
    probe.start()
    evaluations: dict[tuple[str, str], float] = {}  # (group, lastEvaluation) -> evaluationTime s
    try:
        time.sleep(args.warmup)
        probe.measuring = True
        rules_cpu0 = rules_cpu(web)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        while time.monotonic() - t0 < args.duration:
            time.sleep(min(5.0, args.duration - (time.monotonic() - t0)))
            if rules:
                for g in httpx.get(f"{web}/prometheus/api/v1/rules", timeout=30).json()["data"]["groups"]:
                    if g["lastEvaluation"]:
                        evaluations[(g["name"], g["lastEvaluation"])] = g["evaluationTime"]
        cores = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        rules_cores = (rules_cpu(web) - rules_cpu0) / (time.monotonic() - t0)
        probe.measuring = False
        health = httpx.get(f"{web}/prometheus/api/v1/rules", timeout=30).json()["data"]["groups"]
        unhealthy = [r["name"] for g in health for r in g["rules"] if r["health"] != "ok"]
        if unhealthy:
            sys.exit(f"rules not evaluated cleanly: {unhealthy}")
    finally:
        probe.stopped.set()
        load.terminate()
        load.wait()
        proc.terminate()
        proc.wait(timeout=120)
    return {"cores": cores, "rules_cores": rules_cores, "latencies_ms": probe.latencies_ms, "evaluations": evaluations}


def rules_cpu(web: str) -> float:
    """The CPU seconds the rule groups' evaluations took so far on the rules' threads (/metrics)."""
    text = httpx.get(f"{web}/metrics", timeout=60).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "planoscope_rule_group_cpu_seconds"
        for s in f.samples
        if s.name.endswith("_total")
    )


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, help="a data directory to use in place (default: a fresh one per run)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=120, help="seconds measured per server")
    ap.add_argument("--warmup", type=float, default=30, help="seconds of load before measuring")
    ap.add_argument("--rate", type=float, default=10_000, help="spans per second of load")
    ap.add_argument("--history", type=float, default=24, help="hours of /metrics samples written into --store")
    args = ap.parse_args()
    if args.store and not (args.store / MARK).exists() and args.history > 0:
        t = time.perf_counter()
        series = exposed_series(str(args.store), args.rate)
        rows = self_metric_history(str(args.store), series, args.history)
        (args.store / MARK).write_text(json.dumps({"series": len(series), "rows": rows, "hours": args.history}))
        print(
            f"history: {len(series):,} series x {args.history:g} h = {rows:,} samples in {time.perf_counter() - t:.0f} s"
        )
    if args.runs < 1:  # --runs 0: only the history
        return
    with_rules, without, by_group, threads = [], [], {}, []
    lat = {True: [], False: []}
    for i in range(args.runs):
        for rules in (True, False) if i % 2 == 0 else (False, True):
            with tempfile.TemporaryDirectory() as fresh:
                r = one(str(args.store or fresh), rules, args)
            (with_rules if rules else without).append(r["cores"])
            if rules:
                threads.append(r["rules_cores"])
            lat[rules] += r["latencies_ms"]
            for (group, _), s in r["evaluations"].items():
                by_group.setdefault(group, []).append(s)
            print(
                f"run {i + 1}/{args.runs} {'rules' if rules else 'no rules'}: {r['cores']:.3f} cores, "
                f"acks p50 {percentile(r['latencies_ms'], 0.5):.1f} ms p99 {percentile(r['latencies_ms'], 0.99):.1f} ms "
                f"max {max(r['latencies_ms'], default=float('nan')):.1f} ms ({len(r['latencies_ms'])} probes)"
                + (
                    f", {len(r['evaluations'])} evaluations seen, the rules' thread {r['rules_cores'] * 100:.2f}% of a core"
                    if rules
                    else ""
                ),
                flush=True,
            )
    diffs = [a - b for a, b in zip(with_rules, without)]
    print(
        f"\nrules at 15 s, {args.rate:,.0f} spans/s of ingest, medians of {args.runs}: the server used "
        f"{statistics.median(with_rules):.3f} cores with the rules, {statistics.median(without):.3f} without: "
        f"the rules cost {statistics.median(diffs) * 100:.2f}% of one core (per run: "
        + ", ".join(f"{d * 100:.2f}%" for d in diffs)
        + ")"
    )
    print(
        f"the rules' thread (their evaluations' CPU, its DuckDB reads included): "
        f"{statistics.median(threads) * 100:.2f}% of one core at the median ("
        + ", ".join(f"{t * 100:.2f}%" for t in threads)
        + ")"
    )
    for group, times in sorted(by_group.items()):
        print(
            f"group {group}: evaluation {statistics.median(times) * 1000:.0f} ms wall median "
            f"({min(times) * 1000:.0f}-{max(times) * 1000:.0f}, {len(times)} evaluations)"
        )
    for rules in (True, False):
        xs = lat[rules]
        print(
            f"acknowledgements {'with' if rules else 'without'} rules: p50 {percentile(xs, 0.5):.1f} ms, "
            f"p99 {percentile(xs, 0.99):.1f} ms, p99.9 {percentile(xs, 0.999):.1f} ms, max {max(xs):.1f} ms "
            f"({len(xs)} probes)"
        )


if __name__ == "__main__":
    main()
