"""The DuckDB store's own policies, on a real database file."""

from __future__ import annotations

import threading

from planoscope.store import DuckDBStore


def _threads(store: DuckDBStore) -> int:
    """DuckDB's thread count as the writer sees it (read on the write connection, not through
    ``query``, which would raise it)."""
    return int(store._con.execute("SELECT current_setting('threads')").fetchall()[0][0])


def test_ingest_runs_on_one_duckdb_thread_and_reads_get_all_of_them(tmp_path):
    store = DuckDBStore(tmp_path / "d")
    try:
        assert store.read_threads >= 1
        assert _threads(store) == 1  # only the writer uses the database: inserts run single-threaded
        # A read runs with every thread DuckDB would use by default, and gives them back after.
        assert int(store.query("SELECT current_setting('threads')")[0][0]) == store.read_threads
        assert _threads(store) == 1
    finally:
        store.close()


def test_overlapping_reads_keep_all_threads_until_the_last_one_ends(tmp_path):
    store = DuckDBStore(tmp_path / "d")
    try:
        # A slow read holds the count up while another thread's read starts and ends.
        inside, release, seen = threading.Event(), threading.Event(), []

        def slow_read():
            store._reading(store._cursor(), 1)
            inside.set()
            release.wait(10)
            seen.append(int(store.query("SELECT current_setting('threads')")[0][0]))
            store._reading(store._cursor(), -1)

        t = threading.Thread(target=slow_read)
        t.start()
        assert inside.wait(10)
        assert int(store.query("SELECT current_setting('threads')")[0][0]) == store.read_threads
        assert _threads(store) == store.read_threads  # the slow read is still in flight
        release.set()
        t.join(10)
        assert seen == [store.read_threads]
        assert _threads(store) == 1
    finally:
        store.close()


def test_a_failing_read_gives_the_threads_back(tmp_path):
    store = DuckDBStore(tmp_path / "d")
    try:
        try:
            store.query("SELECT * FROM no_such_table")
        except Exception as e:
            assert "no_such_table" in str(e)
        else:
            raise AssertionError("the query should have failed")
        assert store._readers == 0
        assert _threads(store) == 1
    finally:
        store.close()


def test_spans_appended_to_a_migrated_store_land_in_their_columns(tmp_path):
    """A store written before TraceKey existed has it after IngestedAt: appends go by name."""
    from datetime import datetime

    import duckdb

    from planoscope.decode import Decoder
    from planoscope.loadgen import template_request
    from planoscope.schema import duckdb_ddl, trace_key
    from planoscope.store.duckdb import DB_FILE

    data = tmp_path / "old"
    data.mkdir()
    con = duckdb.connect(str(data / DB_FILE))
    con.execute("\n".join(line for line in duckdb_ddl().splitlines() if "TraceKey" not in line))
    con.close()
    store = DuckDBStore(data)
    try:
        assert store._span_columns[-2:] == ["IngestedAt", "TraceKey"]
        batch = Decoder().decode_protobuf(template_request(20).SerializeToString()).table
        stamp = datetime(2026, 1, 2, 3, 4, 5, 678901)
        store.append_spans(batch, stamp)
        rows = store.query('SELECT TraceId, SpanId, "TraceKey", IngestedAt, Duration FROM otel_traces ORDER BY SpanId')
        expected = sorted(zip(batch.column("TraceId").to_pylist(), batch.column("SpanId").to_pylist(),
                              batch.column("Duration").to_pylist()), key=lambda r: r[1])
        assert [(r[0], r[1], r[4]) for r in rows] == expected
        assert all(r[2] == trace_key(r[0]) for r in rows)
        assert {r[3] for r in rows} == {stamp}
    finally:
        store.close()
