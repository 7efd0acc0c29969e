"""The DuckDB store's own policies, on a real database file."""

from __future__ import annotations

import threading
from datetime import datetime

import duckdb
import pytest

from planoscope.store import DuckDBStore, StoreError


@pytest.fixture
def store(tmp_path):
    """A store whose reads run on 2 of DuckDB's threads, as on a 2-core machine, whatever this one has."""
    s = DuckDBStore(tmp_path / "d")
    s.read_threads = 2
    yield s
    s.close()


def _threads(store: DuckDBStore) -> int:
    """DuckDB's thread count as the writer sees it (read on the write connection, not through
    ``query``, which would raise it)."""
    return int(store._con.execute("SELECT current_setting('threads')").fetchall()[0][0])


def _batch(n: int = 20):
    return next(_batches(n))


def _batches(n: int):
    """Batches of ``n`` spans, each with new ids: the factory simulates its templates once
    (~1.3 s), then each request costs only its ids."""
    from planoscope.demo.loadgen import RequestFactory
    from planoscope.ingest.decode import Decoder

    factory, decoder = RequestFactory(n), Decoder()
    while True:
        yield decoder.decode_protobuf(factory.make()).table


def test_ingest_runs_on_one_duckdb_thread_and_reads_get_all_of_them(store):
    store.append_spans(_batch(), datetime(2025, 12, 31))
    assert _threads(store) == 1  # only the writer uses the database: inserts run single-threaded
    assert int(store.query("SELECT current_setting('threads')")[0][0]) == 2  # a read gets them all
    # They stay raised for the reads that follow (lowering joins a worker thread: up to ~20 ms)...
    assert int(store.query("SELECT current_setting('threads')")[0][0]) == 2
    assert _threads(store) == 2
    # ...until the next insert, which runs on one again.
    store.append_spans(_batch(), datetime(2026, 1, 1))
    assert _threads(store) == 1
    assert store.span_count() == 40


def test_work_on_start_gets_all_of_duckdbs_threads_until_the_first_insert(tmp_path):
    """Opening the store leaves DuckDB its threads: a migration or the span-metric replay reads."""
    store = DuckDBStore(tmp_path / "d")
    try:
        assert _threads(store) == store.read_threads
        store.append_spans(_batch(), datetime(2026, 1, 1))
        assert _threads(store) == 1
    finally:
        store.close()


def test_an_insert_during_a_read_runs_on_one_thread_and_the_next_read_gets_them_all(store):
    inside, release, seen = threading.Event(), threading.Event(), []
    real = store._cursor

    def slow_read():
        # A read in flight: counted, threads raised, its query not yet finished.
        cursor = real()

        class Slow:
            def execute(self, sql, params=None):
                if sql.startswith("SET"):
                    return cursor.execute(sql, params)
                inside.set()
                release.wait(10)
                seen.append(int(cursor.execute("SELECT current_setting('threads')").fetchall()[0][0]))
                return cursor.execute(sql, params)

        store._local.cur = Slow()
        store.query("SELECT 1")

    t = threading.Thread(target=slow_read)
    t.start()
    assert inside.wait(10)
    store.append_spans(_batch(), datetime(2026, 1, 1))  # the writer inserts meanwhile
    assert _threads(store) == 1  # lowered under the read: two threads cost the insert 50% more
    release.set()
    t.join(10)
    assert seen == [1]  # the read finished on one
    assert int(store.query("SELECT current_setting('threads')")[0][0]) == 2


