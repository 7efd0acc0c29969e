"""OTLP/JSON (the spec's mapping: hex ids, int64 as strings, enum integers) over HTTP, plain,
gzip- and deflate-compressed, and the same request as protobuf with gzip over gRPC and HTTP and
deflate over HTTP: each round-trips into the store exactly.
"""

from __future__ import annotations

import base64
import copy
import json
import zlib

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from conftest import (
    SPAN_COLUMNS,
    grpc_export,
    http_export_pb,
    http_post,
    now_base_ns,
    read_spans,
    spans_by_id,
    typed,
)

MS = 1_000_000


def kv(key, value):
    return {"key": key, "value": value}


def otlp_json(variant: int, base: int, int64_as_numbers: bool = False) -> dict:
    """An OTLP/JSON request as the spec writes it (ids differ per variant)."""
    t = (lambda n: base + n) if int64_as_numbers else (lambda n: str(base + n))
    v = f"{variant:02x}"
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        kv("service.name", {"stringValue": "plano(llm)"}),
                        kv("host.cpu.count", {"intValue": "8"}),
                        kv("plano.warm", {"boolValue": False}),
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "brightstaff", "version": "0.4.2"},
                        "spans": [
                            {
                                "traceId": f"5b8efff798038103d269b633813fc6{v}",
                                "spanId": f"eee19b7ec3c1b1{v}",
                                "parentSpanId": f"aaa19b7ec3c1b1{v}",
                                "traceState": "plano=1,vendor=abc",
                                "name": "POST /v1/chat/completions gpt-4o",
                                "kind": 3,
                                "startTimeUnixNano": t(0),
                                "endTimeUnixNano": t(1234 * MS + 5),
                                "attributes": [
                                    kv("llm.model", {"stringValue": "gpt-4o"}),
                                    kv("llm.provider", {"stringValue": "openai"}),
                                    kv("llm.usage.prompt_tokens", {"intValue": "1200"}),
                                    kv("llm.usage.completion_tokens", {"intValue": 345}),
                                    kv("llm.usage.total_tokens", {"intValue": "1545"}),
                                    kv("llm.usage.total_cost_usd", {"doubleValue": 0.0123}),
                                    kv("llm.time_to_first_token", {"doubleValue": 231.5}),
                                    kv("llm.temperature", {"doubleValue": 1.0}),
                                    kv("llm.is_streaming", {"boolValue": True}),
                                    kv("http.method", {"stringValue": "POST"}),
                                    kv("http.status_code", {"intValue": "200"}),
                                    kv(
                                        "llm.tools",
                                        {"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}},
                                    ),
                                    kv(
                                        "test.ints", {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": "-2"}]}}
                                    ),
                                    kv(
                                        "test.bools",
                                        {"arrayValue": {"values": [{"boolValue": False}, {"boolValue": True}]}},
                                    ),
                                    kv(
                                        "test.kv",
                                        {
                                            "kvlistValue": {
                                                "values": [kv("a", {"intValue": "1"}), kv("b", {"stringValue": "x"})]
                                            }
                                        },
                                    ),
                                    kv("test.bytes", {"bytesValue": base64.b64encode(b"\x00\x01\xfe").decode()}),
                                    kv("test.big", {"intValue": "-9223372036854775808"}),
                                ],
                                "events": [
                                    {
                                        "timeUnixNano": t(231 * MS),
                                        "name": "llm.first_token",
                                        "attributes": [
                                            kv("bytes", {"intValue": "512"}),
                                            kv("ratio", {"doubleValue": 0.5}),
                                        ],
                                    },
                                    {"timeUnixNano": t(1234 * MS), "name": "llm.done"},
                                ],
                                "links": [
                                    {
                                        "traceId": f"0000000000000000000000000000ab{v}",
                                        "spanId": f"00000000000000{v}",
                                        "traceState": "k=v",
                                        "attributes": [
                                            kv("link.reason", {"stringValue": "retry_of"}),
                                            kv("attempt", {"intValue": "2"}),
                                        ],
                                    }
                                ],
                                "status": {"code": 1},
                            },
                            {
                                "traceId": f"5b8efff798038103d269b633813fc6{v}",
                                "spanId": f"aaa19b7ec3c1b1{v}",
                                "name": "POST /v1/chat/completions",
                                "kind": 2,
                                "startTimeUnixNano": t(-10 * MS),
                                "endTimeUnixNano": t(1300 * MS),
                                "attributes": [
                                    kv("http.status_code", {"intValue": "502"}),
                                    kv("selection.listener", {"stringValue": "travel"}),
                                ],
                                "status": {"code": 2, "message": "upstream failed"},
                            },
                        ],
                    }
                ],
            },
            {
                "resource": {},  # no service.name at all
                "scopeSpans": [
                    {
                        "scope": {"name": "bare"},
                        "spans": [
                            {
                                "traceId": f"0000000000000000000000000000cd{v}",
                                "spanId": f"00000000000000{v}",
                                "name": "bare span",
                                "startTimeUnixNano": t(5),
                                "endTimeUnixNano": t(5),
                            }
                        ],
                    }
                ],
            },
        ]
    }


