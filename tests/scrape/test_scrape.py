"""Envoy stats scraping: a real HTTP server here serves Envoy-format text whose counters the test
sets (a reset included); planoscope scrapes it every 0.2 s and the stored samples and the rates the
API computes from them are checked exactly. Then the ways a target can fail, each on its own:
the server keeps running, ingest works, the other target is still scraped, the health view says
what went wrong, and scraping resumes once the target recovers."""

from __future__ import annotations

import time

import pytest

from conftest import RL, FakeTarget, Metrics, _samples, _wait, grpc_export, now_base_ns, pb_request, pb_span
from support.clickhouse_fixtures import STORES
from support.ports import free_port


def _json(srv, path, **params):
    import httpx

    r = httpx.get(srv.web_url + path, params=params, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def _targets(srv):
    return {t["label"]: t for t in _json(srv, "/api/v1/targets")}


def _expected_rates(samples, start, end, step):
    """Independent of query/evaluate.py: Prometheus' reset rule applied pairwise over the samples."""
    out = []
    k = 0
    while start + k * step <= end + 1e-9:
        t = start + k * step
        upto = [i for i, (ts, _) in enumerate(samples) if ts <= t]
        if upto and upto[-1] >= 1:
            i1 = upto[-1]
            before = [i for i, (ts, _) in enumerate(samples) if ts <= t - step and i < i1]
            i0 = before[-1] if before else 0  # the samples begin within the step
            inc = 0.0
            for j in range(i0 + 1, i1 + 1):
                prev, cur = samples[j - 1][1], samples[j][1]
                inc += cur - prev if cur >= prev else cur
            out.append([t, inc / (samples[i1][0] - samples[i0][0])])
        k += 1
    return out


@pytest.fixture
def targets():
    made = [FakeTarget(), FakeTarget()]
    yield made
    for t in made:
        t.close()


def _serve(server_factory, tmp_path, *urls, interval="0.2s", env=None):
    flags = [x for url in urls for x in ("--scrape", url)]  # the flag repeated, one target each
    return server_factory(
        tmp_path / "data",
        *flags,
        "--scrape-interval",
        interval,
        "--scrape-timeout",
        "0.5s",
        "--scrape-max-bytes",
        "1048576",
        env=env,
    )


@pytest.mark.parametrize("store", STORES)
def test_counters_resets_and_exact_rates(server_factory, tmp_path, targets, store, request):
    envoy, _ = targets
    # On ClickHouse the samples are in its planoscope_samples table, and read from there.
    env = {"PLANOSCOPE_STORE": request.getfixturevalue("clickhouse_database").url} if store == "clickhouse" else None
    srv = _serve(server_factory, tmp_path, f"envoy={envoy.url}", env=env)
    served = [0, 5, 12, 30, 3, 10]  # 30 → 3: Envoy restarted
    for value in served:
        envoy.counter = value
        _wait(
            lambda value=value: any(v == value for _, v in _samples(srv)[-2:]) and _samples(srv)[-1][1] == value,
            what=f"counter {value} scraped",
        )
    samples = _samples(srv)
    values = [v for _, v in samples]
    dedup = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    assert dedup == served
    # What the default scrape_metrics keeps (the WASM filter's, the clusters' request counters that
    # Plano's brightstaff dashboard queries), under the names Envoy writes (beside them:
    # planoscope's own /metrics, job planoscope, none named envoy_*).
    names = {m["name"] for m in _json(srv, "/api/v1/metrics") if m["name"].startswith("envoy_")}
    assert names == {
        "envoy_cluster_upstream_rq",
        RL,
        "envoy_wasmcustom_active_http_calls",
        "envoy_wasmcustom_request_latency_bucket",
        "envoy_wasmcustom_request_latency_sum",
        "envoy_wasmcustom_request_latency_count",
    }
    buckets = _json(
        srv,
        "/api/v1/metrics/envoy_wasmcustom_request_latency_bucket/samples",
        start=time.time() - 600,
        end=time.time() + 60,
    )["series"]
    assert {s["labels"]["le"] for s in buckets} == {"0.5", "+Inf"}

    # Rates over the scraped span, at two steps, against the stored sample times. The range ends
    # at the last sample read, so samples scraped since cannot change the points.
    first, last = samples[0][0], samples[-1][0]
    for step in (0.2, 1.0):
        start, end = first - step, last
        got = _json(srv, f"/api/v1/metrics/{RL}/rate", start=start, end=end, step=step)
        (series,) = got["series"]
        assert series["labels"] == {"target": "envoy"}
        assert series["points"] == _expected_rates(samples, got["start"], got["end"], got["step"])
        assert all(v >= 0 for _, v in series["points"])
    # The whole increase, reset included: 30 up to the reset, then 10.
    total = sum(max(b - a, 0) if b >= a else b for (_, a), (_, b) in zip(samples, samples[1:]))
    assert total == 40

    # The rate-limited panel is the same computation.
    start, end = first - 1, last
    panel = _json(srv, "/api/v1/panels/rate_limited_per_second", start=start, end=end, step=0.5)
    assert "notice" not in panel
    assert panel["series"][0]["points"] == _expected_rates(samples, start, end, 0.5)

    health = _targets(srv)["envoy"]
    assert health["up"] is True and health["last_error"] is None and health["samples_last_scrape"] == 7
    m = Metrics(srv.metrics_text())
    assert m.value("planoscope_scrape_up", {"target": "envoy", "url": envoy.url}) == 1
    assert m.value("planoscope_scrape_samples", {"target": "envoy", "url": envoy.url}) == 7
    assert m.value("planoscope_scrape_duration_seconds", {"target": "envoy", "url": envoy.url}) > 0


def _ingest_works(srv):
    base = now_base_ns()
    resp = grpc_export(
        srv.grpc_target,
        pb_request(
            (
                {"service.name": "plano(llm)"},
                [pb_span(bytes(range(1, 17)), bytes(range(1, 9)), "POST /v1/chat/completions", base, base + 10**8)],
            )
        ),
    )
    assert resp.partial_success.rejected_spans == 0
    assert srv.healthz()["spans_written"] >= 1


@pytest.mark.parametrize(
    "failure, error",
    [
        ("refused", "connection refused"),
        ("hang", "timed out"),
        ("500", "HTTP 500"),
        ("garbage", "not Prometheus text format"),
        ("huge", "larger than scrape_max_bytes"),
    ],
)
def test_a_failing_target_is_reported_and_recovers(server_factory, tmp_path, targets, failure, error):
    bad, good = targets
    if failure == "refused":  # nothing listens there until the target "recovers"
        port = free_port()
        url = f"http://127.0.0.1:{port}/stats/prometheus"
    else:
        bad.mode = failure
        url = bad.url
    # A scrape has at most its interval: 0.5 s, so that a loaded machine's slow parse of a 3 MB
    # body or of garbage is still told from a timeout (at 0.2 s it was not, under a load of 3.6).
    srv = _serve(server_factory, tmp_path, f"bad={url}", f"good={good.url}", interval="0.5s")
    health = _wait(lambda: (h := _targets(srv))["bad"]["up"] is False and h, what="bad target down")
    assert error in health["bad"]["last_error"], health["bad"]
    assert health["bad"]["last_scrape"] and health["bad"]["last_duration_s"] is not None
    assert srv.running
    _ingest_works(srv)
    # The good target keeps being scraped meanwhile.
    n = len(_samples(srv, target="good"))
    _wait(lambda: len(_samples(srv, target="good")) > n + 2, what="good target scraped")
    assert _targets(srv)["good"]["up"] is True
    assert Metrics(srv.metrics_text()).value("planoscope_scrape_up", {"target": "bad", "url": url}) == 0
    # As Prometheus stores it: up 0 for every failed scrape, 1 for the good target.
    assert _up(srv) == {"bad": "0", "good": "1"}
    # Logged once, not on every failed scrape.
    _wait(lambda: _targets(srv)["bad"]["failures"] >= 4, what="more failed scrapes")
    logged = [ln for ln in srv.lines("err") if "scrape of bad" in ln]
    assert len(logged) == 1, logged

    # Recovery.
    if failure == "refused":
        targets.append(FakeTarget(port))  # closed by the fixture
    else:
        bad.mode = "ok"
        bad.release.set()
    _wait(lambda: _targets(srv)["bad"]["up"] is True, what="bad target up again")
    assert _targets(srv)["bad"]["last_error"] is None
    _wait(lambda: _samples(srv, target="bad"), what="samples of the recovered target")
    _wait(lambda: _up(srv) == {"bad": "1", "good": "1"}, what="up 1 again")
    assert srv.running


def _up(srv) -> dict[str, str]:
    result = _json(srv, "/prometheus/api/v1/query", query='up{job!="planoscope"}')["data"]["result"]
    return {s["metric"]["job"]: s["value"][1] for s in result}


def test_no_targets_and_no_samples_notices(server_factory, tmp_path):
    srv = server_factory(tmp_path / "none", "--scrape", "")
    assert _json(srv, "/api/v1/targets") == []
    panel = _json(srv, "/api/v1/panels/rate_limited_per_second")
    assert panel["series"] == [] and "No Envoy scrape target" in panel["notice"]
    port = free_port()
    srv2 = server_factory(tmp_path / "refused", "--scrape", f"http://127.0.0.1:{port}/stats/prometheus")
    panel = _json(srv2, "/api/v1/panels/rate_limited_per_second")
    assert "No samples" in panel["notice"] and f"127.0.0.1:{port}" in panel["notice"]


def test_bad_requests(server_factory, tmp_path):
    srv = server_factory(tmp_path / "data", "--scrape", "")
    import httpx

    r = httpx.get(srv.web_url + "/api/v1/metrics/nope/rate")
    assert r.status_code == 404 and "GET /api/v1/metrics" in r.json()["detail"]
    r = httpx.get(srv.web_url + "/api/v1/metrics/nope/rate", params={"step": "-1"})
    assert r.status_code == 400


# --- in-process: the parser and the rate, on their own ------------------------------------------


def test_parse_tells_a_counter_declared_without_total_from_one_declared_with_it():
    """Envoy writes both families (found with the demo's fake Envoy, which copies it): the
    parser names both samples ``envoy_cluster_upstream_rq_total``; only the first is renamed back,
    so Plano's dashboard's ``envoy_cluster_upstream_rq_total`` query finds its own series."""
    from planoscope.scrape.scraper import parse

    text = (
        "# HELP envoy_cluster_upstream_rq per code\n"
        "# TYPE envoy_cluster_upstream_rq counter\n"
        'envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="openai"} 7\n'
        "# TYPE envoy_cluster_upstream_rq_total counter\n"
        'envoy_cluster_upstream_rq_total{envoy_cluster_name="openai"} 9\n'
    )
    assert parse(text, ["*"]) == [
        ("envoy_cluster_upstream_rq", '{"envoy_cluster_name":"openai","envoy_response_code":"200"}', 7.0),
        ("envoy_cluster_upstream_rq_total", '{"envoy_cluster_name":"openai"}', 9.0),
    ]


def test_parse_keeps_envoy_names_and_filters():
    from planoscope.scrape.scraper import parse

    text = FakeTarget.text(type("T", (), {"counter": 4})()) + (
        "# TYPE envoy_wasmcustom_done_total counter\n"
        "envoy_wasmcustom_done_total{} 9\n"
        'envoy_wasmcustom_untyped{a="x",b="y"} 1.5\n'
    )
    got = parse(text, ["envoy_wasmcustom_*"])
    assert (RL, "{}", 4.0) in got  # not renamed to ..._total
    assert ("envoy_wasmcustom_done_total", "{}", 9.0) in got  # declared with _total: kept
    assert ("envoy_wasmcustom_untyped", '{"a":"x","b":"y"}', 1.5) in got
    assert ("envoy_wasmcustom_request_latency_bucket", '{"le":"+Inf"}', 3.0) in got
    assert not [r for r in got if r[0].startswith("envoy_cluster")]
    assert len(parse(text, ["*"])) == len(got) + 1
    with pytest.raises(ValueError):
        parse("<html>nope</html>", ["*"])


def test_an_in_process_target_is_read_as_its_exposition_would_parse():
    """planoscope's own /metrics is sampled from its registry's families, not from its text:
    the same samples and metadata as parsing the text, without the parse (0.85 s for the demo's
    5,900 samples, 0.06 s this way)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

    from planoscope.scrape.scraper import collected, metadata, parse

    class Families:
        def collect(self):
            calls = CounterMetricFamily("calls", "Spans counted", labels=["span_name"])
            calls.add_metric(['a "quoted" \\ name'], 3)
            calls.add_metric(["b"], 0.1 + 0.2)
            lat = HistogramMetricFamily("duration_milliseconds", "Span durations\nin ms", labels=["span_name"])
            lat.add_metric(["a"], [("5.0", 1), ("+Inf", 3)], 12.5)
            up = GaugeMetricFamily("planoscope_up", "Is it up", unit="")
            up.add_metric([], 1)
            info = InfoMetricFamily("planoscope_build", "Version")
            info.add_metric([], {"version": "1"})
            return [calls, lat, up, info]

    registry = CollectorRegistry()
    registry.register(Families())
    text = generate_latest(registry).decode()
    for keep in (["*"], ["calls_total", "duration_*"]):
        rows, meta = collected(registry.collect(), keep)
        parsed = parse(text, keep)
        assert rows == parsed and len(rows) >= 3
        assert meta == metadata(text, {r[0] for r in parsed})
    assert meta["calls_total"] == {"type": "counter", "help": "Spans counted", "unit": ""}
    assert meta["duration_milliseconds"]["help"] == "Span durations\nin ms"


def test_counter_rate_across_a_reset():
    from planoscope.query.evaluate import counter_rate

    samples = [(100.0, 10), (115.0, 40), (130.0, 5), (145.0, 20)]  # 40 → 5: a restart
    assert counter_rate(samples, 100, 145, 15) == {1: 2.0, 2: 5 / 15, 3: 1.0}
    # A step shorter than the scrape interval repeats the last interval's rate.
    assert counter_rate(samples, 130, 140, 5) == {0: 5 / 15, 1: 5 / 15, 2: 5 / 15}
    # A longer step spans several samples, resets included: (30 + 5 + 15) / 45.
    assert counter_rate(samples, 145, 145, 60) == {0: 50 / 45}
    # Stale: nothing drawn 5 minutes after the last sample.
    assert counter_rate(samples, 146 + 300, 146 + 300, 15) == {}
