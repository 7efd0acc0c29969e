"""The "Plano - LLM Usage" dashboard: what the LLM calls cost and how they feel, per model.

Every panel is over LLM calls (``schema.LLM_CALL``: a span with a model or token counts, or a
plano(llm) span), evaluated exactly from the stored spans by ``llm_calls.py``. Its ``targets``
are the same panel in PromQL over planoscope's span-derived LLM metrics on ``/metrics``
(OpenTelemetry GenAI names, see the metrics module), for the Grafana export; where those metrics
cannot say the same thing (no session, signals or requested-model label, a median per call),
the target is the nearest they can say, or none, and the description says so.
"""

from __future__ import annotations

from .panels import (
    FLAGGED,
    CacheRatio,
    CallQuantiles,
    CostRate,
    CostTotal,
    FailureRate,
    FailureRatio,
    Measure,
    ModelSelection,
    Panel,
    RouteShare,
    SignalsQuality,
    Target,
    TokenRate,
    TopSessions,
)

_TOKENS = "gen_ai_client_token_usage_sum"
_COST = "planoscope_llm_cost_usd_total"
_CALLS = "planoscope_llm_requests_total"
_TTFT = "gen_ai_client_operation_time_to_first_chunk_seconds"
_DURATION = "gen_ai_client_operation_duration_seconds"
_MODEL = "gen_ai_request_model"
_RI = "[$__rate_interval]"


def _tokens(kind: str) -> str:
    return f'sum(rate({_TOKENS}{{gen_ai_token_type="{kind}"}}{_RI})) by ({_MODEL})'