def expected_rows(variant: int, base: int) -> dict[str, dict]:
    v = f"{variant:02x}"
    none = dict.fromkeys(SPAN_COLUMNS[17:]) | {"LlmCall": False}  # stored on every span, never null
    resource = {"service.name": "plano(llm)", "host.cpu.count": 8, "plano.warm": False}
    return {
        f"eee19b7ec3c1b1{v}": {
            **none,
            "Timestamp": base,
            "TraceId": f"5b8efff798038103d269b633813fc6{v}",
            "SpanId": f"eee19b7ec3c1b1{v}",
            "ParentSpanId": f"aaa19b7ec3c1b1{v}",
            "TraceState": "plano=1,vendor=abc",
            "SpanName": "POST /v1/chat/completions gpt-4o",
            "SpanKind": "Client",
            "ServiceName": "plano(llm)",
            "ResourceAttributes": resource,
            "ScopeName": "brightstaff",
            "ScopeVersion": "0.4.2",
            "SpanAttributes": {
                "llm.model": "gpt-4o",
                "llm.provider": "openai",
                "llm.usage.prompt_tokens": 1200,
                "llm.usage.completion_tokens": 345,
                "llm.usage.total_tokens": 1545,
                "llm.usage.total_cost_usd": 0.0123,
                "llm.time_to_first_token": 231.5,
                "llm.temperature": 1.0,
                "llm.is_streaming": True,
                "http.method": "POST",
                "http.status_code": 200,
                "llm.tools": ["a", "b"],
                "test.ints": [1, -2],
                "test.bools": [False, True],
                "test.kv": {"a": 1, "b": "x"},
                "test.bytes": b"\x00\x01\xfe",
                "test.big": -9223372036854775808,
            },
            "Duration": 1234 * MS + 5,
            "StatusCode": "Ok",
            "StatusMessage": "",
            "Events": [
                {
                    "Timestamp": base + 231 * MS,
                    "Name": "llm.first_token",
                    "Attributes": {"bytes": 512, "ratio": 0.5},
                },
                {"Timestamp": base + 1234 * MS, "Name": "llm.done", "Attributes": {}},
            ],
            "Links": [
                {
                    "TraceId": f"0000000000000000000000000000ab{v}",
                    "SpanId": f"00000000000000{v}",
                    "TraceState": "k=v",
                    "Attributes": {"link.reason": "retry_of", "attempt": 2},
                }
            ],
            "LlmModel": "gpt-4o",
            "LlmProvider": "openai",
            "HttpMethod": "POST",
            "HttpStatusCode": 200,
            "IsStreaming": True,
            "TimeToFirstTokenMs": 231.5,
            "PromptTokens": 1200,
            "CompletionTokens": 345,
            "TotalTokens": 1545,
            "CostUsd": 0.0123,
            "RequestedModel": "gpt-4o",
            "ResolvedModel": "gpt-4o",
            "Flagged": False,
            "LlmCall": True,
        },
        f"aaa19b7ec3c1b1{v}": {
            **none,
            "Timestamp": base - 10 * MS,
            "TraceId": f"5b8efff798038103d269b633813fc6{v}",
            "SpanId": f"aaa19b7ec3c1b1{v}",
            "ParentSpanId": "",
            "TraceState": "",
            "SpanName": "POST /v1/chat/completions",
            "SpanKind": "Server",
            "ServiceName": "plano(llm)",
            "ResourceAttributes": resource,
            "ScopeName": "brightstaff",
            "ScopeVersion": "0.4.2",
            "SpanAttributes": {"http.status_code": 502, "selection.listener": "travel"},
            "Duration": 1310 * MS,
            "StatusCode": "Error",
            "StatusMessage": "upstream failed",
            "Events": [],
            "Links": [],
            "HttpStatusCode": 502,
            "SelectionListener": "travel",
            "Flagged": False,
            "FailureClass": "5xx",
            "LlmCall": True,
        },
        f"00000000000000{v}": {
            **none,
            "Timestamp": base + 5,
            "TraceId": f"0000000000000000000000000000cd{v}",
            "SpanId": f"00000000000000{v}",
            "ParentSpanId": "",
            "TraceState": "",
            "SpanName": "bare span",
            "SpanKind": "Unspecified",
            "ServiceName": "",
            "ResourceAttributes": {},
            "ScopeName": "bare",
            "ScopeVersion": "",
            "SpanAttributes": {},
            "Duration": 0,
            "StatusCode": "Unset",
            "StatusMessage": "",
            "Events": [],
            "Links": [],
        },
    }


