"""Which spans were stored recently, so a client's retry of an acknowledged export is not
stored twice.

Exact de-duplication over all history would need an index over every span ever stored; a
retry comes within seconds to minutes of the original (the OpenTelemetry SDK exporters give up
after about a minute), so planoscope remembers the ids of the spans stored within a window
(``dedupe_window``, at most ``dedupe_max_spans`` of them) and reloads that window from the
store on start, so a retry that crosses a restart is caught too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable


class RecentSpans:
    """Two generations of span keys: the current one and the one before it."""

    def __init__(self, window_s: float, max_keys: int, clock=time.monotonic):
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()
        self._started = clock()

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def __contains__(self, key: bytes) -> bool:
        return key in self._current or key in self._previous

    def _rotate_if_due(self) -> None:
        # Each generation spans half the window, so a key is remembered for at least half of it
        # and at most all of it; likewise half to all of max_keys.
        if self._clock() - self._started >= self.window_s / 2 or len(self._current) >= self.max_keys // 2:
            self._previous = self._current
            self._current = set()
            self._started = self._clock()

    def new_mask(self, keys: list[bytes], remembered: bool = True) -> list[bool] | None:
        """For each key: True if it was not seen recently (unless not ``remembered``) nor earlier
        in ``keys``.

        Returns None when every key is new (the common case, so the caller can skip filtering).
        """
        cur, prev = (self._current, self._previous) if remembered else (set(), set())
        seen: set[bytes] = set()
        mask = None
        for i, k in enumerate(keys):
            if k in cur or k in prev or k in seen:
                if mask is None:
                    mask = [True] * len(keys)
                mask[i] = False
            else:
                seen.add(k)
        return mask

    def add(self, keys: Iterable[bytes]) -> None:
        self._rotate_if_due()
        self._current.update(keys)
