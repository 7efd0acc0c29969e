"""Overload: a client faster than the store is refused with the OTLP spec's retryable errors and
a retry delay (gRPC UNAVAILABLE with RetryInfo, HTTP 503 with Retry-After), its retries succeed,
nothing is lost or stored twice, and the server's memory stays bounded.

The queue is made small (``--max-queued-bytes``) so that a few concurrent clients on this
2-core machine outrun it; the clients are raw OTLP/gRPC and OTLP/HTTP retry loops that check
every refusal's retry hint; and the OpenTelemetry SDK's own exporters, which must wait the
suggested delay.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import duckdb
import grpc
import httpx
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from conftest import (
    EXPORT_METHOD,
    _many_spans,
    db_path,
    grpc_export,
    now_base_ns,
    pb_request,
    pb_span,
    read_spans,
    spans_by_id,
)

MS = 1_000_000
SPANS_PER_REQUEST = 200
RSS_BOUND_MIB = 600  # the server's peak resident memory through the whole test


def _request(client: int, batch: int) -> tuple[bytes, set[str]]:
    base = now_base_ns()
    ids = [f"{client + 1:04x}{batch:06x}{i:06x}" for i in range(SPANS_PER_REQUEST)]
    attrs = {"llm.model": "gpt-4o", "http.status_code": 200, "llm.user_message_preview": "x" * 200}
    spans = [
        pb_span(
            f"{client + 1:08x}{batch:024x}",
            sid,
            "POST /v1/chat/completions gpt-4o",
            base,
            base + 5 * MS,
            kind=3,
            attrs=attrs,
        )
        for sid in ids
    ]
    return pb_request(({"service.name": "plano(llm)"}, spans)).SerializeToString(), set(ids)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked: set[str] = set()
        self.refusals = 0
        self.errors: list[str] = []

    def add(self, ids: set[str], refusals: int) -> None:
        with self.lock:
            assert not (ids & self.acked)
            self.acked |= ids
            self.refusals += refusals

    def error(self, msg: str) -> None:
        with self.lock:
            self.errors.append(msg)


def grpc_client(target: str, client: int, batches: int, tally: Tally, deadline: float) -> None:
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary(EXPORT_METHOD)
        for b in range(batches):
            body, ids = _request(client, b)
            refusals = 0
            while True:
                try:
                    resp = ExportTraceServiceResponse.FromString(call(body, timeout=30))
                    assert not resp.HasField("partial_success"), resp
                    break
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        return tally.error(f"grpc client {client}: {e.code()} {e.details()}")
                    trailers = dict(e.trailing_metadata() or ())
                    status = Status.FromString(trailers["grpc-status-details-bin"])
                    info = RetryInfo()
                    assert status.code == 14 and status.details[0].Unpack(info)
                    assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]) == info
                    delay = info.retry_delay.ToTimedelta().total_seconds()
                    assert 0.1 <= delay <= 0.3, delay  # --overload-retry-delay 200ms, jittered ±50%
                    refusals += 1
                    time.sleep(delay)
            tally.add(ids, refusals)


def http_client(url: str, client: int, batches: int, tally: Tally, deadline: float) -> None:
    with httpx.Client(timeout=30) as c:
        for b in range(batches):
            body, ids = _request(client, b)
            refusals = 0
            while True:
                r = c.post(url, content=body, headers={"Content-Type": "application/x-protobuf"})
                if r.status_code == 200:
                    assert not ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")
                    break
                if r.status_code != 503 or time.monotonic() > deadline:
                    return tally.error(f"http client {client}: {r.status_code} {r.content[:200]!r}")
                assert r.headers["retry-after"] == "1"
                assert Status.FromString(r.content).details[0].Is(RetryInfo.DESCRIPTOR)
                refusals += 1
                time.sleep(0.2)  # sooner than Retry-After's whole second, to keep the pressure on
            tally.add(ids, refusals)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_clients_faster_than_the_store_retry_and_nothing_is_lost(server_factory, tmp_path):
    one_request = len(_request(0, 0)[0])
    srv = server_factory(tmp_path / "d", "--max-queued-bytes", str(3 * one_request), "--overload-retry-delay", "200ms")
    tally = Tally()
    deadline = time.monotonic() + 120
    threads = [threading.Thread(target=grpc_client, args=(srv.grpc_target, c, 15, tally, deadline)) for c in range(6)]
    threads += [
        threading.Thread(target=http_client, args=(srv.http_traces_url, c, 15, tally, deadline)) for c in range(6, 10)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    seconds = time.monotonic() - started
    assert tally.errors == []
    expected = 10 * 15 * SPANS_PER_REQUEST
    assert len(tally.acked) == expected
    refused = srv.metrics().value("planoscope_ingest_requests_refused_total", {"reason": "overloaded"})
    assert tally.refusals > 10 and refused == tally.refusals
    rss = peak_rss_mib(srv.proc.pid)
    print(f"\n{expected} spans in {seconds:.1f} s, {tally.refusals} refusals, peak RSS {rss:.0f} MiB")
    assert rss < RSS_BOUND_MIB
    srv.stop()
    stored = spans_by_id(read_spans(srv.data_dir))  # fails if a span is stored twice
    assert set(stored) == tally.acked


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_sdk_exporter_waits_the_suggested_delay_and_succeeds(server_factory, tmp_path, caplog, protocol):
    """A huge request keeps the queue busy for a few seconds; an SDK export meanwhile is refused,
    waits the server's delay (3 s ±50%, far from the SDK's own first backoff of 0.8-1.2 s), and
    its retry succeeds."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from conftest import ids, make_spans

    srv = server_factory(
        tmp_path / "d",
        "--max-queued-bytes",
        "1024",
        "--overload-retry-delay",
        "3s",
        "--max-request-bytes",
        str(256 << 20),
        "--max-spans-per-request",
        "1000000",
    )
    body = _many_spans(300_000)
    huge = threading.Thread(target=lambda: grpc_export(srv.grpc_target, body, timeout=120))
    huge.start()
    time.sleep(0.3)  # the huge request is being received, decoded and committed for about 2 s
    spans = make_spans(5, "sdk")
    if protocol == "grpc":
        exporter = GrpcExporter(endpoint=srv.grpc_target, insecure=True, timeout=30)
    else:
        exporter = HttpExporter(endpoint=srv.http_traces_url, timeout=30)
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    waited = time.monotonic() - started
    exporter.shutdown()
    huge.join(120)
    delays = [float(m.group(1)) for r in caplog.records if (m := re.search(r"retrying in ([\d.]+)s", r.getMessage()))]
    assert delays and all(1.4 <= d <= 5.0 for d in delays), delays  # HTTP: Retry-After is whole seconds
    assert waited >= 1.4
    srv.stop()
    con = duckdb.connect(str(db_path(srv.data_dir)), read_only=True)
    rows, distinct = con.execute("SELECT count(*), count(DISTINCT SpanId) FROM otel_traces").fetchone()
    sdk = {r[0] for r in con.execute("SELECT SpanId FROM otel_traces WHERE ServiceName = 'sdk'").fetchall()}
    con.close()
    assert rows == distinct == 300_005 and sdk == ids(spans)


