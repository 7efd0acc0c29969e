"""Limits with clear errors, against the real server: request size before and after
decompression on both receivers (gzip bombs included), attribute value length, attributes per
span and spans per request. A refused request changes nothing in the store.
"""

from __future__ import annotations

import gzip
import json
import zlib

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.trace import SpanKind

from conftest import grpc_export, http_post, now_base_ns, pb_request, pb_span, read_spans, sdk_export, spans_by_id

MS = 1_000_000
LIMIT_FLAGS = [
    "--max-request-bytes",
    "65536",
    "--max-spans-per-request",
    "20",
    "--max-attribute-value-bytes",
    "64",
    "--max-attributes-per-span",
    "4",
]


@pytest.fixture(scope="module")
def limited(module_server_factory, tmp_path_factory):
    return module_server_factory(tmp_path_factory.mktemp("limits"), *LIMIT_FLAGS)


def sid(prefix: str, i: int) -> str:
    return f"{prefix}{i:014x}"


def _spans(prefix: str, n: int, attrs=None):
    base = now_base_ns()
    return [pb_span("11" * 16, sid(prefix, i), f"s{i}", base, base + MS, attrs=attrs) for i in range(n)]


def _bomb(span_id: str, size: int) -> bytes:
    """A valid request of ``size`` bytes, nearly all one attribute of zeros: tiny once gzipped."""
    base = now_base_ns()
    req = pb_request(({}, [pb_span("22" * 16, span_id, "bomb", base, base + MS)]))
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.append(KeyValue(key="pad", value=AnyValue(bytes_value=bytes(size))))
    return req.SerializeToString()


def test_grpc_gzip_bomb_is_refused_by_its_decompressed_size(limited):
    body = _bomb("b000000000000001", 64 * 1024 * 1024)
    compressed = gzip.compress(body)
    assert len(compressed) < 65536 < len(body)
    with grpc.insecure_channel(limited.grpc_target) as ch:
        call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as e:
            call(body, timeout=60, compression=grpc.Compression.Gzip)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    assert limited.healthz()["status"] == "ok"


def test_http_gzip_bomb_is_413_without_inflating_it(limited):
    compressed = gzip.compress(_bomb("b000000000000002", 64 * 1024 * 1024))
    assert len(compressed) < 65536
    r = http_post(limited.http_traces_url, compressed, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and b"decompressed body exceeds 65536 bytes" in r.content, r
    r = http_post(limited.http_traces_url, _bomb("b000000000000003", 70_000))  # too large as sent
    assert r.status_code == 413 and b"request body exceeds 65536 bytes" in r.content, r


def test_http_deflate_bomb_is_413_like_gzip(limited):
    compressed = zlib.compress(_bomb("b000000000000004", 64 * 1024 * 1024), 9)
    assert len(compressed) < 65536
    r = http_post(limited.http_traces_url, compressed, headers={"Content-Encoding": "deflate"})
    assert r.status_code == 413 and b"decompressed body exceeds 65536 bytes" in r.content, r


@pytest.mark.parametrize(
    "body, needle",
    [
        (zlib.compress(b"x" * 100)[:-5], b"invalid deflate body: truncated"),
        (zlib.compress(b"x" * 100)[2:], b"invalid deflate body"),  # raw deflate, no zlib header: as the collector
        (gzip.compress(b"x" * 100), b"invalid deflate body"),
    ],
    ids=["truncated", "raw deflate", "gzip"],
)
def test_a_bad_deflate_body_is_400(limited, body, needle):
    r = http_post(limited.http_traces_url, body, headers={"Content-Encoding": "deflate"})
    assert r.status_code == 400 and needle in r.content, r.content


def test_too_many_spans_are_refused_with_a_message(limited):
    req = pb_request(({}, _spans("c1", 21)))
    with pytest.raises(grpc.RpcError) as e:
        grpc_export(limited.grpc_target, req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "the request holds more than 20 spans (max_spans_per_request)"
    r = http_post(limited.http_traces_url, pb_request(({}, _spans("c2", 21))).SerializeToString())
    assert r.status_code == 400 and b"more than 20 spans" in r.content, r
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "11" * 16,
                                "spanId": sid("c3", i),
                                "name": "j",
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "2",
                            }
                            for i in range(21)
                        ]
                    }
                ]
            }
        ]
    }
    r = http_post(limited.http_traces_url, json.dumps(doc).encode(), "application/json")
    assert r.status_code == 400 and r.json() == {
        "code": 3,
        "message": "the request holds more than 20 spans (max_spans_per_request)",
    }
    assert grpc_export(limited.grpc_target, pb_request(({}, _spans("c4", 20)))).partial_success.rejected_spans == 0


