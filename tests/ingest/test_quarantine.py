"""What the writer does with spans the store refuses: the record holding them is set aside in the
journal's quarantine (its body kept, to be sent again), counted and logged, and everything else
goes in; the writer never stops over data, and a start never fails over a journal record.

The refusal is DuckDB's own: the span table of these stores carries a CHECK constraint that a span
named "poison" breaks, so the insert of a batch holding one fails with a ConstraintException, and
only that batch's. (Nothing ingest accepts makes DuckDB refuse a row of the table planoscope
creates; the constraint stands in for a store that refuses some rows, e.g. one written by another
version.)
"""

from __future__ import annotations

import asyncio
import functools
import logging

import duckdb
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from conftest import now_base_ns, pb_request, pb_span
from planoscope.ingest.decode import Decoder, Limits
from planoscope.ingest.dedupe import RecentSpans
from planoscope.ingest.journal import Journal
from planoscope.ingest.records import HEADER_BYTES
from planoscope.ingest.writer import SpanWriter
from planoscope.metrics.spanmetrics import SpanMetrics
from planoscope.store import DuckDBStore
from planoscope.store.duckdb import DB_FILE
from planoscope.store.schema import duckdb_ddl


def _sync(test):
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


def _request(name: str, n: int, first_id: int) -> bytes:
    base = now_base_ns()
    spans = [
        pb_span(f"{first_id + i:032x}", f"{first_id + i:016x}", name, base, base + 1_000_000, attrs={"i": i})
        for i in range(n)
    ]
    return pb_request(({"service.name": "quarantine-test"}, spans)).SerializeToString()


GOOD_1, POISON, GOOD_2 = _request("good", 20, 1), _request("poison", 3, 100), _request("good", 10, 200)


@pytest.fixture
def refusing(tmp_path):
    """A data directory whose span table refuses spans named "poison"."""
    data = tmp_path / "d"
    data.mkdir()
    con = duckdb.connect(str(data / DB_FILE))
    ddl = duckdb_ddl()
    con.execute(ddl[: ddl.rindex(")")] + """, CHECK ("SpanName" <> 'poison'))""")
    con.close()
    store = DuckDBStore(data)
    yield store
    store.close()


def _writer(store, journal, limits: Limits | None = None, **kw) -> SpanWriter:
    metrics = SpanMetrics()
    decoder = Decoder(metrics.dimensions, limits=limits or Limits())
    return SpanWriter(store, [metrics], RecentSpans(60, 10_000), journal, decoder, **kw)


async def _write(writer: SpanWriter, body: bytes) -> None:
    await writer.write(writer.decoder.decode_protobuf(body), body, "protobuf")


def _names(store) -> dict[str, int]:
    return dict(store.query("SELECT SpanName, count(*) FROM otel_traces GROUP BY 1"))


def _exposition(writer) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(writer)
    return generate_latest(registry).decode()


@_sync
async def test_a_request_the_store_refuses_is_quarantined_and_the_rest_goes_in(refusing, caplog):
    store = refusing
    journal = Journal(store.data_dir / "journal")
    async with _writer(store, journal, apply_every=30.0) as writer:
        for body in (GOOD_1, POISON, GOOD_2):  # all acknowledged; one group, one failed insert
            await _write(writer, body)
        with caplog.at_level(logging.ERROR):
            assert await asyncio.wait_for(writer.sync(), 10)
        assert writer.alive and _names(store) == {"good": 30}
        (kept,) = journal.quarantined()
        assert kept.read_bytes() == POISON  # the request as the client sent it: it can be sent again
        assert kept.name == f"{HEADER_BYTES + len(GOOD_1):020d}.pb"  # named by its journal position
        assert (
            writer.incidents.quarantined_records == 1
            and writer.incidents.quarantined_spans == 3
            and writer.pending_spans == 0
        )
        log_lines = [r.getMessage() for r in caplog.records if "cannot be inserted" in r.getMessage()]
        assert len(log_lines) == 1 and "CHECK constraint" in log_lines[0] and "3 acknowledged spans" in log_lines[0]
        health = writer.health()
        assert health["status"] == "ok" and health["journal"]["quarantined_files"] == 1
        assert health["journal"]["last_quarantined"]["file"] == f"journal/quarantine/{kept.name}"
        assert "planoscope_journal_quarantined_records_total 1.0" in _exposition(writer)
        await _write(writer, _request("good", 5, 300))  # ingest goes on
        assert await writer.sync() and _names(store) == {"good": 35}
    async with _writer(store, Journal(journal.directory)) as writer:  # a restart finds nothing left over
        assert writer.incidents.quarantined_records == 0
    assert _names(store) == {"good": 35}
    assert [p.name for p in Journal(journal.directory).quarantined()] == [kept.name]


