"""Time steps, as Prometheus' range queries have them: points sit at ``start + k * step`` and the
point at ``t`` covers ``(t - step, t]``. Shared by every panel's evaluation (``evaluate.py``,
``llm_calls.py``), so a span counts in the same step everywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .params import naive_utc, unix_ns

OTHER = "other"  # the name of the series of everything past the top ones
OTHER_LABELS = {"other": "true"}


def n_points(start: float, end: float, step: float) -> int:
    return int(math.floor((end - start) / step + 1e-9)) + 1


def window(start: float, end: float, step: float) -> tuple[list, str]:
    """Parameters and SQL: the time filter's bounds, ``(start - step, end]``, and the step index
    ``k`` of each span (its point is ``start + k * step``; ``k = 0`` is the step ending at ``start``)."""
    start_ns, step_ns = round(start * 1e9), round(step * 1e9)
    sql_k = f"(epoch_ns(Timestamp) - {start_ns} + {step_ns} - 1) // {step_ns}"
    return [naive_utc(start - step), naive_utc(end)], sql_k


def clickhouse_window(start: float, end: float, step: float) -> tuple[dict, str, str]:
    """``window`` on ClickHouse: server-side parameters, the time filter over ``Timestamp``
    (``DateTime64(9)``) and the step index ``k``, the same bounds and the same index as DuckDB's."""
    params = {
        "w_lo": unix_ns(start - step),
        "w_hi": unix_ns(end),
        "w_start": round(start * 1e9),
        "w_step": round(step * 1e9),
    }
    where = "Timestamp > fromUnixTimestamp64Nano({w_lo:Int64}) AND Timestamp <= fromUnixTimestamp64Nano({w_hi:Int64})"
    # Never negative (the filter starts a step before ``start``), so intDiv's rounding is floor's.
    k = "intDiv(toUnixTimestamp64Nano(Timestamp) - {w_start:Int64} + {w_step:Int64} - 1, {w_step:Int64})"
    return params, where, k


def points(start: float, step: float, n: int, values: dict[int, float], fill: float | None) -> list:
    """``[[t, value], ...]`` of ``values`` by step index; every step with ``fill`` where there is
    none, or (``fill`` None) only the steps that have a value."""
    if fill is None:
        return [[start + k * step, values[k]] for k in sorted(values) if 0 <= k < n]
    return [[start + k * step, values.get(k, fill)] for k in range(n)]


def marks(values: Sequence) -> str:
    """``?, ?, ?``: one SQL parameter per value."""
    return ", ".join("?" for _ in values)
