"""Retention against the real server: spans (by start time) and scraped samples older than
``--retention`` are deleted in the background, in chunks through the writer; ``/healthz`` shows
disk use and the oldest span and sample; and the span metrics, cumulative counters, never fall:
not when spans are deleted, not after a restart, not after a ``kill -9`` right after a deletion.
"""

from __future__ import annotations

import os
import time

import duckdb
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from conftest import FakeTarget, _wait, db_path, grpc_export, now_base_ns, pb_request, pb_span, sdk_export

MS = 1_000_000
S = 1_000_000_000
HOUR = 3600 * S
LLM = {"service.name": "plano(llm)"}
GPT = {
    "service_name": "plano(llm)",
    "span_name": "POST /v1/chat/completions gpt-4o",
    "span_kind": "SPAN_KIND_CLIENT",
    "status_code": "STATUS_CODE_OK",
    "llm_model": "gpt-4o",
    "http_status_code": "200",
}


def llm_span(start_ns: int, duration_ns: int = 20 * MS):
    return {
        "resource": LLM,
        "name": "POST /v1/chat/completions gpt-4o",
        "kind": SpanKind.CLIENT,
        "start": start_ns,
        "end": start_ns + duration_ns,
        "status": (StatusCode.OK, None),
        "attrs": {"llm.model": "gpt-4o", "http.status_code": 200},
    }


def calls(srv) -> float:
    return srv.metrics().value("calls_total", GPT)


def wait_for(cond, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stored(data_dir) -> tuple[list[int], list]:
    con = duckdb.connect(str(db_path(data_dir)), read_only=True)
    try:
        spans = [r[0] for r in con.execute("SELECT epoch_ns(Timestamp) FROM otel_traces ORDER BY 1").fetchall()]
        samples = [r[0] for r in con.execute("SELECT Timestamp FROM samples").fetchall()]
        return spans, samples
    finally:
        con.close()


@pytest.fixture
def target():
    t = FakeTarget()
    yield t
    t.close()


def test_old_spans_and_samples_go_and_the_metrics_stay(server_factory, tmp_path, target):
    srv = server_factory(
        tmp_path / "d", "--retention", "3s", "--scrape", f"envoy={target.url}", "--scrape-interval", "0.3s"
    )
    now = time.time_ns()
    future = now + HOUR  # started an hour from now: kept for an hour and three seconds
    sdk_export(srv, [llm_span(future), llm_span(future + S)])
    sdk_export(srv, [llm_span(now - 2 * HOUR + i * MS) for i in range(25)])  # older than the retention
    wait_for(lambda: srv.healthz()["retention_deleted"]["spans"] >= 25, what="the old spans' deletion")
    h = srv.healthz()
    # Microseconds in the store (the ns cut off) and a float of ~1.8e9 s: within 2 us.
    assert h["oldest_span"] == pytest.approx(future / S, abs=2e-6)
    assert h["retention_s"] == 3
    wait_for(lambda: srv.healthz()["retention_deleted"]["samples"] > 0, what="a sample's deletion")
    h = srv.healthz()
    assert time.time() - 3 - 0.5 - 1 < h["oldest_sample"] <= time.time()  # the retention, a pass, slack
    files = sum(e.stat().st_blocks * 512 for e in os.scandir(srv.data_dir) if e.is_file())
    assert h["disk_bytes"] == pytest.approx(files, rel=0.5) and h["disk_bytes"] > 10_000
    assert calls(srv) == 27  # a counter: the deleted spans stay counted
    srv.restart()
    assert srv.startup_span_count == 2
    assert calls(srv) == 27
    srv.stop()
    spans, samples = stored(srv.data_dir)
    assert spans == [future, future + S]
    assert samples and min(samples).timestamp() > time.time() - 3 - 2  # (the last pass ran before the stop)


def test_a_kill_right_after_a_deletion_keeps_the_metrics(server_factory, tmp_path):
    """The old spans are deleted before the writer's periodic snapshot (every 10 s) would have
    included them: the deletion itself must snapshot first, or a restart would count fewer."""
    srv = server_factory(tmp_path / "d", "--retention", "5s")
    # The span kept is a minute ahead, so a slow machine's test (over 5 s to the restart's count)
    # does not see retention delete it too.
    now = time.time_ns() + 60 * S
    sdk_export(srv, [llm_span(now)])
    old = [llm_span(now - 3 * HOUR + i * MS) for i in range(30)]
    sdk_export(srv, old[:15], protocol="http")
    sdk_export(srv, old[15:])
    wait_for(lambda: srv.healthz()["retention_deleted"]["spans"] == 30, what="the deletion")
    assert calls(srv) == 31
    srv.kill()
    srv.start()
    assert srv.startup_span_count == 1
    assert calls(srv) == 31
    sdk_export(srv, [llm_span(now + MS)])
    assert calls(srv) == 32
    srv.stop()


def test_deleting_many_spans_goes_in_chunks_while_ingest_continues(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d", "--retention", "1h")  # passes every minute; the first at start
    base = now_base_ns() - 2 * HOUR
    for r in range(5):  # 25,000 old spans: three chunks of 10,000
        spans = [pb_span("cc" * 16, f"{r + 1:04x}{i:012x}", "old", base, base + MS) for i in range(5000)]
        assert grpc_export(srv.grpc_target, pb_request((LLM, spans))).partial_success.rejected_spans == 0
    srv.restart()  # the pass at start deletes them all, chunk after chunk; ingest is open meanwhile
    fresh = now_base_ns()
    latencies = []
    for i in range(20):
        t = time.monotonic()
        grpc_export(srv.grpc_target, pb_request((LLM, [pb_span("dd" * 16, f"{i + 1:016x}", "new", fresh, fresh + MS)])))
        latencies.append(time.monotonic() - t)
    wait_for(lambda: srv.healthz()["retention_deleted"]["spans"] == 25_000, what="the deletion")
    assert max(latencies) < 2, latencies
    srv.stop()
    spans, _ = stored(srv.data_dir)
    assert spans == [fresh] * 20


def test_retention_zero_keeps_everything(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d", "--retention", "0")
    sdk_export(srv, [llm_span(time.time_ns() - 400 * 24 * HOUR)])  # 400 days old
    # Inserted behind the journal (up to 5 s later; /healthz waits 0.25 s for it): wait for it.
    h = _wait(lambda: (h := srv.healthz())["oldest_span"] is not None and h, what="the span in the store")
    assert h["retention_s"] == 0 and h["retention_last_run"] is None and h["oldest_span"] is not None
    srv.stop()
    assert len(stored(srv.data_dir)[0]) == 1
