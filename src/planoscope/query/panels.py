"""The panels, declared once: the shapes a panel's query can take, the six panels of the
reference "Plano - Requests Overview" (``PANELS``), and how a panel drills down to its traces.

Each ``Panel`` says what it shows (a ``Query``: a small closed set of shapes, each evaluated by
``evaluate.py`` or, for the shapes over LLM calls, ``llm_calls.py``, on the store) and how the
reference stack computes the same thing (its PromQL, which is the semantic contract and what the
Grafana export writes). The "Plano - LLM Usage" panels are in ``llm_panels.py``; ``dashboards.py``
lists the dashboards. The query API, the UI and the Grafana export read these; nothing else names a panel.
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


# --- over LLM calls (``schema.LLM_CALL``), grouped by model unless said otherwise (llm_calls.py) ---


@dataclass(frozen=True)
class TokenRate:
    """Tokens per second per model and kind (input, output, cached_input, reasoning): the sum of
    the calls' token counts in each step divided by the step, so the points integrate to what was sent."""


@dataclass(frozen=True)
class CostRate:
    """USD per hour per model and cost source (``sent``: CostUsd, ``estimated``: EstimatedCostUsd)."""


@dataclass(frozen=True)
class CostTotal:
    """USD per model and cost source over the range: one point per series, at its end."""


@dataclass(frozen=True)
class CallQuantiles:
    """Exact quantiles per step and model of a value of each call (``CALL_VALUES``)."""

    value: str
    quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class FailureRatio:
    """The share of a model's calls in each step that failed, per failure class."""


@dataclass(frozen=True)
class FailureRate:
    """Calls per second that failed with ``failure``, per model and provider."""

    failure: str


@dataclass(frozen=True)
class RouteShare:
    """Calls per route (plano.route.name) over the range, with their share of all calls, a
    latency quantile and the failure ratio (the panel's ``measures``)."""

    quantile: float = 0.95


@dataclass(frozen=True)
class ModelSelection:
    """Calls per requested -> resolved model pair over the range."""


@dataclass(frozen=True)
class CacheRatio:
    """Cached input tokens / input tokens per step and model."""


@dataclass(frozen=True)
class SignalsQuality:
    """Calls per step per signals.quality, and the share of plano(llm) calls flagged."""


@dataclass(frozen=True)
class TopSessions:
    """The ``limit`` sessions that cost most over the range (sent and estimated cost together)."""

    limit: int = 10


LlmQuery = (
    TokenRate
    | CostRate
    | CostTotal
    | CallQuantiles
    | FailureRatio
    | FailureRate
    | RouteShare
    | ModelSelection
    | CacheRatio
    | SignalsQuality
    | TopSessions
)
LLM_QUERIES = LlmQuery.__args__


@dataclass(frozen=True)
class PromQL:
    """A panel drawn from its targets' PromQL by the engine over the stored samples: a Grafana
    dashboard's (``grafana/dashboard.py`` reads them, ``grafana/render.py`` draws them). A stat
    panel reduces each series to one value by Grafana's ``reducer`` (lastNotNull, mean, max, …)."""

    reducer: str = "lastNotNull"


Query = SpanRate | LatencyQuantiles | SpanCount | ScrapedRate | LlmQuery | PromQL


@dataclass(frozen=True)
class Target:
    expr: str  # PromQL, with $__rate_interval as Grafana writes it
    legend: str


@dataclass(frozen=True)
class Measure:
    """A kind of series a panel has besides its main one, told apart by the series label
    ``measure``: a column of a stat table (``RouteShare``) or a line on the right-hand axis."""

    id: str
    title: str
    unit: str


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    unit: str  # Grafana unit id (reqps, ms, short, percentunit, currencyUSD) or custom unit (suffix: tok/s)
    kind: str  # timeseries | stat | row (a Grafana row's heading: no query)
    grid: tuple[int, int, int, int]  # x, y, w, h on Grafana's 24-column grid
    query: Query
    targets: tuple[Target, ...]
    description: str = ""
    color: str | None = None  # a fixed colour, as the reference panel has
    extra: dict = field(default_factory=dict, hash=False, compare=False)
    measures: tuple[Measure, ...] = ()
    display: str = "tiles"  # a stat panel drawn as tiles, bars (long names) or a table (with measures)
    # A stat's colour by its value, as Grafana's absolute thresholds: (from, colour) steps, the
    # first from None (below every other step).
    thresholds: tuple[tuple[float | None, str], ...] = ()


