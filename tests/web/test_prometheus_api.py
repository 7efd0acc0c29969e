"""The Prometheus HTTP API (``/prometheus/api/v1``) of a real ``planoscope serve`` scraping a
FakeTarget (Envoy's quirks) and the demo's fake brightstaff, and sampling its own ``/metrics``:
the calls Grafana's Prometheus datasource makes (Save & test, the metric browser, a panel's
``query_range`` POST), Prometheus's JSON shapes and errors, values equal to what was scraped and
to what ``/metrics`` shows; on each store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from conftest import RL, FakeTarget, Metrics, _wait, grpc_export, pb_request, pb_span
from support.brightstaff import Brightstaff
from support.clickhouse_fixtures import STORES, serve_on

DASHBOARD = Path(__file__).resolve().parents[1] / "reference" / "brightstaff-dashboard.json"
MAX_SERIES = 150  # more than any dashboard query selects, fewer than brightstaff exposes
SPANS = 12


@pytest.fixture(scope="module")
def targets():
    envoy, brightstaff = FakeTarget(), Brightstaff()
    envoy.counter = 41
    yield envoy, brightstaff
    envoy.close()
    brightstaff.close()


@pytest.fixture(scope="module", params=STORES)
def srv(request, module_server_factory, tmp_path_factory, targets):
    envoy, brightstaff = targets
    srv = serve_on(
        request,
        module_server_factory,
        tmp_path_factory.mktemp("prometheus"),
        "--scrape",
        f"envoy={envoy.url}",
        "--scrape",
        f"brightstaff={brightstaff.url}",
        "--scrape-metrics",
        "envoy_wasmcustom_*,brightstaff_*,process_*",
        "--scrape-interval",
        "2s",  # and so a 2 s timeout: the fake brightstaff's page takes a while on a loaded machine
        "--promql-max-series",
        str(MAX_SERIES),
    )
    base = time.time_ns() - 60 * 10**9
    spans = [
        pb_span(bytes([i + 1]) * 16, bytes([i + 1]) * 8, f"op {i % 3}", base + i * 10**6, base + i * 10**6 + 5 * 10**6)
        for i in range(SPANS)
    ]
    grpc_export(srv.grpc_target, pb_request(({"service.name": "svc"}, spans)))
    srv.settled()
    # Everything below is there once a scrape of each target (and of /metrics, with the spans) is stored.
    _wait(lambda: _value(srv, 'sum(calls_total{job="planoscope"})') == SPANS, 60, "the span metrics sampled")
    _wait(lambda: _value(srv, f'{RL}{{job="envoy"}}') == 41, 60, "envoy scraped")
    # Three scrapes of brightstaff: a rate at the last whole second (a panel's end) has two.
    _wait(lambda: _value(srv, "max(count_over_time(brightstaff_http_requests_total[1m])) >= 3"), 60, "brightstaff")
    return srv


def _api(srv, path: str, method: str = "GET", **params) -> httpx.Response:
    url = f"{srv.web_url}/prometheus/api/v1/{path}"
    if method == "POST":  # as Grafana's datasource sends it: a form-encoded body
        return httpx.post(url, data=params, timeout=30)
    return httpx.get(url, params=params, timeout=30)


def _data(srv, path: str, method: str = "GET", **params):
    r = _api(srv, path, method, **params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]


def _value(srv, query: str) -> float | None:
    result = _data(srv, "query", query=query)["result"]
    return float(result[0]["value"][1]) if result else None


def _error(srv, path: str, status: int, kind: str, method: str = "GET", **params) -> str:
    r = _api(srv, path, method, **params)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == "error" and body["errorType"] == kind, body
    return body["error"]


# --- Grafana's calls -----------------------------------------------------------------------


def test_save_and_test(srv):
    # What Grafana's Prometheus datasource sends on "Save & test", then reads the version from.
    now = time.time()
    assert _data(srv, "query", query="1+1", time=f"{now:.3f}") == {
        "resultType": "scalar",
        "result": [pytest.approx(now, abs=1e-3), "2"],
    }
    # A panel showing exemplars asks for them: none are stored, the query must still be valid.
    assert _data(srv, "query_exemplars", "POST", query="calls_total", start="0", end=f"{now:.3f}") == []
    _error(srv, "query_exemplars", 400, "bad_data", query="calls_total{")
    info = _data(srv, "status/buildinfo")
    assert info["version"].startswith("2.") and set(info) >= {"version", "revision", "branch", "goVersion"}


def test_metric_browser(srv, targets):
    envoy, brightstaff = targets
    names = _data(srv, "label/__name__/values")
    assert names == sorted(names)
    assert {RL, "envoy_wasmcustom_active_http_calls", "brightstaff_http_requests_total", "calls_total"} <= set(names)
    assert "envoy_cluster_upstream_rq" not in names  # not kept by --scrape-metrics
    assert {"__name__", "job", "instance", "handler", "service_name"} <= set(_data(srv, "labels"))
    # A selected metric's labels and values, as the browser then asks.
    match = {"match[]": "brightstaff_http_requests_total"}
    labels = _data(srv, "labels", **match)
    assert {"__name__", "job", "instance", "handler", "method", "status_class"} == set(labels)
    assert _data(srv, "label/job/values", **match) == ["brightstaff"]
    handlers = _data(srv, "label/handler/values", **match)
    assert handlers and handlers == sorted(handlers)
    series = _data(srv, "series", **match)
    instance = brightstaff.url.removeprefix("http://").removesuffix("/metrics")
    assert series and all(s["__name__"] == "brightstaff_http_requests_total" for s in series)
    assert {(s["job"], s["instance"]) for s in series} == {("brightstaff", instance)}
    assert {s["handler"] for s in series} == set(handlers)
    # POST with several match[] (Grafana sends long selectors that way): the union.
    r = httpx.post(
        f"{srv.web_url}/prometheus/api/v1/series",
        data={"match[]": [f'{RL}{{job="envoy"}}', '{__name__="calls_total", span_name="op 1"}']},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    got = {(s["__name__"], s["job"]) for s in r.json()["data"]}
    assert got == {(RL, "envoy"), ("calls_total", "planoscope")}


def test_metadata(srv):
    meta = _data(srv, "metadata")
    assert meta["brightstaff_http_requests_total"] == [
        {"type": "counter", "help": "HTTP requests served, by handler and status class.", "unit": ""}
    ]
    assert meta["brightstaff_http_request_duration_seconds"][0]["type"] == "histogram"
    assert meta[RL] == [{"type": "counter", "help": "", "unit": ""}]  # Envoy declares it without _total
    assert meta["calls_total"][0]["type"] == "counter" and meta["calls_total"][0]["help"]
    assert meta["duration_milliseconds"][0]["type"] == "histogram"
    assert "envoy_cluster_upstream_rq" not in meta  # no sample of it kept
    assert list(_data(srv, "metadata", metric="calls_total")) == ["calls_total"]
    assert len(_data(srv, "metadata", limit="2")) == 2


def test_panel_query_range_post(srv):
    # A Grafana panel's request: POST form, start/end on the step, step in seconds.
    step = 1
    end = int(time.time())
    start = end - 30
    data = _data(
        srv,
        "query_range",
        "POST",
        query="sum by (handler) (rate(brightstaff_http_requests_total[1m]))",
        start=str(start),
        end=str(end),
        step=str(step),
    )
    assert data["resultType"] == "matrix" and data["result"]
    for s in data["result"]:
        assert set(s) == {"metric", "values"} and set(s["metric"]) == {"handler"}
        times = [t for t, _ in s["values"]]
        assert times == sorted(times) and all(start <= t <= end and (t - start) % step == 0 for t in times)
        assert all(isinstance(v, str) and float(v) >= 0 for _, v in s["values"])
    # The same as GET, RFC 3339 times and a duration step.
    rfc = {"start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)), "end": str(end), "step": "1s"}
    assert (
        _data(srv, "query_range", query="sum by (handler) (rate(brightstaff_http_requests_total[1m]))", **rfc) == data
    )


def test_the_brightstaff_dashboard_queries_answer(srv):
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for q in [p, *p.get("panels", [])] for t in q.get("targets", [])]
    assert len(exprs) == 19
    envoy = 'sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="bright_staff"}[1m]))'
    errors = 'sum by (provider, error_class) (rate(brightstaff_llm_upstream_requests_total{error_class!="none"}[5m]))'

    def empty() -> list[str]:
        end = int(time.time())
        out = []
        for expr in exprs:
            data = _data(srv, "query_range", "POST", query=expr, start=str(end - 60), end=str(end), step="15")
            assert data["resultType"] == "matrix"
            if not data["result"]:
                out.append(expr)
        return out

    # Every panel has series once the simulated traffic has been through each family (a routing
    # request is 5 % of it), but Envoy's cluster counter (not kept here) and, until the traffic's
    # first upstream failure, the errors panel.
    def only_expected_empty() -> list[str] | None:
        found = empty()
        return found if set(found) <= {envoy, errors} else None

    assert envoy in _wait(only_expected_empty, 90, "the panels' series")


# --- values ----------------------------------------------------------------------------------


def test_values_are_those_scraped(srv, targets):
    envoy, brightstaff = targets
    instance = envoy.url.removeprefix("http://").removesuffix("/stats/prometheus")
    result = _data(srv, "query", query="envoy_wasmcustom_active_http_calls")["result"]
    assert result == [
        {
            "metric": {"__name__": "envoy_wasmcustom_active_http_calls", "job": "envoy", "instance": instance},
            "value": result[0]["value"],
        }
    ]
    assert result[0]["value"][1] == "2"
    assert _value(srv, 'envoy_wasmcustom_request_latency_bucket{le="+Inf"}') == 3
    assert _value(srv, "envoy_wasmcustom_request_latency_sum") == 1234.5
    assert _value(srv, 'process_max_fds{job="brightstaff"}') == 1_048_576
    # The series Prometheus adds to every scrape.
    assert _value(srv, 'up{job="envoy"}') == 1 and _value(srv, 'up{job="planoscope"}') == 1
    assert _value(srv, 'scrape_samples_post_metric_relabeling{job="envoy"}') == 6
    assert 0 < _value(srv, 'scrape_duration_seconds{job="brightstaff"}') < 1
    assert _value(srv, 'brightstaff_build_info{version="0.4.36"}') == 1
    # A range selector gives the stored samples themselves: those the native API lists (in
    # microseconds; Prometheus's timestamps are whole milliseconds). Until before the scrapes that
    # may still be on their way in, so that both reads see the same samples.
    now = time.time() - 5
    raw = _data(srv, "query", query=f"{RL}[10m]", time=f"{now:.3f}")["result"]
    assert len(raw) == 1 and raw[0]["metric"]["job"] == "envoy"
    stored = httpx.get(
        f"{srv.web_url}/api/v1/metrics/{RL}/samples", params={"start": now - 600, "end": now}, timeout=30
    ).json()["series"]
    points = [p for s in stored if s["labels"]["target"] == "envoy" for p in s["points"]]
    assert [(round(t * 1e6) // 1000, float(v)) for t, v in points] == [
        (round(t * 1000), float(v)) for t, v in raw[0]["values"]
    ]


def test_span_metrics_are_what_metrics_showed(srv):
    shown = Metrics(srv.metrics_text())
    expected = {tuple(sorted(lb.items())): v for n, lb, v in shown.samples if n == "calls_total"}
    assert sum(expected.values()) == SPANS
    got = {}
    for s in _data(srv, "query", query='calls_total{job="planoscope"}')["result"]:
        labels = dict(s["metric"])
        assert labels.pop("__name__") == "calls_total" and labels.pop("job") == "planoscope"
        assert labels.pop("instance") == srv.web_url.removeprefix("http://")
        got[tuple(sorted(labels.items()))] = float(s["value"][1])
    assert got == expected
    buckets = _data(srv, "query", query='sum by (le) (duration_milliseconds_bucket{job="planoscope"})')["result"]
    assert {b["metric"]["le"]: float(b["value"][1]) for b in buckets}["+Inf"] == SPANS


def test_the_last_hours_are_answered_from_memory_on_duckdb(srv):
    # DuckDB: the samples head holds every stored sample of the last hours (what the queries above
    # read); ClickHouse, shared with other instances, has none and reads the table.
    held = [v for n, _, v in Metrics(srv.metrics_text()).samples if n == "planoscope_samples_head_samples"]
    stored = _value(srv, "sum(count_over_time(up[1h]))")  # the samples of up alone
    assert stored and stored > 0
    if srv.env.get("PLANOSCOPE_STORE", "").startswith("clickhouse"):
        assert held == []
    else:
        assert len(held) == 1 and held[0] >= stored


# --- errors ----------------------------------------------------------------------------------


def test_errors(srv):
    now = str(int(time.time()))
    assert "query" in _error(srv, "query", 400, "bad_data", query="sum(rate(x[1m])")
    _error(srv, "query", 400, "bad_data", query="up", time="yesterday")
    _error(srv, "query_range", 400, "bad_data", "POST", query="up", start=now, end=str(int(now) - 10), step="1")
    _error(srv, "query_range", 400, "bad_data", query="up", start=now, end=now, step="0")
    _error(srv, "query_range", 400, "bad_data", query="up", start=now, end=now, step="soon")
    _error(srv, "query_range", 400, "bad_data", query="up", start=now, end=now)
    message = _error(srv, "query_range", 400, "bad_data", query="up", start="0", end="11001", step="1")
    assert "11,000 points" in message
    _data(srv, "query_range", query="up", start="0", end="11000", step="1")  # exactly at the limit: fine
    _error(srv, "query_range", 400, "bad_data", query="calls_total[5m]", start=now, end=now, step="1")
    assert "match[]" in _error(srv, "series", 400, "bad_data")
    _error(srv, "series", 400, "bad_data", **{"match[]": "sum(up)"})
    # More series than promql_max_series: Prometheus's error, not an attempt.
    message = _error(srv, "query", 422, "execution", query='{__name__=~"brightstaff_.+"}')
    assert message == "query processing would load too many series into memory in query execution"
    _error(srv, "series", 422, "execution", **{"match[]": '{__name__=~".+"}'})
    # A query's own timeout (none left here): Prometheus's timeout error.
    assert "timed out" in _error(srv, "query", 503, "timeout", query="sum(rate(calls_total[1m]))", timeout="0s")
    _error(srv, "query", 400, "bad_data", query="1", timeout="a while")
    assert srv.running


def test_auth_as_the_rest_of_the_api(server_factory, tmp_path):
    token = "a-token-of-sixteen-chars"
    srv = server_factory(tmp_path / "d", "--auth-token", token, "--scrape", "")
    for path in ("status/buildinfo", "query?query=1%2B1", "label/__name__/values"):
        r = httpx.get(f"{srv.web_url}/prometheus/api/v1/{path}", timeout=30)
        assert r.status_code == 401, (path, r.text)
        r = httpx.get(
            f"{srv.web_url}/prometheus/api/v1/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert r.status_code == 200 and r.json()["status"] == "success", (path, r.text)


def test_a_store_that_does_not_answer_is_unavailable(clickhouse_server_factory, server_factory, tmp_path):
    """ClickHouse down: Prometheus's ``unavailable`` (503, worth retrying), not a 500."""
    ch = clickhouse_server_factory(tmp_path / "ch")
    srv = server_factory(tmp_path / "d", "--scrape", "", env={"PLANOSCOPE_STORE": ch.url()})
    _wait(lambda: _data(srv, "label/__name__/values"), 30, "planoscope's own metrics sampled")
    with ch.down(crash=True):
        for path, params in (("query", {"query": "calls_total"}), ("label/__name__/values", {})):
            assert "ClickHouse" in _error(srv, path, 503, "unavailable", **params)
    _data(srv, "query", query="calls_total")  # and answers again once it is back
