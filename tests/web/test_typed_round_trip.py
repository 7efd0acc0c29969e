"""Values keep their types end to end: a trace holding every kind of attribute value, sent over
OTLP/gRPC, OTLP/HTTP protobuf and OTLP/HTTP JSON, comes back from ``GET /api/v1/traces/{id}``
exactly as it was sent, and so does the copy a second planoscope receives by ``--forward-otlp``,
stored in DuckDB or in ClickHouse (its maps of string forms and ``AttributeTypes``)."""

from __future__ import annotations

import base64
import copy
import json
import math
import time

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import any_value, grpc_export, http_export_pb, http_post, now_base_ns
from planoscope.store.attributes import key_values as stored_key_values
from planoscope.store.attributes import value_str
from support.clickhouse_fixtures import STORES, serve_on
from support.ports import free_port

MS = 1_000_000
NAN = float("nan")

# Every kind of value, each bound of int64, the doubles that are easy to get wrong, nesting.
VALUES = [
    ("s", "gpt-4o"),
    ("s.awkward", 'q"uo\\te\n🙂'),
    ("s.digits", "429"),
    ("i", 429),
    ("i.max", 2**63 - 1),
    ("i.min", -(2**63)),
    ("d.tenth", 0.1),
    ("d.whole", 2.0),
    ("d.huge", 1e21),
    ("d.smallest", 5e-324),
    ("d.negative_zero", -0.0),
    ("d.nan", NAN),
    ("d.inf", math.inf),
    ("d.minus_inf", -math.inf),
    ("b", True),
    ("b.false", False),
    ("empty", None),
    ("bytes", b"\x00\x01\xfe\xff"),
    ("array", [1, 2.5, "x", False, None, [b"\x07", [NAN]], {"k": [1.0]}]),
    ("kvlist", {"a": 1, "b": {"c": -0.0, "bytesValue": "not bytes"}, "e": []}),
    ("kvlist.like_bytes", {"bytesValue": "AAH+"}),
    ("llm.model", "openai/gpt-4o"),
    ("llm.model", "gpt-4o-2024-08-06"),  # a key Plano sends twice: both stay, in order
]


def typed_request(variant: int, base: int) -> ExportTraceServiceRequest:
    """One resource, one scope, two spans of one trace (in the order the trace API returns them),
    every kind of value in the resource's, the scope's, the spans', an event's and a link's
    attributes."""
    attrs = [KeyValue(key=k, value=any_value(v)) for k, v in VALUES]
    tid = bytes([variant]) * 8 + bytes(range(1, 9))
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([KeyValue(key="service.name", value=any_value("plano(llm)")), *attrs[:8]])
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "brightstaff", "0.4.36"
    ss.scope.attributes.extend(attrs[8:16])
    root = Span(
        trace_id=tid,
        span_id=bytes([variant, 1]) * 4,
        name="POST /v1/chat/completions openai/gpt-4o",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=base,
        end_time_unix_nano=base + 900 * MS,
        trace_state="plano=1",
        attributes=attrs,
        status={"code": 2, "message": "upstream failed"},
    )
    root.events.add(time_unix_nano=base + 5, name="llm.time_to_first_token", attributes=attrs[3:12])
    root.events.add(time_unix_nano=base + 6, name="bare")
    child = Span(
        trace_id=tid,
        span_id=bytes([variant, 2]) * 4,
        parent_span_id=root.span_id,
        name="routing",
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=base + MS,
        end_time_unix_nano=base + 2 * MS,
        attributes=[KeyValue(key="routing.determination_ms", value=any_value(3))],
        status={},  # unset, and present: every SDK's exporter sends it so (the store keeps no presence)
    )
    child.links.add(trace_id=bytes(15) + b"\x01", span_id=bytes(7) + b"\x02", trace_state="k=v", attributes=attrs[-8:])
    ss.spans.extend([root, child])
    return req


def otlp_json(req: ExportTraceServiceRequest) -> dict:
    """``req`` in the OTLP/JSON mapping: hex ids, int64s as strings, NaN as "NaN"."""
    doc = json_format.MessageToDict(req)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for holder in [sp, *sp.get("links", [])]:
                    for f in ("traceId", "spanId", "parentSpanId"):
                        if f in holder:
                            holder[f] = base64.b64decode(holder[f]).hex()
    return doc


def from_otlp_json(doc: dict) -> ExportTraceServiceRequest:
    """Protobuf's own parser (not planoscope's) over an OTLP/JSON document, strictly."""
    doc = copy.deepcopy(doc)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for holder in [sp, *sp.get("links", [])]:
                    for f in ("traceId", "spanId", "parentSpanId"):
                        if f in holder:
                            holder[f] = base64.b64encode(bytes.fromhex(holder[f])).decode()
    return json_format.ParseDict(doc, ExportTraceServiceRequest())


