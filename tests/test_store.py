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
        assert store._read_threads >= 1
        assert _threads(store) == 1  # only the writer uses the database: inserts run single-threaded
        # A read runs with every thread DuckDB would use by default, and gives them back after.
        assert int(store.query("SELECT current_setting('threads')")[0][0]) == store._read_threads
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
        assert int(store.query("SELECT current_setting('threads')")[0][0]) == store._read_threads
        assert _threads(store) == store._read_threads  # the slow read is still in flight
        release.set()
        t.join(10)
        assert seen == [store._read_threads]
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
