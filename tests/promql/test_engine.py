"""The engine beyond Prometheus's suite: limits, the Queryable contract, refusals, rendering."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planoscope.promql import (
    STALE_NAN,
    Engine,
    LimitExceeded,
    Limits,
    Matcher,
    MemoryStorage,
    ParseError,
    PromQLError,
    Scalar,
    String,
    Timeout,
    Unsupported,
    metric_name,
    render,
)
from planoscope.promql.regex import compile_anchored

MIN = 60_000


def store_of(n_series: int = 3, minutes: int = 10, step_ms: int = 15_000) -> MemoryStorage:
    store = MemoryStorage()
    ts = np.arange(0, minutes * MIN + 1, step_ms)
    for i in range(n_series):
        store.add({"__name__": "requests_total", "job": "api", "instance": str(i)}, ts, ts / 1000 * (i + 1))
    return store


# --- limits --------------------------------------------------------------------------------


def test_too_many_samples_fails_with_prometheus_message():
    store = store_of(n_series=10, minutes=60)
    engine = Engine(limits=Limits(max_samples=1000))
    with pytest.raises(LimitExceeded) as err:
        engine.range_query(store, "rate(requests_total[5m])", 0, 60 * MIN, 15_000)
    assert str(err.value) == "query processing would load too many samples into memory in query execution"
    # The same query within the limit works.
    assert Engine(limits=Limits(max_samples=100_000)).range_query(store, "rate(requests_total[5m])", 0, 60 * MIN, MIN)


def test_a_dense_working_array_beyond_the_limit_is_refused_before_it_is_allocated():
    store = MemoryStorage()
    store.add({"__name__": "up"}, [0], [1])
    engine = Engine(limits=Limits(max_samples=100_000))
    # A 1 s subquery over 2 days: 172,801 inner steps for one series.
    with pytest.raises(LimitExceeded, match="too many samples"):
        engine.instant_query(store, "count_over_time(up[2d:1s])", 2 * 86400_000)
    assert engine.instant_query(store, "count_over_time(up[1d:1s])", 86400_000).samples[0].v == 301


def test_too_many_series_fails():
    engine = Engine(limits=Limits(max_series=2))
    with pytest.raises(LimitExceeded, match="too many series"):
        engine.instant_query(store_of(n_series=3), "requests_total", 5 * MIN)
    assert len(engine.instant_query(store_of(n_series=2), "requests_total", 5 * MIN).samples) == 2


def test_more_than_11000_points_per_series_is_refused():
    engine = Engine()
    with pytest.raises(ParseError, match="exceeded maximum resolution of 11,000 points per timeseries"):
        engine.range_query(store_of(), "requests_total", 0, 11_001_000, 1000)
    assert len(engine.range_query(store_of(), "vector(1)", 0, 11_000_000, 1000).series[0].values) == 11_001


def test_timeout():
    with pytest.raises(Timeout, match="query timed out"):
        Engine(limits=Limits(timeout_s=0)).instant_query(store_of(), "sum(requests_total)", MIN)


# --- the Queryable contract ----------------------------------------------------------------


class Superset:
    """A store that pushes nothing down: every series, every sample, whatever was asked."""

    def __init__(self, inner: MemoryStorage):
        self.inner = inner
        self.calls = []

    def select(self, matchers, start_ms, end_ms):
        self.calls.append((tuple(matchers), start_ms, end_ms))
        return self.inner.select([], -(2**62), 2**62)


@pytest.mark.parametrize(
    "query",
    [
        'rate(requests_total{instance=~"1|2"}[5m])',
        'requests_total{instance!="0"} offset 1m',
        "sum by (instance) (requests_total @ 300)",
        'max_over_time(requests_total{instance="2"}[2m:30s])',
    ],
)
def test_a_store_may_return_more_than_asked(query):
    store = store_of()
    store.add({"__name__": "other", "instance": "1"}, [0, MIN], [5, 6])
    exact = Engine().range_query(store, query, 2 * MIN, 8 * MIN, MIN)
    loose = Engine().range_query(Superset(store), query, 2 * MIN, 8 * MIN, MIN)
    assert [s.labels for s in loose.series] == [s.labels for s in exact.series]
    for a, b in zip(loose.series, exact.series):
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.values, b.values)


def test_the_store_is_asked_for_the_name_matchers_and_time_range_needed():
    spy = Superset(store_of())
    Engine().instant_query(spy, 'rate(requests_total{job="api"}[5m] offset 1m)', 10 * MIN)
    Engine().instant_query(spy, "requests_total @ 120", 10 * MIN)
    (m1, start1, end1), (m2, start2, end2) = spy.calls
    assert metric_name(m1) == "requests_total" and Matcher("job", "=", "api") in m1
    assert (start1, end1) == (4 * MIN, 9 * MIN)  # [t - offset - range, t - offset]
    assert (start2, end2) == (120_000 - 5 * MIN, 120_000)  # the lookback before the @ time


def test_lookback_delta_is_configurable():
    store = MemoryStorage()
    store.add({"__name__": "up"}, [0], [1])
    assert Engine().instant_query(store, "up", 4 * MIN).samples
    assert not Engine(lookback_ms=MIN).instant_query(store, "up", 2 * MIN).samples


def test_a_staleness_marker_ends_a_series_in_a_range_query():
    store = MemoryStorage()
    store.add({"__name__": "up"}, [0, 15_000, 30_000], [1, 1, STALE_NAN])
    (series,) = Engine().range_query(store, "up", 0, 60_000, 15_000).series
    assert series.timestamps.tolist() == [0, 15_000]


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, construct",
    [
        ('x{a="b" or c="d"}', "'or' inside a label matcher set"),
        ("limitk(1, x)", "limitk"),
        ("histogram_count(x)", "native histograms"),
        ("info(x)", "info"),
        ("double_exponential_smoothing(x[5m], 0.5, 0.5)", "double_exponential_smoothing"),
        ('x{a=~"\\\\pL+"}', "Unicode classes"),
    ],
)
def test_unsupported_constructs_are_refused_by_name(query, construct):
    with pytest.raises((Unsupported, ParseError), match=construct):
        Engine().instant_query(store_of(), query, MIN)


@pytest.mark.parametrize("query", ["sum(", "rate(x)", "1 < 2", 'x{a=~"(.*"}'])
def test_bad_queries_are_bad_data(query):
    with pytest.raises(PromQLError) as err:
        Engine().instant_query(store_of(), query, MIN)
    assert err.value.kind == "bad_data"


def test_range_query_needs_an_instant_vector_or_scalar():
    with pytest.raises(ParseError, match='invalid expression type "range vector" for range query'):
        Engine().range_query(store_of(), "requests_total[5m]", 0, MIN, 15_000)


# --- RE2 on Python's re --------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, value, matches",
    [
        ("((?i)PRO).*", "production", True),  # flags in mid-pattern: rest of the group
        ("a(?i)b|c", "C", True),  # ... including the other alternatives
        ("a(?i)b|c", "ac", False),
        ("[[:digit:]]+", "123", True),  # POSIX classes
        ("[[:alpha:]]", ":", False),
        ("\\d", "\u0663", False),  # \d is ASCII in RE2
        ("a$", "a\n", False),  # $ is the end of the text
        ("a\\z", "a", True),
        ("\\Q.*\\E", ".*", True),
        ("\\Q.*\\E", "ab", False),
        ("(?<n>x)", "x", True),
    ],
)
def test_re2_semantics(pattern, value, matches):
    assert (compile_anchored(pattern).match(value) is not None) is matches


# --- rendering ------------------------------------------------------------------------------


def test_render_in_the_http_api_shapes():
    store = MemoryStorage()
    store.add({"__name__": "m", "a": "x"}, [0, 1500], [1e-7, float("inf")])
    vector = render(Engine().instant_query(store, "m", 1500))
    assert vector == {
        "resultType": "vector",
        "result": [{"metric": {"__name__": "m", "a": "x"}, "value": [1.5, "+Inf"]}],
    }
    matrix = render(Engine().range_query(store, "m * 2", 0, 1000, 1000))
    assert matrix == {
        "resultType": "matrix",
        "result": [{"metric": {"a": "x"}, "values": [[0, "2e-07"], [1, "2e-07"]]}],
    }
    assert render(Scalar(1000, float("nan"))) == {"resultType": "scalar", "result": [1, "NaN"]}
    assert render(String(2000, "s")) == {"resultType": "string", "result": [2, "s"]}
    # Go's FormatFloat: 'f' below 1e21, 'e' from there on.
    assert render(Engine().instant_query(store, "time() * 1e20", 1500))["result"][1] == "150000000000000000000"
    assert render(Engine().instant_query(store, "time() * 1e21", 1500))["result"][1] == "1.5e+21"


def test_series_with_the_same_sample_times_are_searched_once_and_the_others_on_their_own():
    from planoscope.promql.engine import same_times, search

    scrape = [0, 15_000, 30_000, 45_000]
    parts = [
        scrape,  # 0
        [0, 20_000, 30_000, 45_000],  # 1: the same length and ends as a scrape, other times
        scrape,  # 2
        [],  # 3: none left (its staleness markers removed)
        [5_000, 45_000],  # 4
        scrape,  # 5
    ]
    starts = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=starts[1:])
    ts = np.concatenate([np.array(p, np.int64) for p in parts])
    groups = sorted(sorted(g.tolist()) for g in same_times(ts, starts))
    assert groups == [[0, 2, 5], [1], [3], [4]]
    at = np.array([-1, 0, 10_000, 20_000, 45_000, 99_000], np.int64)
    for side in ("left", "right"):
        expected = np.array([np.searchsorted(np.array(p, np.int64), at, side) + starts[i] for i, p in enumerate(parts)])
        assert (search(ts, starts, at, side) == expected).all()


def _prometheus_extrapolated_rate(ts, vs, range_start, range_end, is_counter, is_rate, range_s):
    """Prometheus 2.53's ``extrapolatedRate`` for one window's samples, line by line."""
    if len(ts) < 2:
        return None
    result = vs[-1] - vs[0]
    if is_counter:
        for prev, cur in zip(vs, vs[1:]):
            if cur < prev:
                result += prev
    to_start, to_end = (ts[0] - range_start) / 1000, (range_end - ts[-1]) / 1000
    sampled = (ts[-1] - ts[0]) / 1000
    average = sampled / (len(ts) - 1)
    threshold = average * 1.1
    extrapolate_to = sampled
    if to_start >= threshold:
        to_start = average / 2
    if is_counter and result > 0 and vs[0] >= 0:
        to_zero = sampled * (vs[0] / result)
        if to_zero < to_start:
            to_start = to_zero
    extrapolate_to += to_start
    if to_end >= threshold:
        to_end = average / 2
    extrapolate_to += to_end
    factor = extrapolate_to / sampled
    if is_rate:
        factor /= range_s
    return result * factor


@pytest.mark.parametrize("fn", ["rate", "increase", "delta"])
def test_the_rate_family_per_group_of_same_times_equals_prometheus_per_window(fn):
    """Series of one scrape share their windows' terms of time (computed once per group); each
    window's answer must still be Prometheus's own, for counters that reset, start from zero
    inside a window (the extrapolation stops at zero), start high, or have gaps."""
    from dataclasses import replace

    from planoscope.promql.engine import windows
    from planoscope.promql.rate import extrapolated_rate
    from planoscope.promql.values import Selection

    scrape = np.arange(0, 20 * 15_000, 15_000, dtype=np.int64)
    rng = np.random.default_rng(19)
    values = [
        np.cumsum(rng.integers(0, 5, len(scrape))).astype(float),  # from zero, rising
        1e6 + np.cumsum(rng.integers(0, 5, len(scrape))).astype(float),  # started long ago
        np.concatenate([np.arange(10.0) * 3, np.arange(10.0) * 2]),  # a reset half-way
        np.concatenate([[0.0, 0.0, 0.0], np.arange(17.0) * 7]),  # starts counting in a window
        np.full(len(scrape), 5.0),  # flat
    ]
    gappy = scrape[[0, 1, 2, 6, 7, 8, 15, 19]]
    series = [((("__name__", "c"), ("i", str(i))), scrape, v) for i, v in enumerate(values)]
    series.append(((("__name__", "c"), ("i", "gaps")), gappy, np.arange(len(gappy)) * 4.0))
    found = Selection.of(series)
    refs = np.arange(30_000, 300_001, 10_000, dtype=np.int64)
    w = windows(found, refs, 60_000)
    assert sorted(len(g) for g in w.groups) == [1, 5]
    is_counter, is_rate = fn != "delta", fn == "rate"
    grouped, ok = extrapolated_rate(is_counter, is_rate)(w, [], refs)
    alone, ok_alone = extrapolated_rate(is_counter, is_rate)(replace(w, groups=None), [], refs)
    assert (ok == ok_alone).all() and np.array_equal(grouped[ok], alone[ok])
    zeroed = 0
    for i, (_, ts, vs) in enumerate(series):
        for j, ref in enumerate(refs):
            inside = (ts >= ref - 60_000) & (ts <= ref)
            want = _prometheus_extrapolated_rate(ts[inside], vs[inside], ref - 60_000, ref, is_counter, is_rate, 60)
            assert ok[i, j] == (want is not None), (i, ref)
            if want is not None:
                assert grouped[i, j] == pytest.approx(want, rel=1e-12, abs=1e-12), (i, ref)
                zeroed += is_counter and vs[inside][0] == 0 and vs[inside][-1] > 0
    assert zeroed or not is_counter  # the zero clamp was exercised


def test_sum_adds_the_series_one_after_another_as_prometheus_does():
    """Float addition depends on its order: ``sum`` must add the series in their order (by label
    set), one at a time, as Prometheus's aggregation does, not in pairs."""
    store = MemoryStorage()
    rng = np.random.default_rng(3)
    values = rng.standard_normal(300) / 3
    values[5] = -0.0
    for i, v in enumerate(values):
        store.add({"__name__": "g", "i": f"{i:03d}"}, [0], [v])
    expected = values[0]
    for v in values[1:]:
        expected = expected + v
    pairwise = float(np.sum(values))
    assert pairwise != expected  # the order shows in these values
    (got,) = Engine().instant_query(store, "sum(g)", 0).samples
    assert got.v == expected
    store = MemoryStorage()
    store.add({"__name__": "z"}, [0], [-0.0])
    store.add({"__name__": "z", "i": "absent"}, [MIN * 10], [1.0])
    (only,) = Engine().instant_query(store, "sum(z)", 0).samples
    assert only.v == 0 and math.copysign(1, only.v) == -1  # a lone -0 stays -0
