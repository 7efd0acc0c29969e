"""Stopping under load, against the real ``planoscope serve``, with the OpenTelemetry SDK's
exporters as clients:

- SIGTERM mid-traffic: the server stops accepting, finishes what is in flight, exits 0, and every
  acknowledged span is stored once; the span metrics match the store after a restart.
- SIGKILL mid-traffic: after a restart on the same data directory every span whose export was
  acknowledged is stored exactly once; re-sending the exports that were not acknowledged (what
  an SDK does) leaves every span stored exactly once, and the span metrics count them exactly.
"""

from __future__ import annotations

import threading
import time

from conftest import ids, make_spans, read_spans, spans_by_id

BATCH = 200


class Senders:
    """Threads exporting batches through the SDK exporters (gRPC and HTTP) until told to stop or
    until the server goes away; they record which batches were acknowledged."""

    def __init__(self, srv, work: list[list], n_threads: int = 4, timeout: float = 3):
        self.srv = srv
        self.timeout = timeout
        self.work = work
        self.acked: list[list] = []
        self.failed: list[list] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t, n_threads)) for t in range(n_threads)]

    def _exporter(self, t: int):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        if t % 2 == 0:
            return GrpcExporter(endpoint=self.srv.grpc_target, insecure=True, timeout=self.timeout)
        return HttpExporter(endpoint=self.srv.http_traces_url, timeout=self.timeout)

    def _run(self, t: int, n: int) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        exporter = self._exporter(t)
        try:
            for batch in self.work[t::n]:
                if self.stop.is_set():
                    with self.lock:
                        self.failed.append(batch)
                    continue
                ok = exporter.export(batch) == SpanExportResult.SUCCESS
                with self.lock:
                    (self.acked if ok else self.failed).append(batch)
        finally:
            exporter.shutdown()

    def start(self) -> Senders:
        for t in self.threads:
            t.start()
        return self

    def wait_for_acks(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked)} batches acknowledged"
            time.sleep(0.02)

    def join(self, halt: bool = True) -> None:
        if halt:  # batches not yet sent count as failed: the client gave up
            self.stop.set()
        for t in self.threads:
            t.join(120)
            assert not t.is_alive()

    def acked_ids(self) -> set[str]:
        return set().union(*(ids(b) for b in self.acked))


def work(n_batches: int = 160) -> list[list]:
    spans = make_spans(n_batches * BATCH, "plano(llm)")  # fresh ids: nothing is de-duplicated away
    return [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]


def calls_total(srv) -> float:
    return sum(v for n, _, v in srv.metrics().samples if n == "calls_total")


def test_sigterm_under_load_finishes_in_flight_work_and_exits_0(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d")
    senders = Senders(srv, work()).start()
    senders.wait_for_acks(20)
    stopping = time.monotonic()
    rc = srv.stop(expect_rc=None)
    stop_s = time.monotonic() - stopping
    senders.join()
    assert rc == 0, srv.output()
    assert "Traceback" not in "\n".join(srv.lines("err")), srv.output()
    assert srv.lines("out")[-2:] == ["planoscope: stopping: finishing in-flight requests", "planoscope: stopped"]
    assert stop_s < 15, stop_s
    stored = spans_by_id(read_spans(srv.data_dir))  # fails if a span is stored twice
    acked = senders.acked_ids()
    assert acked <= set(stored) and senders.failed, (len(acked), len(stored), len(senders.failed))
    srv.start()
    assert srv.startup_span_count == len(stored)
    assert calls_total(srv) == len(stored)
    srv.stop()


def test_sigkill_under_load_keeps_every_acknowledged_span_exactly_once(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d")
    senders = Senders(srv, work()).start()
    senders.wait_for_acks(30)
    srv.kill()  # SIGKILL mid-traffic: no shutdown, no checkpoint, no last snapshot
    senders.join()
    acked = senders.acked_ids()
    assert senders.failed, "the kill came after all the traffic"
    # Acknowledged means journaled: the start inserts what DuckDB did not have yet.
    srv.start()
    started_with = srv.startup_span_count
    srv.stop()
    stored = spans_by_id(read_spans(srv.data_dir))
    assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged spans lost"
    assert started_with == len(stored)

    # What an SDK does next: re-send what was not acknowledged. Some of it may have been journaled
    # just before the kill (acknowledgement lost): it must not be stored twice.
    srv.start()
    assert srv.startup_span_count == len(stored)
    retry = Senders(srv, senders.failed, n_threads=2, timeout=30)
    retry.start().join(halt=False)
    assert not retry.failed
    everything = acked | retry.acked_ids()
    assert len(everything) == sum(len(b) for b in senders.work)
    assert calls_total(srv) == len(everything)  # metrics restored from snapshot + replay, then added to
    srv.stop()
    assert set(spans_by_id(read_spans(srv.data_dir))) == everything


def test_sigterm_stops_both_receivers_at_once_and_finishes_what_is_in_flight(server_factory, tmp_path):
    """A 300,000-span export is being committed when SIGTERM arrives: OTLP/HTTP stops taking
    connections at once (not only after gRPC has drained), and the export still succeeds."""
    import signal

    import duckdb
    import httpx

    from conftest import Metrics, _many_spans, db_path, grpc_export

    srv = server_factory(tmp_path / "d", "--max-request-bytes", str(256 << 20), "--max-spans-per-request", "1000000")
    body = _many_spans(300_000)
    done: dict = {}

    def huge():
        try:
            done["response"] = grpc_export(srv.grpc_target, body, timeout=120)
        except Exception as e:  # reported below
            done["error"] = e
        done["at"] = time.monotonic()

    sender = threading.Thread(target=huge)
    sender.start()
    deadline = time.monotonic() + 30
    while Metrics(srv.metrics_text()).value("planoscope_ingest_queued_bytes", {}) == 0:  # received, admitted
        assert time.monotonic() < deadline and "at" not in done, done
        time.sleep(0.01)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # uvicorn notices within 0.1 s
    try:
        httpx.post(srv.http_traces_url, content=b"", headers={"Content-Type": "application/x-protobuf"}, timeout=5)
        raise AssertionError("OTLP/HTTP still took a request after SIGTERM")
    except httpx.ConnectError:
        refused_at = time.monotonic()
    sender.join(120)
    assert "error" not in done, done
    assert refused_at < done["at"], "the export was no longer in flight: the test proves nothing"
    assert srv.stop(expect_rc=None) == 0, srv.output()
    con = duckdb.connect(str(db_path(srv.data_dir)), read_only=True)
    assert con.execute("SELECT count(*) FROM otel_traces").fetchone()[0] == 300_000
    con.close()
