"""``ResultCache``: range queries' evaluated subexpressions, reused while the samples they read
are unchanged, as a Prometheus query frontend (Thanos', Mimir's) caches aligned range queries.

A dashboard's panels repeat themselves: the three latency quantiles of the reference dashboard
each evaluate the same ``sum(rate(…)) by (le, llm_model)``, and a refresh of a range whose steps
are aligned (Grafana aligns them) asks for what the last refresh computed. An aggregation or a
function call over stored samples is kept with the store's change number when it was evaluated
(``store.sample_changes``), at the same steps; it is reused while no change since touched a time
at or before its last step (scrapes append at the present; a late sample, a backfill or a
retention delete reaches back). So an answer from the cache is the one the samples give now,
bit for bit. Kept: at most ``max_points`` points, the least recently used dropped first.

Not cached: a selector with ``@`` or a negative offset (it reads past the last step), and a
metric the queryable computes rather than stores (``volatile_metrics``: the native panels'). A
store that cannot tell where its samples changed (ClickHouse, written by other instances) has no
cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

import numpy as np

from ..store.sample_changes import SampleChanges
from .values import Steps


class ResultCache:
    def __init__(self, changes: SampleChanges, max_points: int = 4_000_000):
        self.changes = changes
        self.max_points = max_points
        self._lock = threading.Lock()
        self._entries: OrderedDict = OrderedDict()  # key: (seq, last step ms, Steps, points)
        self.points = 0
        self.hits = self.misses = 0

    def get(self, key) -> Steps | None:
        """A copy of what was kept under ``key``, if the samples it read are unchanged."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is not None:
            seq, last_ms, value, _ = entry
            oldest = self.changes.oldest_since(seq)
            if oldest is None or oldest > last_ms:
                self.hits += 1
                return _copy(value)
            self._drop(key)
        self.misses += 1
        return None

    def put(self, key, seq: int, last_ms: int, value: Steps) -> None:
        """Keep ``value``, evaluated with the samples as of change ``seq``, up to ``last_ms``."""
        points = value.values.size
        if points > self.max_points // 4:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.points -= old[3]
            self._entries[key] = (seq, last_ms, _copy(value), points)
            self.points += points
            while self.points > self.max_points:
                _, dropped = self._entries.popitem(last=False)
                self.points -= dropped[3]

    def _drop(self, key) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.points -= old[3]


def _copy(value: Steps) -> Steps:
    """Its own arrays: an evaluation may change what it is given."""
    return replace(value, labels=list(value.labels), values=np.array(value.values), present=np.array(value.present))
