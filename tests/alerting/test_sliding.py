"""``SlidingSamples``, what a rule group reads kept between evaluations and topped up, on a real
DuckDB store: each shifted window gives exactly what a whole read of it gives, samples committed
late within the margin included; one later than the margin shows at the next whole read; a
window over the limit fails as a whole read does."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from planoscope.alerting.sliding import SlidingSamples
from planoscope.promql import LimitExceeded, Limits, Matcher
from planoscope.promql.samples import StoredSamples
from planoscope.scrape.scraper import SCHEMA
from planoscope.store import open_store

T0 = 1_767_225_600_000  # ms
EPOCH = datetime(1970, 1, 1)
HOUR = 3_600_000


@pytest.fixture
def store(tmp_path):
    s = open_store("duckdb", tmp_path)
    yield s
    s.close()


def _write(store, rows):
    """rows: (ms, metric, labels, value)."""
    store.append_samples(
        pa.table(
            [
                pa.array([EPOCH + timedelta(milliseconds=t) for t, *_ in rows], pa.timestamp("us")),
                pa.array(["job"] * len(rows)),
                pa.array([m for _, m, _, _ in rows]),
                pa.array([json.dumps(ls) for _, _, ls, _ in rows]),
                pa.array([float(v) for *_, v in rows]),
            ],
            schema=SCHEMA,
        )
    )


def _scrape(t: int) -> list[tuple]:
    """One scrape at ``t``: a counter in two series (one only in the first hour), and another metric."""
    rows = [(t, "rq_total", {"code": "200"}, t // 1000), (t, "other", {}, 1)]
    if t < T0 + HOUR:
        rows.append((t, "rq_total", {"code": "500"}, t // 10_000))
    return rows


def _as_dict(series):
    return {tuple(sorted(ls.items())): (ts.tolist(), vs.tolist()) for ls, ts, vs in series}


def test_shifted_windows_read_as_a_whole_read_would(store):
    _write(store, [r for t in range(T0, T0 + HOUR, 15_000) for r in _scrape(t)])
    sliding = SlidingSamples()
    matchers = [Matcher("__name__", "=", "rq_total"), Matcher("code", "=~", "2..|5..")]
    end = T0 + HOUR - 1
    for step in range(300):  # 75 minutes of evaluations every 15 s, a scrape written before each
        sliding.evaluating(StoredSamples(store))
        got = _as_dict(sliding.select(matchers, end - HOUR, end))
        assert got == _as_dict(StoredSamples(store).select(matchers, end - HOUR, end)), step
        end += 15_000
        rows = _scrape(end - 5_000)
        if step % 7 == 0:  # a sample committed 40 s late: within the margin, it is not missed
            rows += [(end - 40_000 - 1, "rq_total", {"code": "200"}, -1)]
        _write(store, rows)
    assert {k for k in got} == {(("__name__", "rq_total"), ("code", "200"), ("job", "job"))}  # 500's hour is over


def test_a_sample_later_than_the_margin_shows_at_the_next_whole_read(store):
    _write(store, [r for t in range(T0, T0 + HOUR, 15_000) for r in _scrape(t)])
    sliding = SlidingSamples(margin_ms=30_000, refresh_ms=120_000)
    matchers = [Matcher("__name__", "=", "other")]
    end = T0 + HOUR
    sliding.evaluating(StoredSamples(store))
    sliding.select(matchers, end - HOUR, end)
    _write(store, [(end - 50_000 - 1, "other", {}, 2)])  # 50 s late
    seen = []
    for _ in range(10):
        end += 15_000
        sliding.evaluating(StoredSamples(store))
        [(_, ts, vs)] = sliding.select(matchers, end - HOUR, end)
        seen.append(2.0 in vs.tolist())
    assert seen[0] is False and seen[-1] is True  # missed at first, read once the window is read whole
    assert seen.index(True) <= 120_000 // 15_000


def test_a_window_over_the_limit_fails_as_a_whole_read(store):
    _write(store, [(t, "other", {}, 1) for t in range(T0, T0 + HOUR, 15_000)])  # 240 samples
    sliding = SlidingSamples()
    matchers = [Matcher("__name__", "=", "other")]
    limits = Limits(max_samples=250)
    end = T0 + HOUR - 1
    sliding.evaluating(StoredSamples(store, limits=limits))
    [(_, ts, _)] = sliding.select(matchers, end - HOUR, end)
    assert len(ts) == 240
    _write(store, [(t, "other", {}, 2) for t in range(end + 1, end + 60_000, 1_000)])  # one a second now
    sliding.evaluating(StoredSamples(store, limits=limits))
    with pytest.raises(LimitExceeded):  # 236 kept and 60 new: over 250, though the read itself was 60
        sliding.select(matchers, end + 60_000 - HOUR, end + 60_000)
    with pytest.raises(LimitExceeded):
        StoredSamples(store, limits=limits).select(matchers, end + 60_000 - HOUR, end + 60_000)
