"""No client holds a receiver's slot for free, nor a listener's file descriptors.

Against the real server: 64 gRPC calls that send their headers and never their message, and 64
OTLP/HTTP bodies dripping a byte every 2 s (``max_concurrent_requests`` of them), while the
OpenTelemetry SDK's exporters keep succeeding at the first attempt; a request slower than
``otlp_request_timeout`` refused; and 1,100 idle connections to the UI port of a server started
under ``ulimit -n 1024``, while both OTLP receivers keep working and stderr stays quiet.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

from conftest import EXPORT_METHOD, Server, _wait, ids, make_spans, read_spans
from planoscope.ingest.slots import EVICT_AFTER

TOKEN = "slow-clients-token-0123456789"
SLOTS = 64  # max_concurrent_requests' default
FIRST_ATTEMPT_S = 0.8  # faster than the SDK exporters' first retry (backoff 1 s ±20%)


class HangingGrpcCalls:
    """``n`` Export calls that send their headers and never their message, over 8 connections."""

    def __init__(self, target: str, n: int, metadata=None):
        self.never = threading.Event()
        # A local subchannel pool each: channels to one target otherwise share one connection.
        self.channels = [
            grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(8)
        ]
        self.calls = [self._open(i, metadata) for i in range(n)]

    def _open(self, i: int, metadata):
        def silent():
            self.never.wait()
            yield from ()

        return (
            self.channels[i % len(self.channels)]
            .stream_unary(EXPORT_METHOD)
            .future(silent(), metadata=metadata, timeout=120)
        )

    def done(self) -> list:
        return [c for c in self.calls if c.done()]

    def close(self) -> None:
        for c in self.calls:
            c.cancel()
        self.never.set()
        for ch in self.channels:
            ch.close()


class SlowBodies:
    """``n`` OTLP/HTTP requests announcing a 4 MB body and sending one byte of it every 2 s."""

    def __init__(self, url: str, n: int):
        u = urlsplit(url)
        head = (
            f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/x-protobuf\r\n"
            "Content-Length: 4000000\r\n\r\n"
        ).encode()
        self.socks = []
        for _ in range(n):
            s = socket.create_connection((u.hostname, u.port))
            s.sendall(head)
            s.setblocking(False)
            self.socks.append(s)
        self.received = {s: b"" for s in self.socks}
        self.closed: set[socket.socket] = set()
        self._stop = threading.Event()
        self._drip = threading.Thread(target=self._drip_bytes, daemon=True)
        self._drip.start()

    def _drip_bytes(self) -> None:
        while not self._stop.wait(2):
            for s in self.socks:
                try:
                    s.send(b"\x0a")
                except OSError:
                    pass

    def answered(self) -> dict[socket.socket, bytes]:
        """What the server answered so far, of the requests it answered (and whether it closed)."""
        for s in self.socks:
            if s in self.closed:
                continue
            try:
                while data := s.recv(65536):
                    self.received[s] += data
                self.closed.add(s)  # b"": the server closed the connection
            except BlockingIOError:
                pass
            except OSError:
                self.closed.add(s)
        return {s: r for s, r in self.received.items() if r}

    def close(self) -> None:
        self._stop.set()
        self._drip.join()
        for s in self.socks:
            s.close()


def _retry_info(trailers) -> RetryInfo:
    info = RetryInfo()
    status = Status.FromString(dict(trailers)["grpc-status-details-bin"])
    assert status.details[0].Unpack(info)
    return info


def _export_at_first_attempt(exporter, n: int) -> set[str]:
    from opentelemetry.sdk.trace.export import SpanExportResult

    sent: set[str] = set()
    for i in range(n):
        spans = make_spans(5, f"sdk-{i}")
        started = time.monotonic()
        assert exporter.export(spans) == SpanExportResult.SUCCESS, i
        assert time.monotonic() - started < FIRST_ATTEMPT_S, f"export {i} was refused and retried"
        sent |= ids(spans)
    exporter.shutdown()
    return sent


@pytest.mark.parametrize("token", [TOKEN, None], ids=["otlp_token", "no_token"])
def test_hanging_grpc_calls_do_not_block_the_sdk_exporter(server_factory, tmp_path, token):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    srv = server_factory(tmp_path / "d", *(["--otlp-token", token] if token else []))
    hanging = HangingGrpcCalls(srv.grpc_target, SLOTS + 1)  # without the token
    try:
        if token:
            # Refused from the metadata alone, without waiting for a message: no slot held.
            _wait(lambda: len(hanging.done()) == SLOTS + 1, 15, "every unauthenticated call answered")
            assert {c.code() for c in hanging.calls} == {grpc.StatusCode.UNAUTHENTICATED}
        else:
            # All 64 slots are held by calls waiting for their message; one call more is refused
            # at once, retryably. Once they have waited a second, a new request takes their place.
            _wait(lambda: hanging.done(), 15, "the call beyond the slots refused")
            [refused] = hanging.done()
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
            assert _retry_info(refused.trailing_metadata()).retry_delay.ToTimedelta().total_seconds() > 0
            time.sleep(EVICT_AFTER)
        headers = {"authorization": f"Bearer {token}"} if token else None
        exporter = OTLPSpanExporter(endpoint=srv.grpc_target, insecure=True, headers=headers, timeout=10)
        sent = _export_at_first_attempt(exporter, 20)
        if not token:
            # The first export took the slot of the oldest hanging call (which one that is depends
            # on how the 8 connections raced); each next one, the slot the previous export left.
            # The other 63 calls still wait for their message.
            [evicted] = [c for c in hanging.done() if c is not refused]
            assert evicted.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, evicted
            assert _retry_info(evicted.trailing_metadata()).retry_delay.ToTimedelta().total_seconds() > 0
            m = srv.metrics()
            assert m.value("planoscope_ingest_requests_refused_total", {"reason": "evicted"}) == 1
    finally:
        hanging.close()
    srv.stop()
    assert srv.lines("err") == []
    assert {r["SpanId"] for r in read_spans(srv.data_dir)} == sent


def test_slow_http_bodies_do_not_block_the_sdk_exporter(server_factory, tmp_path):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    srv = server_factory(tmp_path / "d")  # no otlp_token: what Plano needs
    slow = SlowBodies(srv.http_traces_url, SLOTS + 1)
    try:
        _wait(lambda: slow.answered(), 15, "the request beyond the slots refused")
        [first] = slow.answered().values()
        assert first.startswith(b"HTTP/1.1 503") and b"retry-after: " in first.lower(), first
        time.sleep(EVICT_AFTER)
        sent = _export_at_first_attempt(OTLPSpanExporter(endpoint=srv.http_traces_url, timeout=10), 20)
        # The first export took the slot of the oldest slow body; the other 63 still drip.
        answers = slow.answered()
        assert len(answers) == 2 and slow.socks[0] in answers, "not the oldest"
        evicted = answers[slow.socks[0]]
        assert evicted.startswith(b"HTTP/1.1 503") and b"retry-after: " in evicted.lower(), evicted
        _wait(lambda: slow.socks[0] in slow.closed, 5, "the evicted connection closed")  # its body is unread
        m = srv.metrics()
        assert m.value("planoscope_ingest_requests_refused_total", {"reason": "evicted"}) == 1
    finally:
        slow.close()
    srv.stop()
    assert srv.lines("err") == []
    assert {r["SpanId"] for r in read_spans(srv.data_dir)} == sent


def test_a_request_slower_than_otlp_request_timeout_is_refused(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d", "--otlp-request-timeout", "2s")
    hanging = HangingGrpcCalls(srv.grpc_target, 1)
    slow = SlowBodies(srv.http_traces_url, 1)
    started = time.monotonic()
    try:
        _wait(lambda: hanging.done() and slow.answered(), 10, "both slow requests answered")
        took = time.monotonic() - started
        [call] = hanging.calls
        assert call.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "otlp_request_timeout" in call.details()
        [answer] = slow.answered().values()
        assert answer.startswith(b"HTTP/1.1 408") and b"otlp_request_timeout" in answer, answer
        assert took >= 1.8, took  # refused at the configured 2 s, not at once (the wait above bounds it)
        _wait(lambda: slow.closed, 5, "the connection closed")
        assert srv.metrics().value("planoscope_ingest_requests_refused_total", {"reason": "timeout"}) == 2
    finally:
        hanging.close()
        slow.close()
    srv.stop()
    assert srv.lines("err") == []


class LimitedServer(Server):
    """The server under ``ulimit -n SOFT`` (hard limit HARD), as a shell or a unit file sets it."""

    def __init__(self, data_dir, soft: int, hard: int):
        super().__init__(data_dir)
        self.nofile = f"--nofile={soft}:{hard}"

    @property
    def command(self) -> list[str]:
        return ["prlimit", self.nofile, "--", *super().command]


@pytest.mark.parametrize("hard", [4096, 1024])
def test_idle_connections_to_the_ui_leave_ingest_working(tmp_path, hard):
    """With the hard limit above the soft one, planoscope raises it; with both at 1,024 each
    listener keeps to its share. Either way the idle connections take no descriptor the OTLP
    receivers need, the UI still answers (the oldest idle connection gives way), and stderr
    holds at most the one line about a low limit, not one per failed accept."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    soft, own_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert own_hard >= 2048, "this test opens 1,100 connections"
    resource.setrlimit(resource.RLIMIT_NOFILE, (own_hard, own_hard))
    srv = LimitedServer(tmp_path / "d", 1024, hard).start()
    idle = []
    try:
        u = urlsplit(srv.web_url)
        idle = [socket.create_connection((u.hostname, u.port), timeout=5) for _ in range(1100)]
        if hard > 1024:  # the limit was raised: the UI holds its 1,024 connections, more than 1,024 fds
            _wait(lambda: 1024 < _open_fds(srv) < 1024 + 64, 10, "the UI holding 1,024 connections")
        else:  # the UI keeps to its share (256), leaving the other listeners theirs
            _wait(lambda: _open_fds(srv) < 256 + 64, 10, "the UI holding its share of connections")
        r = httpx.get(srv.web_url + "/healthz", timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        sent = _export_at_first_attempt(GrpcExporter(endpoint=srv.grpc_target, insecure=True, timeout=10), 10)
        sent |= _export_at_first_attempt(HttpExporter(endpoint=srv.http_traces_url, timeout=10), 10)
        err = "\n".join(srv.lines("err"))
        assert ("the open file limit is 1024" in err) == (hard == 1024), err[:3000]
        assert len(err) < 2000, err[:3000]
        assert "socket.accept" not in err and "Traceback" not in err, err[:3000]
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, own_hard))
        srv.stop()
    assert {r["SpanId"] for r in read_spans(srv.data_dir)} == sent


def _open_fds(srv: Server) -> int:
    return len(list(Path(f"/proc/{srv.proc.pid}/fd").iterdir()))  # prlimit execs the server: same pid
