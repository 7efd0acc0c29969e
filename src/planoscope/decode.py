"""OTLP trace requests (protobuf or JSON) → one columnar span batch.

This is the ingest hot path: every span of every request passes through ``decode_request``.
It walks the upb-backed protobuf objects once, appends to plain Python lists and hands them to
Arrow in bulk; per-resource values (service name, resource attributes) are built once per
resource and repeated with ``take``. Bad spans are counted and skipped, never half-kept.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from dataclasses import dataclass, field

import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from .attributes import typed_columns
from .schema import EVENT, LINK, SPAN_KINDS, SPAN_SCHEMA, STATUS_CODES


class BadRequest(ValueError):
    """The request as a whole cannot be decoded; nothing of it is kept."""


@dataclass
class SpanBatch:
    """Decoded spans ready for the store, plus what was rejected and why."""

    table: pa.Table
    keys: list[bytes]  # trace_id + span_id per row, for de-duplication
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def error_message(self) -> str:
        if not self.errors:
            return ""
        more = self.rejected - len(self.errors)
        msg = "; ".join(self.errors)
        return msg + (f"; and {more} more" if more > 0 else "")


MAX_ERROR_MESSAGES = 5
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


def _double_str(f: float) -> str:
    """A double as the collector's ``pcommon.Value.AsString`` writes it (ES6 number format)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f == int(f) and abs(f) < 1e21:
        return str(int(f))
    r = repr(f)
    if "e" in r:
        mant, exp = r.split("e")
        sign = exp[0] if exp[0] in "+-" else "+"
        r = f"{mant}e{sign}{exp.lstrip('+-').lstrip('0') or '0'}"
    return r