# The span table as earlier versions made it: the first (before TraceKey and ScopeAttributes),
# and the one before the LLM usage columns.
_V1_DDL = """CREATE TABLE otel_traces (
  "Timestamp" TIMESTAMP_NS, "TraceId" VARCHAR, "SpanId" VARCHAR, "ParentSpanId" VARCHAR, "TraceState" VARCHAR,
  "SpanName" VARCHAR, "SpanKind" VARCHAR, "ServiceName" VARCHAR, "ResourceAttributes" VARCHAR,
  "ScopeName" VARCHAR, "ScopeVersion" VARCHAR, "SpanAttributes" VARCHAR, "Duration" BIGINT,
  "StatusCode" VARCHAR, "StatusMessage" VARCHAR,
  "Events" STRUCT("Timestamp" TIMESTAMP_NS, "Name" VARCHAR, "Attributes" VARCHAR)[],
  "Links" STRUCT("TraceId" VARCHAR, "SpanId" VARCHAR, "TraceState" VARCHAR, "Attributes" VARCHAR)[],
  "LlmModel" VARCHAR, "LlmProvider" VARCHAR, "AgentId" VARCHAR, "SelectionListener" VARCHAR,
  "HttpMethod" VARCHAR, "HttpStatusCode" INTEGER, "IsStreaming" BOOLEAN, "TimeToFirstTokenMs" DOUBLE,
  "PromptTokens" BIGINT, "CompletionTokens" BIGINT, "TotalTokens" BIGINT, "CostUsd" DOUBLE,
  "IngestedAt" TIMESTAMP NOT NULL
)"""
_V2_DDL = _V1_DDL.replace(
    '"IngestedAt" TIMESTAMP NOT NULL', '"TraceKey" UBIGINT, "IngestedAt" TIMESTAMP NOT NULL, "ScopeAttributes" VARCHAR'
)
LLM_COLUMNS = [
    "CachedInputTokens",
    "CacheCreationTokens",
    "ReasoningTokens",
    "InputCostUsd",
    "OutputCostUsd",
    "RouteName",
    "SessionId",
    "UserId",
    "SignalsQuality",
    "EstimatedCostUsd",
    "RequestedModel",
    "ResolvedModel",
    "Flagged",
    "FailureClass",
    "LlmCall",
]


def _old_store(data, ddl: str):
    from planoscope.store.duckdb import DB_FILE

    data.mkdir()
    con = duckdb.connect(str(data / DB_FILE))
    con.execute(ddl)
    return con


def test_spans_appended_to_a_migrated_store_land_in_their_columns(tmp_path):
    """A store written before TraceKey, ScopeAttributes and the LLM columns existed has them
    after IngestedAt, in the order a new store has them: appends go by name."""
    from conftest import TABLE_COLUMNS
    from planoscope.demo.loadgen import template_request
    from planoscope.ingest.decode import Decoder
    from planoscope.store.schema import trace_key

    _old_store(tmp_path / "old", _V1_DDL).close()
    store = DuckDBStore(tmp_path / "old")
    try:
        assert (
            store._span_columns[-len(LLM_COLUMNS) - 3 :] == ["IngestedAt", "TraceKey", "ScopeAttributes"] + LLM_COLUMNS
        )
        assert sorted(store._span_columns) == sorted(TABLE_COLUMNS)
        req = template_request(20)
        req.resource_spans[0].scope_spans[0].scope.attributes.add(key="k").value.int_value = 7
        batch = Decoder().decode_protobuf(req.SerializeToString()).table
        stamp = datetime(2026, 1, 2, 3, 4, 5, 678901)
        store.append_spans(batch, stamp)
        assert {r[0] for r in store.query("SELECT ScopeAttributes FROM otel_traces")} == {'{"k":7}'}
        rows = store.query('SELECT TraceId, SpanId, "TraceKey", IngestedAt, Duration FROM otel_traces ORDER BY SpanId')
        expected = sorted(
            zip(
                batch.column("TraceId").to_pylist(),
                batch.column("SpanId").to_pylist(),
                batch.column("Duration").to_pylist(),
            ),
            key=lambda r: r[1],
        )
        assert [(r[0], r[1], r[4]) for r in rows] == expected
        assert all(r[2] == trace_key(r[0]) for r in rows)
        assert {r[3] for r in rows} == {stamp}
    finally:
        store.close()


