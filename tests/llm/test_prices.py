"""The estimated cost of calls sent without one: genai-prices' table, the overrides, and what a
real server stores."""

from __future__ import annotations

import genai_prices
import pyarrow as pa
import pytest

from conftest import grpc_export, now_base_ns, pb_request, pb_span, read_spans
from planoscope.llm.prices import NEW_MODELS_PER_BATCH, Price, Prices, parse_override
from planoscope.settings import ConfigError, build_settings

M = 1_000_000


def _calls(*rows: dict) -> pa.Table:
    cols = ("LlmModel", "LlmProvider", "PromptTokens", "CachedInputTokens", "CacheCreationTokens", "CompletionTokens")
    table = {c: pa.array([r.get(c) for r in rows], pa.string() if c.startswith("Llm") else pa.int64()) for c in cols}
    table["CostUsd"] = pa.array([r.get("CostUsd") for r in rows], pa.float64())
    return pa.table(table)


def test_a_known_model_is_priced_from_genai_prices_with_cached_tokens_at_their_price():
    est = Prices().estimate(
        _calls({"LlmModel": "openai/gpt-4o", "PromptTokens": 1000, "CachedInputTokens": 200, "CompletionTokens": 500})
    )
    # gpt-4o: $2.50 per M input, $1.25 per M cached input, $10 per M output
    assert est.to_pylist() == [pytest.approx((800 * 2.5 + 200 * 1.25 + 500 * 10) / M, rel=1e-12)]
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, cache_read_tokens=200, output_tokens=500), "gpt-4o", provider_id="openai"
    ).total_price
    assert est[0].as_py() == pytest.approx(float(expected), rel=1e-12)


def test_unknown_models_sent_costs_and_calls_without_tokens_get_no_estimate():
    est = Prices().estimate(
        _calls(
            {"LlmModel": "acme/no-such-model-7", "PromptTokens": 1000, "CompletionTokens": 500},
            {"LlmModel": "openai/gpt-4o", "PromptTokens": 1000, "CompletionTokens": 500, "CostUsd": 0.5},
            {"LlmModel": "openai/gpt-4o"},
            {"PromptTokens": 10, "CompletionTokens": 5},
        )
    )
    assert est.to_pylist() == [None, None, None, None]


def test_an_override_wins_and_prices_a_model_the_table_does_not_know():
    prices = Prices([parse_override("openai/gpt-4o=1/2"), parse_override("my-finetune=3/6/1.5/4")])
    est = prices.estimate(
        _calls(
            {"LlmModel": "openai/gpt-4o", "PromptTokens": 1000, "CachedInputTokens": 100, "CompletionTokens": 10},
            {"LlmModel": "acme/my-finetune", "PromptTokens": 1000, "CachedInputTokens": 100, "CacheCreationTokens": 50}
            | {"CompletionTokens": 10},
        )
    ).to_pylist()
    assert est[0] == pytest.approx((1000 * 1 + 10 * 2) / M)  # no cache price: cached tokens at the input price
    assert est[1] == pytest.approx((850 * 3 + 100 * 1.5 + 50 * 4 + 10 * 6) / M)


def test_a_model_without_a_provider_prefix_takes_the_spans_provider():
    est = Prices().estimate(
        _calls({"LlmModel": "claude-sonnet-4-20250514", "LlmProvider": "anthropic", "PromptTokens": 10**6})
    )
    assert est.to_pylist() == [pytest.approx(3.0)]


def test_a_tiered_price_is_computed_per_call_as_genai_prices_does():
    prices = Prices()
    assert not isinstance(prices.price("google/gemini-1.5-pro"), Price)  # tiered: depends on the prompt size
    small, large = 1000, 300_000
    est = prices.estimate(
        _calls(
            {"LlmModel": "google/gemini-1.5-pro", "PromptTokens": small, "CompletionTokens": 100},
            {"LlmModel": "google/gemini-1.5-pro", "PromptTokens": large, "CompletionTokens": 100},
        )
    ).to_pylist()
    for got, tokens in zip(est, (small, large)):
        want = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=tokens, output_tokens=100), "gemini-1.5-pro", provider_id="google"
        ).total_price
        assert got == pytest.approx(float(want), rel=1e-12)
    assert est[1] / large > est[0] / small  # the long prompt paid the higher tier


