"""Attribute values as the store keeps them, and their string form.

Each attribute set (a resource's, a scope's, a span's, an event's, a link's) is one JSON object
holding its attributes in the order they were sent; a key sent twice stays twice (Plano repeats
``llm.model``), and a look-up (``attr``, the typed columns, span-metric dimensions) takes the
first. Each value is written in its JSON type, so that it comes back as it was sent:

==========  ==================================================================================
OTLP        stored as
==========  ==================================================================================
string      a JSON string
int         a JSON integer (all of int64)
double      a JSON number with a ``.`` or an exponent, so that it reads back as a double (``2.0``,
            ``0.1``, ``1e+21``, ``5e-324``), or the bare ``NaN``, ``Infinity``, ``-Infinity``
            (DuckDB's JSON reader and Python's ``json`` accept them)
bool        ``true`` / ``false``
array       a JSON array of values
kvlist      a JSON object of values; one whose only key is ``bytesValue`` is wrapped in one more
            ``{"bytesValue": ...}``, so that it never looks like bytes
bytes       ``{"bytesValue": "<base64>"}``
empty       ``null``
==========  ==================================================================================

A value whose string form is longer than ``max_attribute_value_bytes`` is stored cut, as a string
(its type is lost: a cut array is no longer an array). Stores written before values were typed
hold every value as a string: they read back as strings.

The string form (``value_str``) is the collector's ``pcommon.Value.AsString()``: what the
ClickHouse exporter stores, what span-metric labels and the typed columns are made of.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

BYTES_KEY = "bytesValue"  # {"bytesValue": "<base64>"} is a bytes value


# --- the string form ---------------------------------------------------------------------------


def double_str(f: float) -> str:
    """A double as the collector's AsString writes it: the shortest digits that read back as it,
    in ES6's number to string format (an exponent only below 1e-6 or from 1e21 on; 1e-7, 1e+21)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f == int(f) and abs(f) < 1e21:
        return "-0" if f == 0 and math.copysign(1, f) < 0 else str(int(f))
    r = repr(f)  # the shortest digits; an exponent below 1e-4 (or for integers, handled above)
    if "e" not in r:
        return r
    mant, exp = r.split("e")
    e = int(exp)
    if -7 < e < 0:  # 1e-6 <= |f| < 1e-4
        sign, digits = ("-", mant[1:]) if mant.startswith("-") else ("", mant)
        return f"{sign}0.{'0' * (-e - 1)}{digits.replace('.', '')}"
    return f"{mant}e{'-' if e < 0 else '+'}{abs(e)}"


def _which(v: AnyValue) -> str | None:
    which = v.WhichOneof("value")
    # An index into a profile's string table (OTLP profiles' dictionary): meaningless here.
    return None if which == "string_value_strindex" else which


def _raw(v: AnyValue) -> object:
    which = _which(v)
    if which is None:
        return None
    if which == "array_value":
        return [_raw(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which)


def value_str(v: AnyValue) -> str:
    """An AnyValue's string form: ints decimal, bools true/false, arrays and maps JSON, bytes base64."""
    which = _which(v)
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return str(v.int_value)
    if which == "double_value":
        return double_str(v.double_value)
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which is None:
        return ""
    raw = _raw(v)
    return raw if isinstance(raw, str) else json.dumps(raw, separators=(",", ":"), ensure_ascii=False)


# --- the stored JSON ---------------------------------------------------------------------------


def json_str(s: str) -> str:
    """``s`` as a JSON string, escaped as the native decoder escapes it."""
    return json.dumps(s, ensure_ascii=False)


def double_json(f: float) -> str:
    """A double as stored: its string form, with ``.0`` where that would read back as an integer."""
    s = double_str(f)
    return s + ".0" if s[-1].isdigit() and "." not in s and "e" not in s else s


def value_json(v: AnyValue) -> str:
    """An AnyValue as stored, in its JSON type (the native decoder writes the same text)."""
    which = _which(v)
    if which == "string_value":
        return json_str(v.string_value)
    if which == "int_value":
        return str(v.int_value)
    if which == "double_value":
        return double_json(v.double_value)
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "array_value":
        return "[" + ",".join(value_json(x) for x in v.array_value.values) + "]"
    if which == "kvlist_value":
        kvs = v.kvlist_value.values
        text = "{" + ",".join(f"{json_str(kv.key)}:{value_json(kv.value)}" for kv in kvs) + "}"
        return f'{{"{BYTES_KEY}":{text}}}' if len(kvs) == 1 and kvs[0].key == BYTES_KEY else text
    if which == "bytes_value":
        return f'{{"{BYTES_KEY}":"{base64.b64encode(v.bytes_value).decode()}"}}'
    return "null"


# --- reading it back ---------------------------------------------------------------------------


class _Object(list):
    """A JSON object's (key, value) pairs, in order, repeated keys included."""


def _loads(text: str):
    return json.loads(text, object_pairs_hook=_Object)


def _any_value(x) -> AnyValue:
    if isinstance(x, str):
        return AnyValue(string_value=x)
    if isinstance(x, bool):  # before int: a bool is an int in Python
        return AnyValue(bool_value=x)
    if isinstance(x, int):
        return AnyValue(int_value=x)
    if isinstance(x, float):
        return AnyValue(double_value=x)
    if x is None:
        return AnyValue()
    if isinstance(x, _Object):
        if len(x) == 1 and x[0][0] == BYTES_KEY:
            inner = x[0][1]
            if isinstance(inner, str):
                return AnyValue(bytes_value=base64.b64decode(inner, validate=True))
            if isinstance(inner, _Object):  # a kvlist whose only key is bytesValue, wrapped
                x = inner
        return AnyValue(kvlist_value=KeyValueList(values=_key_values(x)))
    return AnyValue(array_value=ArrayValue(values=[_any_value(y) for y in x]))


def _key_values(pairs: Iterable[tuple[str, object]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any_value(v)) for k, v in pairs]


def key_values(text: str | None) -> list[KeyValue]:
    """A stored attribute set as OTLP KeyValues, every pair in order, each value typed as sent
    (a store from before values were typed gives strings)."""
    if not text:
        return []
    return _key_values(_loads(text))


def stored_value(text: str) -> AnyValue:
    """One stored value, given as JSON text, as the AnyValue it was sent as."""
    return _any_value(_loads(text))


def stored_str(text: str) -> str:
    """The string form of one stored value, given as JSON text (as ``json_extract`` gives it)."""
    return value_str(_any_value(_loads(text)))


def set_json(kvs: Iterable[KeyValue]) -> str:
    """An attribute set as stored (one JSON object, every pair in order, each value in its JSON
    type): what ``key_values`` reads back as ``kvs``."""
    return "{" + ",".join(f"{json_str(kv.key)}:{value_json(kv.value)}" for kv in kvs) + "}"
