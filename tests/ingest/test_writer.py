"""The writer on a real store and journal: acknowledged once journaled, in DuckDB in batches
behind it, and on start whatever the journal has beyond DuckDB, exactly once."""

from __future__ import annotations

import asyncio
import functools
import os
from datetime import datetime

import pytest

from planoscope.demo.loadgen import RequestFactory
from planoscope.ingest.decode import Decoder
from planoscope.ingest.dedupe import RecentSpans
from planoscope.ingest.journal import Journal
from planoscope.ingest.writer import SpanWriter, WriterUnavailable
from planoscope.metrics.spanmetrics import SpanMetrics
from planoscope.store import DuckDBStore


@pytest.fixture
def parts(tmp_path):
    """A store, span metrics, a journal and ``request()``: a fresh 40-span OTLP request body."""
    store = DuckDBStore(tmp_path / "d")
    metrics = SpanMetrics()
    factory = RequestFactory(40)
    yield store, metrics, Journal(tmp_path / "d" / "journal"), factory.make
    store.close()


def _sync(test):
    """Run an async test on its own event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


def _calls(metrics: SpanMetrics) -> int:
    return sum(calls for _, calls, _, _ in metrics.snapshot())


def _writer(store, metrics, journal, **kw) -> SpanWriter:
    return SpanWriter(store, [metrics], RecentSpans(60, 10_000), journal, Decoder(metrics.dimensions), **kw)


async def _write(writer: SpanWriter, body: bytes) -> None:
    await writer.write(writer.decoder.decode_protobuf(body), body, "protobuf")


@_sync
async def test_a_request_is_acknowledged_once_journaled_and_is_in_duckdb_after_sync(parts):
    store, metrics, journal, request = parts
    async with _writer(store, metrics, journal, apply_every=30.0) as writer:
        await asyncio.wait_for(_write(writer, request()), 2.0)  # would take 30 s if it waited for DuckDB
        assert writer.backlog_bytes > 0 and store.span_count() == 0
        assert [fmt for _, fmt, _ in Journal(journal.directory).replay(after=0)] == ["protobuf"]
        assert await asyncio.wait_for(writer.sync(), 2.0)  # a reader: inserted now, not in 30 s
        assert store.span_count() == 40 and _calls(metrics) == 40 and writer.backlog_bytes == 0
        assert store.journal_applied() == writer.journaled > 0


@_sync
async def test_requests_within_apply_every_share_one_duckdb_commit(parts):
    store, metrics, journal, request = parts
    async with _writer(store, metrics, journal, apply_every=1.0) as writer:
        for _ in range(5):
            await _write(writer, request())
        await asyncio.sleep(1.5)
        assert writer.commits == 1 and writer.spans_written == 200


@_sync
async def test_readers_in_a_loop_do_not_break_ingest_into_tiny_inserts(parts):
    """Every API read first waits for the acknowledged spans (writer.sync), which makes the writer
    insert what is queued instead of gathering a row group. A client looping reads (or requests
    the API refuses) made it insert after every request: ingest fell from ~200k to ~21k spans/s
    (the hardening probe). Inserts made for readers are now spaced by READ_SPACING."""
    from planoscope.ingest.writer import READ_SPACING

    store, metrics, journal, request = parts
    async with _writer(store, metrics, journal, apply_every=30.0) as writer:
        stop = asyncio.Event()

        async def reader():
            while not stop.is_set():
                assert await writer.sync(timeout=5.0)
                await asyncio.sleep(0)  # (a sync with nothing to wait for returns without yielding)

        async def sender():
            for _ in range(400):
                await _write(writer, request())
                await asyncio.sleep(0.005)

        t0 = asyncio.get_running_loop().time()
        readers = [asyncio.create_task(reader()) for _ in range(4)]
        await sender()
        seconds = asyncio.get_running_loop().time() - t0
        stop.set()
        await asyncio.gather(*readers)
        # Without the spacing: one insert per request written (~400); with it, one per READ_SPACING.
        assert writer.commits <= seconds / READ_SPACING + 2, (writer.commits, seconds)
        assert await writer.sync() and store.span_count() == 400 * 40


@_sync
async def test_duplicates_are_stored_and_counted_once(parts):
    store, metrics, journal, request = parts
    body = request()
    async with _writer(store, metrics, journal) as writer:
        await asyncio.gather(_write(writer, body), _write(writer, body))  # a retry racing its original
        await writer.sync()
        await _write(writer, body)  # and one after it was stored
    assert store.span_count() == 40
    assert _calls(metrics) == 40


@_sync
async def test_a_clean_stop_inserts_everything_and_empties_the_journal(parts):
    store, metrics, journal, request = parts
    async with _writer(store, metrics, journal, apply_every=30.0) as writer:
        for _ in range(3):
            await _write(writer, request())
        assert writer.pending_spans == 120
    assert store.span_count() == 120 and writer.pending_spans == 0
    assert not list(journal.directory.glob("*.log"))


@_sync
async def test_the_start_inserts_what_the_journal_has_beyond_duckdb_exactly_once(parts):
    """A crash after journaling (acknowledged) and before or after the DuckDB insert."""
    store, metrics, journal, request = parts
    first, second = request(), request()
    journal.open()
    end_first = journal.append([("protobuf", first)])
    journal.append([("protobuf", second)])
    # The first request reached DuckDB before the crash, the second did not.
    store.append_spans(Decoder().decode_protobuf(first).table, datetime(2026, 1, 1), end_first)
    journal.close()
    async with _writer(store, metrics, Journal(journal.directory)) as writer:
        assert store.span_count() == 80  # not 120: the first is not inserted twice
        assert _calls(metrics) == 40  # the inserted spans are counted (the stored ones on start, by app)
        assert writer.applied == writer.journaled == store.journal_applied()
        await _write(writer, request())  # positions continue after the journal's
    assert store.span_count() == 120
    async with _writer(store, SpanMetrics(), Journal(journal.directory)):
        pass
    assert store.span_count() == 120  # a second start finds nothing to insert


@_sync
async def test_a_failed_journal_write_acknowledges_nothing(parts, caplog):
    store, metrics, journal, request = parts
    async with _writer(store, metrics, journal) as writer:
        os.close(journal._fd)  # the write fails (EBADF), as on a dead disk, and cannot be cut off
        with pytest.raises(WriterUnavailable, match="cannot write its journal") as e:
            await _write(writer, request())
        # The client learns nothing of the server's files; its log has the path and the reason.
        assert str(store.data_dir) not in str(e.value) and "/" not in str(e.value)
        assert f"cannot write the journal {journal.directory}" in caplog.text and "Bad file descriptor" in caplog.text
        assert store.span_count() == 0 and _calls(metrics) == 0
        await _write(writer, request())  # the next goes into a fresh segment
        await writer.sync()
        assert store.span_count() == 40


@_sync
async def test_the_server_lets_the_writer_have_the_gil_back_within_a_millisecond(tmp_path):
    """DuckDB retakes the GIL after every task of a commit; Python's default 5 ms switch interval
    would let another thread keep it that long each time (see app.GIL_SWITCH_INTERVAL)."""
    import sys

    from planoscope.app import GIL_SWITCH_INTERVAL, Planoscope
    from planoscope.settings import Settings

    default = sys.getswitchinterval()
    try:
        settings = Settings(
            data_dir=tmp_path / "d",
            listen="127.0.0.1:0",
            otlp_grpc="127.0.0.1:0",
            otlp_http="127.0.0.1:0",
            scrape=[],
            retention=0,
        )
        async with Planoscope(settings):
            assert sys.getswitchinterval() == GIL_SWITCH_INTERVAL == 0.001
    finally:
        sys.setswitchinterval(default)


class _FailingInserts:
    """Fault injection (a full disk cannot be had on demand here): the store's span inserts fail
    while ``failing`` is set; everything else is the real store."""

    def __init__(self, store: DuckDBStore):
        self.failing = True
        self._append = store.append_spans
        store.append_spans = self

    def __call__(self, *args):
        if self.failing:
            raise OSError("No space left on device")
        return self._append(*args)


@_sync
async def test_an_insert_that_fails_is_retried_and_nothing_acknowledged_is_lost(parts, caplog):
    store, metrics, journal, request = parts
    inserts = _FailingInserts(store)
    async with _writer(store, metrics, journal) as writer:
        await asyncio.wait_for(_write(writer, request()), 2.0)  # acknowledged: it is in the journal
        assert not await writer.sync(timeout=1.0)  # not in DuckDB while inserts fail
        assert "stay in the journal" in caplog.text and store.span_count() == 0
        inserts.failing = False
        assert await writer.sync(timeout=5.0)  # the retry (0.5 s, then 1 s, ...) got it in
        assert store.span_count() == 40 and _calls(metrics) == 40 and writer.backlog_bytes == 0


@_sync
async def test_what_cannot_be_inserted_by_the_stop_is_inserted_by_the_next_start(parts):
    store, metrics, journal, request = parts
    inserts = _FailingInserts(store)
    async with _writer(store, metrics, journal) as writer:
        await _write(writer, request())
        await _write(writer, request())
    assert store.span_count() == 0 and list(journal.directory.glob("*.log"))
    inserts.failing = False
    async with _writer(store, metrics, Journal(journal.directory)):
        assert store.span_count() == 80


@_sync
async def test_a_job_runs_at_once_while_spans_wait_for_their_insert(parts):
    """Retention deletes in many small jobs: each must not wait for the spans' insert."""
    store, metrics, journal, request = parts
    async with _writer(store, metrics, journal, apply_every=30.0) as writer:
        await _write(writer, request())
        assert await asyncio.wait_for(writer.call(store.span_count), 2.0) == 0  # would take 30 s
        assert writer.backlog_bytes > 0
    assert store.span_count() == 40


