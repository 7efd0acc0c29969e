"""The DuckDB store's rollups (``store.rollups``): PromQL read from them answers what it answers
from the raw samples, bit for bit, on scrapes with jitter, missed scrapes, counter resets, NaNs,
staleness markers, late writes and retention; and a query Grafana sends over days reads them."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from planoscope.promql import Engine, render
from planoscope.promql.samples import StoredSamples
from planoscope.promql.storage import STALE_NAN
from planoscope.scrape.scraper import SCHEMA
from planoscope.store import open_store
from planoscope.store.rollups import thin

H = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, ms
HOURS = 8
EPOCH = datetime(1970, 1, 1)
INSTANCES = {"envoy": "127.0.0.1:9901", "brightstaff": "127.0.0.1:9092"}


def _rows(rng: np.random.Generator, start_ms: int, end_ms: int) -> list[tuple]:
    """Two targets scraped every 15 s with up to 40 ms of jitter: counters (one reset every ~2 h,
    one missing a scrape now and then), a histogram, a gauge, a series that goes stale for an hour
    and comes back, and a counter with a NaN."""
    out = []
    totals: dict[str, float] = {}
    for i, t in enumerate(range(start_ms, end_ms, 15_000)):
        for target in ("envoy", "brightstaff"):
            ts = t + int(rng.integers(0, 40)) + (7 if target == "brightstaff" else 0)

            def add(name, labels, v, target=target, ts=ts):
                out.append((EPOCH + timedelta(milliseconds=ts), target, name, json.dumps(labels), float(v)))

            for code, speed in (("200", 9), ("500", 1)):
                key = f"{target}{code}"
                totals[key] = 0.0 if (i % 500 == 499 and code == "200") else totals.get(key, 0.0) + rng.poisson(speed)
                if not (code == "500" and i % 37 == 5):  # a missed scrape now and then
                    add("rq_total", {"code": code}, totals[key])
            n = totals[f"{target}200"]
            for le, share in (("100", 0.5), ("1000", 0.9), ("+Inf", 1.0)):
                add("lat_bucket", {"le": le}, math.floor(n * share))
            add("temp", {}, 20 + 5 * math.sin(i / 50) + rng.normal())
            if target == "envoy":
                gone = 2 * 240 <= i < 3 * 240
                if i == 2 * 240:
                    add("flaky_total", {}, STALE_NAN)
                elif not gone:
                    add("flaky_total", {}, i if i < 2 * 240 else i - 2 * 240)
                add("nan_total", {}, math.nan if i == 300 else i)
    return out


def _write(store, rows) -> None:
    store.append_samples(pa.table([pa.array([r[k] for r in rows]) for k in range(5)], schema=SCHEMA))


def _filled(data_dir):
    s = open_store("duckdb", data_dir)
    rng = np.random.default_rng(11)
    for h in range(HOURS):  # an hour a write, as a scrape writes them: in time order
        _write(s, _rows(rng, T0 + h * H, T0 + (h + 1) * H))
    while s.compact_rollups(T0 + (HOURS + 1) * H):
        pass
    return s


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Read only: the tests that write have their own (``written``)."""
    s = _filled(tmp_path_factory.mktemp("rollups"))
    yield s
    s.close()


@pytest.fixture
def written(tmp_path):
    s = _filled(tmp_path)
    yield s
    s.close()