LLM, AGENT, ORCH = "plano(llm)", "plano(agent)", "plano(orchestrator)"
# SignalsQuality's series of the share of calls flagged: its measure and its name.
FLAGGED, FLAGGED_SERIES = "flagged", "\U0001f6a9 flagged"


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
# Opening only the failed calls of a series (as Plano means it: see ``schema.FAILURE_MACRO``;
# agents' HTTP status is never recorded, so agent spans never fail), and what stands for an empty
# model label: Plano's LLM calls without a model are the ones that failed before dispatch (a span
# named ``llm``).
_FAILED = {"failed": {"errors": "true"}, "unset": {"llm_model": {"failure": "before_dispatch"}}}
_CALLS = {"filters": {"llm": "true"}, "labels": {"llm_model": "model"}, **_FAILED}


def drilldown(panel: Panel) -> dict | None:
    """How a point or series of ``panel`` maps to a trace search (the UI's drill-down):
    ``filters`` hold for every series; ``labels`` maps a series label to the search filter that
    takes its value; ``series`` gives per-series filters by series name; ``unset`` gives, per label, the filters
    that stand for the label's empty value; ``sort`` orders the traces (the latency panels open the
    slowest first); ``failed``, on the panels of LLM calls, is what to add to open only the calls
    that failed."""
    q = panel.query
    if isinstance(q, SpanRate):
        if not q.by:
            return {"filters": {}, "series": {n: {"service": s} for n, s in zip(q.names, q.services)}}
        return {
            "filters": {"service": q.services[0]} if len(q.services) == 1 else {},
            "labels": {q.label: SEARCH_FILTER[q.by]},
            **(_FAILED if q.services == (LLM,) else {}),
        }
    if isinstance(q, (LatencyQuantiles, SpanCount)):
        return {
            "filters": {"service": q.service},
            "labels": {q.label: SEARCH_FILTER[q.by]},
            **({"sort": "duration"} if isinstance(q, LatencyQuantiles) else {}),
            **(_FAILED if q.service == LLM else {}),
        }
    if isinstance(q, ScrapedRate) and q.metric == "envoy_wasmcustom_ratelimited_rq":
        # Envoy counts what Plano's rate limiter refused; Plano's LLM span of such a request
        # carries the 429 it answered (an int there, a string on Envoy's outbound span): failure
        # class 429.
        return {"filters": {"service": LLM, "failure": "429"}}
    if isinstance(q, (TokenRate, CacheRatio, CallQuantiles)):
        return _CALLS
    if isinstance(q, (CostRate, CostTotal)):
        return {**_CALLS, "labels": {"llm_model": "model", "cost_source": "cost"}}
    if isinstance(q, FailureRatio):
        return {**_CALLS, "labels": {"llm_model": "model", "class": "failure"}}
    if isinstance(q, FailureRate):
        return {
            **_CALLS,
            "filters": {"llm": "true", "failure": q.failure},
            "labels": {"llm_model": "model", "llm_provider": "provider"},
        }
    if isinstance(q, RouteShare):
        return {
            "filters": {"llm": "true"},
            "labels": {"route": "route"},
            "failed": {"errors": "true"},
            "sort": "duration",
        }
    if isinstance(q, ModelSelection):
        return {
            "filters": {"llm": "true"},
            "labels": {"requested_model": "requested_model", "resolved_model": "resolved_model"},
        }
    if isinstance(q, SignalsQuality):
        return {
            "filters": {"llm": "true"},
            "labels": {"quality": "quality"},
            "series": {FLAGGED_SERIES: {"flagged": "true"}},
        }
    if isinstance(q, TopSessions):
        return {"filters": {"llm": "true"}, "labels": {"session_id": "session"}}
    return None