def same(a: ExportTraceServiceRequest, b: ExportTraceServiceRequest) -> bool:
    """Exact equality of two messages, NaN equal to NaN (protobuf's == says NaN != NaN)."""
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def _wait_for(srv, n: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while srv.healthz()["spans_written"] < n:
        assert time.time() < deadline, f"{srv.healthz()['spans_written']} spans written, expected {n}"
        time.sleep(0.1)


TRANSPORTS = {1: "grpc", 2: "http-protobuf", 3: "http-json"}


@pytest.fixture(scope="module", params=STORES)
def servers(request, module_server_factory, tmp_path_factory):
    """A DuckDB front that stores and forwards what it is sent to a backend on each store."""
    backend = serve_on(request, module_server_factory, tmp_path_factory.mktemp("typed-backend"))
    front = module_server_factory(
        tmp_path_factory.mktemp("typed-front"), "--forward-otlp", f"grpc://{backend.grpc_target}"
    )
    base = now_base_ns()
    sent = {}
    for variant, how in TRANSPORTS.items():
        req = sent[variant] = typed_request(variant, base + variant * 10**9)
        if how == "grpc":
            assert grpc_export(front.grpc_target, req).partial_success.rejected_spans == 0
        elif how == "http-protobuf":
            assert http_export_pb(front.http_traces_url, req).partial_success.rejected_spans == 0
        else:
            r = http_post(front.http_traces_url, json.dumps(otlp_json(req)).encode(), "application/json")
            assert r.status_code == 200 and "partialSuccess" not in r.json(), r.text
    _wait_for(backend, 2 * len(TRANSPORTS))
    return front, backend, sent


@pytest.mark.parametrize("where", ["stored", "forwarded"])
@pytest.mark.parametrize("variant", list(TRANSPORTS), ids=list(TRANSPORTS.values()))
def test_the_trace_api_returns_every_value_as_sent(servers, variant, where):
    front, backend, sent = servers
    srv = front if where == "stored" else backend
    tid = sent[variant].resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    r = httpx.get(f"{srv.web_url}/api/v1/traces/{tid}")
    assert r.status_code == 200, r.text
    got = from_otlp_json(r.json())
    assert same(got, sent[variant]), f"returned:\n{got}\nsent:\n{sent[variant]}"
    # Nothing outside the trace protocol: fields of the common protos that profiles and
    # entities added (protobuf's JSON printer writes them as 0 and [] when asked for defaults).
    assert "keyStrindex" not in r.text and "entityRefs" not in r.text


def test_nothing_is_added_to_a_resource(servers):
    """A resource without service.name (or without any attribute) comes back as it was sent."""
    front, _, _ = servers
    req = ExportTraceServiceRequest()
    for i, attrs in enumerate([[], [KeyValue(key="host.name", value=any_value("h"))]], start=1):
        rs = req.resource_spans.add()
        rs.resource.SetInParent()  # present, as exporters send it (the store keeps no presence)
        rs.resource.attributes.extend(attrs)
        ss = rs.scope_spans.add()
        ss.scope.SetInParent()
        ss.spans.add(
            trace_id=b"\x0e" * 16,
            span_id=bytes([i]) * 8,
            name=f"bare {i}",
            start_time_unix_nano=now_base_ns() + i,
            end_time_unix_nano=now_base_ns() + i,
            status={},
        )
    assert grpc_export(front.grpc_target, req).partial_success.rejected_spans == 0
    _wait_for(front, 2 * len(TRANSPORTS) + 2)
    got = from_otlp_json(httpx.get(f"{front.web_url}/api/v1/traces/{'0e' * 16}").json())
    assert same(got, req), f"returned:\n{got}\nsent:\n{req}"


def test_int64s_are_strings_and_special_doubles_are_named_in_the_json(servers):
    """The OTLP/JSON mapping: intValue as a string, NaN and the infinities as strings, bytes base64."""
    front, _, sent = servers
    tid = sent[1].resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    doc = httpx.get(f"{front.web_url}/api/v1/traces/{tid}").json()
    root = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    values = [(a["key"], a["value"]) for a in root["attributes"]]
    assert values[:4] == [
        ("s", {"stringValue": "gpt-4o"}),
        ("s.awkward", {"stringValue": 'q"uo\\te\n🙂'}),
        ("s.digits", {"stringValue": "429"}),
        ("i", {"intValue": "429"}),
    ]
    got = dict(values)
    assert got["i.min"] == {"intValue": "-9223372036854775808"}
    assert got["d.whole"] == {"doubleValue": 2.0} and got["d.nan"] == {"doubleValue": "NaN"}
    assert got["d.minus_inf"] == {"doubleValue": "-Infinity"} and got["b.false"] == {"boolValue": False}
    assert got["bytes"] == {"bytesValue": "AAH+/w=="} and got["empty"] == {}
    assert [v for k, v in values if k == "llm.model"] == [
        {"stringValue": "openai/gpt-4o"},
        {"stringValue": "gpt-4o-2024-08-06"},
    ]


@pytest.mark.parametrize(
    "attr",
    # A number as users type it matches the double it stands for (2 is 2.0, 1e21 is 1e+21), and
    # a key is present whatever its value, an empty one included.
    [
        "i=429",
        "s.digits=429",
        "b=true",
        "b.false=false",
        "s=gpt-4o",
        "d.tenth=0.1",
        "i.min=-9223372036854775808",
        "d.whole=2",
        "d.whole=2.0",
        "d.huge=1e21",
        "d.inf=Infinity",
        "empty",
        "d.nan",
        "kvlist",
    ],
)
@pytest.mark.parametrize("where", ["stored", "forwarded"])
def test_attribute_filters_find_typed_values_as_users_type_them(servers, attr, where):
    front, backend, sent = servers
    srv = front if where == "stored" else backend
    r = httpx.get(f"{srv.web_url}/api/v1/traces", params={"attr": attr, "start": 0, "end": time.time() + 60})
    assert r.status_code == 200, r.text
    roots = {req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex() for req in sent.values()}
    assert {t["trace_id"] for t in r.json()["traces"]} == roots


def _old_format(text: str | None) -> str | None:
    """An attribute set as planoscope stored it before values were typed: every value its string form."""
    if text is None:
        return None
    pairs = [
        f"{json.dumps(kv.key, ensure_ascii=False)}:{json.dumps(value_str(kv.value), ensure_ascii=False)}"
        for kv in stored_key_values(text)
    ]
    return "{" + ",".join(pairs) + "}"


def test_a_store_from_before_typed_values_still_reads_filters_and_forwards(server_factory, tmp_path):
    """Rows written by an earlier planoscope (string values, no ScopeAttributes column) come back
    as the strings they are, are found by the filters, and are forwarded as they are."""
    from datetime import datetime

    import duckdb
    import pyarrow as pa

    from conftest import db_path, table_columns
    from planoscope.ingest.decode import Decoder
    from planoscope.store.schema import duckdb_ddl

    old = tmp_path / "old"
    old.mkdir()
    req = typed_request(9, now_base_ns())
    batch = Decoder().decode_protobuf(req.SerializeToString()).table.drop_columns(["ScopeAttributes"])
    rows = batch.to_pylist()
    for r in rows:
        for col in ("SpanAttributes", "ResourceAttributes"):
            r[col] = _old_format(r[col])
        for x in r["Events"] + r["Links"]:
            x["Attributes"] = _old_format(x["Attributes"])
    table = pa.Table.from_pylist(rows, schema=batch.schema)
    table = table.append_column("IngestedAt", pa.array([datetime(2026, 1, 1)] * len(rows), pa.timestamp("us")))
    con = duckdb.connect(str(db_path(old)))
    con.execute(duckdb_ddl().replace(',\n  "ScopeAttributes" VARCHAR', ""))
    con.register("old_rows", table)
    con.execute("INSERT INTO otel_traces BY NAME SELECT * FROM old_rows")
    con.close()

    port = free_port()
    url = f"grpc://127.0.0.1:{port}"
    # a destination that was forwarded to before these rows were written
    (old / "forward-state.json").write_text(json.dumps({"cursors": {url: "2025-01-01T00:00:00"}}))
    front = server_factory(old, "--forward-otlp", url)
    backend = server_factory(tmp_path / "backend", "--otlp-grpc", f"127.0.0.1:{port}")
    _wait_for(backend, 2)

    tid = req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    doc = httpx.get(f"{front.web_url}/api/v1/traces/{tid}").json()
    got = from_otlp_json(doc)
    want = copy.deepcopy(req)  # what was sent, every value as its string form, the scope's attributes gone
    for rs in want.resource_spans:
        holders = [rs.resource] + [sp for ss in rs.scope_spans for sp in ss.spans]
        holders += [x for ss in rs.scope_spans for sp in ss.spans for x in [*sp.events, *sp.links]]
        for h in holders:
            for kv in h.attributes:
                kv.value.CopyFrom(AnyValue(string_value=value_str(kv.value)))
        for ss in rs.scope_spans:
            del ss.scope.attributes[:]
    assert same(got, want), f"returned:\n{got}\nexpected:\n{want}"
    assert same(from_otlp_json(httpx.get(f"{backend.web_url}/api/v1/traces/{tid}").json()), want)
    for attr in ("i=429", "b=true", "d.tenth=0.1", "d.whole=2", "s=gpt-4o"):
        r = httpx.get(f"{front.web_url}/api/v1/traces", params={"attr": attr, "start": 0, "end": time.time() + 60})
        assert [t["trace_id"] for t in r.json()["traces"]] == [tid], attr
    front.stop()
    assert table_columns(old)[-1] == "ScopeAttributes"
