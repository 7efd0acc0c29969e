"""``StoredSamples``' SQL on DuckDB, over the ``samples`` table (Timestamp in microseconds, naive
UTC). Every value is a parameter; a range is ``[start_ms, end_ms]`` in whole milliseconds, as
Prometheus stores them (a sample at 1.5 ms is at 1 ms)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa

from ..store import SpanStore
from ..store.head import SERIES_KEY as KEY

_EPOCH = datetime(1970, 1, 1)


def _at(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


class DuckDBSamples:
    def __init__(self, store: SpanStore):
        self.store = store

    def _where(self, names: list[str] | None, job: str | None, start_ms: int, end_ms: int) -> tuple[str, list]:
        sql, args = "Timestamp >= ? AND Timestamp < ?", [_at(start_ms), _at(end_ms + 1)]
        if names is not None:
            sql += f" AND MetricName IN ({', '.join('?' * len(names))})"
            args += names
        if job is not None:
            sql += " AND Target IN (?, '')"  # the rules' rows carry their job in Labels
            args.append(job)
        return sql, args

    def names(self, start_ms: int, end_ms: int) -> list[str]:
        where, args = self._where(None, None, start_ms, end_ms)
        return [r[0] for r in self.store.read(f"SELECT DISTINCT MetricName FROM samples WHERE {where}", args)]

    def targets(self, start_ms: int, end_ms: int) -> list[str]:
        where, args = self._where(None, None, start_ms, end_ms)
        return [r[0] for r in self.store.read(f"SELECT DISTINCT Target FROM samples WHERE {where}", args)]

    def label_keys(self, start_ms: int, end_ms: int) -> list[str]:
        where, args = self._where(None, None, start_ms, end_ms)
        sql = f"SELECT DISTINCT unnest(json_keys(Labels)) FROM samples WHERE {where}"
        return [r[0] for r in self.store.read(sql, args)]

    def label_key_values(self, key: str, start_ms: int, end_ms: int) -> list[str]:
        # ``key`` is a valid label name (letters, digits, _): quoted in the path, and a parameter.
        where, args = self._where(None, None, start_ms, end_ms)
        sql = f"SELECT DISTINCT json_extract_string(Labels, ?) AS v FROM samples WHERE {where}"
        return [r[0] for r in self.store.read(f"SELECT v FROM ({sql}) WHERE v IS NOT NULL", [f'$."{key}"', *args])]

    def series(self, names, job, start_ms: int, end_ms: int, limit: int) -> list[tuple]:
        """At most ``limit`` series: (key, MetricName, Target, Labels, samples in the range)."""
        where, args = self._where(names, job, start_ms, end_ms)
        return self.store.read(
            # grouped by the key: one 64-bit hash a row, not three strings (1.8x faster, measured)
            f"SELECT {KEY} AS k, any_value(MetricName), any_value(Target), any_value(Labels), count(*)"
            f" FROM samples WHERE {where} GROUP BY k LIMIT ?",
            [*args, limit],
        )

    def samples(self, names, job, start_ms: int, end_ms: int, keys: list[int] | None) -> pa.Table:
        """The samples (k, t: ms, v) of the series (of ``keys``, if given), in the order written:
        no ORDER BY, whose sort was most of a long read (``StoredSamples`` groups them by series)."""
        where, args = self._where(names, job, start_ms, end_ms)
        if keys is not None:
            where += f" AND {KEY} IN (SELECT unnest(?::UBIGINT[]))"
            args.append(keys)
        return self.store.read_arrow(
            f"SELECT {KEY} AS k, epoch_us(Timestamp) // 1000 AS t, Value AS v FROM samples WHERE {where}",
            args,
        )

    def rollups(self, resolution_ms: int, start_ms: int, end_ms: int, match):
        """The rollups of ``[start_ms, end_ms)`` of the series ``match()`` picks, with where they
        begin and end (``store.rollups.Rollups.read``), or None: not covered."""
        return self.store.read_rollups(resolution_ms, start_ms, end_ms, match)
