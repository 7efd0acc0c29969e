"""Where samples come from: the ``Queryable`` protocol the engine reads through, label matchers,
staleness markers, and ``MemoryStorage``, an in-memory Queryable for tests and small sets of series.

The engine never knows where samples live. A store implements one method::

    select(matchers, start_ms, end_ms) -> iterable of (labels: dict, timestamps_ms, values)

returning every series that matches *all* matchers, with its samples in ``[start_ms, end_ms]``
(both ends included), timestamps ascending and unique. A store may return more (series a regex
would exclude, samples outside the range): the engine applies every matcher to the labels and uses
only the samples it needs, so a SQL store can push down what it indexes — the metric name
(``metric_name(matchers)``), the equality matchers and the time range — and leave the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..store.staleness import STALE_NAN, STALE_NAN_BITS, is_stale  # noqa: F401 (the engine's, from here)
from .regex import RegexError, compile_anchored
from .values import METRIC_NAME, Labels, ParseError, labels_of


@dataclass(frozen=True)
class Matcher:
    """A label matcher: ``op`` is one of ``=``, ``!=``, ``=~``, ``!~``; regexes match whole values."""

    name: str
    op: str
    value: str
    _re: object = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in ("=", "!=", "=~", "!~"):
            raise ValueError(f"unknown matcher operator {self.op!r}")
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_re", compile_anchored(self.value))
            except RegexError as e:
                raise ParseError(f"invalid regular expression {self.value!r} in matcher: {e}") from None

    def matches(self, value: str) -> bool:
        """Whether a label value (``""`` for an absent label) matches."""
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = self._re.match(value) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value!r}"


def matches_all(labels: Mapping[str, str], matchers: Sequence[Matcher]) -> bool:
    return all(m.matches(labels.get(m.name, "")) for m in matchers)


def metric_name(matchers: Sequence[Matcher]) -> str | None:
    """The metric name the matchers fix, if one ``__name__="…"`` does: the first thing to push down."""
    return next((m.value for m in matchers if m.name == METRIC_NAME and m.op == "="), None)


class Queryable(Protocol):
    def select(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> Iterable[tuple[Mapping[str, str], np.ndarray, np.ndarray]]: ...


class MemoryStorage:
    """A Queryable holding series in memory, sorted arrays per series.

    >>> s = MemoryStorage()
    >>> s.add({"__name__": "up", "job": "a"}, [0, 15_000], [1.0, 1.0])
    >>> [dict(ls) for ls, _, _ in s.select([Matcher("__name__", "=", "up")], 0, 10_000)]
    [{'__name__': 'up', 'job': 'a'}]
    """

    def __init__(self) -> None:
        self._series: dict[Labels, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, labels: Mapping[str, str], timestamps_ms: Iterable[int], values: Iterable[float]) -> None:
        """Add samples to a series; a timestamp already there takes the new value."""
        key = labels_of(labels)
        ts = np.asarray(list(timestamps_ms) if not isinstance(timestamps_ms, np.ndarray) else timestamps_ms, np.int64)
        vs = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, np.float64)
        if ts.shape != vs.shape:
            raise ValueError("timestamps and values differ in length")
        if key in self._series:
            old_t, old_v = self._series[key]
            ts, vs = np.concatenate([old_t, ts]), np.concatenate([old_v, vs])
        # Stable sort, then keep the last of equal timestamps: later writes win.
        order = np.argsort(ts, kind="stable")
        ts, vs = ts[order], vs[order]
        last = np.ones(len(ts), bool)
        last[:-1] = ts[1:] != ts[:-1]
        self._series[key] = (ts[last], vs[last])

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int):
        for key, (ts, vs) in self._series.items():
            labels = dict(key)
            if not matches_all(labels, matchers):
                continue
            lo = np.searchsorted(ts, start_ms, side="left")
            hi = np.searchsorted(ts, end_ms, side="right")
            if hi > lo:
                yield labels, ts[lo:hi], vs[lo:hi]

    def __len__(self) -> int:
        return len(self._series)


def is_valid_label_name(name: str) -> bool:
    return (
        bool(name)
        and (name[0].isascii() and (name[0].isalpha() or name[0] == "_"))
        and all(c.isascii() and (c.isalnum() or c == "_") for c in name)
    )
