"""The shipped rules (``--rules plano``) over what planoscope's /metrics really exposes: Plano's LLM
spans sent over OTLP (a model whose calls are rate-limited, a healthy one), a scrape target that
does not answer, an hourly budget below the spend. Each rule's expression is true for what it is
about and only that (the slow ``for`` clocks are not waited out: pending says the expression
holds; the budget alert, without ``for``, fires)."""

from __future__ import annotations

import httpx

from conftest import grpc_export, now_base_ns
from plano_llm import CLAUDE, GPT, Call, request
from support.alerting import wait_for
from support.ports import free_port


def _alerts(srv):
    r = httpx.get(srv.web_url + "/prometheus/api/v1/alerts", timeout=30)
    assert r.status_code == 200, r.text
    return {
        (a["labels"]["alertname"], a["labels"].get("gen_ai_request_model") or a["labels"].get("job")): a
        for a in r.json()["data"]["alerts"]
    }


def test_the_shipped_rules_see_planoscopes_own_series(server_factory, tmp_path):
    srv = server_factory(
        tmp_path / "data",
        "--rules",
        "plano",
        "--scrape",
        f"envoy=http://127.0.0.1:{free_port()}/stats/prometheus",  # nobody listens
        "--scrape-interval",
        "0.5s",
        "--evaluation-interval",
        "1s",
        "--llm-cost-budget-usd-per-hour",
        "0.001",
    )
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    n = 0

    def send(calls):
        nonlocal n
        numbered = []
        for c in calls:
            n += 1
            numbered.append((n, c))
        grpc_export(srv.grpc_target, request(numbered, now_base_ns()))

    batch = [Call(GPT, 800, status=429)] * 4 + [Call(GPT, 800, usage=usage)] * 4 + [Call(CLAUDE, 900, usage=usage)] * 8
    send(batch)

    def counted():  # rate() needs a counter that moved between two of the self-scrape's samples
        send(batch)
        found = _alerts(srv)
        return found if ("PlanoUpstream429s", GPT) in found else None

    found = wait_for(counted, 60, "the 429 rule to hold for gpt-4o")

    def all_four():
        found = _alerts(srv)
        return (
            found if ("PlanoScrapeTargetDown", "envoy") in found and ("PlanoLLMCostOverBudget", None) in found else None
        )

    found = wait_for(all_four, 30, "the target-down and budget rules")
    assert found[("PlanoUpstream429s", GPT)]["state"] == "pending"
    assert found[("PlanoLLMFailureRatioHigh", GPT)]["state"] == "pending"
    assert found[("PlanoLLMFailureRatioHigh", GPT)]["annotations"]["summary"] == (
        f"50% of the LLM calls to {GPT} failed in the last 5 minutes"
    )
    assert found[("PlanoScrapeTargetDown", "envoy")]["state"] == "pending"
    assert found[("PlanoScrapeTargetDown", "envoy")]["labels"]["severity"] == "critical"
    assert found[("PlanoLLMCostOverBudget", None)]["state"] == "firing"
    # Nothing about the healthy model, the latency rules or the pipeline's health.
    assert {k for k in found if k[1] == CLAUDE} == set()
    assert {k[0] for k in found} == {
        "PlanoUpstream429s",
        "PlanoLLMFailureRatioHigh",
        "PlanoScrapeTargetDown",
        "PlanoLLMCostOverBudget",
    }
    rules = httpx.get(srv.web_url + "/prometheus/api/v1/rules", timeout=30).json()["data"]["groups"]
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
