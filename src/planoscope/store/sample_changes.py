"""``SampleChanges``: where the DuckDB store's samples changed, so that a reader can tell whether
what it read before is still what the store holds (``promql.cache``).

Every write into ``samples`` (an insert, retention's delete) is numbered and logged with the
earliest sample time it touched. ``oldest_since(seq)`` answers "the earliest time changed after
change ``seq``": a range query over times before it reads what it read then. Scrapes append at the
present, so a range ending at a past step (Grafana aligns its ranges to the step) stays valid
until a late or backfilled sample lands in it.

Only the DuckDB store has one: one process writes that file. A ClickHouse store is written by
other instances too, and keeps none.
"""

from __future__ import annotations

import threading
from collections import deque

EVERYTHING = -(2**63)  # a change at every time: a delete, or a log that no longer reaches back


class SampleChanges:
    def __init__(self, keep: int = 4096):
        self._lock = threading.Lock()
        self.seq = 0
        self._log: deque[tuple[int, int]] = deque(maxlen=keep)  # (seq, earliest ms)

    def record(self, earliest_ms: int) -> None:
        """A change of the samples at ``earliest_ms`` and after (``EVERYTHING``: at any time)."""
        with self._lock:
            self.seq += 1
            self._log.append((self.seq, earliest_ms))

    def oldest_since(self, seq: int) -> int | None:
        """The earliest time a change after change ``seq`` touched; None: nothing changed."""
        with self._lock:
            if self.seq == seq:
                return None
            if not self._log or self._log[0][0] > seq + 1:
                return EVERYTHING
            return min(t for s, t in reversed(self._log) if s > seq) if self._log[-1][0] > seq else None
