"""The query API: each panel's numbers against values computed here, independently, from a known
span set (counts per step, exact percentiles, cumulative totals), plus parameter errors."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from conftest import grpc_export, pb_request, pb_span
from support.clickhouse_fixtures import STORES, serve_on

STEP = 10
BASE = 1_700_000_000  # a whole multiple of STEP, in seconds
MODELS = ["gpt-4o", "claude-sonnet-4", "llama-3.1-70b"]
AGENTS = ["weather", "flights"]


def _quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (DuckDB's quantile_cont, numpy's default)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@pytest.fixture(scope="module", params=STORES)
def loaded(request, module_server_factory, tmp_path_factory):
    """A server holding a known span set spread over 10 minutes, and that set."""
    rng = random.Random(7)
    spans = []  # (service, start_s_ns, duration_ns, model, agent)
    for i in range(1500):
        service = rng.choice(["plano(llm)"] * 6 + ["plano(agent)"] * 2 + ["plano(orchestrator)", "plano(routing)"])
        start_ns = BASE * 10**9 + rng.randrange(0, 600 * 10**9)
        if i < 20:  # spans exactly on step boundaries belong to the step they end
            start_ns = (BASE + STEP * rng.randrange(1, 60)) * 10**9
        duration = int(rng.lognormvariate(19.5, 0.9))  # ~300 ms median, long tail
        model = rng.choice(MODELS) if service == "plano(llm)" and rng.random() < 0.97 else None
        agent = rng.choice(AGENTS) if service == "plano(agent)" else None
        spans.append((service, start_ns, duration, model, agent))
    srv = serve_on(request, module_server_factory, tmp_path_factory.mktemp("api"))
    by_service = defaultdict(list)
    for n, (service, start_ns, duration, model, agent) in enumerate(spans):
        attrs = {}
        if model:
            attrs["llm.model"] = model
        if agent:
            attrs["agent_id"] = agent
        by_service[service].append(
            pb_span(rng.randbytes(16), rng.randbytes(8), f"span {n}", start_ns, start_ns + duration, attrs=attrs)
        )
    for service, group in by_service.items():
        for i in range(0, len(group), 400):
            resp = grpc_export(srv.grpc_target, pb_request(({"service.name": service}, group[i : i + 400])))
            assert resp.partial_success.rejected_spans == 0
    return srv, spans


def _get(srv, path, **params):
    r = srv.get(path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""))
    return r


def _bucket(start_ns: int, start: int) -> int:
    """The point a span counts for: t = start + k*STEP covers (t - STEP, t]."""
    offset = start_ns - start * 10**9
    return -(-offset // (STEP * 10**9))  # ceil


def test_panels_are_listed_in_layout_order(loaded):
    srv, _ = loaded
    panels = _get(srv, "/api/v1/panels", dashboard="requests-overview").json()
    assert [p["id"] for p in panels] == [
        "llm_requests_per_second",
        "agent_requests_per_second",
        "total_requests_per_second",
        "rate_limited_per_second",
        "llm_latency_ms",
        "llm_cumulative_requests",
    ]
    assert panels[0]["title"] == "LLM Requests / sec by Model"
    assert [p["grid"] for p in panels] == [
        [0, 0, 12, 10],
        [12, 0, 12, 10],
        [0, 10, 12, 10],
        [12, 10, 12, 10],
        [0, 20, 12, 10],
        [12, 20, 12, 10],
    ]
    assert panels[4]["unit"] == "ms" and panels[5]["kind"] == "stat"
    assert 'calls_total{service_name="plano(llm)"}' in panels[0]["promql"][0]


@pytest.mark.parametrize(
    "panel, service, field, label",
    [
        ("llm_requests_per_second", "plano(llm)", 3, "llm_model"),
        ("agent_requests_per_second", "plano(agent)", 4, "agent_id"),
    ],
)
def test_rate_by_label_is_exact(loaded, panel, service, field, label):
    srv, spans = loaded
    start, end = BASE + 60, BASE + 540
    data = _get(srv, f"/api/v1/panels/{panel}", start=start, end=end, step=STEP).json()
    assert "series" in data, data
    expected = defaultdict(Counter)
    for s in spans:
        k = _bucket(s[1], start)
        if s[0] == service and 0 <= k <= (end - start) // STEP:
            expected[s[field] or ""][k] += 1
    got = {x["name"]: x for x in data["series"]}
    assert set(got) == set(expected)
    for name, counts in expected.items():
        assert got[name]["labels"] == {label: name}
        points = got[name]["points"]
        assert [t for t, _ in points] == [start + k * STEP for k in range(49)]
        assert [v for _, v in points] == [counts.get(k, 0) / STEP for k in range(49)]


def test_total_requests_has_one_series_per_service(loaded):
    srv, spans = loaded
    start, end = BASE, BASE + 600
    data = _get(srv, "/api/v1/panels/total_requests_per_second", start=start, end=end, step=STEP).json()
    assert [x["name"] for x in data["series"]] == ["llm", "agent", "orchestrator"]
    for series, service in zip(data["series"], ["plano(llm)", "plano(agent)", "plano(orchestrator)"]):
        counts = Counter(_bucket(s[1], start) for s in spans if s[0] == service)
        assert [v for _, v in series["points"]] == [counts.get(k, 0) / STEP for k in range(61)]
        assert sum(v for _, v in series["points"]) * STEP == pytest.approx(sum(1 for s in spans if s[0] == service))


def test_latency_quantiles_are_exact(loaded):
    srv, spans = loaded
    start, end = BASE, BASE + 600
    step = 120  # enough spans per step for quantiles to mean something
    data = _get(srv, "/api/v1/panels/llm_latency_ms", start=start, end=end, step=step).json()
    durations = defaultdict(list)
    for service, start_ns, duration, model, _ in spans:
        if service == "plano(llm)":
            k = -(-(start_ns - start * 10**9) // (step * 10**9))
            durations[(model or "", k)].append(duration / 1e6)
    got = {(x["labels"]["quantile"], x["labels"]["llm_model"]): dict(x["points"]) for x in data["series"]}
    assert len(got) == 3 * 4  # p50/p95/p99 × three models and the spans without one
    for (model, k), values in durations.items():
        for q in (0.5, 0.95, 0.99):
            assert got[(str(q), model)][start + k * step] == pytest.approx(_quantile(values, q), rel=1e-9)
    names = {x["name"] for x in data["series"]}
    assert "p99 gpt-4o" in names and "p50 claude-sonnet-4" in names


def test_cumulative_counts_everything_up_to_end(loaded):
    srv, spans = loaded
    end = BASE + 300
    data = _get(srv, "/api/v1/panels/llm_cumulative_requests", end=end).json()
    expected = Counter(s[3] or "" for s in spans if s[0] == "plano(llm)" and s[1] <= end * 10**9)
    assert {x["name"]: x["points"] for x in data["series"]} == {m: [[end, n]] for m, n in expected.items()}


def test_rate_limited_panel_says_why_it_is_empty(loaded):
    srv, _ = loaded
    data = _get(srv, "/api/v1/panels/rate_limited_per_second", start=BASE, end=BASE + 600).json()
    assert data["series"] == [] and "Envoy" in data["notice"]


def test_dashboard_returns_every_panel_over_one_range(loaded):
    srv, spans = loaded
    data = _get(srv, "/api/v1/dashboard", start=BASE, end=BASE + 600, step=STEP).json()
    assert [p["id"] for p in data["panels"]][0] == "llm_requests_per_second" and len(data["panels"]) == 6
    single = _get(srv, "/api/v1/panels/agent_requests_per_second", start=BASE, end=BASE + 600, step=STEP).json()
    assert data["panels"][1] == single


def test_default_range_is_the_last_hour_with_a_step_from_the_range(loaded):
    srv, _ = loaded
    data = _get(srv, "/api/v1/panels/llm_requests_per_second").json()
    assert data["end"] - data["start"] == pytest.approx(3600)
    assert data["step"] == 15
    week = _get(srv, "/api/v1/panels/llm_requests_per_second", start=BASE, end=BASE + 7 * 86400).json()
    assert week["step"] == 3600


@pytest.mark.parametrize(
    "path, params, status, words",
    [
        ("/api/v1/panels/nope", {}, 404, "no panel 'nope'"),
        ("/api/v1/panels/llm_latency_ms", {"step": "-1"}, 400, "step"),
        ("/api/v1/panels/llm_latency_ms", {"step": "0"}, 400, "step"),
        ("/api/v1/panels/llm_latency_ms", {"start": "abc"}, 400, "start"),
        ("/api/v1/panels/llm_latency_ms", {"start": "10", "end": "5"}, 400, "must be after"),
        ("/api/v1/panels/llm_latency_ms", {"start": "0", "end": "1000000", "step": "1"}, 400, "too many points"),
        ("/api/v1/panels/llm_latency_ms", {"end": "inf"}, 400, "finite"),
        ("/api/v1/dashboard", {"start": "10", "end": "5"}, 400, "must be after"),
    ],
)
def test_bad_parameters_are_clear_4xx(loaded, path, params, status, words):
    srv, _ = loaded
    r = _get(srv, path, **params)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_openapi_describes_the_api(loaded):
    srv, _ = loaded
    doc = srv.get("/openapi.json").json()
    assert {"/api/v1/panels", "/api/v1/panels/{panel_id}", "/api/v1/dashboard"} <= set(doc["paths"])
