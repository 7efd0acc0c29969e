"""``StoredSamples``, the Queryable over scraped samples, on a real store of each kind: the series
Prometheus would have stored (job, instance, exported_* on a collision), what is pushed down
(names by regex, job), the limits checked before loading, the listings; and the engine over it
giving what it gives over the same samples in memory."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from planoscope.promql import Engine, LimitExceeded, Limits, Matcher, MemoryStorage, render
from planoscope.promql.samples import StoredSamples, series_labels
from planoscope.scrape.scraper import SCHEMA, instance_of
from planoscope.store import open_store
from support.clickhouse_fixtures import STORES

T0 = 1_767_225_600_000  # 2026-01-01, ms
EPOCH = datetime(1970, 1, 1)
INSTANCES = {"envoy": "127.0.0.1:9901", "brightstaff": "127.0.0.1:9092"}


def _rows() -> list[tuple]:
    """Two targets, 40 scrapes 15 s apart (+ a few ms of jitter), a counter with a reset, a histogram."""
    out = []
    for i in range(40):
        for target, jitter in (("envoy", 3), ("brightstaff", 7)):
            ts = EPOCH + timedelta(milliseconds=T0 + i * 15_000 + jitter * (i % 5), microseconds=250)
            v = float(i * 10 if i < 25 else (i - 25) * 4)
            out.append((ts, target, "rq_total", json.dumps({"code": "200", "job": "inner"}), v))
            out.append((ts, target, "rq_total", json.dumps({"code": "500"}), float(i)))
            for le, share in (("0.1", 0.5), ("1", 0.9), ("+Inf", 1.0)):
                out.append((ts, target, "lat_bucket", json.dumps({"le": le}), math.floor(i * 10 * share)))
            out.append((ts, target, "temp", json.dumps({"instance": "sensor-1"}), 20 + math.sin(i)))
    return out


@pytest.fixture(scope="module", params=STORES)
def store(request, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("samples")
    if request.param == "duckdb":
        s = open_store("duckdb", data_dir)
    else:
        s = open_store(request.getfixturevalue("module_clickhouse_database").url, data_dir)
    rows = _rows()
    s.append_samples(pa.table([pa.array([r[k] for r in rows]) for k in range(5)], schema=SCHEMA))
    yield s
    s.close()


def _memory() -> MemoryStorage:
    """The same samples in memory, labelled by hand as Prometheus would have them."""
    mem = MemoryStorage()
    series: dict[tuple, tuple[list, list]] = {}
    for ts, target, name, labels, v in _rows():
        key = tuple(sorted(series_labels(name, target, json.loads(labels), INSTANCES[target]).items()))
        ms = (ts - EPOCH) // timedelta(milliseconds=1)
        series.setdefault(key, ([], []))[0].append(ms)
        series[key][1].append(v)
    for key, (ts, vs) in series.items():
        mem.add(dict(key), ts, vs)
    return mem


def test_series_as_prometheus_stores_them(store):
    q = StoredSamples(store, INSTANCES)
    found = list(q.select([Matcher("__name__", "=", "rq_total"), Matcher("code", "=", "200")], T0, T0 + 10**7))
    labels = sorted(tuple(sorted(ls.items())) for ls, _, _ in found)
    assert labels == [
        (("__name__", "rq_total"), ("code", "200"), ("exported_job", "inner"), ("instance", i), ("job", job))
        for job, i in sorted(INSTANCES.items())
    ]
    ts, vs = next((t, v) for ls, t, v in found if ls["job"] == "envoy")
    assert ts[0] == T0 and ts[1] == T0 + 15_000 + 3  # whole milliseconds, the 250 µs dropped
    assert np.all(np.diff(ts) > 0) and vs[24] == 240 and vs[25] == 0
    temp = q.series([[Matcher("__name__", "=", "temp")]], T0, T0 + 10**7)
    assert {s["exported_instance"] for s in temp} == {"sensor-1"} and {s["instance"] for s in temp} == set(
        INSTANCES.values()
    )


def test_instance_of():
    assert instance_of("http://127.0.0.1:9901/stats/prometheus") == "127.0.0.1:9901"
    assert instance_of("https://edge.example/metrics") == "edge.example:443"
    assert instance_of("http://[::1]:9092/metrics") == "[::1]:9092"


@pytest.mark.parametrize(
    "query",
    [
        "rate(rq_total[1m])",
        "sum by (job, code) (increase(rq_total[5m]))",
        'histogram_quantile(0.9, sum by (le, job) (rate(lat_bucket{job="envoy"}[2m])))',
        '{__name__=~"rq_.+|temp", job!="envoy"}',
        'avg_over_time(temp{exported_instance="sensor-1"}[3m])',
        'count by (__name__) ({__name__!~"lat.*", job=~".+"})',
        "resets(rq_total[10m])",
    ],
)
def test_the_engine_answers_as_over_the_same_samples_in_memory(store, query):
    q, mem, engine = StoredSamples(store, INSTANCES), _memory(), Engine()
    start, end = T0 + 120_000, T0 + 580_000
    assert render(engine.range_query(q, query, start, end, 20_000)) == render(
        engine.range_query(mem, query, start, end, 20_000)
    )
    assert render(engine.instant_query(q, query, end)) == render(engine.instant_query(mem, query, end))


def test_limits_are_checked_before_loading(store):
    matchers = [Matcher("__name__", "=~", "rq_total|temp")]
    assert len(list(StoredSamples(store, INSTANCES, Limits(max_series=6)).select(matchers, T0, T0 + 10**7))) == 6
    with pytest.raises(LimitExceeded, match="too many series"):
        StoredSamples(store, INSTANCES, Limits(max_series=5)).select(matchers, T0, T0 + 10**7)
    with pytest.raises(LimitExceeded, match="too many samples"):
        StoredSamples(store, INSTANCES, Limits(max_samples=239)).select(matchers, T0, T0 + 10**7)
    with pytest.raises(LimitExceeded, match="too many series"):
        StoredSamples(store, INSTANCES, Limits(max_series=3)).series([[]], T0, T0 + 10**7)


def test_listings(store):
    q = StoredSamples(store, INSTANCES)
    span = (T0, T0 + 10**7)
    assert q.label_names([], *span) == [
        "__name__",
        "code",
        "exported_instance",
        "exported_job",
        "instance",
        "job",
        "le",
    ]
    assert q.label_names([[Matcher("__name__", "=", "temp")]], *span) == [
        "__name__",
        "exported_instance",
        "instance",
        "job",
    ]
    assert q.label_values("__name__", [], *span) == ["lat_bucket", "rq_total", "temp"]
    assert q.label_values("job", [], *span) == ["brightstaff", "envoy"]
    assert q.label_values("instance", [], *span) == sorted(INSTANCES.values())
    assert q.label_values("exported_job", [], *span) == ["inner"]
    assert q.label_values("le", [], *span) == ["+Inf", "0.1", "1"]
    assert q.label_values("code", [[Matcher("job", "=", "envoy"), Matcher("code", "!=", "200")]], *span) == ["500"]
    assert q.label_values("no such", [], *span) == []
    assert q.series([[Matcher("__name__", "=", "rq_total")]], T0 + 10**8, T0 + 2 * 10**8) == []  # out of range
    assert q.label_names([], T0 + 10**8, T0 + 2 * 10**8) == []


def test_samples_written_out_of_time_order_or_twice_read_in_time_order_the_later_kept(tmp_path):
    """DuckDB's samples are read as written (no ORDER BY) and put in series order by a stable
    sort: a series written late (a backfill) is sorted by time, and of two samples in one
    millisecond the one written later is kept, as a TSDB keeps."""
    s = open_store("duckdb", tmp_path)

    def write(rows):
        s.append_samples(pa.table([pa.array([r[k] for r in rows]) for k in range(5)], schema=SCHEMA))

    at = [EPOCH + timedelta(milliseconds=T0 + i * 15_000) for i in range(6)]
    write([(at[i], "envoy", "up", "{}", 1.0) for i in (3, 4, 5)] + [(at[i], "envoy", "temp", "{}", i) for i in (0, 1)])
    write([(at[i], "envoy", "up", "{}", 1.0) for i in (0, 1, 2)] + [(at[1], "envoy", "temp", "{}", 10.0)])
    try:
        found = StoredSamples(s, INSTANCES).select_block([], T0, T0 + 10**6)
        assert [ls[0][1] for ls in found.labels] == ["temp", "up"]  # __name__, in label-set order
        temp, up = (slice(a, b) for a, b in zip(found.starts[:-1], found.starts[1:]))
        assert list(found.ts[up]) == [T0 + i * 15_000 for i in range(6)]
        assert list(found.ts[temp]) == [T0, T0 + 15_000] and list(found.values[temp]) == [0.0, 10.0]
    finally:
        s.close()
