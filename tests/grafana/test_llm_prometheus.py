"""The LLM metrics through a real Prometheus (Debian's package, installed by `make test`), with the
PromQL the Grafana export writes: a planoscope server is fed Plano's LLM calls in real time
(tests/plano_llm.py), Prometheus scrapes its /metrics every second, and each exported
expression is evaluated by Prometheus. Cumulative expressions must give exactly what was sent
(token sums, cost sent and estimated apart, TTFT bucket counts, calls per failure class); rates
agree within scrape jitter; Prometheus' TTFT quantile lies in the bucket of the exact one. Every
expression of every dashboard the export writes must evaluate, and those over the LLM metrics
must find series."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import grpc_export, read_spans
from plano_llm import CALLS, request
from planoscope.grafana.export import export
from planoscope.metrics.llm import TTFC_BUCKETS_S
from planoscope.query.dashboards import DASHBOARDS, Dashboard
from planoscope.query.panels import Panel, Target

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "metrics"))
from test_prometheus import Prometheus  # noqa: E402  (a real Prometheus scraping the given targets)

WINDOW = 20  # seconds: $__rate_interval
RANGE = 60  # seconds: $__range of a stat panel
TRAFFIC_S = 24
TICK_S = 0.5  # one request of CALLS every tick
MODEL = "gen_ai_request_model"


def _panel(pid: str, title: str, kind: str, unit: str, *targets: tuple[str, str]) -> Panel:
    grid = (0, 8 * _panel.n, 24, 8)
    _panel.n += 1
    return Panel(pid, title, unit, kind, grid, None, tuple(Target(e, legend) for e, legend in targets))


_panel.n = 0
# The test's own panels over the LLM metrics (the dashboard's real ones are query/'s: checked by
# test_every_exported_expression_evaluates): cumulative ones, exact, and rate ones.
TEST_DASHBOARD = Dashboard(
    "llm-test",
    "LLM metrics, checked",
    (
        _panel(
            "tokens",
            "Tokens",
            "stat",
            "short",
            (f"sum by ({MODEL}, gen_ai_token_type) (gen_ai_client_token_usage_sum)", "{{ gen_ai_token_type }}"),
        ),
        _panel(
            "cost",
            "Cost",
            "stat",
            "currencyUSD",
            (f"sum by ({MODEL}, source) (planoscope_llm_cost_usd_total)", "{{ source }}"),
        ),
        _panel(
            "ttft_buckets",
            "TTFT buckets",
            "stat",
            "short",
            (f"sum by (le, {MODEL}) (gen_ai_client_operation_time_to_first_chunk_seconds_bucket)", "{{ le }}"),
        ),
        _panel(
            "calls",
            "Calls per failure class",
            "stat",
            "short",
            (f"sum by ({MODEL}, failure_class) (planoscope_llm_requests_total)", "{{ failure_class }}"),
        ),
        _panel(
            "token_rate",
            "Tokens / s",
            "timeseries",
            "suffix: tok/s",
            (
                f"sum by ({MODEL}, gen_ai_token_type) (rate(gen_ai_client_token_usage_sum[$__rate_interval]))",
                "{{ gen_ai_token_type }}",
            ),
        ),
        _panel(
            "ttft_p50",
            "TTFT p50",
            "timeseries",
            "s",
            (
                "histogram_quantile(0.5, sum by (le, gen_ai_request_model) "
                "(rate(gen_ai_client_operation_time_to_first_chunk_seconds_bucket[$__rate_interval])))",
                "p50",
            ),
        ),
    ),
)


def _expr(expr: str) -> str:
    return expr.replace("$__rate_interval", f"{WINDOW}s").replace("$__range", f"{RANGE}s")


@pytest.fixture(scope="module")
def scraped(module_server_factory, tmp_path_factory):
    """planoscope fed CALLS every TICK_S for TRAFFIC_S while Prometheus scrapes it; then stopped,
    once Prometheus has the final values. (Prometheus, the time of the rate checks, the time of
    the final values, requests sent, the estimated cost stored per model.)

    The rate checks' time is inside the traffic; what was sent per second in their window is
    counted from the send times (a send takes a while on a loaded machine)."""
    srv = module_server_factory(tmp_path_factory.mktemp("llm-prom") / "d")
    prom = Prometheus(
        tmp_path_factory.mktemp("prometheus"), {"planoscope": (srv.web_url.removeprefix("http://"), "/metrics")}
    )
    try:
        deadline = time.time() + 60
        while not prom.query('up{job="planoscope"} == 1', time.time()):  # scraping: the traffic's start is seen
            assert time.time() < deadline, "Prometheus does not scrape planoscope"
            time.sleep(0.2)
        start, sent_at, n = time.time(), [], 0
        while time.time() < start + TRAFFIC_S:
            tick = time.time()
            calls = [(n + i, call) for i, call in enumerate(CALLS, 1)]
            n += len(CALLS) + 1
            assert grpc_export(srv.grpc_target, request(calls, time.time_ns())).partial_success.rejected_spans == 0
            sent_at.append(time.time())
            time.sleep(max(0.0, TICK_S - (time.time() - tick)))
        sent = len(sent_at)
        total = sent * len(CALLS)
        deadline = time.time() + 30
        while True:  # until a scrape has every call
            (got,) = prom.query("sum(planoscope_llm_requests_total)", time.time()) or [{"value": [0, "0"]}]
            if float(got["value"][1]) == total:
                break
            assert time.time() < deadline, f"Prometheus has {got['value'][1]} of {total} calls"
            time.sleep(0.5)
        final = time.time()
        srv.stop()  # Prometheus keeps what it scraped; the store can now be read
        estimated: dict[str, float] = {}
        for row in read_spans(srv.data_dir):
            if row["EstimatedCostUsd"] is not None:
                estimated[row["LlmModel"]] = estimated.get(row["LlmModel"], 0.0) + row["EstimatedCostUsd"]
        at = round(start + TRAFFIC_S - 4)
        in_window = sum(1 for t in sent_at if at - WINDOW < t <= at)
        yield prom, (at, in_window / WINDOW), final, sent, estimated
    finally:
        prom.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, list[dict]]:
    """The test dashboard as the export writes it: {panel id: targets}."""
    out = tmp_path_factory.mktemp("export")
    export(out, "http://localhost:9090", "/dashboards", None, dashboards=[TEST_DASHBOARD])
    dash = json.loads((out / "dashboards" / "plano-llm-test.json").read_text())
    assert dash["uid"] == "plano-llm-test" and dash["title"] == "LLM metrics, checked"
    return {p["title"]: p["targets"] for p in dash["panels"]}


def _query(prom, targets: list[dict], at: float) -> list[dict]:
    (target,) = targets
    return prom.query(_expr(target["expr"]), at)


def test_token_sums_are_exact(scraped, exported):
    prom, _, final, sent, _ = scraped
    want: dict[tuple, int] = {}
    for call in CALLS:
        for key, kind in (
            ("prompt_tokens", "input"),
            ("completion_tokens", "output"),
            ("cached_input_tokens", "cached_input"),
            ("reasoning_tokens", "reasoning"),
        ):
            if key in call.usage:
                want[(call.model, kind)] = want.get((call.model, kind), 0) + call.usage[key] * sent
    got = {
        (r["metric"].get(MODEL), r["metric"]["gen_ai_token_type"]): float(r["value"][1])
        for r in _query(prom, exported["Tokens"], final)
    }
    assert got == want


def test_cost_sent_and_estimated_apart_are_exact(scraped, exported):
    prom, _, final, sent, estimated = scraped
    want = {}
    for call in CALLS:
        if call.cost is not None:
            want[(call.model, "sent")] = want.get((call.model, "sent"), 0.0) + call.cost * sent
    want |= {(model, "estimated"): usd for model, usd in estimated.items()}
    assert ("openai/gpt-4o", "estimated") in want  # the price table's estimate of the call sent without a cost
    got = {
        (r["metric"][MODEL], r["metric"]["source"]): float(r["value"][1]) for r in _query(prom, exported["Cost"], final)
    }
    assert set(got) == set(want)
    for key, usd in want.items():
        assert got[key] == pytest.approx(usd, rel=1e-9), key


def test_ttft_bucket_counts_are_exact(scraped, exported):
    prom, _, final, sent, _ = scraped
    got = {
        (r["metric"][MODEL], r["metric"]["le"]): float(r["value"][1])
        for r in _query(prom, exported["TTFT buckets"], final)
    }
    want = {}
    for model in {c.model for c in CALLS if c.ttft_ms is not None}:
        ms = [c.ttft_ms for c in CALLS if c.model == model and c.ttft_ms is not None]
        for le in [*TTFC_BUCKETS_S, math.inf]:
            # Prometheus writes the bounds its own way (0.01, 81.92, +Inf)
            label = "+Inf" if le == math.inf else repr(le)
            want[(model, label)] = sent * sum(1 for v in ms if v <= le * 1000)
    assert got == want
    assert got[("openai/gpt-4o", "0.32")] - got[("openai/gpt-4o", "0.16")] == sent  # 320 ms is in le=0.32


def test_calls_per_failure_class_are_exact(scraped, exported):
    prom, _, final, sent, _ = scraped
    want: dict[tuple, int] = {}
    for call in CALLS:
        key = (call.model, call.failure or "none")
        want[key] = want.get(key, 0) + sent
    got = {
        (r["metric"].get(MODEL), r["metric"]["failure_class"]): float(r["value"][1])
        for r in _query(prom, exported["Calls per failure class"], final)
    }
    assert got == want
    assert {k[1] for k in got} == {"none", "429", "5xx", "before_dispatch"}


def test_token_rates_agree_with_what_was_sent_per_second(scraped, exported):
    prom, (at, per_s), _, _, _ = scraped  # per_s: the sends per second in the rate's window
    got = {
        (r["metric"][MODEL], r["metric"]["gen_ai_token_type"]): float(r["value"][1])
        for r in _query(prom, exported["Tokens / s"], at)
    }
    want: dict[tuple, float] = {}
    for call in CALLS:
        for key, kind in (("prompt_tokens", "input"), ("completion_tokens", "output")):
            if key in call.usage:
                want[(call.model, kind)] = want.get((call.model, kind), 0) + call.usage[key] * per_s
    for key, rate in want.items():
        assert abs(got[key] - rate) <= 0.12 * rate, (key, got[key], rate)


def test_ttft_quantile_lies_in_the_bucket_of_the_exact_one(scraped, exported):
    prom, (at, _), _, _, _ = scraped
    got = {r["metric"][MODEL]: float(r["value"][1]) for r in _query(prom, exported["TTFT p50"], at)}
    # GPT-4o's calls: 12, 85, 320 ms, so its median is 85 ms, in (0.08, 0.16]; Claude's 640 and 1280
    # ms: Prometheus' median interpolates to the top of (0.32, 0.64], within (0.32, 1.28].
    assert 0.08 < got["openai/gpt-4o"] <= 0.16
    assert 0.32 < got["anthropic/claude-sonnet-4"] <= 1.28


def test_every_exported_expression_evaluates(scraped, tmp_path):
    """Every PromQL expression of every dashboard `planoscope grafana export` writes is valid for
    Prometheus, and one over the LLM metrics finds series in this traffic (a label or metric name
    the metrics do not have would find none)."""
    prom, _, final, _, _ = scraped
    export(tmp_path, "http://localhost:9090", "/dashboards", None)
    files = sorted((tmp_path / "dashboards").glob("*.json"))
    assert len(files) == len(DASHBOARDS)
    checked = 0
    for path in files:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                r = httpx.get(
                    f"{prom.url}/api/v1/query", params={"query": _expr(target["expr"]), "time": final - 2}, timeout=30
                )
                assert r.status_code == 200 and r.json()["status"] == "success", (path.name, panel["title"], r.text)
                if "gen_ai_" in target["expr"] or "planoscope_llm_" in target["expr"]:
                    assert r.json()["data"]["result"], (path.name, panel["title"], target["expr"])
                checked += 1
    assert checked >= 10
