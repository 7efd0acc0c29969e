"""The engine against a real Prometheus (Debian's package, installed by `make test`) on the same
samples: irregular scrapes, counter resets, NaNs, gaps longer than the lookback, classic
histograms. The samples are written as OpenMetrics, turned into TSDB blocks by promtool, served by
Prometheus; each expression's range query must agree with planoscope's engine point by point.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time

import httpx
import numpy as np
import pytest

from planoscope.promql import Engine, MemoryStorage, Scalar, Vector
from support.ports import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
MIN = 60_000
# Two hours ago, on the hour: inside Prometheus's retention, outside its head block.
BASE = (int(time.time()) // 3600 * 3600 - 2 * 3600) * 1000


def samples() -> dict[tuple[tuple[str, str], ...], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = {}

    def scrapes(interval_s: float, jitter_s: float, minutes: int = 70) -> np.ndarray:
        n = int(minutes * 60 / interval_s)
        t = BASE + (np.arange(n) * interval_s + rng.uniform(0, jitter_s, n)) * 1000
        return np.unique(t.astype(np.int64))

    for job in ("api", "web"):
        for instance in ("a", "b", "c"):
            ts = scrapes(15, 4)
            v = np.cumsum(rng.integers(0, 20, len(ts))).astype(float)
            if instance == "b":  # counter resets
                for at in (len(ts) // 3, 2 * len(ts) // 3):
                    v[at:] -= v[at] - rng.integers(0, 5)
            out[(("__name__", "requests_total"), ("instance", instance), ("job", job))] = (ts, v)
    for room in ("hall", "lab"):
        ts = scrapes(20, 8)
        v = 20 + np.cumsum(rng.normal(0, 0.5, len(ts)))
        if room == "lab":
            v[rng.integers(0, len(ts), 3)] = math.nan
        out[(("__name__", "temperature"), ("room", room))] = (ts, v)
    ts = scrapes(30, 0)
    keep = (ts < BASE + 20 * MIN) | (ts > BASE + 32 * MIN)  # a gap longer than the 5 m lookback
    out[(("__name__", "sparse"),)] = (ts[keep], np.arange(keep.sum(), dtype=float))
    for job in ("api", "web"):
        ts = scrapes(15, 0)
        counts = np.cumsum(rng.integers(0, 10, (len(ts), 4)), axis=0).cumsum(axis=1).astype(float)
        for i, le in enumerate(("0.1", "0.5", "1", "+Inf")):
            out[(("__name__", "latency_seconds_bucket"), ("job", job), ("le", le))] = (ts, counts[:, i])
    return out


EXPRESSIONS = [
    "requests_total",
    "rate(requests_total[5m])",
    "increase(requests_total[3m])",
    "irate(requests_total[2m])",
    "resets(requests_total[20m])",
    "delta(temperature[10m])",
    "idelta(temperature[5m])",
    "deriv(temperature[10m])",
    "predict_linear(temperature[10m], 600)",
    "changes(temperature[10m])",
    "avg_over_time(temperature[7m])",
    "sum_over_time(requests_total[4m])",
    "min_over_time(temperature[6m])",
    "max_over_time(temperature[6m])",
    "count_over_time(requests_total[5m])",
    "last_over_time(temperature[5m])",
    "stddev_over_time(temperature[10m])",
    "stdvar_over_time(temperature[10m])",
    "quantile_over_time(0.3, temperature[10m])",
    "holt_winters(temperature[10m], 0.5, 0.3)",
    "present_over_time(sparse[2m])",
    "absent_over_time(sparse[2m])",
    "sparse",
    "sum by (job) (rate(requests_total[5m]))",
    "avg without (instance) (requests_total)",
    "max(temperature)",
    "min by (room) (temperature)",
    "count(requests_total)",
    "stddev(temperature)",
    "quantile(0.9, requests_total)",
    "group by (job) (requests_total)",
    # No ties: which of two equal values topk keeps changed between Prometheus versions.
    "topk(1, temperature)",
    "bottomk by (job) (2, rate(requests_total[5m]))",
    'count_values("v", round(temperature))',
    "histogram_quantile(0.9, sum by (le) (rate(latency_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(latency_seconds_bucket[10m]))",
    "rate(requests_total[5m]) / on(job) group_left sum by (job) (rate(requests_total[5m]))",
    "requests_total > bool 500",
    "temperature > 20",
    "requests_total and on(instance) requests_total{job='api'} > 300",
    "requests_total{job='web'} or on(instance) requests_total{job='api'}",
    "requests_total unless on(instance) requests_total{instance='a'}",
    "temperature offset 7m",
    f"temperature @ {(BASE + 30 * MIN) / 1000}",
    "rate(requests_total[5m] offset 2m)",
    "max_over_time(rate(requests_total[2m])[10m:1m])",
    "avg_over_time(temperature[10m:30s] offset 1m)",
    'label_replace(temperature, "r", "$1", "room", "(.).*")',
    'label_join(requests_total, "id", "-", "job", "instance")',
    "clamp(temperature, 19, 21)",
    "abs(temperature - 20)",
    "round(temperature, 0.5)",
    "sqrt(requests_total)",
    "timestamp(temperature)",
    "scalar(sum(temperature)) * 2",
    "vector(time())",
    "sgn(temperature - 20)",
    "-temperature % 3",
    "exp(temperature / 10)",
    "minute(timestamp(temperature))",
    "hour()",
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    lines = []
    for labels, (ts, vs) in sorted(samples().items()):
        name = dict(labels)["__name__"]
        if not lines or lines[-1][0] != name:
            lines.append((name, f"# TYPE {name} gauge"))
        rest = ",".join(f'{k}="{v}"' for k, v in labels if k != "__name__")
        for t, v in zip(ts, vs):
            value = "NaN" if math.isnan(v) else repr(float(v))
            lines.append((name, f"{name}{{{rest}}} {value} {t / 1000:.3f}"))
    (tmp / "data.om").write_text("\n".join(line for _, line in lines) + "\n# EOF\n")
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(tmp / "data.om"), str(tmp / "tsdb")],
        check=True,
        capture_output=True,
    )
    (tmp / "prometheus.yml").write_text(json.dumps({"global": {"scrape_interval": "1h"}}))
    port = free_port()
    log = open(tmp / "prometheus.log", "w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()
            assert time.time() < deadline, "Prometheus did not get ready"
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def store():
    s = MemoryStorage()
    for labels, (ts, vs) in samples().items():
        s.add(dict(labels), ts, vs)
    return s


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


@pytest.mark.parametrize("step_s", [60, 37])
@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_range_query_agrees_with_prometheus(prometheus, store, expr, step_s):
    start, end = BASE + 10 * MIN, BASE + 65 * MIN
    params = {"query": expr, "start": start / 1000, "end": end / 1000, "step": step_s}
    body = httpx.get(prometheus + "/api/v1/query_range", params=params, timeout=30).json()
    assert body["status"] == "success", body
    theirs = {
        tuple(sorted(r["metric"].items())): [(round(float(t) * 1000), float(v)) for t, v in r["values"]]
        for r in body["data"]["result"]
    }
    assert theirs, f"{expr} selects nothing: the comparison would prove nothing"
    mine = {
        s.labels: list(zip(s.timestamps.tolist(), s.values.tolist()))
        for s in Engine().range_query(store, expr, start, end, step_s * 1000).series
    }
    assert sorted(mine) == sorted(theirs)
    for labels, points in theirs.items():
        assert [t for t, _ in mine[labels]] == [t for t, _ in points], labels
        bad = [(t, a, b) for (t, a), (_, b) in zip(mine[labels], points) if not close(a, b)]
        assert not bad, f"{labels}: (t, planoscope, prometheus) {bad[:5]}"


@pytest.mark.parametrize(
    "expr", ["temperature[3m]", "sum(temperature)", "scalar(max(temperature))", "topk(3, rate(requests_total[5m]))"]
)
def test_instant_query_agrees_with_prometheus(prometheus, store, expr):
    at = BASE + 40 * MIN + 7_000
    body = httpx.get(prometheus + "/api/v1/query", params={"query": expr, "time": at / 1000}, timeout=30).json()
    assert body["status"] == "success", body
    result = Engine().instant_query(store, expr, at)
    data = body["data"]
    if isinstance(result, Scalar):
        assert data["resultType"] == "scalar" and close(result.v, float(data["result"][1]))
    elif isinstance(result, Vector):
        assert data["resultType"] == "vector"
        assert [dict(s.labels) for s in result.samples] == [r["metric"] for r in data["result"]]
        assert all(close(s.v, float(r["value"][1])) for s, r in zip(result.samples, data["result"]))
    else:
        assert data["resultType"] == "matrix"
        theirs = {
            tuple(sorted(r["metric"].items())): [round(float(t) * 1000) for t, _ in r["values"]] for r in data["result"]
        }
        assert {s.labels: s.timestamps.tolist() for s in result.series} == theirs
