"""``StoredSamples``' SQL on ClickHouse, over ``planoscope_samples`` (``DateTime64(3)``, ordered
by MetricName, Target, Timestamp: the pushed-down name and job read only their granules). Every
value is a server-side parameter; the table is the placeholder ``ClickHouseStore.read`` fills."""

from __future__ import annotations

import pyarrow as pa

from ..store import SpanStore

KEY = "cityHash64(MetricName, Target, Labels)"  # a series' key: 64 bits, for its samples to carry instead of its labels
SAMPLES = "{db:Identifier}.{planoscope_samples:Identifier}"


class ClickHouseSamples:
    def __init__(self, store: SpanStore):
        self.store = store

    def _where(self, names: list[str] | None, job: str | None, start_ms: int, end_ms: int) -> tuple[str, dict]:
        sql = "Timestamp >= fromUnixTimestamp64Milli({start:Int64}) AND Timestamp <= fromUnixTimestamp64Milli({end:Int64})"
        params: dict = {"start": start_ms, "end": end_ms}
        if names is not None:
            sql += " AND MetricName IN {names:Array(String)}"
            params["names"] = names
        if job is not None:
            sql += " AND Target IN ({job:String}, '')"  # the rules' rows carry their job in Labels
            params["job"] = job
        return sql, params

    def names(self, start_ms: int, end_ms: int) -> list[str]:
        where, params = self._where(None, None, start_ms, end_ms)
        return [r[0] for r in self.store.read(f"SELECT DISTINCT MetricName FROM {SAMPLES} WHERE {where}", params)]

    def targets(self, start_ms: int, end_ms: int) -> list[str]:
        where, params = self._where(None, None, start_ms, end_ms)
        return [r[0] for r in self.store.read(f"SELECT DISTINCT Target FROM {SAMPLES} WHERE {where}", params)]

    def label_keys(self, start_ms: int, end_ms: int) -> list[str]:
        where, params = self._where(None, None, start_ms, end_ms)
        sql = f"SELECT DISTINCT arrayJoin(JSONExtractKeys(Labels)) FROM {SAMPLES} WHERE {where}"
        return [r[0] for r in self.store.read(sql, params)]

    def label_key_values(self, key: str, start_ms: int, end_ms: int) -> list[str]:
        where, params = self._where(None, None, start_ms, end_ms)
        sql = (
            f"SELECT DISTINCT JSONExtractString(Labels, {{key:String}}) FROM {SAMPLES}"
            f" WHERE {where} AND JSONHas(Labels, {{key:String}})"
        )
        return [r[0] for r in self.store.read(sql, {**params, "key": key})]

    def series(self, names, job, start_ms: int, end_ms: int, limit: int) -> list[tuple]:
        """At most ``limit`` series: (key, MetricName, Target, Labels, samples in the range)."""
        where, params = self._where(names, job, start_ms, end_ms)
        return self.store.read(
            f"SELECT {KEY}, MetricName, Target, Labels, count() FROM {SAMPLES} WHERE {where}"
            " GROUP BY MetricName, Target, Labels LIMIT {limit:UInt64}",
            {**params, "limit": limit},
        )

    def samples(self, names, job, start_ms: int, end_ms: int, keys: list[int] | None) -> pa.Table:
        """The samples (k, t: ms, v) of the series (of ``keys``, if given), by series then time."""
        where, params = self._where(names, job, start_ms, end_ms)
        if keys is not None:
            where += f" AND {KEY} IN {{keys:Array(UInt64)}}"
            params["keys"] = keys
        return self.store.read_arrow(
            f"SELECT {KEY} AS k, toUnixTimestamp64Milli(Timestamp) AS t, Value AS v FROM {SAMPLES}"
            f" WHERE {where} ORDER BY k, t",
            params,
        )
