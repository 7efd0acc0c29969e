"""Traces in flight: Plano exports a span when it ends, so a trace's root arrives last. A trace
with no root whose newest span arrived less than IN_FLIGHT_S ago is left out of a search (and
counted) unless asked for; once that long has passed without a root it is listed, marked no root.

On each store, with the arrival times set as the subject here: a real store file, with spans
stored as the writer stores them, stamped with the time they arrived (``append_spans``'
``ingested_at``); a real ClickHouse, with rows inserted as the collector's exporter inserts them
and an ``IngestedAt`` in the past (ClickHouse stamps it with its own clock otherwise)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conftest import now_base_ns, pb_request, pb_span
from planoscope.ingest.decode import Decoder
from planoscope.query.traces import IN_FLIGHT_S, TraceSearch, search
from planoscope.store import DuckDBStore, clickhouse_schema
from planoscope.store.clickhouse import ClickHouseStore
from support.clickhouse_fixtures import STORES
from support.exporter import exporter_rows

BASE = now_base_ns()
RANGE = (BASE / 1e9 - 10, BASE / 1e9 + 60)


@pytest.fixture(params=STORES)
def store(request, tmp_path):
    if request.param == "duckdb":
        s = DuckDBStore(tmp_path / "d")
    else:
        db = request.getfixturevalue("clickhouse_database")
        s = ClickHouseStore(db.url, tmp_path / "d")
        s.exporter_client = db.client  # the rows go in as a collector's, with their arrival time
    yield s
    s.close()


def _arrive(store, trace: str, span: str, parent: str, ago_s: float, start_s: float = 0) -> None:
    """One span of ``trace`` stored as if it arrived ``ago_s`` seconds ago."""
    start = BASE + int(start_s * 1e9)
    req = pb_request(
        ({"service.name": "plano(llm)"}, [pb_span(trace, span, "POST x", start, start + 10**6, parent=parent)])
    )
    at = datetime.now(UTC) - timedelta(seconds=ago_s)
    if isinstance(store, DuckDBStore):
        store.append_spans(Decoder().decode_protobuf(req.SerializeToString()).table, at.replace(tzinfo=None))
    else:
        columns = [*clickhouse_schema.insert_columns(), "IngestedAt"]
        store.exporter_client.insert("otel_traces", [[*row, at] for row in exporter_rows(req)], column_names=columns)


def _search(store, **kw) -> dict:
    return search(store, TraceSearch(*RANGE, limit=50, **kw))


def _rows(result: dict) -> dict[str, tuple[bool, bool]]:
    return {t["trace_id"]: (t["has_root"], t["in_flight"]) for t in result["traces"]}


FRESH, STALE, DONE, LATE = "1" * 32, "2" * 32, "3" * 32, "4" * 32


def _populate(store) -> None:
    _arrive(store, FRESH, "11" * 8, "12" * 8, ago_s=1)  # children only, just arrived: in flight
    _arrive(store, STALE, "21" * 8, "22" * 8, ago_s=IN_FLIGHT_S + 5)  # no root, and none for too long
    _arrive(store, DONE, "31" * 8, "32" * 8, ago_s=3)  # children, then the root: complete
    _arrive(store, DONE, "32" * 8, "", ago_s=2, start_s=-0.5)
    # The root long ago, a late child just now (a client that exports out of order): not in flight.
    _arrive(store, LATE, "42" * 8, "", ago_s=IN_FLIGHT_S * 4, start_s=-1)
    _arrive(store, LATE, "41" * 8, "42" * 8, ago_s=1)


def test_traces_in_flight_are_left_out_and_counted(store):
    _populate(store)
    got = _search(store)
    assert _rows(got) == {STALE: (False, False), DONE: (True, False), LATE: (True, False)}
    assert (got["total"], got["in_flight"]) == (3, 1)


def test_asked_for_they_are_listed_and_marked(store):
    _populate(store)
    got = _search(store, in_flight=True)
    assert _rows(got) == {FRESH: (False, True), STALE: (False, False), DONE: (True, False), LATE: (True, False)}
    assert (got["total"], got["in_flight"]) == (4, 1)


def test_when_the_root_arrives_the_trace_is_listed(store):
    _populate(store)
    _arrive(store, FRESH, "12" * 8, "", ago_s=0, start_s=-0.1)
    got = _search(store)
    assert _rows(got)[FRESH] == (True, False) and (got["total"], got["in_flight"]) == (4, 0)


def test_the_count_holds_on_an_empty_page_and_with_filters(store):
    _populate(store)
    past = _search(store, offset=100)
    assert (past["traces"], past["total"], past["in_flight"]) == ([], 3, 1)
    # Only FRESH matches: its page is empty, yet the search says one trace is in flight.
    only = search(store, TraceSearch(*RANGE, trace_id=FRESH))
    assert (only["traces"], only["total"], only["in_flight"]) == ([], 0, 1)
    assert [t["trace_id"] for t in search(store, TraceSearch(*RANGE, trace_id=FRESH, in_flight=True))["traces"]] == [
        FRESH
    ]