LLM_PANELS: tuple[Panel, ...] = (
    Panel(
        "llm_cost_total",
        "LLM Cost by Model",
        "currencyUSD",
        "stat",
        (0, 0, 5, 9),
        CostTotal(),
        (Target(f"sum(increase({_COST}[$__range])) by ({_MODEL}, source)", "{{ gen_ai_request_model }} {{ source }}"),),
        "USD per model over the range: the cost Plano sent (llm.usage.total_cost_usd), and apart from it the "
        "cost planoscope estimated from its price table for the calls with tokens and no sent cost.",
        display="bars",
    ),
    Panel(
        "llm_sessions_top",
        "Costliest Sessions",
        "currencyUSD",
        "stat",
        (5, 0, 6, 9),
        TopSessions(),
        (),
        "The sessions (plano.session_id, gen_ai.conversation.id, session.id) whose calls cost most over the "
        "range, sent and estimated cost together (marked estimated when any part is). Not on /metrics: a "
        "session id per series would be unbounded.",
        display="bars",
    ),
    Panel(
        "llm_route_share",
        "Routes: Calls, p95 Latency, Failures",
        "short",
        "stat",
        (11, 0, 7, 9),
        RouteShare(),
        (
            Target(f"sum(increase({_CALLS}[$__range])) by (route)", "{{ route }}"),
            Target(
                f'sum(increase({_CALLS}{{failure_class!="none"}}[$__range])) by (route)'
                f" / sum(increase({_CALLS}[$__range])) by (route)",
                "{{ route }} failed",
            ),
        ),
        "LLM calls per route (plano.route.name) over the range, their share of all calls, their exact p95 "
        "latency and the share that failed. /metrics has no latency per route: the export shows calls and failures.",
        measures=(
            Measure("share", "Share", "percentunit"),
            Measure("latency_p95_ms", "p95", "ms"),
            Measure("failure_ratio", "Failed", "percentunit"),
        ),
        display="table",
    ),
    Panel(
        "llm_model_selection",
        "Model Selection: Requested → Resolved",
        "short",
        "stat",
        (18, 0, 6, 9),
        ModelSelection(),
        (),
        "LLM calls per requested → resolved model pair over the range: where an alias, the router or the "
        "session router changed the model (Plano names the span `POST {path} {requested} -> {resolved}`). "
        "Not on /metrics (no requested-model label).",
        display="bars",
    ),
    Panel(
        "llm_tokens_per_second",
        "Tokens / sec by Model and Kind",
        "suffix: tok/s",
        "timeseries",
        (0, 9, 12, 9),
        TokenRate(),
        (
            Target(
                f"sum(rate({_TOKENS}{_RI})) by ({_MODEL}, gen_ai_token_type)",
                "{{ gen_ai_request_model }} {{ gen_ai_token_type }}",
            ),
        ),
        "Tokens per second per model: input (prompt), output (completion), cached input and reasoning, "
        "each point the tokens of the calls that started in the step divided by the step.",
    ),
    Panel(
        "llm_cost_per_hour",
        "LLM Cost / hour by Model",
        "currencyUSD",
        "timeseries",
        (12, 9, 12, 9),
        CostRate(),
        (Target(f"sum(rate({_COST}{_RI})) by ({_MODEL}, source) * 3600", "{{ gen_ai_request_model }} {{ source }}"),),
        "USD per hour per model, sent and estimated apart (estimated: the dashed lines).",
    ),
    Panel(
        "llm_ttft_ms",
        "Time to First Token p50 / p95 / p99 by Model",
        "ms",
        "timeseries",
        (0, 18, 12, 9),
        CallQuantiles("ttft_ms"),
        tuple(
            Target(
                f"histogram_quantile({q:.2f}, sum(rate({_TTFT}_bucket{_RI})) by (le, {_MODEL})) * 1000",
                f"p{round(q * 100)} {{{{ gen_ai_request_model }}}}",
            )
            for q in (0.50, 0.95, 0.99)
        ),
        "Exact time-to-first-token percentiles per model, from every call's llm.time_to_first_token.",
    ),
    Panel(
        "llm_output_tokens_per_second",
        "Output Tokens / sec per Call (median) by Model",
        "suffix: tok/s",
        "timeseries",
        (12, 18, 12, 9),
        CallQuantiles("output_tokens_per_second", (0.5,)),
        (
            Target(
                f"{_tokens('output')} / (sum(rate({_DURATION}_sum{_RI})) by ({_MODEL})"
                f" - sum(rate({_TTFT}_sum{_RI})) by ({_MODEL}))",
                "{{ gen_ai_request_model }}",
            ),
        ),
        "Generation speed: the median over the calls of completion tokens / (duration - time to first "
        "token), for the calls that streamed (100 ms or more after the first token: a response that was not "
        "streamed arrives whole at its first chunk). The export can only divide the sums over all calls.",
    ),
    Panel(
        "llm_failure_ratio",
        "Failed LLM Calls by Model and Class",
        "percentunit",
        "timeseries",
        (0, 27, 12, 9),
        FailureRatio(),
        (
            Target(
                f'sum(rate({_CALLS}{{failure_class!="none"}}{_RI})) by ({_MODEL}, failure_class)'
                f" / ignoring(failure_class) group_left sum(rate({_CALLS}{_RI})) by ({_MODEL})",
                "{{ gen_ai_request_model }} {{ failure_class }}",
            ),
        ),
        "The share of a model's calls that failed, per class: 429, 4xx, 5xx (HTTP status), before_dispatch "
        "(no model: the share of all calls), error_status (status ERROR without HTTP status).",
    ),
    Panel(
        "llm_upstream_429_per_second",
        "Rate-Limited (429) Calls / sec by Model and Provider",
        "reqps",
        "timeseries",
        (12, 27, 12, 9),
        FailureRate("429"),
        (
            Target(
                f'sum(rate({_CALLS}{{failure_class="429"}}{_RI})) by ({_MODEL}, gen_ai_provider_name)',
                "{{ gen_ai_request_model }} {{ gen_ai_provider_name }}",
            ),
        ),
        "LLM calls per second answered 429, per model and provider: the breakdown Envoy's global "
        "envoy_wasmcustom_ratelimited_rq cannot give.",
    ),
    Panel(
        "llm_prompt_cache_ratio",
        "Prompt Cache Hit Ratio by Model",
        "percentunit",
        "timeseries",
        (0, 36, 12, 9),
        CacheRatio(),
        (Target(f"{_tokens('cached_input')} / {_tokens('input')}", "{{ gen_ai_request_model }}"),),
        "Cached input tokens / input tokens per model, for the models that report cached tokens.",
    ),
    Panel(
        "llm_signals_quality",
        "Signals Quality and Share Flagged 🚩",
        "short",
        "timeseries",
        (12, 36, 12, 9),
        SignalsQuality(),
        (),
        "LLM calls per step per signals.quality (excellent … severe), and on the right-hand axis the share of "
        "Plano's calls flagged 🚩 (span name ending in the flag). Not on /metrics (no quality label).",
        measures=(Measure(FLAGGED, "🚩 flagged", "percentunit"),),
    ),
)
