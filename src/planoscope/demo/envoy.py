"""A fake Envoy admin endpoint for the simulated gateway: ``/stats/prometheus`` in Envoy's text
format, with the metrics Plano's WASM filter defines, fed by the simulated upstream calls.

Envoy names a WASM filter's metric ``wasmcustom.<name>`` and exposes it as
``envoy_wasmcustom_<name>``; a metric without tags is written with empty braces
(``envoy_wasmcustom_ratelimited_rq{} 3``), histograms use Envoy's default buckets, families are
sorted by name and carry ``# TYPE`` lines only. Like Envoy, the counters count from the start
of this process.

Example::

    stats = EnvoyStats()
    stats.track(trace.calls)                  # simulated upstream LLM calls, ending now or later
    async with FakeEnvoyAdmin(stats, "127.0.0.1:9901") as envoy:
        print(envoy.url)                      # http://127.0.0.1:9901/stats/prometheus
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ..net.httpserver import HttpServer
from ..net.listen import bind, bound_address
from .simulate import LlmCall

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
PREFIX = "envoy_wasmcustom_"
HISTOGRAMS = (
    "time_to_first_token",
    "time_per_output_token",
    "tokens_per_second",
    "request_latency",
    "output_sequence_length",
    "input_sequence_length",
)


class _Histogram:
    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out = [f"# TYPE {name} histogram"]
        for le, n in zip([*map(_num, BUCKETS), "+Inf"], itertools.accumulate(self.counts)):
            out.append(f'{name}_bucket{{le="{le}"}} {n}')
        out += [f"{name}_sum{{}} {_num(self.sum)}", f"{name}_count{{}} {sum(self.counts)}"]
        return out


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class EnvoyStats:
    """Envoy's stats of the simulated upstream LLM calls, as of ``clock()`` (Unix ns).

    ``track`` takes calls that may end in the future; each is counted once ``clock()`` has
    passed its end: a rate-limited call (429, rejected by Plano's filter) increments
    ``ratelimited_rq``, any other is an upstream request of its provider's cluster, and a
    success is observed by the histograms. ``active_http_calls`` is the calls in flight.
    """

    def __init__(self, clock: Callable[[], int] = time.time_ns):
        self.clock = clock
        self.started_ns = clock()
        self.ratelimited_rq = 0
        self.upstream_rq: Counter[tuple[str, int]] = Counter()  # (cluster, response code)
        self.histograms = {name: _Histogram() for name in HISTOGRAMS}
        self._pending: list[tuple[int, int, LlmCall]] = []  # heap by end time
        self._seq = itertools.count()

    def track(self, calls: Iterable[LlmCall]) -> None:
        for call in calls:
            heapq.heappush(self._pending, (call.end_ns, next(self._seq), call))
        self._fold(self.clock())  # keeps only calls in flight or to come, scraped or not

    def _fold(self, now_ns: int) -> None:
        while self._pending and self._pending[0][0] <= now_ns:
            call = heapq.heappop(self._pending)[2]
            if call.rate_limited:
                self.ratelimited_rq += 1
                continue
            self.upstream_rq[(call.provider, call.status_code)] += 1
            if call.status_code != 200:
                continue
            latency_ms = (call.end_ns - call.start_ns) / 1e6
            h = self.histograms
            h["request_latency"].observe(latency_ms)
            h["input_sequence_length"].observe(call.prompt_tokens)
            h["output_sequence_length"].observe(call.completion_tokens)
            h["tokens_per_second"].observe(call.completion_tokens / max(latency_ms / 1000, 1e-3))
            if call.ttft_ms is not None:
                h["time_to_first_token"].observe(call.ttft_ms)
                h["time_per_output_token"].observe((latency_ms - call.ttft_ms) / max(call.completion_tokens, 1))

    def active_calls(self, now_ns: int) -> int:
        return sum(1 for _, _, c in self._pending if c.start_ns <= now_ns < c.end_ns)

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
                f"{PREFIX}active_http_calls{{}} {self.active_calls(now_ns)}",
            ],
            "envoy_cluster_upstream_rq": ["# TYPE envoy_cluster_upstream_rq counter"]
            + [
                f'envoy_cluster_upstream_rq{{envoy_response_code="{code}",envoy_cluster_name="{cluster}"}} {n}'
                for (cluster, code), n in sorted(self.upstream_rq.items())
            ],
            "envoy_server_live": ["# TYPE envoy_server_live gauge", "envoy_server_live{} 1"],
            "envoy_server_uptime": [
                "# TYPE envoy_server_uptime gauge",
                f"envoy_server_uptime{{}} {max(0, now_ns - self.started_ns) // 1_000_000_000}",
            ],
        }
        for name, h in self.histograms.items():
            families[PREFIX + name] = h.lines(PREFIX + name)
        return "".join(line + "\n" for name in sorted(families) for line in families[name])


def envoy_admin_app(stats: EnvoyStats) -> Starlette:
    """The ASGI app of the fake admin endpoint: ``/stats/prometheus`` and ``/ready``."""

    async def prometheus(request: Request) -> PlainTextResponse:
        return PlainTextResponse(stats.render(), media_type="text/plain; version=0.0.4")

    async def ready(request: Request) -> PlainTextResponse:
        return PlainTextResponse("LIVE\n")

    return Starlette(routes=[Route("/stats/prometheus", prometheus), Route("/ready", ready)])


class FakeEnvoyAdmin:
    """Async context manager serving ``envoy_admin_app(stats)`` on ``address`` (port 0 picks one)."""

    def __init__(self, stats: EnvoyStats, address: str = "127.0.0.1:9901"):
        self.stats, self.address = stats, address
        self.url = ""

    async def __aenter__(self) -> FakeEnvoyAdmin:
        sock = bind(self.address, "the fake Envoy admin endpoint")
        self.address = bound_address(sock)
        self.url = f"http://{self.address}/stats/prometheus"
        self._server = HttpServer(envoy_admin_app(self.stats), sock)
        try:
            await self._server.__aenter__()
        except BaseException:
            sock.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._server.__aexit__(*exc)
