"""The dashboard, declared once: the six panels of the reference "Plano - Requests Overview".

Each ``Panel`` says what it shows (a ``Query``: a small closed set of shapes, each evaluated by
``evaluate.py`` on the store) and how the reference stack computes the same thing (its PromQL,
which is the semantic contract and what the Grafana export writes). The query API, the UI and
the Grafana export all read this list; nothing else names a panel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Series a grouped panel draws: the top ones by value, the rest as one "other" (see evaluate.py).
DEFAULT_MAX_SERIES = 20


@dataclass(frozen=True)
class SpanRate:
    """Spans per second per time step, of ``services``, one series per value of ``by``
    (a typed column) or, without ``by``, one series per service."""

    services: tuple[str, ...]
    by: str | None = None
    label: str | None = None  # the series label name (the span-metric label)
    names: tuple[str, ...] = ()  # without ``by``: the series name per service


@dataclass(frozen=True)
class LatencyQuantiles:
    """Exact quantiles of span duration (ms) per time step, per value of ``by``."""

    service: str
    by: str
    label: str
    quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class SpanCount:
    """All spans of ``service`` up to the range's end, per value of ``by``: one point per series."""

    service: str
    by: str
    label: str


@dataclass(frozen=True)
class ScrapedRate:
    """Per-second rate of a scraped counter (counter resets handled), from the Envoy scraper."""

    metric: str


Query = SpanRate | LatencyQuantiles | SpanCount | ScrapedRate


@dataclass(frozen=True)
class Target:
    expr: str  # PromQL, with $__rate_interval as Grafana writes it
    legend: str


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    unit: str  # Grafana unit id: reqps, ms, short
    kind: str  # timeseries | stat
    grid: tuple[int, int, int, int]  # x, y, w, h on Grafana's 24-column grid
    query: Query
    targets: tuple[Target, ...]
    description: str = ""
    color: str | None = None  # a fixed colour, as the reference panel has
    extra: dict = field(default_factory=dict, hash=False, compare=False)


LLM, AGENT, ORCH = "plano(llm)", "plano(agent)", "plano(orchestrator)"


def _rate(selector: str, by: str | None = None) -> str:
    inner = f"sum(rate(calls_total{{{selector}}}[$__rate_interval]))"
    return f"{inner} by ({by})" if by else inner


PANELS: tuple[Panel, ...] = (
    Panel(
        "llm_requests_per_second",
        "LLM Requests / sec by Model",
        "reqps",
        "timeseries",
        (0, 0, 12, 10),
        SpanRate((LLM,), by="LlmModel", label="llm_model"),
        (Target(_rate(f'service_name="{LLM}"', "llm_model"), "{{ llm_model }}"),),
        "LLM calls per second, one line per model.",
    ),
    Panel(
        "agent_requests_per_second",
        "Agent Requests / sec by Agent",
        "reqps",
        "timeseries",
        (12, 0, 12, 10),
        SpanRate((AGENT,), by="AgentId", label="agent_id"),
        (Target(_rate(f'service_name="{AGENT}"', "agent_id"), "{{ agent_id }}"),),
        "Agent invocations per second, one line per agent.",
    ),
    Panel(
        "total_requests_per_second",
        "Total LLM Requests / sec",
        "reqps",
        "timeseries",
        (0, 10, 12, 10),
        SpanRate((LLM, AGENT, ORCH), names=("llm", "agent", "orchestrator")),
        (
            Target(_rate(f'service_name="{LLM}"'), "Total LLM Requests"),
            Target(_rate(f'service_name="{AGENT}"'), "Total Agent Requests"),
            Target(_rate(f'service_name="{ORCH}"'), "Total Orchestrator Requests"),
        ),
        "All requests per second through the LLM, agent and orchestrator services.",
        color="blue",
    ),
    Panel(
        "rate_limited_per_second",
        "Rate-Limited Requests / sec",
        "reqps",
        "timeseries",
        (12, 10, 12, 10),
        ScrapedRate("envoy_wasmcustom_ratelimited_rq"),
        (Target("rate(envoy_wasmcustom_ratelimited_rq[$__rate_interval])", "Rate-Limited"),),
        "Requests Plano's rate limiter refused, per second (Envoy's counter, scraped).",
        color="red",
    ),
    Panel(
        "llm_latency_ms",
        "LLM Request Latency p50 / p95 / p99 by Model",
        "ms",
        "timeseries",
        (0, 20, 12, 10),
        LatencyQuantiles(LLM, by="LlmModel", label="llm_model"),
        tuple(
            Target(
                f'histogram_quantile({q:.2f}, sum(rate(duration_milliseconds_bucket{{service_name="{LLM}"}}'
                f"[$__rate_interval])) by (le, llm_model))",
                f"p{round(q * 100)} {{{{ llm_model }}}}",
            )
            for q in (0.50, 0.95, 0.99)
        ),
        "Exact latency percentiles per model, computed from every span's duration.",
    ),
    Panel(
        "llm_cumulative_requests",
        "Cumulative Request Count by Model",
        "short",
        "stat",
        (12, 20, 12, 10),
        SpanCount(LLM, by="LlmModel", label="llm_model"),
        (Target(f'sum(calls_total{{service_name="{LLM}"}}) by (llm_model)', "{{ llm_model }}"),),
        "All LLM requests per model held in the store, up to the end of the range.",
    ),
)

BY_ID = {p.id: p for p in PANELS}

# The trace search filter (``/api/v1/traces``) that stands for each column a panel groups on.
SEARCH_FILTER = {"LlmModel": "model", "AgentId": "agent", "ServiceName": "service"}


def drilldown(panel: Panel) -> dict | None:
    """How a point or series of ``panel`` maps to a trace search (the UI's drill-down):
    ``filters`` hold for every series; ``by`` names the search filter that takes the value of
    the series label ``label``; ``series`` gives per-series filters by series name; ``sort``
    orders the traces (the latency panel opens the slowest first); ``failed``, on the panels of
    LLM calls, is what to add to open only the calls that failed (as Plano means it: see
    ``schema.FAILURE_MACRO``; agents' HTTP status is never recorded, so agent spans never fail);
    ``unset`` replaces ``by`` for a series whose label is empty: Plano's LLM calls without a model
    are the ones that failed before dispatch (a span named ``llm``)."""
    q = panel.query
    failed = {"failed": {"errors": "true"}, "unset": {"failure": "before_dispatch"}}
    if isinstance(q, SpanRate):
        if not q.by:
            return {"filters": {}, "series": {n: {"service": s} for n, s in zip(q.names, q.services)}}
        return {
            "filters": {"service": q.services[0]} if len(q.services) == 1 else {},
            "by": SEARCH_FILTER[q.by],
            "label": q.label,
            **(failed if q.services == (LLM,) else {}),
        }
    if isinstance(q, LatencyQuantiles):
        return {
            "filters": {"service": q.service},
            "by": SEARCH_FILTER[q.by],
            "label": q.label,
            "sort": "duration",
            **(failed if q.service == LLM else {}),
        }
    if isinstance(q, SpanCount):
        return {
            "filters": {"service": q.service},
            "by": SEARCH_FILTER[q.by],
            "label": q.label,
            **(failed if q.service == LLM else {}),
        }
    if isinstance(q, ScrapedRate) and q.metric == "envoy_wasmcustom_ratelimited_rq":
        # Envoy counts what Plano's rate limiter refused; Plano's LLM span of such a request
        # carries the 429 it answered (an int there, a string on Envoy's outbound span): failure
        # class 429.
        return {"filters": {"service": LLM, "failure": "429"}}
    return None
