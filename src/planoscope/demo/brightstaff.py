"""A fake brightstaff ``:9092/metrics`` for the simulated gateway, with the metric names and
labels brightstaff's Prometheus recorder exposes (crates/brightstaff/src/metrics/), fed by the
simulated requests' ``Fact``s, each counted once ``clock()`` has passed the moment brightstaff
records it (an HTTP request when its handler returns, an upstream call when its response ends,
its time to first token at the first byte).

The families, which Plano's Grafana dashboard "Brightstaff (Plano dataplane)" queries:

- HTTP RED: ``brightstaff_http_requests_total{handler,method,status_class}``,
  ``brightstaff_http_request_duration_seconds{handler}``, ``brightstaff_http_in_flight_requests{handler}``;
- LLM upstream: ``brightstaff_llm_upstream_requests_total{provider,model,status_class,error_class}``,
  ``brightstaff_llm_upstream_duration_seconds{provider,model}``,
  ``brightstaff_llm_time_to_first_token_seconds{provider,model}``,
  ``brightstaff_llm_tokens_total{provider,model,kind}``, ``brightstaff_llm_tokens_usage_missing_total``;
- routing: ``brightstaff_router_decisions_total{route,selected_model,fallback}``,
  ``brightstaff_router_decision_duration_seconds{route}``, ``brightstaff_router_skips_total{reason}``,
  ``brightstaff_routing_service_requests_total{outcome}``;
- sessions and prompt caching: ``brightstaff_session_cache_events_total{outcome}``,
  ``brightstaff_prompt_cache_requests_total{provider,model,outcome}``,
  ``brightstaff_session_binding_events_total{event}``, ``brightstaff_session_switch_decisions_total{decision,reason}``;
- ``brightstaff_build_info{version,git_sha}`` and a few ``process_*`` gauges of a plausible process.

Example::

    stats = BrightstaffStats()
    stats.track(traces)
    async with FakeBrightstaff(stats, "127.0.0.1:9092") as brightstaff:
        print(brightstaff.url)                # http://127.0.0.1:9092/metrics
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from .exposition import Histogram, Served, label_text, num
from .gateway import BUILD
from .spans import Fact

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ROUTER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUESTS = "brightstaff_http_requests_total"

METRICS = {  # name: (type, histogram buckets, help)
    REQUESTS: ("counter", None, "HTTP requests served, by handler and status class."),
    "brightstaff_http_request_duration_seconds": ("histogram", HTTP_BUCKETS, "Time to answer an HTTP request."),
    "brightstaff_llm_upstream_requests_total": ("counter", None, "Outcomes of LLM upstream calls."),
    "brightstaff_llm_upstream_duration_seconds": ("histogram", LLM_BUCKETS, "Duration of LLM upstream calls."),
    "brightstaff_llm_time_to_first_token_seconds": ("histogram", LLM_BUCKETS, "Time to the first response byte."),
    "brightstaff_llm_tokens_total": ("counter", None, "Tokens reported in the provider's usage block."),
    "brightstaff_llm_tokens_usage_missing_total": ("counter", None, "Responses without a usable usage block."),
    "brightstaff_router_decisions_total": ("counter", None, "Routing decisions, by route and selected model."),
    "brightstaff_router_decision_duration_seconds": ("histogram", ROUTER_BUCKETS, "Time spent deciding a route."),
    "brightstaff_router_skips_total": ("counter", None, "Requests whose routing replayed a prior decision."),
    "brightstaff_routing_service_requests_total": ("counter", None, "Outcomes of /routing/* requests."),
    "brightstaff_session_cache_events_total": ("counter", None, "Session cache lookups and stores."),
    "brightstaff_prompt_cache_requests_total": ("counter", None, "Provider prompt-cache hits and misses."),
    "brightstaff_session_binding_events_total": ("counter", None, "Session binding refreshes."),
    "brightstaff_session_switch_decisions_total": ("counter", None, "Session router switch decisions."),
}
IN_FLIGHT = "brightstaff_http_in_flight_requests"


class BrightstaffStats:
    """brightstaff's metrics of the simulated traffic, as of ``clock()`` (Unix ns); like
    brightstaff they count from the start of this process."""

    def __init__(self, clock: Callable[[], int] = time.time_ns):
        self.clock = clock
        self.started_ns = clock()
        self.counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self.histograms: dict[str, dict[tuple, Histogram]] = defaultdict(dict)
        self.handlers: set[str] = set()
        self._pending: list[tuple[int, int, Fact]] = []  # heap by the time the fact is recorded
        self._seq = itertools.count()

    def track(self, traces: Iterable) -> None:
        for trace in traces:
            for fact in trace.facts:
                if fact.metric not in METRICS:
                    raise ValueError(f"brightstaff has no metric {fact.metric!r}")
                heapq.heappush(self._pending, (fact.at_ns, next(self._seq), fact))
        self._fold(self.clock())

    def _fold(self, now_ns: int) -> None:
        while self._pending and self._pending[0][0] <= now_ns:
            fact = heapq.heappop(self._pending)[2]
            kind, buckets, _ = METRICS[fact.metric]
            if kind == "histogram":
                hist = self.histograms[fact.metric].get(fact.labels)
                if hist is None:
                    hist = self.histograms[fact.metric][fact.labels] = Histogram(buckets)
                hist.observe(fact.value)
            else:
                self.counters[fact.metric][fact.labels] += fact.value
            if fact.metric == REQUESTS:
                self.handlers.add(dict(fact.labels)["handler"])

    def in_flight(self, now_ns: int) -> dict[str, int]:
        out = dict.fromkeys(self.handlers, 0)
        for _, _, fact in self._pending:
            if fact.metric == REQUESTS and fact.since_ns <= now_ns:
                handler = dict(fact.labels)["handler"]
                out[handler] = out.get(handler, 0) + 1
        return out

    def _process(self, now_ns: int) -> list[str]:
        """A Rust process of ~50 MiB whose CPU time grows with the requests it served."""
        up_s = max(0.0, (now_ns - self.started_ns) / 1e9)
        served = sum(self.counters[REQUESTS].values())
        rss = 50 * 2**20 + int(2 * 2**20 * math.sin(up_s / 97)) + 64 * 1024 * sum(self.in_flight(now_ns).values())
        gauges = (
            ("process_resident_memory_bytes", rss),
            ("process_virtual_memory_bytes", 1_288_490_188 + rss),
            ("process_open_fds", 40 + int(served) % 7),
            ("process_max_fds", 1_048_576),
            ("process_threads", 14),
            ("process_start_time_seconds", self.started_ns // 1_000_000_000),
        )
        out = [
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {num(round(0.02 * up_s + 0.0015 * served, 3))}",
        ]
        for name, value in gauges:
            out += [f"# TYPE {name} gauge", f"{name} {value}"]
        return out

    def render(self) -> str:
        """The ``/metrics`` page, now, in metrics-exporter-prometheus' format."""
        now_ns = self.clock()
        self._fold(now_ns)
        lines = [
            "# HELP brightstaff_build_info Build metadata: always 1.",
            "# TYPE brightstaff_build_info gauge",
            f'brightstaff_build_info{{version="{BUILD[0]}",git_sha="{BUILD[1]}"}} 1',
            "# TYPE " + IN_FLIGHT + " gauge",
            *(f'{IN_FLIGHT}{{handler="{h}"}} {n}' for h, n in sorted(self.in_flight(now_ns).items())),
        ]
        for name, (kind, _, help_text) in METRICS.items():
            series = self.histograms.get(name) if kind == "histogram" else self.counters.get(name)
            if not series:
                continue  # like the recorder, a family appears once something was recorded
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for labels, value in sorted(series.items()):
                if kind == "histogram":
                    lines += value.lines(name, label_text(labels))
                else:
                    lines.append(f"{name}{{{label_text(labels)}}} {num(value)}")
        return "\n".join(lines + self._process(now_ns)) + "\n"


def brightstaff_app(stats: BrightstaffStats) -> Starlette:
    """The ASGI app of the fake brightstaff metrics endpoint: ``/metrics``."""

    async def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse(stats.render(), media_type="text/plain; version=0.0.4")

    return Starlette(routes=[Route("/metrics", metrics)])


class FakeBrightstaff(Served):
    """Async context manager serving ``brightstaff_app(stats)`` on ``address`` (port 0 picks one)."""

    what = "the fake brightstaff metrics endpoint"

    def __init__(self, stats: BrightstaffStats, address: str = "127.0.0.1:9092"):
        super().__init__(brightstaff_app(stats), address)
        self.stats = stats
