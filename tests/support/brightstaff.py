"""The demo's fake brightstaff ``/metrics`` (``planoscope.demo.brightstaff``) for a test, in a
thread of its own: ``Brightstaff().url``; ``close()`` after."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from planoscope.demo.brightstaff import BrightstaffStats, FakeBrightstaff
from planoscope.demo.simulate import Simulation


class Brightstaff:
    """brightstaff's metrics of simulated traffic (``rate`` requests a second, from 30 s ago to
    15 minutes on), counted as ``clock`` (Unix ns; the real one by default) passes each fact, on
    ``port`` (0: a free one)."""

    def __init__(self, rate: float = 5, seed: int = 19, port: int = 0, clock: Callable[[], int] = time.time_ns):
        self.stats = BrightstaffStats(clock)
        now = clock() // 1_000_000_000
        self.stats.track(Simulation(rate=rate, seed=seed).traces(now - 30, now + 900))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.served = FakeBrightstaff(self.stats, f"127.0.0.1:{port}")
        asyncio.run_coroutine_threadsafe(self.served.__aenter__(), self.loop).result(30)
        self.url = self.served.url

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.served.__aexit__(None, None, None), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
