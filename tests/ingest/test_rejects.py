"""What planoscope refuses: bad spans inside a good request (``partial_success``, the good spans
kept), requests it cannot decode (nothing kept), and spans it has already stored (kept once).
"""

from __future__ import annotations

import base64
import gzip
import json
import re

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import (
    _wait,
    grpc_export,
    http_post,
    now_base_ns,
    pb_request,
    pb_span,
    read_spans,
    spans_by_id,
)

MS = 1_000_000
RESOURCE = {"service.name": "plano(llm)"}
TRANSPORTS = ["grpc", "http-protobuf", "http-json"]


def mixed_spans(t: int, base: int):
    """Three good and three bad spans (ids unique to transport ``t``): (spans, good ids, bad ids)."""
    tid = f"{t:02x}" + "3c" * 15
    good = [pb_span(tid, f"{t:02x}0000000000000{i}", f"good {i}", base, base + (i + 1) * MS) for i in range(1, 4)]
    bad = [
        pb_span(tid[:30], f"{t:02x}000000000000b1", "bad trace id", base, base + MS),  # 15-byte trace id
        pb_span(tid, "00" * 8, "bad span id", base, base + MS),  # all-zero span id
        pb_span(tid, f"{t:02x}000000000000b3", "bad times", base + 2 * MS, base + MS),  # end before start
    ]
    spans = [good[0], bad[0], good[1], bad[1], bad[2], good[2]]
    return spans, {s.span_id.hex() for s in good}, {f"{t:02x}000000000000b1", f"{t:02x}000000000000b3"}


def to_otlp_json(req) -> bytes:
    """Protobuf request → OTLP/JSON (ids in hex, as the spec maps them)."""
    doc = json_format.MessageToDict(req)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for f in ("traceId", "spanId", "parentSpanId"):
                    if f in span:
                        span[f] = base64.b64decode(span[f]).hex()
    return json.dumps(doc).encode()


def send(transport: str, srv, req) -> ExportTraceServiceResponse:
    if transport == "grpc":
        return grpc_export(srv.grpc_target, req)
    if transport == "http-protobuf":
        r = http_post(srv.http_traces_url, req.SerializeToString())
        assert r.status_code == 200, (r.status_code, r.content)
        return ExportTraceServiceResponse.FromString(r.content)
    r = http_post(srv.http_traces_url, to_otlp_json(req), "application/json")
    assert r.status_code == 200, (r.status_code, r.content)
    return json_format.Parse(r.content, ExportTraceServiceResponse())


# --------------------------------------------------------------------------------------------
# One server: partial success and undecodable requests; the store is read once it has stopped.
# --------------------------------------------------------------------------------------------


def _grpc_error(target, body):
    try:
        grpc_export(target, body)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return None, "the call succeeded"


