"""A store from before the LLM columns gains them on start and has them filled from what it
stored, exactly as ingest fills them, resumably."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime

import duckdb
import pytest

from planoscope.demo.simulate import Simulation, export_request
from planoscope.ingest.decode import Decoder
from planoscope.llm.prices import Prices
from planoscope.store.duckdb import DB_FILE, DuckDBStore
from planoscope.store.fill import META_KEY

# The columns added with the LLM usage dashboard, all filled from the span.
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
]
START = 1_767_225_600  # 2026-01-01


def _ingest(data, seconds: int = 60) -> dict:
    """Simulated Plano traffic stored as ingest stores it; returns each span's LLM columns."""
    decoder = Decoder(prices=Prices())
    store = DuckDBStore(data)
    try:
        sim = Simulation(rate=25, seed=11)
        for s in range(START, START + seconds, 10):
            table = decoder.estimate_costs(decoder.decode_protobuf(_request(sim.traces(s, s + 10))).table)
            store.append_spans(table, datetime(2026, 1, 1))
        return _columns(store)
    finally:
        store.close()


def _request(traces) -> bytes:
    """The traces' spans in one request, a resource per service (as a collector batches Plano's)."""
    by_service: dict[str, list] = {}
    for t in traces:
        for service, span in t.spans:
            by_service.setdefault(service, []).append((service, span))
    req = export_request(by_service.pop(next(iter(by_service))))
    for spans in by_service.values():
        req.resource_spans.extend(export_request(spans).resource_spans)
    return req.SerializeToString()


def _columns(store) -> dict:
    cols = ", ".join(f'"{c}"' for c in LLM_COLUMNS)
    return {r[0]: r[1:] for r in store.query(f"SELECT SpanId, {cols} FROM otel_traces")}


def _make_old(data) -> None:
    """Turn the store into one an earlier version wrote: without the LLM columns."""
    con = duckdb.connect(str(data / DB_FILE))
    for c in LLM_COLUMNS:
        con.execute(f'ALTER TABLE otel_traces DROP COLUMN "{c}"')
    con.close()


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    data = tmp_path_factory.mktemp("fill") / "data"
    expected = _ingest(data)
    return data, expected


def _copy(src, dst):
    dst.mkdir()
    (dst / DB_FILE).write_bytes((src / DB_FILE).read_bytes())
    return dst


def test_the_new_columns_are_filled_as_ingest_fills_them(ingested, tmp_path):
    data, expected = ingested
    llm_rows = [v for v in expected.values() if v[LLM_COLUMNS.index("RequestedModel")] is not None]
    assert len(expected) > 5000 and len(llm_rows) > 500
    for c in ("SessionId", "RouteName", "EstimatedCostUsd", "FailureClass", "SignalsQuality", "Flagged"):
        assert any(v[LLM_COLUMNS.index(c)] is not None for v in expected.values()), f"the simulator sends no {c}"
    old = _copy(data, tmp_path / "old")
    _make_old(old)
    store = DuckDBStore(old)
    try:
        assert store.fill_pending() == len(expected)
        assert set(_columns(store).values()) == {(None,) * len(LLM_COLUMNS)}  # added, not filled yet
        seen = []
        assert store.fill(Prices().estimate, lambda done, total: seen.append((done, total))) == len(expected)
        got = _columns(store)
        assert store.fill_pending() == 0 and store.meta(META_KEY) is None
    finally:
        store.close()
    assert seen[0] == (0, len(expected)) and seen[-1] == (len(expected), len(expected))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert got.keys() == expected.keys()
    diff = {k: (got[k], expected[k]) for k in expected if got[k] != pytest.approx(expected[k])}
    assert not diff, list(diff.items())[:3]


def test_a_fill_killed_midway_loses_nothing_and_the_next_start_finishes_it(ingested, tmp_path):
    data, expected = ingested
    old = _copy(data, tmp_path / "old")
    _make_old(old)
    # A real kill: SIGKILL from inside the fill, after its third slice committed.
    script = textwrap.dedent(
        f"""
        import os, signal
        from planoscope.llm.prices import Prices
        from planoscope.store import fill
        from planoscope.store.duckdb import DuckDBStore
        fill.SLICE_SPANS = 500
        calls = []
        def progress(done, total):
            calls.append(done)
            if len(calls) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        DuckDBStore({str(old)!r}).fill(Prices().estimate, progress)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=os.environ, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = DuckDBStore(old)
    try:
        left = store.fill_pending()
        assert 0 < left < len(expected) - 1000, left  # three slices of ~500 done, the rest to do
        filled = store.query(
            "SELECT count(*) FROM otel_traces WHERE FailureClass IS NOT NULL OR RequestedModel IS NOT NULL"
        )
        assert filled[0][0] > 0
        assert store.fill(Prices().estimate) == left
        got = _columns(store)
    finally:
        store.close()
    assert {k: v for k, v in got.items() if v != pytest.approx(expected[k])} == {}


def test_the_server_upgrades_an_old_store_on_start_and_serves_it(ingested, tmp_path, server_factory):
    data, expected = ingested
    old = _copy(data, tmp_path / "old")
    _make_old(old)
    srv = server_factory(old)
    assert "filling the new columns of" in "\n".join(srv.history)
    srv.stop()
    store = DuckDBStore(old)
    try:
        got = _columns(store)
    finally:
        store.close()
    assert {k: v for k, v in got.items() if v != pytest.approx(expected[k])} == {}


def test_a_new_store_has_nothing_to_fill(tmp_path):
    store = DuckDBStore(tmp_path / "new")
    try:
        assert store.fill_pending() == 0 and store.meta(META_KEY) is None
    finally:
        store.close()