def _raw(v) -> object:
    """An AnyValue as a plain Python value (for JSON rendering of arrays and maps)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_raw(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which)


def _as_string(v, which: str) -> tuple[str, object]:
    """(string form, typed form) of a non-string AnyValue."""
    if which == "int_value":
        i = v.int_value
        return str(i), i
    if which == "double_value":
        d = v.double_value
        return _double_str(d), d
    if which == "bool_value":
        b = v.bool_value
        return ("true" if b else "false"), b
    if which == "bytes_value":
        s = base64.b64encode(v.bytes_value).decode()
        return s, s
    if which is None:
        return "", None
    raw = _raw(v)
    return json.dumps(raw, separators=(",", ":"), ensure_ascii=False), raw


def _attrs(kvs, keys: list, vals: list) -> None:
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        keys.append(kv.key)
        vals.append(v.string_value if which == "string_value" else _as_string(v, which)[0])


def render(kind: int, raw) -> str:
    """String form of the AnyValues the native decoder leaves to Python (by oneof field number)."""
    if kind == 4:
        return _double_str(raw)
    v = AnyValue()
    v.ParseFromString(raw)
    return _as_string(v, v.WhichOneof("value"))[0]


# The columns both walkers produce, in this order (see _otlp.c's enum).
_COLUMNS = (
    "ts dur tid sid pid tstate name kind status smsg skeys svals soff "
    "evoff evts evname evkeys evvals evaoff lnoff lntid lnsid lnstate lnkeys lnvals lnaoff "
    "scopeidx residx scopename scopever service rkeys rvals roff keys errors"
).split()
_INT64_MAX = 0x7FFFFFFFFFFFFFFF


def _walk(req: ExportTraceServiceRequest) -> tuple:
    """The reference walker over protobuf objects: same output as ``_otlp.decode``."""
    c = {name: [] for name in _COLUMNS}
    for name in ("soff", "evoff", "evaoff", "lnoff", "lnaoff", "roff"):
        c[name].append(0)
    rejected = 0
    errors = c["errors"]
    for rs in req.resource_spans:
        first = len(c["rkeys"])
        _attrs(rs.resource.attributes, c["rkeys"], c["rvals"])
        service = ""
        for k, v in zip(c["rkeys"][first:], c["rvals"][first:]):
            if k == "service.name":
                service = v
        r_i = len(c["service"])
        c["service"].append(service)
        c["roff"].append(len(c["rkeys"]))
        for ss in rs.scope_spans:
            s_i = len(c["scopename"])
            c["scopename"].append(ss.scope.name)
            c["scopever"].append(ss.scope.version)
            c["residx"].append(r_i)
            for span in ss.spans:
                tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                bad = None
                if len(tid) != 16 or tid == _ZERO_TRACE:
                    bad = f"trace_id must be 16 bytes and not all zero, got {len(tid)} bytes"
                elif len(sid) != 8 or sid == _ZERO_SPAN:
                    bad = f"span_id must be 8 bytes and not all zero, got {len(sid)} bytes"
                elif pid and len(pid) != 8:
                    bad = f"parent_span_id must be empty or 8 bytes, got {len(pid)} bytes"
                elif end < start:
                    bad = "end_time_unix_nano is before start_time_unix_nano"
                elif start > _INT64_MAX or end - start > _INT64_MAX:
                    bad = "start_time_unix_nano out of range"
                if bad:
                    rejected += 1
                    if len(errors) < MAX_ERROR_MESSAGES:
                        errors.append(f"span {span.name!r}: {bad}")
                    continue
                _attrs(span.attributes, c["skeys"], c["svals"])
                for ev in span.events:
                    t = ev.time_unix_nano
                    c["evts"].append(t if t <= _INT64_MAX else 0)
                    c["evname"].append(ev.name)
                    _attrs(ev.attributes, c["evkeys"], c["evvals"])
                    c["evaoff"].append(len(c["evkeys"]))
                for ln in span.links:
                    c["lntid"].append(ln.trace_id.hex())
                    c["lnsid"].append(ln.span_id.hex())
                    c["lnstate"].append(ln.trace_state)
                    _attrs(ln.attributes, c["lnkeys"], c["lnvals"])
                    c["lnaoff"].append(len(c["lnkeys"]))
                c["soff"].append(len(c["skeys"]))
                c["evoff"].append(len(c["evts"]))
                c["lnoff"].append(len(c["lntid"]))
                c["ts"].append(start)
                c["dur"].append(end - start)
                c["tid"].append(tid.hex())
                c["sid"].append(sid.hex())
                c["pid"].append(pid.hex())
                c["tstate"].append(span.trace_state)
                c["name"].append(span.name)
                kind, code = span.kind, span.status.code
                c["kind"].append(SPAN_KINDS[kind] if 0 <= kind < 6 else "Unspecified")
                c["status"].append(STATUS_CODES[code] if 0 <= code < 3 else "Unset")
                c["smsg"].append(span.status.message)
                c["keys"].append(tid + sid)
                c["scopeidx"].append(s_i)
    return (*(c[name] for name in _COLUMNS), rejected)


def _map(offsets, keys, vals) -> pa.ListArray:
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays([pa.array(keys, pa.string()), pa.array(vals, pa.string())], ["key", "value"]),
    )


def _to_batch(cols: tuple) -> SpanBatch:
    c = dict(zip(_COLUMNS, cols))
    rejected = cols[-1]
    scope_take = pa.array(c["scopeidx"], pa.int32())
    res_take = pa.array(c["residx"], pa.int32()).take(scope_take)
    events = pa.ListArray.from_arrays(
        pa.array(c["evoff"], pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(c["evts"], pa.timestamp("ns")), pa.array(c["evname"], pa.string()),
             _map(c["evaoff"], c["evkeys"], c["evvals"])],
            fields=list(EVENT),
        ),
    )
    links = pa.ListArray.from_arrays(
        pa.array(c["lnoff"], pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(c["lntid"], pa.string()), pa.array(c["lnsid"], pa.string()),
             pa.array(c["lnstate"], pa.string()), _map(c["lnaoff"], c["lnkeys"], c["lnvals"])],
            fields=list(LINK),
        ),
    )
    columns = [
        pa.array(c["ts"], pa.timestamp("ns")),
        pa.array(c["tid"], pa.string()),
        pa.array(c["sid"], pa.string()),
        pa.array(c["pid"], pa.string()),
        pa.array(c["tstate"], pa.string()),
        pa.array(c["name"], pa.string()),
        pa.array(c["kind"], pa.string()),
        pa.array(c["service"], pa.string()).take(res_take),
        _map(c["roff"], c["rkeys"], c["rvals"]).take(res_take),
        pa.array(c["scopename"], pa.string()).take(scope_take),
        pa.array(c["scopever"], pa.string()).take(scope_take),
        _map(c["soff"], c["skeys"], c["svals"]),
        pa.array(c["dur"], pa.int64()),
        pa.array(c["status"], pa.string()),
        pa.array(c["smsg"], pa.string()),
        events,
        links,
    ]
    columns += typed_columns(columns[11])
    return SpanBatch(pa.Table.from_arrays(columns, schema=SPAN_SCHEMA), c["keys"], rejected, c["errors"])


try:
    from . import _otlp
except ImportError:  # pragma: no cover - only when the extension was not built
    _otlp = None
    logging.getLogger("planoscope").warning(
        "the native OTLP decoder (planoscope._otlp) is not built: ingest falls back to a ~5x slower decoder"
    )
else:
    _otlp.set_error(BadRequest)


def decode_request(body: bytes, native: bool = True) -> SpanBatch:
    """Decode a serialized ``ExportTraceServiceRequest``; raises ``BadRequest`` if undecodable."""
    if native and _otlp is not None:
        return _to_batch(_otlp.decode(body, render, MAX_ERROR_MESSAGES))
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as e:  # upb raises DecodeError
        raise BadRequest(f"cannot decode OTLP protobuf request: {e}") from None
    return _to_batch(_walk(req))


def decode_message(req: ExportTraceServiceRequest) -> SpanBatch:
    if _otlp is not None:
        return decode_request(req.SerializeToString())
    return _to_batch(_walk(req))


# --- OTLP/JSON -----------------------------------------------------------------------------
# The OTLP JSON mapping differs from protobuf's canonical JSON in one way that matters here:
# trace and span ids are hex, not base64. Everything else (camelCase or snake_case names, enum
# integers, int64 as strings or numbers) protobuf's own parser already accepts.

_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(obj: dict) -> None:
    for f in _ID_FIELDS:
        v = obj.get(f)
        if isinstance(v, str):
            try:
                raw = bytes.fromhex(v)
            except ValueError:
                raw = b"\x00"  # an invalid id: rejected per span by decode_message
            obj[f] = base64.b64encode(raw).decode()


def decode_json(body: bytes) -> SpanBatch:
    """Decode an OTLP/JSON ``ExportTraceServiceRequest``; raises ``BadRequest`` if undecodable."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadRequest("OTLP/JSON request must be a JSON object with 'resourceSpans'")
    try:
        for rs in doc.get("resourceSpans") or doc.get("resource_spans") or []:
            for ss in rs.get("scopeSpans") or rs.get("scope_spans") or []:
                for span in ss.get("spans") or []:
                    _hex_ids_to_base64(span)
                    for ln in span.get("links") or []:
                        _hex_ids_to_base64(ln)
        req = json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, AttributeError, TypeError, ValueError, binascii.Error) as e:
        raise BadRequest(f"invalid OTLP/JSON request: {e}") from None
    return decode_message(req)
