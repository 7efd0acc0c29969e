"""``GET /metrics``: the LLM metrics in Prometheus' text format (HELP and TYPE lines, counters
named ``_total``) and in OpenMetrics when asked (UNIT lines: seconds, usd; none for {token}), read
after the spans acknowledged before the request are counted."""

from __future__ import annotations

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from conftest import grpc_export, now_base_ns
from plano_llm import CALLS, request

TOKENS, DURATION = "gen_ai_client_token_usage", "gen_ai_client_operation_duration_seconds"
TTFC = "gen_ai_client_operation_time_to_first_chunk_seconds"
COST, REQUESTS = "planoscope_llm_cost_usd_total", "planoscope_llm_requests_total"


def test_help_type_and_unit_lines(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d")
    grpc_export(srv.grpc_target, request(list(enumerate(CALLS, 1)), now_base_ns()))
    text = srv.metrics_text()
    for family, kind in [(TOKENS, "histogram"), (DURATION, "histogram"), (TTFC, "histogram"), (COST, "counter")]:
        assert f"\n# TYPE {family} {kind}\n" in text and f"\n# HELP {family} " in text
    assert f"\n# TYPE {REQUESTS} counter\n" in text
    assert "semantic conventions v1.41.0" in text
    r = httpx.get(srv.web_url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    om = r.text
    assert f"# UNIT {DURATION} seconds\n" in om and f"# UNIT {TTFC} seconds\n" in om
    assert "# UNIT planoscope_llm_cost_usd usd\n" in om and "# TYPE planoscope_llm_cost_usd counter\n" in om
    assert f"# UNIT {TOKENS}" not in om  # {token} is an annotation: no unit, as the collector's exporter writes it
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families[DURATION].type == "histogram" and families["planoscope_llm_requests"].type == "counter"
    # The acknowledged spans are counted before /metrics answers.
    assert sum(s.value for s in families["planoscope_llm_requests"].samples) == len(CALLS)
    # The whole OpenMetrics exposition parses (a unit that is not the name's suffix would not).
    parsed = {f.name: f for f in openmetrics_families(om)}
    assert parsed["planoscope_llm_cost_usd"].unit == "usd" and parsed[DURATION].unit == "seconds"
    assert parsed[TOKENS].unit == "" and parsed[TOKENS].type == "histogram"
