"""What the fake Envoy and the fake brightstaff share: histograms in the Prometheus text format,
and serving an ASGI app on a socket of their own."""

from __future__ import annotations

import bisect
import itertools

from ..net.httpserver import HttpServer
from ..net.listen import bind, bound_address


def num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def label_text(labels) -> str:
    """``(("a", "b"),)`` → ``a="b"`` (values are the simulator's own: nothing to escape)."""
    return ",".join(f'{k}="{v}"' for k, v in labels)


class Histogram:
    """Cumulative buckets, a sum and a count."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def lines(self, name: str, labels: str = "") -> list[str]:
        """The sample lines; ``labels`` (``label_text``) go before ``le``."""
        pre = labels + "," if labels else ""
        out = [
            f'{name}_bucket{{{pre}le="{le}"}} {n}'
            for le, n in zip([*map(num, self.buckets), "+Inf"], itertools.accumulate(self.counts))
        ]
        return out + [f"{name}_sum{{{labels}}} {num(self.sum)}", f"{name}_count{{{labels}}} {self.count}"]


class Served:
    """Async context manager serving ``app`` on ``address`` (port 0 picks one); ``url`` is
    ``path`` on the bound address once entered."""

    what = "a fake endpoint"
    path = "/metrics"

    def __init__(self, app, address: str):
        self.app, self.address = app, address
        self.url = ""

    async def __aenter__(self):
        sock = bind(self.address, self.what)
        self.address = bound_address(sock)
        self.url = f"http://{self.address}{self.path}"
        self._server = HttpServer(self.app, sock)
        try:
            await self._server.__aenter__()
        except BaseException:
            sock.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._server.__aexit__(*exc)
