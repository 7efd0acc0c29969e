"""planoscope's Prometheus API against a real Prometheus (Debian's package, installed by `make
test`): both scrape the demo's fake brightstaff and an Envoy-format endpoint every second, and
Prometheus scrapes planoscope's /metrics as planoscope samples it in process; then the queries of
Plano's brightstaff dashboard (and span-metric ones, and ``up``) go to both as ``query_range`` over the same
window, and must give the same series with values that agree.

The fakes start once both scrapers are running (until then both are refused), and their clock
stands still until both scrapers have read them: both histories then begin with the same values,
and what the fakes count afterwards is seen by both. A rate over a window longer than the history
(the dashboard's ``[5m]``, ``[15m]``) is the increase seen divided by the window: were one history
to begin a scrape later than the other, the events of that second (one request of a model chosen
five times in the test, 20 % of its level) would be missing from all its points.

Tolerance: the two scrapers still read the same counters at different instants, up to one scrape
interval (1 s) apart, so each window's samples differ by what changed in those slivers: for a rate
over a 1 m window at a few events a second, a few per cent of the series' level. A point agrees
when within 15 % of the largest value of its series in Prometheus's answer (the level the slivers
are a part of; 0.05 absolute for series near zero); 90 % of each query's points must, the median
difference must stay under 5 % of that level, and both must give the same series. A series near
zero (its level under 0.05 / 15 %, such as the 5xx share of a few failed requests, where one
request read in one scraper's sliver and not the other's is a third of the level) is held to the
absolute bound in both checks: its level counts as 1/3. A gauge of an
instant (requests in flight, ~2 at a time here, changing within the second) is sampled
independently by the two: only its mean over the window is compared, within 50 % (the spread of
the mean of 15 such samples), or half a request for a handler rarely busy. The figures go to test-output/prometheus-api-interop.txt.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import FakeTarget, _wait, grpc_export, pb_request, pb_span
from support.brightstaff import Brightstaff
from support.ports import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "metrics"))
from test_prometheus import Prometheus  # noqa: E402  (a real Prometheus scraping the given targets)

DASHBOARD = Path(__file__).resolve().parents[1] / "reference" / "brightstaff-dashboard.json"
OUT = Path(__file__).resolve().parents[2] / "test-output"
TRAFFIC_S = 80
STEP = 5
REL, ABS = 0.15, 0.05
INSTANT_GAUGES = {"sum by (handler) (brightstaff_http_in_flight_requests)"}
EXTRA_QUERIES = [
    "sum(rate(calls_total[1m]))",
    "sum by (span_name) (rate(calls_total[1m]))",
    "histogram_quantile(0.95, sum by (le) (rate(duration_milliseconds_bucket[1m])))",
    'sum(rate(envoy_wasmcustom_ratelimited_rq{job="envoy"}[1m]))',
    "up",
]


class HeldClock:
    """Unix ns that stands still until ``release()``, then runs on from where it stood."""

    def __init__(self):
        self.held_ns = time.time_ns()
        self.behind_ns: int | None = None

    def __call__(self) -> int:
        return self.held_ns if self.behind_ns is None else time.time_ns() - self.behind_ns

    def release(self) -> None:
        self.behind_ns = time.time_ns() - self.held_ns


class Envoy(FakeTarget):
    """An Envoy-format endpoint whose rate-limit counter climbs 4 a second of ``clock`` from its start."""

    def __init__(self, port: int, clock: HeldClock):
        self.clock = clock
        self.t0 = clock()
        super().__init__(port)

    @property
    def counter(self) -> int:
        return int((self.clock() - self.t0) / 1e9 * 4)

    @counter.setter
    def counter(self, value) -> None:
        pass


def _send_spans(target: str, stop: threading.Event) -> None:
    """Spans of three names, ten a second, until ``stop``."""
    n = 0
    while not stop.is_set():
        now = time.time_ns()
        spans = [
            pb_span((n + i).to_bytes(16, "big"), (n + i).to_bytes(8, "big"), f"op {i % 3}", now, now + (i + 1) * 10**7)
            for i in range(5)
        ]
        n += 5
        grpc_export(target, pb_request(({"service.name": "svc"}, spans)))
        stop.wait(0.5)


@pytest.fixture(scope="module")
def both(module_server_factory, tmp_path_factory):
    envoy_port, brightstaff_port = free_port(), free_port()
    srv = module_server_factory(
        tmp_path_factory.mktemp("interop"),
        "--scrape",
        f"envoy=http://127.0.0.1:{envoy_port}/stats/prometheus",
        "--scrape",
        f"brightstaff=http://127.0.0.1:{brightstaff_port}/metrics",
        "--scrape-metrics",
        "*",
        "--scrape-interval",
        "1s",
    )
    prom = Prometheus(
        tmp_path_factory.mktemp("prometheus"),
        {
            "envoy": (f"127.0.0.1:{envoy_port}", "/stats/prometheus"),
            "brightstaff": (f"127.0.0.1:{brightstaff_port}", "/metrics"),
            "planoscope": (srv.web_url.removeprefix("http://"), "/metrics"),
        },
    )
    _wait(lambda: prom.query('up{job="planoscope"} == 1', time.time()), 60, "Prometheus scraping planoscope")
    clock = HeldClock()
    envoy, brightstaff = Envoy(envoy_port, clock), Brightstaff(port=brightstaff_port, clock=clock)
    scraped = 'count(up{job=~"envoy|brightstaff"} == 1) == 2'
    _wait(lambda: prom.query(scraped, time.time()), 30, "Prometheus scraping the fakes")
    _wait(lambda: _instant(srv.web_url + "/prometheus", scraped), 30, "planoscope scraping the fakes")
    clock.release()
    stop = threading.Event()
    sender = threading.Thread(target=_send_spans, args=(srv.grpc_target, stop), daemon=True)
    sender.start()
    try:
        start = time.time()
        time.sleep(TRAFFIC_S)
        yield srv, prom, math.ceil(start) + 5, int(time.time()) - 2  # both have scraped up to the end
    finally:
        stop.set()
        sender.join(10)
        prom.close()
        envoy.close()
        brightstaff.close()


def _instant(url: str, query: str) -> list[dict]:
    r = httpx.get(url + "/api/v1/query", params={"query": query}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def _range(url: str, query: str, start: int, end: int) -> dict[tuple, dict[float, float]]:
    r = httpx.post(
        url + "/api/v1/query_range", data={"query": query, "start": start, "end": end, "step": STEP}, timeout=60
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["resultType"] == "matrix"
    return {tuple(sorted(s["metric"].items())): {t: float(v) for t, v in s["values"]} for s in data["result"]}


def _queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for q in [p, *p.get("panels", [])] for t in q.get("targets", [])]
    return exprs + EXTRA_QUERIES


@pytest.mark.parametrize("query", _queries())
def test_query_range_agrees_with_prometheus(both, query):
    srv, prom, start, end = both
    ours = _range(srv.web_url + "/prometheus", query, start, end)
    theirs = _range(prom.url, query, start, end)
    assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
    diffs, bad = [], []
    for key, points in theirs.items():
        level = max((abs(v) for v in points.values() if not math.isnan(v)), default=0.0)
        scale = max(level, ABS / REL)  # near zero: absolute (see the module's docstring)
        for t in sorted(set(points) | set(ours[key])):
            a, b = ours[key].get(t), points.get(t)
            if a is None or b is None:
                bad.append((key, t, a, b))
                diffs.append(1.0)
            elif math.isnan(a) or math.isnan(b):  # a quantile of no observations
                if not (math.isnan(a) and math.isnan(b)):
                    bad.append((key, t, a, b))
                    diffs.append(1.0)
            else:
                diffs.append(abs(a - b) / scale)
                if not abs(a - b) <= REL * scale:
                    bad.append((key, t, a, b))
    OUT.mkdir(exist_ok=True)
    median = statistics.median(diffs) if diffs else 0.0
    with open(OUT / "prometheus-api-interop.txt", "a") as f:
        f.write(f"{query}\n  points {len(diffs)}, outside {len(bad)}, median difference / level {median:.4f}\n")
    if not theirs:  # the family the fake Envoy does not serve; upstream errors before the first one
        assert "envoy_cluster_upstream_rq_total" in query or 'error_class!="none"' in query, query
        return
    if query in INSTANT_GAUGES:
        for key, points in theirs.items():
            mean = statistics.mean(points.values())
            assert abs(statistics.mean(ours[key].values()) - mean) <= 0.5 * max(mean, 1), (key, ours[key], points)
        return
    assert len(bad) <= 0.1 * len(diffs), bad[:10]
    assert median < 0.05, diffs