def test_a_store_from_before_the_llm_columns_gains_them_and_new_spans_fill_them(tmp_path):
    """The old rows keep NULL in the new columns (filled later from their attributes); spans
    inserted after the start fill them, and the table reads as a new store's."""
    from conftest import TABLE_COLUMNS, table_columns
    from planoscope.demo.simulate import Simulation, export_request
    from planoscope.ingest.decode import Decoder

    con = _old_store(tmp_path / "old", _V2_DDL)
    con.execute(
        "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, SpanName, ServiceName, SpanAttributes, HttpStatusCode,"
        " StatusCode, IngestedAt) VALUES (TIMESTAMP '2026-01-01', ?, ?, 'llm', 'plano(llm)', ?, 429, 'Unset',"
        " TIMESTAMP '2026-01-01')",
        ["ab" * 16, "cd" * 8, '{"plano.session_id":"s1","llm.usage.cached_input_tokens":5}'],
    )
    con.close()
    store = DuckDBStore(tmp_path / "old")
    try:
        sim = Simulation(rate=20, seed=3)
        by_service: dict[str, list] = {}
        for t in sim.traces(1_767_225_600, 1_767_225_660):
            for service, span in t.spans:
                by_service.setdefault(service, []).append((service, span))
        for spans in by_service.values():  # one Export call per service, as Plano sends them
            store.append_spans(
                Decoder().decode_protobuf(export_request(spans).SerializeToString()).table, datetime(2026, 1, 1)
            )
        old = store.query(f"SELECT {', '.join(LLM_COLUMNS)} FROM otel_traces WHERE SpanId = ?", ["cd" * 8])
        assert old == [(None,) * len(LLM_COLUMNS)]
        filled = store.query(
            "SELECT count(*) FILTER (WHERE SessionId IS NOT NULL), count(*) FILTER (WHERE RequestedModel IS NOT NULL),"
            " count(*) FILTER (WHERE Flagged IS NOT NULL), count(*) FILTER (WHERE FailureClass IS NOT NULL),"
            " count(*) FILTER (WHERE RouteName IS NOT NULL) FROM otel_traces WHERE SpanId <> ?",
            ["cd" * 8],
        )[0]
        assert all(n > 0 for n in filled), filled
    finally:
        store.close()
    assert sorted(table_columns(tmp_path / "old")) == sorted(TABLE_COLUMNS)
    assert table_columns(tmp_path / "old") == TABLE_COLUMNS  # in the order a new store has them


def _filled_store(data, n: int = 50):
    store = DuckDBStore(data)
    for i, batch in zip(range(n), _batches(500)):
        store.append_spans(batch, datetime(2026, 1, 1), i)
    store.close()
    return data / "planoscope.duckdb"


def test_a_truncated_database_is_refused_in_one_line_and_left_byte_for_byte(tmp_path):
    """It once failed half-way through the start with a 50-line traceback, and the failed start's
    checkpoint on close wrote 2,632 bytes into the corrupt file."""
    import hashlib

    db = _filled_store(tmp_path / "d")
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for _ in range(2):  # a second start finds it as the first left it
        with pytest.raises(StoreError) as e:
            DuckDBStore(tmp_path / "d")
        assert "truncated" in str(e.value) and str(db) in str(e.value) and "\n" not in str(e.value)
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before
        assert sorted(p.name for p in db.parent.iterdir()) == ["planoscope.duckdb"]  # no WAL either


def test_a_start_on_an_intact_store_writes_nothing_before_its_first_write(tmp_path):
    """Opening runs only statements that write nothing when the schema is there (the ``attr``
    macro is redefined only if it differs), so a start that fails afterwards leaves the file as it was."""
    import hashlib

    db = _filled_store(tmp_path / "d", n=2)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    store = DuckDBStore(tmp_path / "d")
    store.failed = True  # as after a failed start: closed without a checkpoint
    store.close()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not (tmp_path / "d" / "planoscope.duckdb.wal").exists()


def test_an_insert_on_a_full_disk_fails_with_the_disks_error(tmp_path):
    """The failed commit's own error, not the rollback's "no transaction is active" after it."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        store = DuckDBStore(mnt / "d")
        try:
            with pytest.raises(duckdb.Error) as e:
                for i, batch in zip(range(100), _batches(2000)):
                    store.append_spans(batch, datetime(2026, 1, 1), i)
            assert "No space left on device" in str(e.value), e.value
            assert DuckDBStore.unwritable(e.value)  # the writer retries it; nothing is quarantined
            subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
            store.append_spans(_batch(), datetime(2026, 1, 1), 1000)  # and it recovers in place
            assert store.journal_applied() == 1000
        finally:
            store.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