@_sync
async def test_a_journal_record_the_store_refuses_does_not_fail_the_start(refusing):
    """The crash's leftovers hold a request the store refuses: once, every restart failed on it."""
    store = refusing
    journal = Journal(store.data_dir / "journal")
    journal.open()
    for body in (GOOD_1, POISON, GOOD_2):
        journal.append([("protobuf", body)])
    journal.close()
    async with _writer(store, Journal(journal.directory)) as writer:
        assert _names(store) == {"good": 30}
        assert writer.incidents.quarantined_records == 1 and writer.alive
        assert [p.read_bytes() for p in writer.journal.quarantined()] == [POISON]
    assert store.journal_applied() == journal.position


@_sync
async def test_a_journal_record_that_no_longer_decodes_is_quarantined_not_dropped(tmp_path, caplog):
    """Journaled under other settings (here a larger max_spans_per_request): the record once was
    logged as skipped and deleted with its segment."""
    store = DuckDBStore(tmp_path / "d")
    try:
        journal = Journal(tmp_path / "d" / "journal")
        journal.open()
        for body in (_request("good", 5, 1), _request("big", 40, 100), _request("good", 5, 200)):
            journal.append([("protobuf", body)])
        journal.close()
        with caplog.at_level(logging.ERROR):
            async with _writer(store, Journal(journal.directory), Limits(max_spans=10)) as writer:
                assert _names(store) == {"good": 10} and writer.incidents.quarantined_records == 1
        (kept,) = Journal(journal.directory).quarantined()
        assert Decoder().decode_protobuf(kept.read_bytes()).table.num_rows == 40  # whole, as journaled
        assert "no longer decodes" in caplog.text and "more than 10 spans" in caplog.text
        assert not list(journal.directory.glob("*.log"))  # the segment is applied, its record kept aside
    finally:
        store.close()


@_sync
async def test_a_failure_of_every_request_is_waited_out_not_quarantined(tmp_path):
    """A writer that can make nothing ready (here: a decoder without the span metrics' dimensions,
    a wiring mistake) fails the canary too: nothing is set aside, the spans wait in the journal,
    /healthz says degraded, and a start with the mistake fixed inserts them all."""
    store = DuckDBStore(tmp_path / "d")
    try:
        journal = Journal(tmp_path / "d" / "journal")
        metrics = SpanMetrics()
        broken = SpanWriter(store, [metrics], RecentSpans(60, 10_000), journal, Decoder())
        async with broken as writer:
            await _write(writer, GOOD_1)
            assert not await writer.sync(timeout=1.0)
            health = writer.health()
            assert (
                health["status"] == "degraded"
                and "0 dimension columns given for the 5 span-metric dimensions" in health["problems"][0]
            )
            assert writer.incidents.quarantined_records == 0 and writer.pending_spans == 20 and writer.alive
        assert not Journal(journal.directory).quarantined() and store.span_count() == 0
        async with _writer(store, Journal(journal.directory)):
            assert store.span_count() == 20
    finally:
        store.close()
