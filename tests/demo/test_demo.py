"""``planoscope demo``: the real console program starts the server, the fake Envoy and brightstaff
endpoints and the simulated gateway; data reaches the store within seconds, both fakes are
scraped; Ctrl-C stops everything, exit 0.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from conftest import STOP_TIMEOUT_S, Metrics, _samples, read_spans, spans_by_id
from planoscope.cli import demo, serve

DATA_TIMEOUT_S = 120  # a deadline, not a speed goal: on a loaded machine the 15-minute backfill comes first


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]


def _port_free(address: str) -> bool:
    host, _, port = address.removeprefix("http://").split("/")[0].rpartition(":")
    try:
        socket.create_server((host, int(port))).close()
    except OSError:
        return False
    return True


def _acknowledged_all(srv) -> int:
    """The spans the stopped demo says it sent and had acknowledged, none rejected or failed."""
    summary = next(ln for ln in srv.lines("out") if ln.startswith("planoscope: simulated "))
    assert "rejected 0, failed 0" in summary, summary
    return int(re.search(r"acknowledged (\d+)", summary).group(1))


def test_demo_fills_the_store_within_seconds_and_ctrl_c_leaves_nothing_behind(demo_factory, tmp_path):
    started = time.time_ns()
    srv = demo_factory(tmp_path / "data", "--seed", "4")  # the default rate, as `make run`
    t0 = time.monotonic()
    written = 0
    while time.monotonic() - t0 < DATA_TIMEOUT_S:
        written = srv.healthz()["spans_written"]
        if written >= 50:
            break
        time.sleep(0.2)
    assert written >= 50, f"{written} spans stored after {DATA_TIMEOUT_S} s:\n{srv.output()}"

    metrics = Metrics(srv.metrics_text())
    llm_calls = [v for n, lb, v in metrics.samples if n == "calls_total" and lb["service_name"] == "plano(llm)"]
    assert (
        sum(llm_calls) > 0
        # (a call that failed before dispatch has no model: its series has no llm_model label)
        and len({lb.get("llm_model") for lb in metrics.series("calls_total") if lb["service_name"] == "plano(llm)"})
        >= 3
    )

    # The fake Envoy counts live calls only (not the backfilled past) as they end: wait for some.
    t0 = time.monotonic()
    while time.monotonic() - t0 < DATA_TIMEOUT_S:
        envoy = Metrics(httpx.get(srv.envoy_url, timeout=10).text)
        if envoy.value("envoy_wasmcustom_request_latency_count", {}) > 0:
            break
        time.sleep(0.5)
    assert envoy.family_types()["envoy_wasmcustom_ratelimited_rq"] == "counter"
    assert envoy.family_types()["envoy_wasmcustom_request_latency"] == "histogram"
    assert envoy.value("envoy_wasmcustom_request_latency_count", {}) > 0
    assert envoy.value("envoy_wasmcustom_ratelimited_rq_total", {}) >= 0
    brightstaff = Metrics(httpx.get(srv.brightstaff_url, timeout=10).text)
    assert brightstaff.family_types()["brightstaff_llm_upstream_requests"] == "counter"
    assert brightstaff.value("brightstaff_build_info", {"version": "0.4.36", "git_sha": "003c36ae"}) == 1
    # The demo's server scrapes both fakes (at once, then every 15 s), and keeps brightstaff's
    # and the process' metrics as well as the WASM filter's.
    for _ in range(100):
        targets = srv.get("/api/v1/targets").json()
        if all(t["up"] is not None for t in targets):
            break
        time.sleep(0.2)
    got = {t["label"]: (t["url"], t["up"]) for t in targets}
    assert got == {"envoy": (srv.envoy_url, True), "brightstaff": (srv.brightstaff_url, True)}, targets
    assert all(t["samples_last_scrape"] > 0 for t in targets), targets
    for metric, target in (
        ("brightstaff_http_requests_total", "brightstaff"),
        ("process_resident_memory_bytes", "brightstaff"),
        ("envoy_wasmcustom_request_latency_count", "envoy"),
        ("envoy_cluster_upstream_rq", "envoy"),
    ):
        t0 = time.monotonic()
        while not _samples(srv, metric, target) and time.monotonic() - t0 < DATA_TIMEOUT_S:
            time.sleep(0.5)
        assert _samples(srv, metric, target), (metric, target)

    out = "\n".join(srv.lines("out"))
    assert "simulating Plano: 5 requests/s (llm 65%, agent 30%, routing 5%), seed 4, OTLP/grpc" in out
    assert "backfilling 900 s" in out
    below = _descendants(srv.proc.pid)
    addresses = [srv.grpc_target, srv.http_traces_url, srv.web_url, srv.envoy_url, srv.brightstaff_url]
    srv.proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert srv.stop() == 0
    assert "planoscope: stopped" in srv.lines("out")
    assert not [p for p in below if _alive(p)], f"left behind: {below}"
    assert all(_port_free(a) for a in addresses), addresses
    acked = _acknowledged_all(srv)

    rows = spans_by_id(read_spans(srv.data_dir))
    assert len(rows) == acked >= written
    services = Counter(r["ServiceName"] for r in rows.values())
    assert set(services) == {
        "plano(llm)",
        "plano(routing)",
        "plano(orchestrator)",
        "plano(filter)",
        "plano(agent)",
        "plano(inbound)",
        "plano(outbound)",
    }, services
    now = time.time_ns()
    # An empty store gets the last 15 minutes of traffic first (so the charts start full), then
    # live traffic: bounds from the demo's start (the test runs for minutes on a busy machine).
    assert all(started - 16 * 60e9 < r["Timestamp"] < now for r in rows.values())
    assert any(r["Timestamp"] < now - 5 * 60e9 for r in rows.values())


def test_demo_keeps_its_data_apart_and_backfills(demo_factory, tmp_path, monkeypatch):
    """Without --data-dir the demo writes to planoscope-data/demo, never to serve's database;
    --backfill sends the recent past at once; SIGTERM stops it too."""
    monkeypatch.chdir(tmp_path)
    srv = demo_factory(None, "--rate", "10", "--backfill", "2m", "--protocol", "http", "--seed", "9")
    out = "\n".join(srv.lines("out"))
    assert f"data in {tmp_path / 'planoscope-data' / 'demo'} (0 spans)" in out
    assert "OTLP/http to http://127.0.0.1:" in out and "backfilling 120 s" in out
    t0 = time.monotonic()
    while srv.healthz()["spans_written"] < 1000 and time.monotonic() - t0 < DATA_TIMEOUT_S:
        time.sleep(0.2)
    srv.stop()
    assert not (tmp_path / "planoscope-data" / "planoscope.duckdb").exists()
    rows = read_spans(tmp_path / "planoscope-data" / "demo")
    oldest = min(r["Timestamp"] for r in rows)
    assert len(rows) >= 1000 and time.time_ns() - oldest > 100e9, (len(rows), oldest)


def test_demo_backfills_an_empty_store_only_and_ctrl_c_ends_a_backfill(demo_factory, tmp_path):
    srv = demo_factory(tmp_path / "demo", "--rate", "50", "--seed", "2")
    assert "backfilling 900 s" in "\n".join(srv.lines("out"))  # 45,000 requests: minutes of work
    t0 = time.monotonic()
    while srv.healthz()["spans_written"] < 100 and time.monotonic() - t0 < DATA_TIMEOUT_S:
        time.sleep(0.2)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGINT)  # Ctrl-C while the past is still being sent
    assert srv.stop() == 0
    stopped_s = time.monotonic() - t0
    acked = _acknowledged_all(srv)
    assert 100 <= acked == len(read_spans(srv.data_dir)) < 100_000, acked  # what was made is kept
    assert stopped_s < 20, f"Ctrl-C took {stopped_s:.1f} s to end the backfill"
    srv.start()  # the same data directory, now holding spans: a backfill would count them twice
    out = "\n".join(srv.lines("out"))
    assert "simulating Plano" in out and "backfilling" not in out
    srv.stop()


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANOSCOPE_")}
    return subprocess.run(
        [sys.executable, "-m", "planoscope", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mix", "llm=1,chat=2"], "bad value for --mix: unknown request kind 'chat'"),
        (["--mix", "llm=0"], "bad value for --mix: at least one share must be above zero"),
        (["--backfill", "soon"], "bad value for --backfill: not a duration"),
    ],
)
def test_demo_rejects_bad_options_in_one_line(tmp_path, args, message):
    r = _run("--data-dir", str(tmp_path / "d"), *args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"planoscope: error: {message}") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "flag, what",
    [
        ("--envoy-port", "the fake Envoy admin endpoint"),
        ("--brightstaff-port", "the fake brightstaff metrics endpoint"),
    ],
)
def test_demo_stops_cleanly_when_a_fake_port_is_taken(tmp_path, flag, what):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        ports = {"--envoy-port": "0", "--brightstaff-port": "0", flag: str(port)}
        r = _run(
            "--data-dir",
            str(tmp_path / "d"),
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            *(x for kv in ports.items() for x in kv),
            timeout=STOP_TIMEOUT_S,
        )
    assert r.returncode == 1, r
    assert f"cannot listen on 127.0.0.1:{port} for {what}" in r.stderr
    assert "ready" not in r.stdout


def test_demo_takes_every_option_of_serve():
    demo_opts = {o for p in demo.params for o in p.opts}
    assert {o for p in serve.params for o in p.opts} <= demo_opts
    assert {"--rate", "--mix", "--seed", "--envoy-port", "--brightstaff-port", "--backfill", "--protocol"} <= demo_opts