def test_long_values_are_cut_and_the_client_is_told(limited):
    long = "ü" * 40  # 80 bytes
    resp = grpc_export(limited.grpc_target, pb_request(({"service.name": "cut"}, _spans("d1", 2, {"v": long}))))
    assert resp.partial_success.rejected_spans == 0
    assert resp.partial_success.error_message == (
        "2 attribute values longer than 64 bytes were truncated (max_attribute_value_bytes)"
    )
    doc = http_post(limited.http_traces_url, pb_request(({}, _spans("d2", 1, {"v": long}))).SerializeToString())
    out = ExportTraceServiceResponse.FromString(doc.content)
    assert out.partial_success.error_message.startswith("1 attribute values longer than 64 bytes")


def test_attributes_beyond_the_limit_are_dropped_and_the_client_is_told(limited):
    attrs = {f"k{i}": i for i in range(6)}
    resp = grpc_export(limited.grpc_target, pb_request(({}, _spans("e1", 1, attrs))))
    assert resp.partial_success.rejected_spans == 0
    assert resp.partial_success.error_message == (
        "2 attributes beyond 4 in one set were dropped (max_attributes_per_span)"
    )


def test_the_sdk_exporter_succeeds_with_cut_values(limited):
    finished = sdk_export(
        limited,
        [
            {
                "resource": {"service.name": "sdk"},
                "name": "long",
                "kind": SpanKind.CLIENT,
                "start": now_base_ns(),
                "end": now_base_ns() + MS,
                "attrs": {"llm.user_message_preview": "a" * 100},
            }
        ],
    )
    limited.sdk_id = f"{finished[0].context.span_id:016x}"


def test_limits_are_counted_on_metrics(limited):
    m = limited.metrics()
    assert m.value("planoscope_ingest_attributes_truncated_total", {}) == 4
    assert m.value("planoscope_ingest_attributes_dropped_total", {}) == 2
    assert m.value("planoscope_ingest_requests_refused_total", {"reason": "bad_request"}) == 3 + 3  # + bad deflate
    # gRPC refuses an oversized message itself, before planoscope sees it: only HTTP's are counted.
    assert m.value("planoscope_ingest_requests_refused_total", {"reason": "too_large"}) == 3


def test_stored_values_are_cut_and_refused_requests_left_nothing(limited):
    limited.stop()
    rows = spans_by_id(read_spans(limited.data_dir))
    assert set(rows) == (
        {sid("c4", i) for i in range(20)} | {sid("d1", 0), sid("d1", 1), sid("d2", 0), sid("e1", 0), limited.sdk_id}
    )
    assert rows[sid("d1", 0)]["SpanAttributes"] == {"v": "ü" * 32 + "…"}
    assert rows[sid("d1", 0)]["ResourceAttributes"] == {"service.name": "cut"}
    assert rows[sid("e1", 0)]["SpanAttributes"] == {"k0": 0, "k1": 1, "k2": 2, "k3": 3}
    assert rows[limited.sdk_id]["SpanAttributes"]["llm.user_message_preview"] == "a" * 64 + "…"
