"""PromQL's cache of evaluated subexpressions (``promql.cache``) on a real DuckDB store: reused
while the samples at or before a query's last step are unchanged, never after a write into them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from planoscope.promql import Engine, render
from planoscope.promql.cache import ResultCache
from planoscope.promql.engine import cacheable
from planoscope.promql.samples import StoredSamples
from planoscope.promql.syntax import parse
from planoscope.scrape.scraper import SCHEMA
from planoscope.store import open_store

T0 = 1_767_225_600_000  # ms
EPOCH = datetime(1970, 1, 1)
END = T0 + 3_600_000
QUANTILE = "histogram_quantile({q}, sum by (le) (rate(lat_bucket[1m])))"


def _write(store, rows) -> None:
    store.append_samples(pa.table([pa.array([r[k] for r in rows]) for k in range(5)], schema=SCHEMA))


def _rows(start_ms: int, end_ms: int, scale: float = 1.0) -> list[tuple]:
    out = []
    for i, t in enumerate(range(start_ms, end_ms, 15_000)):
        at = EPOCH + timedelta(milliseconds=t)
        for le, share in (("100", 0.5), ("1000", 0.9), ("+Inf", 1.0)):
            out.append((at, "envoy", "lat_bucket", json.dumps({"le": le}), float(int(i * 10 * share * scale))))
    return out


@pytest.fixture
def store(tmp_path):
    s = open_store("duckdb", tmp_path)
    _write(s, _rows(T0, END + 1))
    yield s
    s.close()


def _ask(store, cache, query: str, end: int = END):
    q = StoredSamples(store, {"envoy": "127.0.0.1:9901"}, cache=cache)
    return render(Engine().range_query(q, query, T0 + 600_000, end, 15_000))


def test_a_dashboards_repeated_subexpression_is_evaluated_once(store):
    cache = ResultCache(store.sample_changes)
    first = [_ask(store, cache, QUANTILE.format(q=q)) for q in (0.5, 0.95, 0.99)]
    # the inner sum of the second and third came from the first
    assert cache.hits == 2
    assert first == [_ask(store, None, QUANTILE.format(q=q)) for q in (0.5, 0.95, 0.99)]
    assert _ask(store, cache, QUANTILE.format(q=0.5)) == first[0] and cache.hits == 3


def test_samples_after_the_last_step_keep_it_a_write_before_it_does_not(store):
    cache = ResultCache(store.sample_changes)
    query = QUANTILE.format(q=0.9)
    before = _ask(store, cache, query, end=END - 600_000)
    _write(store, _rows(END + 15_000, END + 60_000))  # scrapes after the range: still valid
    assert _ask(store, cache, query, end=END - 600_000) == before and cache.hits == 1
    # a late sample inside the range (a backfill): evaluated again, as the store now answers
    late = EPOCH + timedelta(milliseconds=END - 900_000 + 1)
    _write(store, [(late, "envoy", "lat_bucket", json.dumps({"le": "100"}), 0.0)])
    after = _ask(store, cache, query, end=END - 600_000)
    assert cache.hits == 1 and after != before
    assert after == _ask(store, None, query, end=END - 600_000)
    # retention's delete reaches every range
    assert _ask(store, cache, query, end=END - 600_000) == after and cache.hits == 2
    store.delete_before("samples", EPOCH + timedelta(milliseconds=T0 + 300_000), 100_000)
    assert _ask(store, cache, query, end=END - 600_000) == _ask(store, None, query, end=END - 600_000)
    assert cache.hits == 2


@pytest.mark.parametrize(
    "query, kept",
    [
        ("sum(rate(lat_bucket[1m]))", True),
        ("sum(rate(lat_bucket[1m] offset 5m))", True),
        ("sum(rate(lat_bucket[1m] offset -5m))", False),  # reads after the last step
        ("sum(rate(lat_bucket[1m] @ end()))", False),
        ('sum({__name__=~"lat.*"})', False),  # might be a metric computed at query time
        ("sum(planoscope_panel)", False),
        ("max_over_time(sum(lat_bucket)[10m:1m])", True),
    ],
)
def test_what_is_cached(query, kept):
    assert cacheable(parse(query), frozenset({"planoscope_panel"})) is kept


def test_the_cache_is_bounded(store):
    cache = ResultCache(store.sample_changes, max_points=4 * 1000)
    for q in (0.5, 0.9, 0.99):
        _ask(store, cache, QUANTILE.format(q=q))
    assert 0 < cache.points <= 4 * 1000
