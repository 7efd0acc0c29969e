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
import math
from dataclasses import dataclass, field

import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .schema import ATTR_MAP, EVENT, LINK, SPAN_KINDS, SPAN_SCHEMA, STATUS_CODES, TYPED_COLUMNS


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


def _to_int(x):
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    try:
        return int(float(x))
    except (TypeError, ValueError, OverflowError):
        return None


def _to_float(x):
    if isinstance(x, (int, float)):
        return float(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _to_bool(x):
    if isinstance(x, bool):
        return x
    if isinstance(x, str):
        return {"true": True, "false": False}.get(x.lower())
    if isinstance(x, (int, float)):
        return bool(x)
    return None


def _to_str(x):
    return x if isinstance(x, str) else str(x)


_CONVERT = {pa.string(): _to_str, pa.int32(): _to_int, pa.int64(): _to_int,
            pa.float64(): _to_float, pa.bool_(): _to_bool}

# attribute key → (typed column index, preference rank, converter)
_TYPED: dict[str, tuple[int, int, object]] = {}
for _i, (_name, _type, _ddl, _keys) in enumerate(TYPED_COLUMNS):
    for _rank, _key in enumerate(_keys):
        _TYPED[_key] = (_i, _rank, _CONVERT[_type])
_N_TYPED = len(TYPED_COLUMNS)


def decode_request(body: bytes) -> SpanBatch:
    """Decode a serialized ``ExportTraceServiceRequest``; raises ``BadRequest`` if undecodable."""
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as e:  # upb raises DecodeError
        raise BadRequest(f"cannot decode OTLP protobuf request: {e}") from None
    return decode_message(req)


def decode_message(req: ExportTraceServiceRequest) -> SpanBatch:
    ts, tid_hex, sid_hex, parent_hex, tstate, names, kinds = [], [], [], [], [], [], []
    durations, status_codes, status_msgs = [], [], []
    skeys, svals, soffsets = [], [], [0]
    ev_offsets, ev_ts, ev_names, ev_keys, ev_vals, ev_aoff = [0], [], [], [], [], [0]
    ln_offsets, ln_tid, ln_sid, ln_state, ln_keys, ln_vals, ln_aoff = [0], [], [], [], [], [], [0]
    typed = [[] for _ in range(_N_TYPED)]
    keys: list[bytes] = []
    scope_idx: list[int] = []  # per span: index into the per-scope arrays
    res_idx: list[int] = []  # per scope: index into per-resource arrays
    scope_names, scope_versions = [], []
    services, rkeys, rvals, roffsets = [], [], [], [0]
    rejected = 0
    errors: list[str] = []

    def reject(msg: str) -> None:
        nonlocal rejected
        rejected += 1
        if len(errors) < MAX_ERROR_MESSAGES:
            errors.append(msg)

    typed_get = _TYPED.get
    for r_i, rs in enumerate(req.resource_spans):
        service = ""
        for kv in rs.resource.attributes:
            if kv.key == "service.name":
                service = kv.value.string_value
        services.append(service)
        _attrs(rs.resource.attributes, rkeys, rvals)
        roffsets.append(len(rkeys))
        for ss in rs.scope_spans:
            s_i = len(scope_names)
            scope_names.append(ss.scope.name)
            scope_versions.append(ss.scope.version)
            res_idx.append(r_i)
            for span in ss.spans:
                tid = span.trace_id
                sid = span.span_id
                if len(tid) != 16 or tid == _ZERO_TRACE:
                    reject(f"span {span.name!r}: trace_id must be 16 bytes and not all zero, got {len(tid)} bytes")
                    continue
                if len(sid) != 8 or sid == _ZERO_SPAN:
                    reject(f"span {span.name!r}: span_id must be 8 bytes and not all zero, got {len(sid)} bytes")
                    continue
                pid = span.parent_span_id
                if pid and len(pid) != 8:
                    reject(f"span {span.name!r}: parent_span_id must be empty or 8 bytes, got {len(pid)} bytes")
                    continue
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                if end < start:
                    reject(f"span {span.name!r}: end_time_unix_nano is before start_time_unix_nano")
                    continue
                if start > 0x7FFFFFFFFFFFFFFF:
                    reject(f"span {span.name!r}: start_time_unix_nano out of range")
                    continue
                row = [None] * _N_TYPED
                rank = [99] * _N_TYPED
                for kv in span.attributes:
                    v = kv.value
                    k = kv.key
                    which = v.WhichOneof("value")
                    if which == "string_value":
                        s = typed_val = v.string_value
                    else:
                        s, typed_val = _as_string(v, which)
                    skeys.append(k)
                    svals.append(s)
                    t = typed_get(k)
                    if t is not None and t[1] < rank[t[0]]:
                        row[t[0]] = t[2](typed_val)
                        rank[t[0]] = t[1]
                soffsets.append(len(skeys))
                for col, val in zip(typed, row):
                    col.append(val)
                if span.events:
                    for ev in span.events:
                        ev_ts.append(ev.time_unix_nano)
                        ev_names.append(ev.name)
                        _attrs(ev.attributes, ev_keys, ev_vals)
                        ev_aoff.append(len(ev_keys))
                if span.links:
                    for ln in span.links:
                        ln_tid.append(ln.trace_id.hex())
                        ln_sid.append(ln.span_id.hex())
                        ln_state.append(ln.trace_state)
                        _attrs(ln.attributes, ln_keys, ln_vals)
                        ln_aoff.append(len(ln_keys))
                ev_offsets.append(len(ev_ts))
                ln_offsets.append(len(ln_tid))
                ts.append(start)
                durations.append(end - start)
                tid_hex.append(tid.hex())
                sid_hex.append(sid.hex())
                parent_hex.append(pid.hex())
                tstate.append(span.trace_state)
                names.append(span.name)
                kind = span.kind
                kinds.append(SPAN_KINDS[kind] if 0 <= kind < 6 else "Unspecified")
                st = span.status
                code = st.code
                status_codes.append(STATUS_CODES[code] if 0 <= code < 3 else "Unset")
                status_msgs.append(st.message)
                keys.append(tid + sid)
                scope_idx.append(s_i)

    n = len(ts)
    scope_take = pa.array(scope_idx, pa.int32())
    res_take = pa.array(res_idx, pa.int32()).take(scope_take) if n else pa.array([], pa.int32())
    resource_maps = pa.MapArray.from_arrays(
        pa.array(roffsets, pa.int32()), pa.array(rkeys, pa.string()), pa.array(rvals, pa.string())
    )
    events = pa.ListArray.from_arrays(
        pa.array(ev_offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [
                pa.array(ev_ts, pa.timestamp("ns")),
                pa.array(ev_names, pa.string()),
                pa.MapArray.from_arrays(
                    pa.array(ev_aoff, pa.int32()), pa.array(ev_keys, pa.string()), pa.array(ev_vals, pa.string())
                ),
            ],
            fields=list(EVENT),
        ),
    )
    links = pa.ListArray.from_arrays(
        pa.array(ln_offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [
                pa.array(ln_tid, pa.string()),
                pa.array(ln_sid, pa.string()),
                pa.array(ln_state, pa.string()),
                pa.MapArray.from_arrays(
                    pa.array(ln_aoff, pa.int32()), pa.array(ln_keys, pa.string()), pa.array(ln_vals, pa.string())
                ),
            ],
            fields=list(LINK),
        ),
    )
    columns = [
        pa.array(ts, pa.timestamp("ns")),
        pa.array(tid_hex, pa.string()),
        pa.array(sid_hex, pa.string()),
        pa.array(parent_hex, pa.string()),
        pa.array(tstate, pa.string()),
        pa.array(names, pa.string()),
        pa.array(kinds, pa.string()),
        pa.array(services, pa.string()).take(res_take),
        resource_maps.take(res_take),
        pa.array(scope_names, pa.string()).take(scope_take),
        pa.array(scope_versions, pa.string()).take(scope_take),
        pa.MapArray.from_arrays(pa.array(soffsets, pa.int32()), pa.array(skeys, pa.string()), pa.array(svals, pa.string())),
        pa.array(durations, pa.int64()),
        pa.array(status_codes, pa.string()),
        pa.array(status_msgs, pa.string()),
        events,
        links,
    ]
    columns += [pa.array(col, t) for col, (_, t, _, _) in zip(typed, TYPED_COLUMNS)]
    return SpanBatch(pa.Table.from_arrays(columns, schema=SPAN_SCHEMA), keys, rejected, errors)


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
