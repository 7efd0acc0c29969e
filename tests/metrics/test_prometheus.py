"""planoscope against the reference stack's own queries: a real Prometheus (Debian's package,
installed by `make test`) scrapes planoscope's /metrics and an Envoy-format endpoint while spans
arrive in real time; each PromQL expression of the reference Grafana dashboard is evaluated by
Prometheus and compared with planoscope's panel API over the same window.

Rates agree within a tolerance (Prometheus extrapolates a counter's increase from 1 s scrapes to
the window's edges; planoscope counts the spans that started in the window). Counts agree
exactly. Latency: Prometheus can only interpolate inside a histogram bucket, planoscope's
quantiles are exact; the test checks that each estimate lies in the bucket holding the exact
value and writes how far it is to test-output/prometheus-latency.txt.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import FakeTarget, grpc_export, pb_request, pb_span
from planoscope.settings import Settings
from support.ports import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "plano-requests.json"
OUT = Path(__file__).resolve().parents[2] / "test-output"
WINDOW = 20  # seconds: $__rate_interval and planoscope's step
TRAFFIC_S = 32
MODELS = {"gpt-4o": 6, "claude-sonnet-4": 3, "gemini-2.0-flash": 1}  # LLM spans per second
AGENTS = {"billing_agent": 2, "weather_agent": 1}
RATE_LIMITED_PER_S = 4
BUCKETS_MS = [float(b) for b in Settings().metrics_buckets_ms]


class Envoy(FakeTarget):
    """Envoy's admin endpoint whose rate-limit counter climbs RATE_LIMITED_PER_S a second."""

    t0 = time.time()

    @property
    def counter(self) -> int:
        return int((time.time() - self.t0) * RATE_LIMITED_PER_S)

    @counter.setter
    def counter(self, value) -> None:
        pass


