"""The single writer's group commit, on a real store: what it waits for and what it does not."""

from __future__ import annotations

import asyncio
import functools

import pytest

from planoscope.decode import Decoder
from planoscope.dedupe import RecentSpans
from planoscope.loadgen import RequestFactory
from planoscope.spanmetrics import SpanMetrics
from planoscope.store import DuckDBStore
from planoscope.writer import SpanWriter


@pytest.fixture
def parts(tmp_path):
    store = DuckDBStore(tmp_path / "d")
    metrics = SpanMetrics()
    factory = RequestFactory(40)
    decoder = Decoder(metrics.dimensions)
    yield store, metrics, lambda: decoder.decode_protobuf(factory.make())
    store.close()


def _sync(test):
    """Run an async test on its own event loop (the suite has no asyncio plugin)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return run


def _calls(metrics: SpanMetrics) -> int:
    return sum(calls for _, calls, _, _ in metrics.snapshot())


@_sync
async def test_a_small_group_waits_for_the_batches_being_decoded(parts):
    store, metrics, batch = parts
    async with SpanWriter(store, metrics, RecentSpans(60, 10_000), max_group_wait=5.0) as writer:
        writer.expecting = 1  # a second request is being decoded
        first = asyncio.ensure_future(writer.write(batch()))
        await asyncio.sleep(0.2)
        assert not first.done()  # held for the batch on its way, not committed alone
        writer.expecting = 0
        await asyncio.gather(first, writer.write(batch()))
        assert writer.commits == 1
    assert store.span_count() == 80
    assert _calls(metrics) == 80


@_sync
async def test_nothing_expected_commits_at_once(parts):
    store, metrics, batch = parts
    async with SpanWriter(store, metrics, RecentSpans(60, 10_000), max_group_wait=5.0) as writer:
        await asyncio.wait_for(writer.write(batch()), 2.0)  # would take 5 s if it waited
        await asyncio.wait_for(writer.write(batch()), 2.0)
        assert writer.commits == 2
    assert store.span_count() == 80


@_sync
async def test_the_wait_is_bounded(parts):
    store, metrics, batch = parts
    async with SpanWriter(store, metrics, RecentSpans(60, 10_000), max_group_wait=0.05) as writer:
        writer.expecting = 1  # a decode that never hands its batch over (it failed, say)
        await asyncio.wait_for(writer.write(batch()), 2.0)
        assert writer.commits == 1
    assert store.span_count() == 40


@_sync
async def test_a_group_big_enough_does_not_wait(parts):
    store, metrics, batch = parts
    async with SpanWriter(store, metrics, RecentSpans(60, 10_000), min_group_spans=40,
                          max_group_wait=5.0) as writer:
        writer.expecting = 3
        await asyncio.wait_for(writer.write(batch()), 2.0)
        assert writer.commits == 1


@_sync
async def test_duplicates_in_a_group_are_stored_and_counted_once(parts):
    store, metrics, batch = parts
    b = batch()
    async with SpanWriter(store, metrics, RecentSpans(60, 10_000)) as writer:
        await asyncio.gather(writer.write(b), writer.write(b))  # a retry racing its original
        await writer.write(b)  # and one after it was stored
    assert store.span_count() == 40
    assert _calls(metrics) == 40


@_sync
async def test_the_server_lets_the_writer_have_the_gil_back_within_a_millisecond(tmp_path):
    """DuckDB retakes the GIL after every task of a commit; Python's default 5 ms switch interval
    would let another thread keep it that long each time (see app.GIL_SWITCH_INTERVAL)."""
    import sys

    from planoscope.app import GIL_SWITCH_INTERVAL, Planoscope
    from planoscope.settings import Settings

    default = sys.getswitchinterval()
    try:
        settings = Settings(data_dir=tmp_path / "d", listen="127.0.0.1:0", otlp_grpc="127.0.0.1:0",
                            otlp_http="127.0.0.1:0", scrape=[], retention=0)
        async with Planoscope(settings):
            assert sys.getswitchinterval() == GIL_SWITCH_INTERVAL == 0.001
    finally:
        sys.setswitchinterval(default)
