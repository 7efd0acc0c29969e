"""Which panels a rule or an alert concerns (``alerting/panels.py``), over the dashboards a server
shows (the native ones, Plano's brightstaff dashboard, a user's Grafana file) and real rule files:
the shipped rules' panels, the explicit ``panel`` annotation, selectors that can or cannot select
the same series, Grafana variables in a target, and ``planoscope_panel{panel=…}``."""

from __future__ import annotations

import json

import pytest

from planoscope.alerting.panels import concerned_panels
from planoscope.alerting.rules import load_file, load_files
from planoscope.grafana.dashboard import all_dashboards
from planoscope.query.dashboards import Dashboards

BRIGHTSTAFF = [f"brightstaff:{n}" for n in range(1, 16)]


@pytest.fixture(scope="module")
def dashboards() -> Dashboards:
    return Dashboards(all_dashboards())


def _rules(tmp_path, *rules: str) -> dict:
    path = tmp_path / "rules.yml"
    path.write_text("groups:\n  - name: g\n    rules:\n" + "".join(rules))
    [group] = load_file(str(path))
    return {r.name: r for r in group.rules}


def _alert(name: str, expr: str, **annotations: str) -> str:
    text = f"      - alert: {name}\n        expr: '{expr}'\n"
    if annotations:
        text += "        annotations:\n" + "".join(f"          {k}: {json.dumps(v)}\n" for k, v in annotations.items())
    return text


def test_the_shipped_rules_concern_the_panels_of_what_they_watch(dashboards):
    found = {r.name: concerned_panels(r, dashboards) for g in load_files(["plano"]) for r in g.rules}
    assert found == {
        "PlanoLLMFailureRatioHigh": ["llm_failure_ratio", "brightstaff:6"],
        "PlanoUpstream429s": [
            "rate_limited_per_second",
            "llm_failure_ratio",
            "llm_upstream_429_per_second",
            "brightstaff:6",
        ],
        "PlanoLLMLatencyP95High": ["llm_latency_ms", "brightstaff:5"],
        # Inferred: its histogram is the one the TTFT panel's PromQL reads.
        "PlanoLLMTimeToFirstTokenP95High": ["llm_ttft_ms"],
        "PlanoLLMCostOverBudget": ["llm_cost_total", "llm_cost_per_hour"],
        "PlanoScrapeTargetDown": ["rate_limited_per_second", *BRIGHTSTAFF],
        # planoscope's own health: on no dashboard.
        "PlanoIngestRefusing": [],
        "PlanoJournalBacklogGrowing": [],
    }


def test_an_explicit_panel_annotation_decides_alone(dashboards, tmp_path):
    rules = _rules(
        tmp_path,
        # Its metric is the cost panels', but the annotation names others; unknown ids are left out.
        _alert("Linked", "planoscope_llm_cost_usd_total > 1", panel="llm_ttft_ms, nope , llm-usage"),
        _alert("Board", "vector(1)", panel="brightstaff"),
        _alert("PerAlert", "vector(1)", panel="{{ $labels.which }}"),
    )
    llm_usage = [p.id for p in dashboards.by_id["llm-usage"].panels]
    assert concerned_panels(rules["Linked"], dashboards) == llm_usage  # llm_ttft_ms is one of them
    assert concerned_panels(rules["Board"], dashboards) == BRIGHTSTAFF
    # A templated annotation: each alert's, expanded with its labels.
    assert concerned_panels(rules["PerAlert"], dashboards) == []
    assert concerned_panels(rules["PerAlert"], dashboards, {"which": "llm_latency_ms"}) == ["llm_latency_ms"]
    assert concerned_panels(rules["PerAlert"], dashboards, {}, {"panel": "brightstaff:3"}) == ["brightstaff:3"]


def test_selectors_concern_a_panel_only_when_they_can_select_the_same_series(dashboards, tmp_path):
    rules = _rules(
        tmp_path,
        _alert("Any", "sum(rate(planoscope_llm_requests_total[5m])) > 0"),
        _alert("Limited", 'rate(planoscope_llm_requests_total{failure_class="429"}[5m]) > 0'),
        # Neither the 429 panel (failure_class="429") nor the failures' numerator (!="none")
        # select failure_class="none"; the failures' denominator and the routes' calls do.
        _alert("Fine", 'rate(planoscope_llm_requests_total{failure_class="none"}[5m]) > 0'),
        _alert("Sums", "rate(gen_ai_client_operation_time_to_first_chunk_seconds_sum[5m]) > 0"),
        _alert("Brightstaff", 'rate(brightstaff_http_requests_total{status_class="5xx"}[5m]) > 0'),
    )
    concerned = {name: concerned_panels(r, dashboards) for name, r in rules.items()}
    assert concerned["Any"] == ["llm_route_share", "llm_failure_ratio", "llm_upstream_429_per_second"]
    assert concerned["Limited"] == ["llm_route_share", "llm_failure_ratio", "llm_upstream_429_per_second"]
    assert concerned["Fine"] == ["llm_route_share", "llm_failure_ratio"]
    # _sum is not the TTFT panel's _bucket: the output tokens panel's divisor reads it.
    assert concerned["Sums"] == ["llm_output_tokens_per_second"]
    assert concerned["Brightstaff"] == ["brightstaff:1", "brightstaff:2", "brightstaff:14"]


def test_a_grafana_variable_in_a_target_says_nothing_about_its_series(tmp_path):
    board = tmp_path / "mine.json"
    board.write_text(
        json.dumps(
            {
                "uid": "mine",
                "panels": [
                    {
                        "id": 7,
                        "type": "timeseries",
                        "targets": [{"expr": 'sum(rate(app_errors_total{job="$job"}[$__rate_interval]))'}],
                    },
                    {
                        "id": 8,
                        "type": "timeseries",
                        "targets": [{"expr": 'sum(rate(app_errors_total{job="other"}[${__interval}]))'}],
                    },
                ],
            }
        )
    )
    dashboards = Dashboards(all_dashboards([board]))
    rules = _rules(tmp_path, _alert("Errors", 'rate(app_errors_total{job="api"}[5m]) > 0'))
    assert concerned_panels(rules["Errors"], dashboards) == ["mine:7"]


def test_planoscope_panel_series_concern_their_panel(dashboards, tmp_path):
    rules = _rules(
        tmp_path,
        _alert("Exact", 'planoscope_panel{panel="llm_latency_ms", llm_model="gpt-4o"} > 20000'),
        _alert("Some", 'planoscope_panel{panel=~"llm_(ttft|latency)_ms"} > 8000'),
        _alert("Nowhere", 'planoscope_panel{panel="no_such_panel"} > 1'),
    )
    assert concerned_panels(rules["Exact"], dashboards) == ["llm_latency_ms"]
    assert concerned_panels(rules["Some"], dashboards) == ["llm_latency_ms", "llm_ttft_ms"]
    assert concerned_panels(rules["Nowhere"], dashboards) == []
    # An alert that keeps the series' panel label concerns that panel alone.
    assert concerned_panels(rules["Some"], dashboards, {"panel": "llm_ttft_ms"}) == ["llm_ttft_ms"]
    assert concerned_panels(rules["Some"], dashboards, {"panel": "llm_cost_total"}) == ["llm_latency_ms", "llm_ttft_ms"]