class Prometheus:
    def __init__(self, tmp: Path, targets: dict[str, tuple[str, str]]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jobs = [
            {"job_name": job, "metrics_path": path, "static_configs": [{"targets": [hostport]}]}
            for job, (hostport, path) in targets.items()
        ]
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": jobs}
        (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(tmp / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, (tmp / "prometheus.log").read_text()
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready:\n" + (tmp / "prometheus.log").read_text())

    def query(self, expr: str, at: float) -> list[dict]:
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr, "time": at}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["data"]["result"]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _send_traffic(target: str, stop_at: float, rng: random.Random) -> dict:
    """Spans starting now, every 100 ms, until ``stop_at``; what was sent, per series."""
    sent = {"llm": {m: [] for m in MODELS}, "agent": {a: 0 for a in AGENTS}, "orchestrator": 0}
    tick = 0
    while time.time() < stop_at:
        now = time.time_ns()
        llm, agent, orch = [], [], []
        for model, per_s in MODELS.items():
            for _ in range(per_s if tick % 10 == 0 else 0):  # each model's per-second share, once a second
                ms = rng.uniform(20, 3000)
                llm.append(
                    pb_span(
                        rng.randbytes(16),
                        rng.randbytes(8),
                        f"POST /v1/chat/completions {model}",
                        now,
                        now + int(ms * 1e6),
                        attrs={"llm.model": model},
                    )
                )
                sent["llm"][model].append(ms)
        if tick % 10 == 5:
            for a, per_s in AGENTS.items():
                for _ in range(per_s):
                    agent.append(
                        pb_span(
                            rng.randbytes(16),
                            rng.randbytes(8),
                            f"{a} /v1/chat/completions",
                            now,
                            now + 1_000_000,
                            attrs={"agent_id": a},
                        )
                    )
                    sent["agent"][a] += 1
            orch.append(pb_span(rng.randbytes(16), rng.randbytes(8), "travel", now, now + 1_000_000))
            sent["orchestrator"] += 1
        resources = [
            (r, s)
            for r, s in (
                ({"service.name": "plano(llm)"}, llm),
                ({"service.name": "plano(agent)"}, agent),
                ({"service.name": "plano(orchestrator)"}, orch),
            )
            if s
        ]
        if resources:
            assert grpc_export(target, pb_request(*resources)).partial_success.rejected_spans == 0
        tick += 1
        time.sleep(max(0.0, 0.1 - (time.time_ns() - now) / 1e9))
    return sent


@pytest.fixture(scope="module")
def compared(module_server_factory, tmp_path_factory):
    envoy = Envoy()
    prom = None
    try:
        srv = module_server_factory(
            tmp_path_factory.mktemp("prom-planoscope"), "--scrape", f"envoy={envoy.url}", "--scrape-interval", "1s"
        )
        web = srv.web_url.removeprefix("http://")
        prom = Prometheus(
            tmp_path_factory.mktemp("prometheus"),
            {"planoscope": (web, "/metrics"), "envoy": (f"127.0.0.1:{envoy.port}", "/stats/prometheus")},
        )
        start = time.time()
        sent = _send_traffic(srv.grpc_target, start + TRAFFIC_S, random.Random(5))
        time.sleep(3)  # two more scrapes of the final counters
        yield srv, prom, sent, start
    finally:
        if prom:
            prom.close()
        envoy.close()


def _reference() -> dict[str, list[dict]]:
    dash = json.loads(REFERENCE.read_text())
    return {p["title"]: p["targets"] for p in dash["panels"]}


def _panel(srv, panel_id: str, at: float) -> dict[str, float]:
    """planoscope's value of each series of ``panel_id`` for the window ending at ``at``."""
    r = httpx.get(f"{srv.web_url}/api/v1/panels/{panel_id}", params={"start": at - WINDOW, "end": at, "step": WINDOW})
    assert r.status_code == 200, r.text
    return {s["name"]: s["points"][-1][1] for s in r.json()["series"] if s["points"] and s["points"][-1][0] == at}


def _expr(target: dict) -> str:
    return target["expr"].replace("$__rate_interval", f"{WINDOW}s")


def _close(a: float, b: float, rel: float = 0.12) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def _report(name: str, rows: list[tuple[str, float, float]]) -> None:
    """test-output/prometheus-NAME.txt: each series, Prometheus' value beside planoscope's."""
    OUT.mkdir(exist_ok=True)
    lines = [f"{'series':22} {'prometheus':>11} {'planoscope':>11} {'diff':>7}"]
    lines += [f"{n:22} {p:11.3f} {o:11.3f} {(p - o) / o if o else 0:+7.1%}" for n, p, o in rows]
    (OUT / f"prometheus-{name}.txt").write_text("\n".join(lines) + "\n")


def test_the_reference_queries_are_the_ones_planoscope_serves(compared):
    srv, _, _, _ = compared
    panels = httpx.get(f"{srv.web_url}/api/v1/panels", params={"dashboard": "requests-overview"}).json()
    ours = {p["title"]: p["promql"] for p in panels}
    assert ours == {title: [t["expr"] for t in targets] for title, targets in _reference().items()}


@pytest.mark.parametrize(
    "title,panel_id,label",
    [
        ("LLM Requests / sec by Model", "llm_requests_per_second", "llm_model"),
        ("Agent Requests / sec by Agent", "agent_requests_per_second", "agent_id"),
    ],
)
def test_rates_by_label_agree(compared, title, panel_id, label):
    srv, prom, _, start = compared
    at = round(start + TRAFFIC_S - 4)
    (target,) = _reference()[title]
    got = {r["metric"][label]: float(r["value"][1]) for r in prom.query(_expr(target), at)}
    ours = _panel(srv, panel_id, at)
    assert set(got) == set(ours) and got
    _report(panel_id, [(n, got[n], ours[n]) for n in sorted(got)])
    for name in got:
        assert _close(got[name], ours[name]), (name, got[name], ours[name])


def test_total_requests_agree(compared):
    srv, prom, _, start = compared
    at = round(start + TRAFFIC_S - 4)
    ours = _panel(srv, "total_requests_per_second", at)
    rows = []
    for target, name in zip(_reference()["Total LLM Requests / sec"], ["llm", "agent", "orchestrator"]):
        (result,) = prom.query(_expr(target), at)
        rows.append((name, float(result["value"][1]), ours[name]))
    _report("total_requests_per_second", rows)
    for name, theirs, mine in rows:
        assert _close(theirs, mine), (name, theirs, mine)


def test_rate_limited_requests_agree(compared):
    srv, prom, _, start = compared
    at = round(start + TRAFFIC_S - 4)
    (target,) = _reference()["Rate-Limited Requests / sec"]
    results = prom.query(_expr(target), at)
    assert len(results) == 1
    theirs = float(results[0]["value"][1])
    ours = _panel(srv, "rate_limited_per_second", at)
    assert list(ours) == ["envoy"]
    _report("rate_limited_per_second", [("envoy", theirs, ours["envoy"])])
    assert _close(theirs, ours["envoy"]) and _close(theirs, RATE_LIMITED_PER_S), (theirs, ours)


def test_cumulative_counts_agree_exactly(compared):
    srv, prom, sent, _ = compared
    at = time.time() - 1
    (target,) = _reference()["Cumulative Request Count by Model"]
    theirs = {r["metric"]["llm_model"]: float(r["value"][1]) for r in prom.query(_expr(target), at)}
    r = httpx.get(f"{srv.web_url}/api/v1/panels/llm_cumulative_requests", params={"end": at})
    ours = {s["name"]: s["points"][0][1] for s in r.json()["series"]}
    assert theirs == ours == {m: len(v) for m, v in sent["llm"].items()}


def _bucket(value_ms: float) -> tuple[float, float]:
    lo = 0.0
    for b in BUCKETS_MS:
        if value_ms <= b:
            return lo, b
        lo = b
    return lo, float("inf")


def _near_buckets(value_ms: float) -> tuple[float, float]:
    """The bounds of the bucket holding ``value_ms`` widened by one bucket on each side."""
    bounds = [0.0, *BUCKETS_MS, float("inf")]
    lo, hi = _bucket(value_ms)
    i = bounds.index(lo)
    return bounds[max(0, i - 1)], bounds[min(len(bounds) - 1, i + 2)]


def test_latency_estimates_fall_in_the_bucket_of_the_exact_quantile(compared):
    srv, prom, _, start = compared
    at = round(start + TRAFFIC_S - 4)
    ours = {}
    for name, value in _panel(srv, "llm_latency_ms", at).items():
        q, model = name.split(" ", 1)
        ours[(q, model)] = value
    lines = [
        f"window {WINDOW}s ending {at}; buckets (ms) {BUCKETS_MS}",
        f"{'quantile':8} {'model':18} {'planoscope exact':>17} {'prometheus':>11} {'diff':>9} {'bucket':>15}",
    ]
    checked = 0
    for target in _reference()["LLM Request Latency p50 / p95 / p99 by Model"]:
        q = "p" + str(round(float(target["expr"].split("(")[1].split(",")[0]) * 100))
        for r in prom.query(_expr(target), at):
            model, theirs = r["metric"]["llm_model"], float(r["value"][1])
            exact = ours[(q, model)]
            lo, hi = _bucket(exact)
            lines.append(
                f"{q:8} {model:18} {exact:17.1f} {theirs:11.1f} {theirs - exact:+9.1f} {f'({lo:g}, {hi:g}]':>15}"
            )
            # Both sides see nearly the same spans, and the estimate interpolates inside the
            # bucket where the quantile's rank falls: that bucket, or a neighbour when the exact
            # value sits near a bound and the two windows differ by a span or two.
            assert _near_buckets(exact)[0] <= theirs <= _near_buckets(exact)[1], lines[-1]
            checked += 1
    OUT.mkdir(exist_ok=True)
    (OUT / "prometheus-latency.txt").write_text("\n".join(lines) + "\n")
    assert checked == 3 * len(MODELS)