def to_protobuf(doc: dict) -> ExportTraceServiceRequest:
    """The OTLP/JSON document as a protobuf request (hex ids → bytes, as the spec maps them)."""
    doc = copy.deepcopy(doc)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for holder in [span, *span.get("links", [])]:
                    for f in ("traceId", "spanId", "parentSpanId"):
                        if f in holder:
                            holder[f] = base64.b64encode(bytes.fromhex(holder[f])).decode()
    return json_format.ParseDict(doc, ExportTraceServiceRequest())


VARIANTS = {
    1: "json",
    2: "json-gzip",
    3: "json-int64-as-numbers",
    4: "protobuf-gzip-over-grpc",
    5: "protobuf-gzip-over-http",
    6: "json-deflate",
    7: "protobuf-deflate-over-http",
}
DEFLATE = {"Content-Encoding": "deflate"}


@pytest.fixture(scope="module")
def roundtrip(module_server_factory, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("otlp-json") / "data"
    srv = module_server_factory(data_dir)
    base = now_base_ns()
    responses = {}
    for variant, how in VARIANTS.items():
        doc = otlp_json(variant, base, int64_as_numbers=(how == "json-int64-as-numbers"))
        if how.startswith("json"):
            body = json.dumps(doc).encode()
            if how == "json-deflate":
                r = http_post(srv.http_traces_url, zlib.compress(body), "application/json", headers=DEFLATE)
            else:
                r = http_post(srv.http_traces_url, body, "application/json", gzip_body=(how == "json-gzip"))
            responses[how] = (r.status_code, r.headers.get("content-type", ""), r.content)
        elif how == "protobuf-gzip-over-grpc":
            responses[how] = grpc_export(srv.grpc_target, to_protobuf(doc), compression=grpc.Compression.Gzip)
        elif how == "protobuf-deflate-over-http":
            r = http_post(srv.http_traces_url, zlib.compress(to_protobuf(doc).SerializeToString()), headers=DEFLATE)
            assert r.status_code == 200, r.text
            responses[how] = ExportTraceServiceResponse.FromString(r.content)
        else:
            responses[how] = http_export_pb(srv.http_traces_url, to_protobuf(doc), gzip_body=True)
    srv.stop()
    return {"base": base, "responses": responses, "rows": read_spans(data_dir)}


@pytest.mark.parametrize("how", [h for h in VARIANTS.values() if h.startswith("json")])
def test_json_response_is_json_without_partial_success(roundtrip, how):
    status, ctype, body = roundtrip["responses"][how]
    assert status == 200, body
    assert ctype.startswith("application/json")
    doc = json.loads(body)
    assert "partialSuccess" not in doc or not int(doc["partialSuccess"].get("rejectedSpans", 0)), doc


@pytest.mark.parametrize("how", ["protobuf-gzip-over-grpc", "protobuf-gzip-over-http", "protobuf-deflate-over-http"])
def test_protobuf_response_has_no_partial_success(roundtrip, how):
    resp = roundtrip["responses"][how]
    assert resp.partial_success.rejected_spans == 0
    assert resp.partial_success.error_message == ""


def test_nothing_else_is_stored(roundtrip):
    stored = spans_by_id(roundtrip["rows"])
    want = set()
    for variant in VARIANTS:
        want |= set(expected_rows(variant, roundtrip["base"]))
    assert set(stored) == want


@pytest.mark.parametrize("variant, how", list(VARIANTS.items()))
def test_round_trip_into_the_store_is_exact(roundtrip, variant, how):
    stored = spans_by_id(roundtrip["rows"])
    for span_id, want in expected_rows(variant, roundtrip["base"]).items():
        got = stored.get(span_id)
        assert got is not None, f"{how}: span {span_id} not stored"
        diff = {c: (got[c], want[c]) for c in SPAN_COLUMNS if typed(got[c]) != typed(want[c])}
        assert not diff, f"{how}: span {span_id}: stored (left) differs from sent (right):\n" + "\n".join(
            f"  {c}: {g!r} != {w!r}" for c, (g, w) in diff.items()
        )
