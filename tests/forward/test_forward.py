"""--forward-otlp: every stored span reaches another OTLP endpoint, here a second planoscope, over
gRPC and HTTP; a backend that is down (even across a restart of the forwarding server) loses
nothing and does not hold up ingest. On both stores: on ClickHouse, each of two instances writing
one database forwards the spans it ingested, and a collector's rows are nobody's to forward."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest

from conftest import grpc_export, pb_request, pb_span, read_spans
from planoscope.forward.forwarder import parse_destination
from support.clickhouse_fixtures import STORES
from support.ports import free_port


def _spans(rng: random.Random, n: int, base_ns: int) -> list:
    out = []
    for i in range(n):
        tid = rng.randbytes(16)
        out.append(
            pb_span(
                tid,
                rng.randbytes(8),
                f"POST /v1/chat/completions m{i % 3}",
                base_ns + i * 1000,
                base_ns + i * 1000 + 5_000_000,
                attrs={"llm.model": f"m{i % 3}", "n": i, "ok": True, "ratio": i / 8, "code": str(i)},
                status_code=2 if i % 7 == 0 else 0,
                status_message="boom" if i % 7 == 0 else "",
            )
        )
    return out


def _send(srv, spans, service="plano(llm)") -> None:
    for i in range(0, len(spans), 100):
        t = time.monotonic()
        resp = grpc_export(
            srv.grpc_target, pb_request(({"service.name": service, "deployment": "test"}, spans[i : i + 100]))
        )
        assert resp.partial_success.rejected_spans == 0
        assert time.monotonic() - t < 5, "ingest waited for the forwarding backend"


def _wait_for(srv, n: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if srv.healthz()["spans_written"] >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"backend has {srv.healthz()['spans_written']} spans, expected {n}")


def _same_rows(a_dir, b_dir) -> int:
    strip = lambda rows: {r["SpanId"]: {k: v for k, v in r.items() if k not in ("IngestedAt",)} for r in rows}  # noqa: E731
    a, b = strip(read_spans(a_dir)), strip(read_spans(b_dir))
    assert set(a) == set(b)
    for span_id in a:
        assert a[span_id] == b[span_id], span_id
    return len(a)


class _Front:
    """The forwarding planoscope on ``store``, and where what it was sent is stored as sent: its
    own DuckDB file, or (ClickHouse) a planoscope of its own sent the same spans directly."""

    def __init__(self, request, server_factory, store: str, data_dir, *args: str):
        self.env = {}
        if store == "clickhouse":
            self.env = {"PLANOSCOPE_STORE": request.getfixturevalue("module_clickhouse_database").url}
        self.srv = server_factory(data_dir, *args, env=self.env)
        self.reference = server_factory(data_dir.parent / "ref") if store == "clickhouse" else self.srv
        self.reference_dir = data_dir.parent / "ref" if store == "clickhouse" else data_dir

    def send(self, spans, service="plano(llm)") -> None:
        _send(self.srv, spans, service)
        if self.reference is not self.srv:
            _send(self.reference, spans, service)

    def stop(self) -> None:
        self.srv.stop()
        self.reference.stop()


@pytest.mark.parametrize("store,protocol", [("duckdb", "grpc"), ("duckdb", "http"), ("clickhouse", "grpc")])
def test_every_span_reaches_a_second_planoscope(request, server_factory, tmp_path, store, protocol):
    backend = server_factory(tmp_path / "b")
    url = f"grpc://{backend.grpc_target}" if protocol == "grpc" else backend.http_traces_url
    front = _Front(request, server_factory, store, tmp_path / "a", "--forward-otlp", url)
    rng = random.Random(1)
    spans = _spans(rng, 1200, time.time_ns() - 60 * 10**9)
    front.send(spans[:700])
    front.send(spans[700:], service="plano(agent)")
    _wait_for(backend, 1200)
    health = front.srv.healthz()["forwarding"]
    assert [(f["url"], f["forwarded"], f["pending"], f["last_error"]) for f in health] == [(url, 1200, 0, None)]
    front.stop()
    backend.stop()
    assert _same_rows(front.reference_dir, tmp_path / "b") == 1200  # typed attributes included


@pytest.mark.parametrize("store", STORES)
def test_a_down_backend_loses_nothing_across_a_restart(request, server_factory, tmp_path, store):
    port = free_port()
    url = f"grpc://127.0.0.1:{port}"
    front = _Front(request, server_factory, store, tmp_path / "a", "--forward-otlp", url)
    rng = random.Random(2)
    first, second = _spans(rng, 500, time.time_ns() - 120 * 10**9), _spans(rng, 300, time.time_ns() - 60 * 10**9)
    front.send(first)  # acknowledged at once although the backend is down
    deadline = time.time() + 20
    while time.time() < deadline:
        (f,) = front.srv.healthz()["forwarding"]
        if f["last_error"]:
            break
        time.sleep(0.2)
    assert f["pending"] == 500 and f["forwarded"] == 0 and "unavailable" in f["last_error"]
    front.srv.restart()  # SIGTERM, then the same data directory: the backlog is on disk
    front.send(second)
    backend = server_factory(tmp_path / "b", "--otlp-grpc", f"127.0.0.1:{port}")
    _wait_for(backend, 800, timeout=90)  # the forwarder backs off up to 30 s between attempts
    time.sleep(1)
    assert backend.healthz()["spans_written"] == 800  # each span once (a re-send would be de-duplicated)
    (f,) = front.srv.healthz()["forwarding"]
    assert f["pending"] == 0 and f["last_error"] is None
    front.stop()
    backend.stop()
    assert _same_rows(front.reference_dir, tmp_path / "b") == 800


def test_each_clickhouse_instance_forwards_what_it_ingested(server_factory, module_clickhouse_database, tmp_path):
    """Two instances write one ClickHouse database, each forwarding to its own backend: each
    backend gets exactly the spans its instance took, and a row a collector inserted reaches
    neither (forwarding is in commit order: once the last span sent has arrived, an earlier
    row would have too)."""
    db = module_clickhouse_database
    env = {"PLANOSCOPE_STORE": db.url}
    backends = [server_factory(tmp_path / f"b{i}") for i in (1, 2)]
    fronts = [
        server_factory(tmp_path / f"a{i}", "--forward-otlp", b.http_traces_url, env=env)
        for i, b in zip((1, 2), backends)
    ]
    rng = random.Random(5)
    sent = [_spans(rng, 300, time.time_ns() - 30 * 10**9) for _ in fronts]
    for front, spans in zip(fronts, sent):
        _send(front, spans)
    db.client.command(
        "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ServiceName, SpanName, Duration)"
        " VALUES (now64(9), repeat('ab', 16), repeat('cd', 8), 'collector', 'GET /', 1000)"
    )
    last = [_spans(rng, 1, time.time_ns()) for _ in fronts]  # committed after the collector's row
    for front, spans in zip(fronts, last):
        _send(front, spans)
    for backend in backends:
        _wait_for(backend, 301)
    for front in fronts:
        (f,) = front.healthz()["forwarding"]
        assert (f["forwarded"], f["pending"], f["last_error"]) == (301, 0, None), f
        front.stop()
    for backend, spans, more in zip(backends, sent, last):
        backend.stop()
        got = [r["SpanId"] for r in read_spans(backend.data_dir)]
        assert sorted(got) == sorted(s.span_id.hex() for s in spans + more)


def test_forwarding_starts_at_the_end_of_an_existing_store(server_factory, tmp_path):
    """Turning forwarding on for a store that holds spans forwards what arrives from then on."""
    backend = server_factory(tmp_path / "b")
    front = server_factory(tmp_path / "a")
    rng = random.Random(3)
    _send(front, _spans(rng, 50, time.time_ns() - 10**9))
    front.restart("--forward-otlp", backend.http_traces_url)
    later = _spans(rng, 20, time.time_ns() - 10**9)
    _send(front, later)
    _wait_for(backend, 20)
    time.sleep(1.5)
    assert backend.healthz()["spans_written"] == 20
    backend.stop()
    assert {r["SpanId"] for r in read_spans(tmp_path / "b")} == {s.span_id.hex() for s in later}


@pytest.mark.parametrize(
    "url,needle",
    [
        ("tempo:4317", "is not an OTLP URL"),
        ("ftp://tempo:21", "is not an OTLP URL"),
        ("grpc://tempo", "needs a port"),
        ("grpc://tempo:4317/v1/traces", "has no path"),
        ("http://tempo:99999", "invalid port"),
    ],
)
def test_bad_forward_urls_are_one_line_errors(tmp_path, url, needle):
    with pytest.raises(ValueError, match=needle):
        parse_destination(url)
    r = subprocess.run(
        [sys.executable, "-m", "planoscope", "serve", "--data-dir", str(tmp_path / "d"), "--forward-otlp", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("planoscope: error: bad value for forward_otlp (from --forward-otlp): ") and needle in line


def test_destinations():
    assert parse_destination("grpc://tempo:4317").target == "tempo:4317"
    assert parse_destination("grpcs://tempo.example:443").tls
    assert parse_destination("http://tempo:4318").target == "http://tempo:4318/v1/traces"
    assert parse_destination("https://otel.example/otlp/v1/traces").target == "https://otel.example/otlp/v1/traces"
    assert parse_destination("grpc://[::1]:4317").target == "[::1]:4317"


def test_a_row_that_cannot_be_converted_does_not_stop_forwarding(server_factory, tmp_path):
    """A version before the time bound stored a span starting at 2^63 - 1 ns as DuckDB's
    ``infinity``; the forwarder died on such a row, and every span after it stayed unforwarded
    (found by the hardening probe). Now the row is dropped, counted and named, and the rest goes."""
    import duckdb

    from conftest import db_path

    backend = server_factory(tmp_path / "b")
    front = server_factory(tmp_path / "a", "--forward-otlp", backend.http_traces_url)
    rng = random.Random(4)
    _send(front, _spans(rng, 10, time.time_ns() - 10**9))
    _wait_for(backend, 10)
    front.stop()
    con = duckdb.connect(str(db_path(tmp_path / "a")))
    con.execute(
        "INSERT INTO otel_traces BY NAME SELECT * REPLACE ('infinity'::TIMESTAMP_NS AS Timestamp,"
        " '00000000000000000000000000000bad' AS TraceId, now()::TIMESTAMP + INTERVAL 1 SECOND AS IngestedAt)"
        " FROM otel_traces LIMIT 1"
    )
    con.close()
    front.start()
    later = _spans(rng, 20, time.time_ns() - 10**9)
    _send(front, later)
    _wait_for(backend, 30)
    (f,) = front.healthz()["forwarding"]
    assert f["dropped"] == 1 and f["forwarded"] == 20, f  # (counted since this start)
    assert [ln for ln in front.lines("err") if "1 stored spans cannot be converted to OTLP" in ln]
    assert front.running
