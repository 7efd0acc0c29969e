"""``SlidingSamples``: the stored samples a rule group reads, kept from one evaluation to the next
and topped up, so an evaluation reads what was written since the last one rather than its whole
windows again.

A rule's selector at 15 s intervals reads the same window shifted by 15 s: ``increase(x[1h])``
re-reading its hour every evaluation is a scan of every series' samples of that hour (the store
filters the metric name within the time range: 1.5 M rows for planoscope's own ~6,000 series), for
the 15 s that are new. Here a window is read whole once, then each evaluation reads from
``MARGIN_MS`` before the end of what it holds, drops what fell out at the start, and every
``REFRESH_MS`` reads it whole again. The margin is for samples committed late (the writer inserts
behind ingest): one later than the margin is missed until the next whole read, at most
``REFRESH_MS`` later.

What is asked of the store is what it indexes (``base.indexed_labels``: the metric name, an
equal ``job``); every matcher is applied here, so rules over the same series (a ratio's two sides)
share one read. A selector without a metric name, or a window no evaluation used the last time,
is not kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..promql import LimitExceeded, Matcher
from ..promql.engine import TOO_MANY_SAMPLES
from ..promql.storage import matches_all
from ..promql.values import METRIC_NAME
from .state import Labels, labels_key

MARGIN_MS = 60_000
REFRESH_MS = 600_000

Series = tuple[dict[str, str], np.ndarray, np.ndarray]


@dataclass
class _Window:
    start_ms: int
    end_ms: int
    read_whole_at: int  # the end_ms of its last whole read
    series: dict[Labels, Series]


class SlidingSamples:
    """A ``Queryable`` over the ``base`` given to each evaluation (``evaluating``); see the module
    docstring."""

    def __init__(self, margin_ms: int = MARGIN_MS, refresh_ms: int = REFRESH_MS):
        self.margin_ms, self.refresh_ms = margin_ms, refresh_ms
        self.base = None
        self._windows: dict[tuple, _Window] = {}
        self._used: set[tuple] = set()

    @property
    def indexed_labels(self) -> frozenset[str]:
        return self.base.indexed_labels

    def evaluating(self, base) -> None:
        """Before an evaluation: its ``base`` (``StoredSamples``); the windows the last one did not use are dropped."""
        self.base = base
        self._windows = {k: w for k, w in self._windows.items() if k in self._used}
        self._used = set()

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Iterable[Series]:
        indexed = tuple(sorted((m for m in matchers if m.op == "=" and m.name in self.indexed_labels), key=repr))
        if not any(m.name == METRIC_NAME for m in indexed):
            return self.base.select(matchers, start_ms, end_ms)
        key = (indexed, end_ms - start_ms)
        self._used.add(key)
        w = self._windows.get(key)
        if w is None or start_ms < w.start_ms or end_ms < w.end_ms or end_ms - w.read_whole_at > self.refresh_ms:
            w = _Window(start_ms, end_ms, end_ms, _by_labels(self.base.select(indexed, start_ms, end_ms)))
            self._windows[key] = w
        elif (start_ms, end_ms) != (w.start_ms, w.end_ms):
            self._top_up(key, w, indexed, start_ms, end_ms)
        return [s for s in w.series.values() if matches_all(s[0], matchers)]

    def _top_up(self, key: tuple, w: _Window, indexed: tuple, start_ms: int, end_ms: int) -> None:
        read_from = max(start_ms, w.end_ms - self.margin_ms)
        fresh = _by_labels(self.base.select(indexed, read_from, end_ms))
        merged, total = {}, 0
        for k in w.series.keys() | fresh.keys():
            labels, ts, vs = w.series.get(k) or fresh[k]
            keep = (ts >= start_ms) & (ts < read_from) if k in w.series else np.zeros(len(ts), bool)
            ts, vs = ts[keep], vs[keep]
            if k in fresh:
                labels, new_ts, new_vs = fresh[k]
                ts, vs = np.concatenate([ts, new_ts]), np.concatenate([vs, new_vs])
            if len(ts):
                merged[k], total = (labels, ts, vs), total + len(ts)
        if total > self.base.limits.max_samples:
            del self._windows[key]
            raise LimitExceeded(TOO_MANY_SAMPLES)
        w.start_ms, w.end_ms, w.series = start_ms, end_ms, merged


def _by_labels(series: Iterable[Series]) -> dict[Labels, Series]:
    return {labels_key(s[0]): s for s in series}
