"""Stored span rows ↔ OTLP: the rows of ``SPAN_SELECT`` as an OTLP ``ExportTraceServiceRequest``
(``to_otlp_proto``, what forwarding sends) and in the OTLP/JSON mapping (``to_otlp_json``, what
``GET /api/v1/traces/{id}`` returns)."""

from __future__ import annotations

import base64

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from ..store.attributes import key_values
from ..store.schema import SPAN_KINDS, STATUS_CODES

_TRACE_COLUMNS = (
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events",
    "Links",
    "ScopeAttributes",
)
# Spans as ``to_otlp_json`` reads them (add a WHERE clause).
SPAN_SELECT = (
    f"SELECT epoch_ns(Timestamp), {', '.join(_TRACE_COLUMNS)},"
    " list_transform(Events, lambda e: epoch_ns(e.Timestamp)) FROM otel_traces"
)


def to_otlp_proto(rows: list[tuple]) -> ExportTraceServiceRequest:
    """Rows of ``SPAN_SELECT`` as an OTLP ``ExportTraceServiceRequest``, grouped by resource then
    scope as an exporter sends them: what forwarding sends (~75 µs of CPU a span here) and what
    ``to_otlp_json`` renders."""
    req = ExportTraceServiceRequest()
    scopes: dict[tuple, object] = {}
    resources: dict[tuple, object] = {}
    for start_ns, *values, event_ts in rows:
        s = dict(zip(_TRACE_COLUMNS, values))
        res_key = (s["ServiceName"], s["ResourceAttributes"])
        rs = resources.get(res_key)
        if rs is None:
            rs = resources[res_key] = req.resource_spans.add()
            # as sent: a resource without service.name stays without one
            rs.resource.attributes.extend(key_values(s["ResourceAttributes"]))
        scope_key = (*res_key, s["ScopeName"], s["ScopeVersion"], s["ScopeAttributes"])
        ss = scopes.get(scope_key)
        if ss is None:
            ss = scopes[scope_key] = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = s["ScopeName"] or "", s["ScopeVersion"] or ""
            ss.scope.attributes.extend(key_values(s["ScopeAttributes"]))  # none from before the column
        ss.spans.append(
            Span(
                trace_id=bytes.fromhex(s["TraceId"]),
                span_id=bytes.fromhex(s["SpanId"]),
                parent_span_id=bytes.fromhex(s["ParentSpanId"]),
                trace_state=s["TraceState"] or "",
                name=s["SpanName"],
                kind=SPAN_KINDS.index(s["SpanKind"]) if s["SpanKind"] in SPAN_KINDS else 0,
                start_time_unix_nano=start_ns,
                end_time_unix_nano=start_ns + s["Duration"],
                attributes=key_values(s["SpanAttributes"]),
                events=[
                    Span.Event(time_unix_nano=ts, name=e["Name"], attributes=key_values(e["Attributes"]))
                    for e, ts in zip(s["Events"] or [], event_ts or [])
                ],
                links=[
                    Span.Link(
                        trace_id=bytes.fromhex(ln["TraceId"]),
                        span_id=bytes.fromhex(ln["SpanId"]),
                        trace_state=ln["TraceState"] or "",
                        attributes=key_values(ln["Attributes"]),
                    )
                    for ln in s["Links"] or []
                ],
                status=Status(
                    code=STATUS_CODES.index(s["StatusCode"]) if s["StatusCode"] in STATUS_CODES else 0,
                    message=s["StatusMessage"] or "",
                ),
            )
        )
    return req


def to_otlp_json(rows: list[tuple]) -> dict:
    """Rows of ``SPAN_SELECT`` as an OTLP/JSON ``ExportTraceServiceRequest``: the protobuf
    ``to_otlp_proto`` builds, in the OTLP JSON mapping (hex ids, enums as integers, int64s as
    strings), attribute values typed as they were sent. Every field of the trace protocol is
    written, those at their default too (``"traceState": ""``, ``"events": []``)."""
    doc = json_format.MessageToDict(
        to_otlp_proto(rows), use_integers_for_enums=True, always_print_fields_with_no_presence=True
    )
    for rs in doc["resourceSpans"]:
        rs["resource"].pop("entityRefs", None)
        _trace_fields_only(rs["resource"]["attributes"])
        for ss in rs["scopeSpans"]:
            _trace_fields_only(ss["scope"]["attributes"])
            for sp in ss["spans"]:
                _hex_ids(sp, "traceId", "spanId", "parentSpanId")
                _trace_fields_only(sp["attributes"])
                for event in sp["events"]:
                    _trace_fields_only(event["attributes"])
                for link in sp["links"]:
                    _hex_ids(link, "traceId", "spanId")
                    _trace_fields_only(link["attributes"])
    return doc


# The common protos that traces share with the other signals grew fields that are no part of a
# trace: a KeyValue's keyStrindex (an index into a profile's string table) and a Resource's
# entityRefs (entities, in development). Printing every field with no presence would write them
# as 0 and [] into every trace.
def _trace_fields_only(kvs: list[dict]) -> None:
    for kv in kvs:
        kv.pop("keyStrindex", None)
        _trace_value(kv.get("value", {}))


def _trace_value(v: dict) -> None:
    if "kvlistValue" in v:
        _trace_fields_only(v["kvlistValue"].get("values", []))
    elif "arrayValue" in v:
        for x in v["arrayValue"].get("values", []):
            _trace_value(x)


def _hex_ids(obj: dict, *keys: str) -> None:
    """Protobuf's JSON writes bytes as base64; OTLP/JSON writes ids as hex."""
    for key in keys:
        obj[key] = base64.b64decode(obj[key]).hex()
