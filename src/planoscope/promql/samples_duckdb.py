"""``StoredSamples``' SQL on DuckDB, over the ``samples`` table (Timestamp in microseconds, naive
UTC). Every value is a parameter; a range is ``[start_ms, end_ms]`` in whole milliseconds, as
Prometheus stores them (a sample at 1.5 ms is at 1 ms)."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..store import SpanStore

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

    def count(self, names, job, start_ms: int, end_ms: int) -> tuple[int, int]:
        where, args = self._where(names, job, start_ms, end_ms)
        row = self.store.read(
            f"SELECT count(DISTINCT (MetricName, Target, Labels)), count(*) FROM samples WHERE {where}", args
        )
        return int(row[0][0]), int(row[0][1])

    def samples(self, names, job, start_ms: int, end_ms: int) -> list[tuple]:
        # Both lists in one order, by time then value, so that they stay aligned.
        where, args = self._where(names, job, start_ms, end_ms)
        return self.store.read(
            "SELECT MetricName, Target, Labels, list(epoch_us(Timestamp) // 1000 ORDER BY Timestamp, Value),"
            f" list(Value ORDER BY Timestamp, Value) FROM samples WHERE {where} GROUP BY MetricName, Target, Labels",
            args,
        )

    def series(self, names, job, start_ms: int, end_ms: int, limit: int) -> list[tuple]:
        where, args = self._where(names, job, start_ms, end_ms)
        return self.store.read(
            f"SELECT DISTINCT MetricName, Target, Labels FROM samples WHERE {where} LIMIT ?", [*args, limit]
        )