def test_a_batch_of_new_model_names_looks_up_a_bounded_number():
    prices = Prices()
    n = NEW_MODELS_PER_BATCH + 50
    rows = [{"LlmModel": "gpt-4o" if i == n - 1 else f"acme/m{i}", "PromptTokens": 10} for i in range(n)]
    est = prices.estimate(_calls(*rows)).to_pylist()
    assert len(prices._lookups) == NEW_MODELS_PER_BATCH
    assert est[-1] is None  # beyond the bound this batch, even a known model waits for the next one
    assert prices.estimate(_calls(rows[-1])).to_pylist() == [pytest.approx(10 * 2.5 / M)]


@pytest.mark.parametrize(
    "text, says",
    [
        ("gpt-4o", "MODEL=INPUT/OUTPUT"),
        ("gpt-4o=1", "MODEL=INPUT/OUTPUT"),
        ("gpt-4o=1/x", "'x' is not a number"),
        ("gpt-4o=1/-2", "finite price >= 0"),
        ("gpt-4o=1/inf", "finite price >= 0"),
        ("gpt-4o=/2", "input and output prices are required"),
        ("=1/2", "MODEL=INPUT/OUTPUT"),
        ("gpt-4o=1/2/3/4/5", "MODEL=INPUT/OUTPUT"),
    ],
)
def test_a_bad_price_is_a_one_line_error_naming_the_setting(text, says):
    with pytest.raises(ConfigError) as e:
        build_settings(None, {}, {"llm_prices": [text]})
    assert "llm_prices" in str(e.value) and says in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_prices_from_a_config_mapping_the_environment_and_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "llm_prices:\n  openai/gpt-4o: {input: 2, output: 8}\n  m2: {input: 1, output: 1, cached_input: 0.1}\n"
    )
    s = build_settings(config, {}, {})
    assert [parse_override(p) for p in s.llm_prices] == [("openai/gpt-4o", Price(2, 8)), ("m2", Price(1, 1, 0.1))]
    s = build_settings(None, {"PLANOSCOPE_LLM_PRICES": "a=1/2, b=3/4"}, {})
    assert s.llm_prices == ["a=1/2", "b=3/4"]
    config.write_text("llm_prices:\n  openai/gpt-4o: {input: 2, outptu: 8}\n")
    with pytest.raises(ConfigError, match="unknown price field 'outptu'"):
        build_settings(config, {}, {})


def test_the_server_stores_the_estimate_beside_the_sent_cost(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d", "--llm-prices", "acme/house-model=1/2")
    base = now_base_ns()
    usage = {"llm.usage.prompt_tokens": 1000, "llm.usage.completion_tokens": 500, "llm.usage.cached_input_tokens": 200}
    spans = [
        pb_span("a" * 32, "1" * 16, "POST /v1/chat/completions openai/gpt-4o", base, base + 10**9,
                attrs={"llm.model": "openai/gpt-4o", **usage}),
        pb_span("b" * 32, "2" * 16, "POST /v1/chat/completions openai/gpt-4o", base, base + 10**9,
                attrs={"llm.model": "openai/gpt-4o", **usage, "llm.usage.total_cost_usd": 0.25}),
        pb_span("c" * 32, "3" * 16, "POST /v1/chat/completions acme/house-model", base, base + 10**9,
                attrs={"llm.model": "acme/house-model", **usage}),
        pb_span("d" * 32, "4" * 16, "POST /v1/chat/completions acme/unknown", base, base + 10**9,
                attrs={"llm.model": "acme/unknown", **usage}),
    ]  # fmt: skip
    grpc_export(srv.grpc_target, pb_request(({"service.name": "plano(llm)"}, spans)))
    srv.stop()
    got = {r["SpanId"]: (r["CostUsd"], r["EstimatedCostUsd"]) for r in read_spans(srv.data_dir)}
    assert got == {
        "1" * 16: (None, pytest.approx((800 * 2.5 + 200 * 1.25 + 500 * 10) / M, rel=1e-12)),
        "2" * 16: (0.25, None),
        "3" * 16: (None, pytest.approx((1000 * 1 + 500 * 2) / M, rel=1e-12)),
        "4" * 16: (None, None),
    }