@pytest.fixture(scope="module")
def rejects(module_server_factory, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("rejects") / "data"
    srv = module_server_factory(data_dir)
    base = now_base_ns()
    out = {"partial": {}, "good": set(), "bad": set(), "undecodable": {}, "never_stored": set()}
    for t, transport in enumerate(TRANSPORTS, start=1):
        spans, good, bad = mixed_spans(t, base)
        out["partial"][transport] = send(transport, srv, pb_request((RESOURCE, spans)))
        out["good"] |= good
        out["bad"] |= bad

    def victim(n: int):
        """A valid request whose one span (id returned) must never be stored."""
        sid = f"dead00000000{n:04x}"
        out["never_stored"].add(sid)
        return pb_request((RESOURCE, [pb_span("de" * 16, sid, f"victim {n}", base, base + MS)]))

    u = out["undecodable"]
    u["grpc garbage"] = _grpc_error(srv.grpc_target, b"this is not a protobuf \xff\xff")
    u["grpc truncated"] = _grpc_error(srv.grpc_target, victim(1).SerializeToString()[:-3])
    url = srv.http_traces_url
    u["http garbage protobuf"] = http_post(url, b"this is not a protobuf \xff\xff")
    u["http truncated protobuf"] = http_post(url, victim(2).SerializeToString()[:-3])
    u["http invalid json"] = http_post(url, to_otlp_json(victim(3))[:-2], "application/json")
    u["http json not an object"] = http_post(url, b"[1, 2]", "application/json")
    u["http json wrong shape"] = http_post(url, b'{"resourceSpans": "nope"}', "application/json")
    u["http wrong content type"] = http_post(url, victim(4).SerializeToString(), "text/plain")
    u["http no content type"] = http_post(url, victim(5).SerializeToString(), "")
    gz = gzip.compress(victim(6).SerializeToString())
    u["http truncated gzip"] = http_post(url, gz[: len(gz) // 2], headers={"Content-Encoding": "gzip"})
    gz = bytearray(gzip.compress(victim(7).SerializeToString()))
    gz[-8] ^= 0xFF  # wrong CRC32
    u["http corrupt gzip"] = http_post(url, bytes(gz), headers={"Content-Encoding": "gzip"})
    u["http gzip header, plain body"] = http_post(
        url, victim(8).SerializeToString(), headers={"Content-Encoding": "gzip"}
    )
    gz = gzip.compress(to_otlp_json(victim(9)))
    u["http corrupt gzip json"] = http_post(url, gz[:-10], "application/json", headers={"Content-Encoding": "gzip"})
    out["health"] = srv.healthz()
    srv.stop()
    out["stored"] = spans_by_id(read_spans(data_dir))
    return out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bad_spans_are_rejected_through_partial_success(rejects, transport):
    ps = rejects["partial"][transport].partial_success
    assert ps.rejected_spans == 3
    msg = ps.error_message
    assert re.search(r"trace.?id", msg, re.I), msg
    assert re.search(r"span.?id", msg, re.I), msg
    assert re.search(r"\bend", msg, re.I) and re.search(r"start", msg, re.I), msg


def test_good_spans_next_to_bad_ones_are_stored(rejects):
    assert rejects["good"] <= set(rejects["stored"])
    assert not rejects["bad"] & set(rejects["stored"])
    assert "00" * 8 not in rejects["stored"]


def test_only_the_good_spans_are_stored(rejects):
    assert set(rejects["stored"]) == rejects["good"]
    assert rejects["health"]["spans_written"] == len(rejects["good"])


@pytest.mark.parametrize("case", ["grpc garbage", "grpc truncated"])
def test_undecodable_grpc_request_is_invalid_argument(rejects, case):
    code, details = rejects["undecodable"][case]
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details and len(details.strip()) > 10, details


@pytest.mark.parametrize("case", ["http garbage protobuf", "http truncated protobuf"])
def test_undecodable_protobuf_is_400_with_a_status(rejects, case):
    r: httpx.Response = rejects["undecodable"][case]
    assert r.status_code == 400, (r.status_code, r.content)
    assert r.headers["content-type"].startswith("application/x-protobuf")
    status = RpcStatus.FromString(r.content)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message


@pytest.mark.parametrize("case", ["http invalid json", "http json not an object", "http json wrong shape"])
def test_invalid_json_is_400(rejects, case):
    r: httpx.Response = rejects["undecodable"][case]
    assert r.status_code == 400, (r.status_code, r.content)
    body = r.json()
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert body["message"]


@pytest.mark.parametrize("case", ["http wrong content type", "http no content type"])
def test_wrong_content_type_is_415(rejects, case):
    r: httpx.Response = rejects["undecodable"][case]
    assert r.status_code == 415, (r.status_code, r.content)
    assert "content-type" in r.text.lower()


@pytest.mark.parametrize(
    "case", ["http truncated gzip", "http corrupt gzip", "http gzip header, plain body", "http corrupt gzip json"]
)
def test_broken_gzip_is_400(rejects, case):
    r: httpx.Response = rejects["undecodable"][case]
    assert r.status_code == 400, (r.status_code, r.content)
    assert "gzip" in r.text.lower()


def test_nothing_of_an_undecodable_request_is_stored(rejects):
    assert len(rejects["never_stored"]) == 9
    assert not rejects["never_stored"] & set(rejects["stored"])


# --------------------------------------------------------------------------------------------
# Times: what the store cannot hold is rejected, the latest time it holds is stored and found.
# --------------------------------------------------------------------------------------------

LATEST = 2**63 - 2  # DuckDB's TIMESTAMP_NS reads 2**63 - 1 as infinity


def test_times_beyond_what_the_store_holds_are_rejected_and_the_latest_it_holds_is_found(server_factory, tmp_path):
    """A span at 2**63 - 1 ns was stored as DuckDB's ``infinity``: counted, never found by its id,
    never deleted by retention. It is rejected through partial success now, as is an end or an
    event time beyond what the store holds; a span ending at the latest time is stored and found."""
    data_dir = tmp_path / "data"
    srv = server_factory(data_dir)
    base = now_base_ns()
    kept: dict[str, str] = {}
    for t, transport in enumerate(TRANSPORTS, start=1):
        tid = f"{t:02x}" + "7e" * 15
        event = Span.Event(time_unix_nano=2**63 - 1, name="late")
        spans = [
            pb_span(tid, f"{t:02x}00000000000001", "at infinity", 2**63 - 1, 2**63 - 1),
            pb_span(tid, f"{t:02x}00000000000002", "ends beyond", base, 2**63 - 1),
            pb_span(tid, f"{t:02x}00000000000003", "late event", base, base + MS, events=[event]),
            pb_span(tid, f"{t:02x}00000000000004", "ends at the latest", 0, LATEST),
            pb_span(tid, f"{t:02x}00000000000005", "normal", base, base + MS),
        ]
        ps = send(transport, srv, pb_request((RESOURCE, spans))).partial_success
        assert ps.rejected_spans == 3, (transport, ps)
        for field in ("start_time_unix_nano is out of range", "end_time_unix_nano is out of range"):
            assert field in ps.error_message, (transport, ps.error_message)
        assert "an event's time_unix_nano is out of range" in ps.error_message and "2262" in ps.error_message
        kept[f"{t:02x}00000000000004"] = tid
        r = srv.get(f"/api/v1/traces/{tid}")
        assert r.status_code == 200, r.text
        names = {s["name"] for rs in r.json()["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]}
        assert names == {"ends at the latest", "normal"}
    srv.stop()
    stored = spans_by_id(read_spans(data_dir))
    assert len(stored) == 6
    for sid in kept:
        assert stored[sid]["Timestamp"] == 0 and stored[sid]["Duration"] == LATEST


# --------------------------------------------------------------------------------------------
# Duplicates: a retried span is stored once, also across transports and restarts.
# --------------------------------------------------------------------------------------------


def _settled(srv) -> dict:
    """/healthz once every acknowledged span is in the store (inserts run behind the acknowledgement)."""
    _wait(lambda: srv.healthz()["pending_spans"] == 0, what="the acknowledged spans inserted")
    return srv.healthz()


def test_a_retried_span_is_stored_once(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    srv = server_factory(data_dir)
    base = now_base_ns()
    tid = "d0" * 16
    first = pb_request(
        (RESOURCE, [pb_span(tid, f"d00000000000000{i}", f"retried {i}", base, base + i * MS) for i in range(1, 4)])
    )
    twice_inside = pb_request(
        (
            RESOURCE,
            [
                pb_span(tid, "e000000000000001", "twice", base, base + MS),
                pb_span(tid, "e000000000000002", "once", base, base + MS),
                pb_span(tid, "e000000000000001", "twice", base, base + MS),
            ],
        )
    )
    for _ in range(2):
        assert grpc_export(srv.grpc_target, first).partial_success.rejected_spans == 0
    assert send("http-protobuf", srv, first).partial_success.rejected_spans == 0
    assert send("http-json", srv, first).partial_success.rejected_spans == 0
    grpc_export(srv.grpc_target, twice_inside)
    assert _settled(srv)["spans_written"] == 5
    assert (
        srv.metrics().value(
            "calls_total",
            {
                "service_name": "plano(llm)",
                "span_name": "retried 1",
                "span_kind": "SPAN_KIND_INTERNAL",
                "status_code": "STATUS_CODE_UNSET",
            },
        )
        == 1
    )
    assert (
        srv.metrics().value(
            "calls_total",
            {
                "service_name": "plano(llm)",
                "span_name": "twice",
                "span_kind": "SPAN_KIND_INTERNAL",
                "status_code": "STATUS_CODE_UNSET",
            },
        )
        == 1
    )

    srv.restart()
    grpc_export(srv.grpc_target, first)  # the client's retry arrives after a restart
    send("http-protobuf", srv, twice_inside)
    assert _settled(srv)["spans_written"] == 0
    assert (
        srv.metrics().value(
            "calls_total",
            {
                "service_name": "plano(llm)",
                "span_name": "retried 2",
                "span_kind": "SPAN_KIND_INTERNAL",
                "status_code": "STATUS_CODE_UNSET",
            },
        )
        == 1
    )
    srv.stop()

    rows = read_spans(data_dir)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["SpanId"]] = counts.get(r["SpanId"], 0) + 1
    assert counts == {
        "d000000000000001": 1,
        "d000000000000002": 1,
        "d000000000000003": 1,
        "e000000000000001": 1,
        "e000000000000002": 1,
    }


# --------------------------------------------------------------------------------------------
# Oversized requests: refused whole (also when only the decompressed body is too large)
# --------------------------------------------------------------------------------------------


def test_requests_over_max_request_bytes_are_refused(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    srv = server_factory(data_dir, "--max-request-bytes", "4096")
    base = now_base_ns()

    def request(sid: str, pad: int):
        return pb_request((RESOURCE, [pb_span("ee" * 16, sid, "big", base, base + MS, attrs={"pad": "x" * pad})]))

    big = request("ee00000000000001", 5000)
    assert big.ByteSize() > 4096
    r = http_post(srv.http_traces_url, big.SerializeToString())
    assert r.status_code == 413, (r.status_code, r.content)
    compressed = gzip.compress(request("ee00000000000002", 5000).SerializeToString())
    assert len(compressed) < 4096  # small on the wire, too large once decompressed
    r = http_post(srv.http_traces_url, compressed, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413, (r.status_code, r.content)
    with pytest.raises(grpc.RpcError) as e:
        grpc_export(srv.grpc_target, request("ee00000000000003", 5000))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    small = request("ee00000000000004", 3000)
    assert small.ByteSize() < 4096
    assert grpc_export(srv.grpc_target, small).partial_success.rejected_spans == 0
    srv.stop()
    assert set(spans_by_id(read_spans(data_dir))) == {"ee00000000000004"}