@_sync
async def test_a_start_that_cannot_insert_the_journal_fails_with_a_message_and_keeps_it(parts):
    store, metrics, journal, request = parts
    journal.open()
    journal.append([("protobuf", request())])
    journal.close()
    _FailingInserts(store)
    with pytest.raises(WriterUnavailable, match="No space left on device.*stay in .*journal"):
        async with _writer(store, metrics, Journal(journal.directory)):
            pass
    assert [fmt for _, fmt, _ in Journal(journal.directory).replay(after=0)] == ["protobuf"]


@_sync
async def test_applied_segments_are_deleted_while_new_ones_are_written(parts):
    store, metrics, journal, request = parts
    journal = Journal(journal.directory, segment_bytes=1)  # a segment per append
    async with _writer(store, metrics, journal) as writer:
        for _ in range(5):
            await _write(writer, request())
            assert await writer.sync()
            assert len(list(journal.directory.glob("*.log"))) <= 2  # the open one and the one before
    assert store.span_count() == 200 and not list(journal.directory.glob("*.log"))


@_sync
async def test_a_full_journal_is_degraded_until_it_takes_writes_again_even_with_no_client(tmp_path, monkeypatch):
    """A journal on a real full tmpfs: the request is refused (retryable, no path), /healthz says
    degraded; once there is room, the writer finds out by itself, without waiting for a client."""
    import subprocess

    import planoscope.ingest.writer as writer_module

    monkeypatch.setattr(writer_module, "JOURNAL_RECHECK_S", 0.2)  # 5 s in production
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    store = DuckDBStore(tmp_path / "d")
    try:
        metrics = SpanMetrics()
        async with _writer(store, metrics, Journal(mnt / "journal")) as writer:
            with pytest.raises(WriterUnavailable, match="cannot write its journal") as e:
                for _ in range(200):
                    await _write(writer, RequestFactory(500).make())
            assert str(mnt) not in str(e.value)
            health = writer.health()
            assert health["status"] == "degraded" and "No space left on device" in health["problems"][0]
            assert (
                str(mnt) not in health["problems"][0] and "<journal>/00000000000000000000.log" in health["problems"][0]
            )
            subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
            deadline = asyncio.get_running_loop().time() + 10
            while writer.health()["status"] != "ok":
                assert asyncio.get_running_loop().time() < deadline, writer.health()
                await asyncio.sleep(0.05)
            await _write(writer, RequestFactory(40).make())
            assert await writer.sync()
    finally:
        store.close()
        subprocess.run(["umount", "-l", str(mnt)], check=True)
