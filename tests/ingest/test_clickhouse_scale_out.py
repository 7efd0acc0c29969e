"""Scale-out on one ClickHouse database, end to end: two ``planoscope serve`` ingest instances and
a third that only answers queries (nothing is sent to it), real processes on a real ClickHouse
server. What both ingest instances acknowledged is, exactly, what the query instance's
dashboard and trace search count; after a ``kill -9`` of an ingest instance under load and its
restart, every acknowledged span is stored once and the query instance's answers equal
ClickHouse's counts."""

from __future__ import annotations

from urllib.parse import urlencode

from test_clickhouse_ingest import SPANS_PER_REQUEST, Load, counts, serve, span_ids, stored

from conftest import _wait


def dashboard_llm_spans(srv) -> int:
    """The LLM requests the dashboard's cumulative panel counts, up to now (every model)."""
    r = srv.get("/api/v1/dashboard")
    assert r.status_code == 200, r.text
    panel = next(p for p in r.json()["panels"] if p["id"] == "llm_cumulative_requests")
    return sum(s["points"][-1][1] for s in panel["series"])


def searched(srv) -> tuple[int, int, set[str]]:
    """The trace search of plano(llm) over its default range (the last hour): (its total of traces, the spans of the traces
    it lists, page by page, and their ids)."""
    traces: list[dict] = []
    while True:
        q = {"service": "plano(llm)", "in_flight": "true", "limit": 500, "offset": len(traces), "sort": "start"}
        r = srv.get("/api/v1/traces?" + urlencode(q))
        assert r.status_code == 200, r.text
        page = r.json()
        traces += page["traces"]
        if not page["traces"] or len(traces) >= page["total"]:
            break
    return page["total"], sum(t["span_count"] for t in traces), {t["trace_id"] for t in traces}


def stored_traces(client) -> set[str]:
    return {r[0] for r in client.query("SELECT DISTINCT TraceId FROM otel_traces").result_rows}


def test_two_ingest_instances_and_a_query_instance_on_one_clickhouse(server_factory, clickhouse_database, tmp_path):
    db = clickhouse_database
    a = serve(server_factory, tmp_path / "a", db.url)
    b = serve(server_factory, tmp_path / "b", db.url)
    q = serve(server_factory, tmp_path / "q", db.url)
    assert len({s.healthz()["store"]["instance"] for s in (a, b, q)}) == 3

    # Spans sent to both ingest instances: each span in the query instance's answers, once.
    first = [Load(a.grpc_target, 0xA, clients=1, batches=4), Load(b.grpc_target, 0xB, clients=1, batches=6)]
    for load in first:
        load.join(60)
        assert load.errors == [] and load.acked == load.sent
    stored(a)
    stored(b)
    sent = 10 * SPANS_PER_REQUEST
    assert counts(db.client) == (sent, sent)
    assert dashboard_llm_spans(q) == sent
    assert searched(q) == (10, sent, stored_traces(db.client))

    # Under load on both, a is killed (SIGKILL) with acknowledged spans only in its journal,
    # then started again.
    load_a, load_b = Load(a.grpc_target, 0xC), Load(b.grpc_target, 0xD)
    load_a.wait_acked(10 * SPANS_PER_REQUEST)
    _wait(lambda: counts(db.client, "startsWith(SpanId, '0c')")[0] > 0, 60, "a first insert of a's spans")
    load_a.wait_acked(len(load_a.acked) + 5 * SPANS_PER_REQUEST)
    pending = a.healthz()["pending_spans"]
    a.kill()
    load_a.stop.set()
    load_a.join()
    load_b.wait_acked(20 * SPANS_PER_REQUEST)
    load_b.stop.set()
    load_b.join()
    assert load_a.errors == load_b.errors == [] and pending > 0
    a.start()
    stored(a)
    stored(b)

    count, unique = counts(db.client)
    assert count == unique, f"{count - unique} spans stored twice"
    ids = span_ids(db.client)
    assert load_a.acked | load_b.acked <= ids  # a request in flight at the kill may be in too
    assert ids - (load_a.sent | load_b.sent) == {i for i in ids if i[:2] in ("0a", "0b")}
    assert dashboard_llm_spans(q) == count
    traces = stored_traces(db.client)
    assert searched(q) == (len(traces), count, traces)
    # The query instance ingested nothing: its span metrics count nothing, the others' theirs.
    calls = [sum(v for n, _, v in s.metrics().samples if n == "calls_total") for s in (a, b, q)]
    assert calls[2] == 0 and calls[0] + calls[1] == count
