"""A fake Envoy admin endpoint for the simulated gateway: ``/stats/prometheus`` in Envoy's text
format, with the metrics Plano's llm_gateway WASM filter defines and the cluster counters,
fed by the simulated calls through Envoy's listeners.

What the filter records (crates/llm_gateway/src/stream_context.rs):

- ``ratelimited_rq`` counter: the 429s it answers itself;
- ``active_http_calls`` gauge: its own HTTP callouts in flight (none for LLM traffic: 0);
- ``input_sequence_length``: the prompt's token count, for every request (rate-limited ones too,
  it is counted before the check);
- at the end of every upstream response, errors included: ``request_latency`` (ms),
  ``output_sequence_length`` (tokens: 0 for an error), and when there were tokens
  ``time_per_output_token`` (latency ÷ tokens, integer ms, the TTFT included) and
  ``tokens_per_second`` (1000 ÷ that);
- ``time_to_first_token`` (ms): streaming responses only, with Plano's own buckets.

Envoy names a WASM metric ``wasmcustom.<name>`` and exposes it as ``envoy_wasmcustom_<name>``;
a metric without tags is written with empty braces (``envoy_wasmcustom_ratelimited_rq{} 3``),
other histograms use Envoy's default buckets, families are sorted by name and carry ``# TYPE``
lines only. ``envoy_cluster_upstream_rq_total`` counts requests to a cluster as they start,
``envoy_cluster_upstream_rq`` responses by code as they end. Like Envoy, the counters count from
the start of this process; each call is counted once, when it ends.

Example::

    stats = EnvoyStats()
    stats.track(traces)                       # simulated traces, ending now or later
    async with FakeEnvoyAdmin(stats, "127.0.0.1:9901") as envoy:
        print(envoy.url)                      # http://127.0.0.1:9901/stats/prometheus
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from .exposition import Histogram, Served
from .spans import EnvoyCall

# Envoy's default histogram buckets (source/common/stats/histogram_impl.h).
BUCKETS = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
# Plano's envoy.template.yaml: stats_config.histogram_bucket_settings for wasmcustom.time_to_first_token.
TTFT_BUCKETS = (
    100,
    500,
    800,
    1000,
    1200,
    1400,
    1600,
    1800,
    2000,
    2200,
    2400,
    3000,
    3500,
    4000,
    4500,
    5000,
    6000,
    10000,
    60000,
    180000,
)
PREFIX = "envoy_wasmcustom_"
HISTOGRAMS = (
    "time_to_first_token",
    "time_per_output_token",
    "tokens_per_second",
    "request_latency",
    "output_sequence_length",
    "input_sequence_length",
)


class EnvoyStats:
    """Envoy's stats of the simulated calls, as of ``clock()`` (Unix ns).

    ``track`` takes traces whose calls may end in the future; each call is counted once
    ``clock()`` has passed its end (a request to a cluster once it has started).
    """

    def __init__(self, clock: Callable[[], int] = time.time_ns):
        self.clock = clock
        self.started_ns = clock()
        self.ratelimited_rq = 0
        self.upstream_rq: Counter[tuple[str, int]] = Counter()  # (cluster, response code)
        self.upstream_rq_total: Counter[str] = Counter()
        self.histograms = {n: Histogram(TTFT_BUCKETS if n == "time_to_first_token" else BUCKETS) for n in HISTOGRAMS}
        self._pending: list[tuple[int, int, bool, EnvoyCall]] = []  # (when, seq, ended?, call)
        self._seq = itertools.count()

    def track(self, traces: Iterable) -> None:
        for trace in traces:
            for call in trace.calls:
                heapq.heappush(self._pending, (call.start_ns, next(self._seq), False, call))
                heapq.heappush(self._pending, (call.end_ns, next(self._seq), True, call))
        self._fold(self.clock())  # keeps only calls in flight or to come, scraped or not

    def _fold(self, now_ns: int) -> None:
        h = self.histograms
        while self._pending and self._pending[0][0] <= now_ns:
            _, _, ended, call = heapq.heappop(self._pending)
            if not ended:
                if not call.rate_limited:
                    self.upstream_rq_total[call.cluster] += 1
                continue
            if call.wasm:
                h["input_sequence_length"].observe(call.input_tokens)
            if call.rate_limited:
                self.ratelimited_rq += 1
                continue
            self.upstream_rq[(call.cluster, call.status_code)] += 1
            if not call.wasm or not call.completed:  # a reset stream never reaches the filter's end of response
                continue
            latency_ms = (call.end_ns - call.start_ns) // 1_000_000
            h["request_latency"].observe(latency_ms)
            h["output_sequence_length"].observe(call.output_tokens)
            if call.output_tokens > 0:
                tpot = latency_ms // call.output_tokens
                h["time_per_output_token"].observe(tpot)
                if tpot > 0:
                    h["tokens_per_second"].observe(1000 // tpot)
            if call.ttft_ms is not None:
                h["time_to_first_token"].observe(call.ttft_ms)

    def render(self) -> str:
        """The ``/stats/prometheus`` page, now."""
        now_ns = self.clock()
        self._fold(now_ns)
        families: dict[str, list[str]] = {
            PREFIX + "ratelimited_rq": [
                f"# TYPE {PREFIX}ratelimited_rq counter",
                f"{PREFIX}ratelimited_rq{{}} {self.ratelimited_rq}",
            ],
            PREFIX + "active_http_calls": [
                f"# TYPE {PREFIX}active_http_calls gauge",
                f"{PREFIX}active_http_calls{{}} 0",
            ],
            "envoy_cluster_upstream_rq": ["# TYPE envoy_cluster_upstream_rq counter"]
            + [
                f'envoy_cluster_upstream_rq{{envoy_response_code="{code}",envoy_cluster_name="{cluster}"}} {n}'
                for (cluster, code), n in sorted(self.upstream_rq.items())
            ],
            "envoy_cluster_upstream_rq_total": ["# TYPE envoy_cluster_upstream_rq_total counter"]
            + [
                f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{cluster}"}} {n}'
                for cluster, n in sorted(self.upstream_rq_total.items())
            ],
            "envoy_server_live": ["# TYPE envoy_server_live gauge", "envoy_server_live{} 1"],
            "envoy_server_uptime": [
                "# TYPE envoy_server_uptime gauge",
                f"envoy_server_uptime{{}} {max(0, now_ns - self.started_ns) // 1_000_000_000}",
            ],
        }
        for name, hist in self.histograms.items():
            families[PREFIX + name] = [f"# TYPE {PREFIX}{name} histogram", *hist.lines(PREFIX + name)]
        return "".join(line + "\n" for name in sorted(families) for line in families[name])


def envoy_admin_app(stats: EnvoyStats) -> Starlette:
    """The ASGI app of the fake admin endpoint: ``/stats/prometheus`` and ``/ready``."""

    async def prometheus(request: Request) -> PlainTextResponse:
        return PlainTextResponse(stats.render(), media_type="text/plain; version=0.0.4")

    async def ready(request: Request) -> PlainTextResponse:
        return PlainTextResponse("LIVE\n")

    return Starlette(routes=[Route("/stats/prometheus", prometheus), Route("/ready", ready)])


class FakeEnvoyAdmin(Served):
    """Async context manager serving ``envoy_admin_app(stats)`` on ``address`` (port 0 picks one)."""

    what = "the fake Envoy admin endpoint"
    path = "/stats/prometheus"

    def __init__(self, stats: EnvoyStats, address: str = "127.0.0.1:9901"):
        super().__init__(envoy_admin_app(stats), address)
        self.stats = stats