def test_more_concurrent_requests_than_allowed_are_refused_and_retried(server_factory, tmp_path):
    """Beyond --max-concurrent-requests per receiver, a request is refused before its body is read:
    gRPC RESOURCE_EXHAUSTED, HTTP 503 with Retry-After, both with RetryInfo."""
    srv = server_factory(tmp_path / "d", "--max-concurrent-requests", "2", "--overload-retry-delay", "100ms")
    refused = {"grpc": 0, "http": 0}
    acked: set[str] = set()
    lock = threading.Lock()
    errors: list[str] = []

    def grpc_loop(client: int) -> None:
        # A connection each (channels to one target share one otherwise), as separate clients have:
        # a connection carries at most a quarter of the slots (here one call at a time).
        with grpc.insecure_channel(srv.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            call = ch.unary_unary(EXPORT_METHOD)
            for b in range(8):
                body, ids = _request(client, b)
                while True:
                    try:
                        call(body, timeout=30)
                        break
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                            return errors.append(f"{e.code()} {e.details()}")
                        assert "max_concurrent_requests" in e.details()
                        status = Status.FromString(dict(e.trailing_metadata())["grpc-status-details-bin"])
                        assert status.code == 8 and status.details[0].Is(RetryInfo.DESCRIPTOR)
                        with lock:
                            refused["grpc"] += 1
                        time.sleep(0.02)
                with lock:
                    acked.update(ids)

    def http_loop(client: int) -> None:
        with httpx.Client(timeout=30) as c:
            for b in range(8):
                body, ids = _request(client, b)
                while True:
                    r = c.post(srv.http_traces_url, content=body, headers={"Content-Type": "application/x-protobuf"})
                    if r.status_code == 200:
                        break
                    if r.status_code != 503 or "retry-after" not in r.headers:
                        return errors.append(f"{r.status_code} {r.headers} {r.content[:100]!r}")
                    assert b"max_concurrent_requests" in Status.FromString(r.content).message.encode()
                    with lock:
                        refused["http"] += 1
                    time.sleep(0.02)
                with lock:
                    acked.update(ids)

    threads = [threading.Thread(target=grpc_loop, args=(c,)) for c in range(6)]
    threads += [threading.Thread(target=http_loop, args=(c,)) for c in range(6, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert refused["grpc"] > 0 and refused["http"] > 0, refused
    assert len(acked) == 12 * 8 * SPANS_PER_REQUEST
    srv.stop()
    assert set(spans_by_id(read_spans(srv.data_dir))) == acked