class Recording(StoredSamples):
    """StoredSamples remembering the raw reads it made (start, end)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.raw: list[tuple[int, int]] = []

    def select_block(self, matchers, start_ms, end_ms):
        self.raw.append((start_ms, end_ms))
        return super().select_block(matchers, start_ms, end_ms)


def _both(store, query: str, start: int, end: int, step: int):
    thinned = Recording(store, INSTANCES)
    raw = StoredSamples(store, INSTANCES)
    raw.rollup_resolutions = ()
    engine = Engine()
    return (
        render(engine.range_query(thinned, query, start, end, step)),
        render(engine.range_query(raw, query, start, end, step)),
        thinned.raw,
    )


QUERIES = [
    "rate(rq_total[{w}])",
    "increase(rq_total[{w}])",
    "sum by (code) (rate(rq_total[{w}]))",
    "histogram_quantile(0.9, sum by (le, job) (rate(lat_bucket[{w}])))",
    "delta(temp[{w}])",
    "resets(rq_total[{w}])",
    "count_over_time(rq_total[{w}])",
    "last_over_time(temp[{w}])",
    "present_over_time(flaky_total[{w}])",
    "rate(flaky_total[{w}])",
    "rate(nan_total[{w}])",
    "rq_total",
    "sum(temp) by (job)",
    "flaky_total",
    "timestamp(rq_total)",
]


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize(
    "step, window",
    [(300_000, "5m"), (300_000, "5m15s"), (600_000, "10m"), (H, "1h15s"), (H, "1h"), (2 * H, "2h15s")],
)
def test_rollups_answer_as_the_raw_samples(store, query, step, window):
    """Grafana's steps (range aligned to the step) and its ``$__rate_interval`` (a step and a
    scrape): the rollups answer, and exactly as the raw samples do."""
    start, end = T0 + H, T0 + HOURS * H
    thinned, raw, raw_reads = _both(store, query.format(w=window), start, end, step)
    assert thinned == raw
    assert raw["result"], "the query found nothing: a test of nothing"
    # raw samples read only where the rollups end: before the first sample, after the last
    assert all(e < T0 or s >= T0 + HOURS * H for s, e in raw_reads), f"read raw samples: {raw_reads}"


@pytest.mark.parametrize(
    "query, start, step",
    [
        ("rate(rq_total[5m])", T0 + H + 7_000, 300_000),  # edges inside buckets
        ("rate(rq_total[7m])", T0 + H, 300_000),
        ("rq_total", T0 + H + 100_000, 300_000),
        ("irate(rq_total[5m])", T0 + H, 300_000),  # needs more than a rollup keeps
        ("changes(temp[1h])", T0 + H, H),
        ("rate(rq_total[1m])", T0 + H, 60_000),  # finer than the rollups
    ],
)
def test_queries_the_rollups_cannot_answer_read_the_raw_samples(store, query, start, step):
    thinned, raw, raw_reads = _both(store, query, start, T0 + HOURS * H, step)
    assert thinned == raw and raw["result"]
    assert any(s < T0 + HOURS * H for s, _ in raw_reads)


def test_a_late_write_and_retention_are_followed(written):
    store = written
    query, start, end = "sum by (code) (increase(rq_total[1h15s]))", T0 + 2 * H, T0 + HOURS * H
    before, _, _ = _both(store, query, start, end, H)
    # a backfilled sample in a thinned hour: a reset the rollups have not seen
    late = EPOCH + timedelta(milliseconds=T0 + 4 * H + 1_800_000 + 1)
    _write(store, [(late, "envoy", "rq_total", json.dumps({"code": "200"}), 0.0)])
    assert store.rollups.watermark(H) == T0 + 4 * H
    thinned, raw, _ = _both(store, query, start, end, H)  # read again from the raw samples
    assert thinned == raw and thinned != before
    while store.compact_rollups(T0 + (HOURS + 1) * H):
        pass
    thinned, raw, raw_reads = _both(store, query, start, end, H)
    assert thinned == raw and all(e < T0 or s >= end for s, e in raw_reads)
    # retention: the first three hours and a half go, the rollups of every bucket it reached too
    cutoff = EPOCH + timedelta(milliseconds=T0 + 3 * H + 1_800_000)
    while store.delete_before("samples", cutoff, 100_000):
        pass
    assert store.rollups.state[H][0] == T0 + 4 * H
    for start in (T0 + 4 * H, T0 + 5 * H):
        thinned, raw, _ = _both(store, query, start, end, H)
        assert thinned == raw and raw["result"]


def test_rollups_survive_a_restart(tmp_path):
    s = open_store("duckdb", tmp_path)
    rng = np.random.default_rng(3)
    _write(s, _rows(rng, T0, T0 + 3 * H))
    while s.compact_rollups(T0 + 4 * H):
        pass
    state = dict(s.rollups.state)
    s.close()
    s = open_store("duckdb", tmp_path)
    try:
        assert s.rollups.state == state and state[H] == (T0, T0 + 3 * H)
        assert not s.compact_rollups(T0 + 4 * H)  # nothing left to do
        thinned, raw, raw_reads = _both(s, "sum(rate(rq_total[1h15s]))", T0 + H, T0 + 3 * H, H)
        assert thinned == raw and raw["result"] and all(e < T0 or s >= T0 + 3 * H for s, e in raw_reads)
    finally:
        s.close()


def test_thin_keeps_the_edges_the_turns_and_the_markers():
    ts = np.array([0, 10, 20, 30, 40, 50, 300_000, 300_010], np.int64)
    vs = np.array([1, 2, 3, 1, 2, STALE_NAN, 5, 6], np.float64)
    kept, rank, size = thin(np.zeros(len(ts), np.int64), ts, vs, 300_000)
    # first (0), the reset (20 → 30), the last two non-stale (30, 40), the marker (50), the next
    # bucket's two; 10 climbs from 1 to 3: left out
    assert kept.tolist() == [0, 2, 3, 4, 5, 6, 7]
    assert rank.tolist() == [0, 2, 3, 4, 5, 0, 1] and size.tolist() == [5, 5, 5, 5, 5, 2, 2]
    ts = np.arange(0, 300_000, 15_000)
    kept, rank, _ = thin(np.zeros(len(ts), np.int64), ts, ts.astype(np.float64), 300_000)
    assert kept.tolist() == [0, 18, 19] and rank.tolist() == [0, 18, 19]
