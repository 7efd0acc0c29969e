"""OTLP/JSON → an ``ExportTraceServiceRequest``, read as the OpenTelemetry Collector reads it.

The OTLP JSON mapping is protobuf's JSON mapping but for the trace and span ids, which are hex
(other bytes are base64). As the collector's pdata unmarshaler does, this accepts field names in
lowerCamelCase or as the proto spells them, enums as integers or by their names
(``"SPAN_KIND_SERVER"``), 64-bit integers as numbers or strings, ``null`` for a default; it skips
fields it does not know (a newer sender's); and it refuses a request holding a name that is not
one of its enum's (``"kind": "server"``: the collector's "unknown string value") or a value of
the wrong JSON type. The error names the field by its path, e.g.
``resourceSpans[0].scopeSpans[0].spans[3].kind``.

An id that is not hex is kept as an invalid id (one byte), so that its span alone is rejected,
through partial success, as one of the wrong length is.
"""

from __future__ import annotations

import base64
import binascii
import math
import re

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

MAX_DEPTH = 90  # nested messages (arrays and maps in attribute values); protobuf's parsers stop at 100


class InvalidJSON(ValueError):
    """The document is not an OTLP/JSON trace request; the message names the field."""


def parse(doc: object) -> ExportTraceServiceRequest:
    """A parsed JSON document as an ``ExportTraceServiceRequest``; raises ``InvalidJSON``."""
    if not isinstance(doc, dict):
        raise InvalidJSON(f"an OTLP/JSON request must be a JSON object with resourceSpans, not {_kind(doc)}")
    req = ExportTraceServiceRequest()
    _message(doc, req, "", 0)
    return req


_T = FieldDescriptor
_INTS = {
    _T.TYPE_INT32: (-(2**31), 2**31),
    _T.TYPE_SINT32: (-(2**31), 2**31),
    _T.TYPE_SFIXED32: (-(2**31), 2**31),
    _T.TYPE_UINT32: (0, 2**32),
    _T.TYPE_FIXED32: (0, 2**32),
    _T.TYPE_INT64: (-(2**63), 2**63),
    _T.TYPE_SINT64: (-(2**63), 2**63),
    _T.TYPE_SFIXED64: (-(2**63), 2**63),
    _T.TYPE_UINT64: (0, 2**64),
    _T.TYPE_FIXED64: (0, 2**64),
}
_INT_TEXT = re.compile(r"-?[0-9]+")
_HEX_TEXT = re.compile(r"(?:[0-9a-fA-F]{2})*")
_FLOAT_TEXT = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|NaN|-?Infinity")
# OTLP's ids: hex in OTLP/JSON, unlike every other bytes field.
_HEX_IDS = {
    ("opentelemetry.proto.trace.v1.Span", "trace_id"),
    ("opentelemetry.proto.trace.v1.Span", "span_id"),
    ("opentelemetry.proto.trace.v1.Span", "parent_span_id"),
    ("opentelemetry.proto.trace.v1.Span.Link", "trace_id"),
    ("opentelemetry.proto.trace.v1.Span.Link", "span_id"),
}
_fields: dict[str, dict[str, FieldDescriptor]] = {}


def _fields_of(d: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by their JSON name and by their proto name."""
    out = _fields.get(d.full_name)
    if out is None:
        out = _fields[d.full_name] = {**{f.name: f for f in d.fields}, **{f.json_name: f for f in d.fields}}
    return out


def _kind(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        return f"the string {_shown(v)}"
    if isinstance(v, (int, float)):
        return f"the number {_shown(v)}"
    return "an array" if isinstance(v, list) else "an object"


def _shown(v: object) -> str:
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 40 else text[:39] + "…"


def _message(obj: object, msg: Message, path: str, depth: int) -> None:
    if not isinstance(obj, dict):
        raise InvalidJSON(f"{path}: expected an object, got {_kind(obj)}")
    if depth > MAX_DEPTH:
        raise InvalidJSON(f"{path}: nested more than {MAX_DEPTH} levels deep")
    d = msg.DESCRIPTOR
    fields = _fields_of(d)
    for key, value in obj.items():
        f = fields.get(key)
        if f is None or value is None:  # unknown: skipped, as the collector does; null: the default
            continue
        where = f"{path}.{f.json_name}" if path else f.json_name
        if f.is_repeated:
            if not isinstance(value, list):
                raise InvalidJSON(f"{where}: expected an array, got {_kind(value)}")
            items = getattr(msg, f.name)
            for i, item in enumerate(value):
                if f.message_type is not None:
                    _message(item, items.add(), f"{where}[{i}]", depth + 1)
                else:
                    items.append(_scalar(f, d, item, f"{where}[{i}]"))
        elif f.message_type is not None:
            sub = getattr(msg, f.name)
            sub.SetInParent()  # present even if empty: {} is an empty value, an empty status
            _message(value, sub, where, depth + 1)
        else:
            setattr(msg, f.name, _scalar(f, d, value, where))


def _scalar(f: FieldDescriptor, d: Descriptor, v: object, where: str):
    t = f.type
    if t == _T.TYPE_STRING:
        if isinstance(v, str):
            return v
        raise InvalidJSON(f"{where}: expected a string, got {_kind(v)}")
    if t == _T.TYPE_BOOL:
        if isinstance(v, bool):
            return v
        raise InvalidJSON(f"{where}: expected true or false, got {_kind(v)}")
    if t in _INTS:
        return _integer(v, *_INTS[t], where)
    if t in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str) and _FLOAT_TEXT.fullmatch(v):
            return float(v)
        raise InvalidJSON(f'{where}: expected a number (or "NaN", "Infinity", "-Infinity"), got {_kind(v)}')
    if t == _T.TYPE_ENUM:
        return _enum(f, v, where)
    if t == _T.TYPE_BYTES:
        if not isinstance(v, str):
            encoding = "hex" if (d.full_name, f.name) in _HEX_IDS else "base64"
            raise InvalidJSON(f"{where}: expected a {encoding} string, got {_kind(v)}")
        if (d.full_name, f.name) in _HEX_IDS:
            # an invalid id: its span is rejected through partial success
            return bytes.fromhex(v) if _HEX_TEXT.fullmatch(v) else b"\x00"
        try:  # standard or URL-safe, padded or not, as protobuf's JSON mapping accepts
            return base64.b64decode(v.replace("-", "+").replace("_", "/") + "=" * (-len(v) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidJSON(f"{where}: {_shown(v)} is not base64") from None
    raise InvalidJSON(f"{where}: unsupported field type")  # none in OTLP's trace messages


def _integer(v: object, lo: int, hi: int, where: str) -> int:
    if isinstance(v, bool):
        raise InvalidJSON(f"{where}: expected an integer, got {_kind(v)}")
    if isinstance(v, int):
        n = v
    elif isinstance(v, float) and math.isfinite(v) and v.is_integer():
        n = int(v)
    elif isinstance(v, str) and _INT_TEXT.fullmatch(v):
        n = int(v)
    else:
        raise InvalidJSON(f"{where}: expected an integer, got {_kind(v)}")
    if not lo <= n < hi:
        raise InvalidJSON(f"{where}: {n} is out of range ({lo} to {hi - 1})")
    return n


def _enum(f: FieldDescriptor, v: object, where: str) -> int:
    values = f.enum_type.values_by_name
    if isinstance(v, str):
        value = values.get(v)
        if value is None:
            names = ", ".join(values)
            raise InvalidJSON(f"{where}: unknown enum value {_shown(v)}: write an integer or one of {names}")
        return value.number
    return _integer(v, -(2**31), 2**31, where)
