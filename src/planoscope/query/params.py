"""A query's parameters checked: ``QueryError`` (a bad parameter, answered 400), time ranges and
steps, and the store's timestamps."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
TARGET_POINTS = 250
MAX_POINTS = 11_000  # Prometheus refuses more points than this per series, and so do we


class QueryError(ValueError):
    """A bad query parameter; the message is meant for the user."""


def default_step(start: float, end: float) -> float:
    """The step for a range: the smallest nice step giving at most ~250 points."""
    want = (end - start) / TARGET_POINTS
    return next((s for s in NICE_STEPS if s >= want), NICE_STEPS[-1])


# Timestamps are stored in ns in an int64: up to the year 2262. Found by schemathesis: beyond
# such bounds a query overflowed into a 500.
MAX_UNIX_S = 9e9


def check_bounds(start: float, end: float) -> None:
    if not (math.isfinite(start) and math.isfinite(end)):
        raise QueryError("start and end must be finite numbers")
    if not (0 <= start <= MAX_UNIX_S and 0 <= end <= MAX_UNIX_S):
        raise QueryError(f"start and end must be unix seconds between 0 and {MAX_UNIX_S:.0f}")
    if end <= start:
        raise QueryError(f"end ({end}) must be after start ({start})")


def check_range(start: float, end: float, step: float) -> None:
    check_bounds(start, end)
    if not math.isfinite(step) or step <= 0 or step > MAX_UNIX_S:
        raise QueryError(f"step must be a positive number of seconds up to {MAX_UNIX_S:.0f}, got {step}")
    if (end - start) / step > MAX_POINTS:
        raise QueryError(f"too many points: (end - start) / step exceeds {MAX_POINTS}; use a larger step")


def naive_utc(unix_s: float) -> datetime:
    """Unix seconds as the store's naive UTC timestamps."""
    return datetime.fromtimestamp(unix_s, UTC).replace(tzinfo=None)


def unix_ns(unix_s: float) -> int:
    """Unix seconds as nanoseconds, to the microsecond ``naive_utc`` gives: a range bound reads the
    same on every store (ClickHouse's reads take nanoseconds, DuckDB's the naive timestamp)."""
    return (naive_utc(unix_s) - _EPOCH) // timedelta(microseconds=1) * 1000


_EPOCH = datetime(1970, 1, 1)
