"""The DuckDB store's samples head (``store.head``): the last hours of ``samples`` in memory. A
PromQL query over them answers exactly what the table answers (samples stored before the start,
appended since, out of order, deleted by retention, new series), and past its limit, or before
its window, the table answers."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from planoscope.promql import Engine, render
from planoscope.promql.samples import StoredSamples
from planoscope.scrape.scraper import SCHEMA
from planoscope.store import DuckDBStore
from planoscope.store.head import SamplesHead

NOW_MS = int(time.time()) // 15 * 15 * 1000
START_MS = NOW_MS - 2 * 3600 * 1000  # inside the head's window (3 h)
INSTANCES = {"envoy": "127.0.0.1:9901"}
QUERIES = [
    "rate(rq_total[1m])",
    'sum by (code) (rate(rq_total{job="envoy"}[5m]))',
    "histogram_quantile(0.9, sum by (le) (rate(lat_bucket[5m])))",
    '{__name__=~"rq_total|temp", code!="500"}',
    "max_over_time(temp[10m])",
    'count({__name__=~".+"})',
]


def _table(rows: list[tuple]) -> pa.Table:
    return pa.table([pa.array([r[k] for r in rows]) for k in range(5)], schema=SCHEMA)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


def _empty_head() -> SamplesHead:
    """A head on its own, whose table holds nothing: only what is appended to it."""
    return SamplesHead(lambda since: ([], pa.table({"k": [], "t": [], "v": []})), clock=lambda: 1_000)


def _samples(rows: list[tuple[int, str, float]]) -> pa.Table:
    """Rows of samples from (ms, metric name, value), of one target and no labels."""
    return _table([(_at(t), "job", name, "{}", v) for t, name, v in rows])


def _scrapes(first: int, last: int) -> pa.Table:
    """Scrapes ``first`` … ``last - 1`` (15 s apart from START_MS) of a counter (a reset at 300),
    a histogram and a gauge."""
    rows = []
    for i in range(first, last):
        ts = _at(START_MS + i * 15_000 + i % 4)
        rows.append((ts, "envoy", "rq_total", json.dumps({"code": "200"}), float(i * 3 if i < 300 else i - 300)))
        rows.append((ts, "envoy", "rq_total", json.dumps({"code": "500"}), float(i // 7)))
        for le, share in (("0.1", 0.4), ("1", 0.8), ("+Inf", 1.0)):
            rows.append((ts, "envoy", "lat_bucket", json.dumps({"le": le}), float(int(i * 5 * share))))
        rows.append((ts, "envoy", "temp", "{}", 20.0 + i % 11))
    return _table(rows)


def _answers(store: DuckDBStore, *, head: bool) -> list:
    q = StoredSamples(store, INSTANCES)
    if not head:
        q.head = None
    engine = Engine()
    return [render(engine.range_query(q, e, START_MS, NOW_MS, 30_000)) for e in QUERIES]


@pytest.fixture
def store(tmp_path):
    """Samples of the first 90 minutes stored before the store opens; the rest appended after."""
    s = DuckDBStore(tmp_path)
    s.append_samples(_scrapes(0, 360))
    s.close()
    s = DuckDBStore(tmp_path)
    s.append_samples(_scrapes(360, 420))
    yield s
    s.close()


def test_a_query_of_the_last_hours_reads_the_head_and_answers_as_the_table(store):
    head = store.samples_head
    assert not head.covers(START_MS)  # not read yet: the table answers
    store.samples_head.ensure_loaded()
    assert head.covers(START_MS)
    # 420 scrapes of 6 series, those appended since the start (also in the table) taken once
    assert head.held == 420 * 6
    # after the start: a sample late (before the series' last), and a scrape again at its time
    store.append_samples(_table([(_at(START_MS + 400 * 15_000 + 7_000), "envoy", "temp", "{}", 99.0)]))
    store.append_samples(_scrapes(419, 420))
    assert head.held == 420 * 6 + 1  # the late sample in its place; the repeated scrape taken once
    # the head answers (its timelines give the same-times groups; the table's answer has none)
    assert StoredSamples(store, INSTANCES).select_block([], START_MS, NOW_MS).groups is not None
    with_head, from_table = _answers(store, head=True), _answers(store, head=False)
    assert all(a["result"] for a in with_head), "every query selects something: the comparison proves something"
    assert with_head == from_table


def test_a_new_series_is_seen_by_the_next_query(store):
    store.samples_head.ensure_loaded()
    before = _answers(store, head=True)
    store.append_samples(_table([(_at(NOW_MS - 60_000), "envoy", "temp", '{"room": "b"}', 3.0)]))
    after = _answers(store, head=True)
    assert len(after[3]["result"]) == len(before[3]["result"]) + 1  # the selector by regex
    assert after == _answers(store, head=False)


def test_retention_drops_from_the_head_what_it_deletes(store):
    head = store.samples_head
    head.ensure_loaded()
    cutoff = _at(START_MS + 3600 * 1000)
    deleted = store.delete_before("samples", cutoff, 10**9)
    assert deleted == 240 * 6
    assert head.held == 180 * 6
    assert head.covers(START_MS + 3600 * 1000) and not head.covers(START_MS)
    q = StoredSamples(store, INSTANCES)
    found = q.select_block([], START_MS + 3600 * 1000, NOW_MS)
    assert len(found.ts) == 180 * 6 and found.ts.min() >= START_MS + 3600 * 1000
    assert _answers(store, head=True) == _answers(store, head=False)


def test_past_its_limit_the_head_gives_up_and_the_table_answers(store):
    head = store.samples_head
    head.max_samples = 1000
    head.ensure_loaded()
    assert not head.covers(NOW_MS) and head.held == 0
    store.append_samples(_scrapes(419, 420))  # given up: appends are not kept either
    assert head.held == 0
    assert StoredSamples(store, INSTANCES).select_block([], START_MS, NOW_MS).groups is None  # the table's
    assert _answers(store, head=True) == _answers(store, head=False)


def test_a_range_before_its_window_reads_the_table(store):
    store.samples_head.ensure_loaded()
    four_hours_ago = NOW_MS - 4 * 3600 * 1000
    assert not store.samples_head.covers(four_hours_ago)
    found = StoredSamples(store, INSTANCES).select_block([], four_hours_ago, NOW_MS)
    assert found.groups is None and len(found.ts) == 420 * 6  # the table's answer, every sample


def test_views_cut_each_series_at_the_range_whatever_the_series_before_it():
    """A view's bounds are searched once per timeline (the series of one scrape share their
    times): series of other times, in any order, and ranges ending exactly on a sample, must
    each be cut as two binary searches in their own times would."""
    head = _empty_head()
    times = {
        "g": [500, 1_000, 2_000, 3_000],
        "a": [1_000, 2_000, 3_000, 4_000],
        "b": [1_000, 2_000, 3_000, 4_000],
        "c": [1_500, 2_500, 3_500],
        "d": [4_000, 5_000],
        "f": [1_000, 2_000, 3_000, 4_000, 5_000, 6_000],
    }
    head.append(_samples(sorted((t, name, float(t)) for name, ts in times.items() for t in ts)))
    keys = [next(k for k, name, _, _ in head.catalog([n], None)[1] if name == n) for n in times]
    for start, end in [(2_000, 3_000), (1_999, 3_001), (0, 10_000), (4_000, 4_000), (3_001, 3_999), (6_001, 9_000)]:
        for order in (keys, keys[::-1], [keys[1], keys[3], keys[2], keys[5], keys[4]]):
            got = head.views(order, start, end)
            for key, (ts, vs, _) in zip(order, got):
                name = list(times)[keys.index(key)]
                want = np.array([t for t in times[name] if start <= t <= end], np.int64)
                assert ts.tolist() == want.tolist(), (name, start, end)
                assert vs.tolist() == want.astype(float).tolist()


def test_series_of_one_timeline_hold_the_same_times_through_appends_late_samples_and_trims():
    """The head numbers the series' timelines so that queries need not compare their times: two
    series of one timeline must hold the same times, whatever the appends (scrapes of some of
    the series, late samples, repeated times) and trims; and a scrape's series share one."""
    rng = np.random.default_rng(5)
    head = _empty_head()
    names = [f"s{i}" for i in range(12)]

    def append(rows):
        head.append(_samples([(t, n, 1.0) for t, n in rows]))

    t = 1_000
    for step in range(60):
        t += 1_000
        scraped = [n for n in names if rng.random() < 0.9]
        rows = [(t, n) for n in scraped]
        if step % 7 == 3:  # a late sample, and a time some series already hold
            rows += [(t - 1_500, scraped[0]), (t - 1_000, scraped[-1])]
        append(rows)
        if step % 20 == 19:
            head.trim(datetime.fromtimestamp((t - 10_000) / 1000, UTC).replace(tzinfo=None))
        keys = [k for k, _, _, _ in head.catalog(None, None)[1]]
        views = head.views(keys, 0, 10**12)
        by_timeline = {}
        for ts, _, timeline in views:
            by_timeline.setdefault(timeline, []).append(ts.tolist())
        for timeline, all_ts in by_timeline.items():
            assert all(ts == all_ts[0] for ts in all_ts), (step, timeline)
    # Series scraped together share a timeline: here two, those scraped once more and the others.
    head = _empty_head()
    for t in range(1_000, 6_000, 1_000):
        append([(t, n) for n in names])
    append([(6_000, n) for n in names[:5]])
    keys = [k for k, _, _, _ in head.catalog(None, None)[1]]
    timelines = [timeline for _, _, timeline in head.views(keys, 0, 10**12)]
    assert len(set(timelines[:5])) == 1 and len(set(timelines[5:])) == 1 and timelines[0] != timelines[5]


def test_the_start_up_read_puts_series_of_the_same_times_on_one_timeline(tmp_path):
    s = DuckDBStore(tmp_path)
    times = [START_MS + i * 15_000 for i in range(10)]
    other = [*times[:4], times[4] + 1, *times[5:]]  # the same count and ends, one time apart
    rows = [(_at(t), "envoy", name, "{}", 1.0) for name, ts in (("a", times), ("b", times), ("c", other)) for t in ts]
    s.append_samples(_table(rows))
    s.close()
    s = DuckDBStore(tmp_path)
    try:
        head = s.samples_head
        head.ensure_loaded()
        rows = head.catalog(None, None)[1]
        by_name = {name: key for key, name, _, _ in rows}
        (a, b, c) = head.views([by_name["a"], by_name["b"], by_name["c"]], 0, NOW_MS + 1)
        assert a[2] == b[2] != c[2]
        assert a[0].tolist() == times and c[0].tolist() == other
    finally:
        s.close()
