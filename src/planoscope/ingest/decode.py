"""OTLP trace requests (protobuf or JSON) → one columnar span batch (a pyarrow Table).

This is the ingest hot path: every span of every request passes through ``Decoder``. The
native decoder (``_otlp.c``) reads the protobuf wire format and writes Arrow buffers directly;
``_walk`` is the reference implementation over protobuf objects, which must give identical
batches (tests check both on the same input) and serves where the extension is not built.

Bad spans are counted and skipped, never half-kept; a request that cannot be decoded at all
raises ``BadRequest`` and nothing of it is kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ..llm.prices import Prices
from ..store.attributes import double_json, double_str, json_str, value_json, value_str
from ..store.schema import (
    ESTIMATED_COST,
    EVENT,
    LINK,
    MAP_TYPES,
    SPAN_KINDS,
    SPAN_SCHEMA,
    STATUS_CODES,
    STRING_MAPS,
    TYPE_LETTERS,
    TYPED_COLUMNS,
    Typed,
)
from . import otlp_json

MAX_ERROR_MESSAGES = 5
ELLIPSIS = "\u2026"  # marks a value cut to the length limit
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
# The latest time the store holds. DuckDB's TIMESTAMP_NS is int64 ns since the epoch and reads
# INT64_MAX as infinity (a span stored there is counted, yet never found by its id nor deleted by
# retention), so a span is rejected unless its start, its end (start + duration: queries add
# them) and its events' times are at most INT64_MAX - 1 (2262-04-11T23:47:16.854775806Z). OTLP's
# times are unsigned: nothing is too early.
MAX_TIME_NS = 0x7FFFFFFFFFFFFFFF - 1
_OUT_OF_RANGE = f"is out of range (at most {MAX_TIME_NS} ns, in 2262)"


class BadRequest(ValueError):
    """The request as a whole cannot be decoded; nothing of it is kept."""


@dataclass
class SpanBatch:
    """Decoded spans ready for the store, plus what was rejected and why."""

    table: pa.Table
    keys: list[bytes]  # trace_id + span_id per row, for de-duplication
    dimensions: list[pa.Array] = field(default_factory=list)  # span-metric dimension values per row
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    truncated: int = 0  # attribute values cut to the length limit
    dropped: int = 0  # attributes dropped beyond the per-set limit
    limits: Limits | None = None

    @property
    def error_message(self) -> str:
        """Why spans were rejected, then what was cut (OTLP's partial success allows a warning
        with no span rejected)."""
        parts = []
        if self.errors:
            more = self.rejected - len(self.errors)
            parts.append("; ".join(self.errors) + (f"; and {more} more" if more > 0 else ""))
        if self.truncated:
            parts.append(
                f"{self.truncated} attribute values longer than {self.limits.max_value_bytes} bytes "
                f"were truncated (max_attribute_value_bytes)"
            )
        if self.dropped:
            parts.append(
                f"{self.dropped} attributes beyond {self.limits.max_attributes} in one set were dropped "
                f"(max_attributes_per_span)"
            )
        return "; ".join(parts)


@dataclass(frozen=True)
class Limits:
    """What one request may hold. Longer values are cut and marked, extra attributes dropped (the
    span is kept); a request with too many spans is refused whole."""

    max_value_bytes: int = 8192
    max_attributes: int = 128
    max_spans: int = 100_000


def _render(kind: int, raw) -> tuple[str, str]:
    """For the native decoder: (string form, stored JSON) of the values it leaves to Python, by
    AnyValue oneof field number: 4 a double (a float), else an array, kvlist or bytes (the
    AnyValue's bytes)."""
    if kind == 4:
        return double_str(raw), double_json(raw)
    try:
        value = AnyValue.FromString(raw)
    except DecodeError as e:  # found by fuzzing: a corrupt array or map inside a well-framed value
        raise BadRequest(f"cannot decode OTLP protobuf request: an attribute value is corrupt ({e})") from None
    return value_str(value), value_json(value)


# --- the reference walker -------------------------------------------------------------------

_STR = (
    "tid sid pid tstate name kind status smsg sattrs evname evattrs lntid lnsid lnstate lnattrs "
    "scopename scopever scopeattrs service rattrs"
).split()
_I32 = "evoff lnoff scopeidx residx".split()
# The attribute sets, in the native decoder's order (its M_*): given as maps of string forms too
# when asked (Decoder(maps=True)).
_SETS = "rattrs scopeattrs sattrs evattrs lnattrs".split()


def truncate(s: str, max_bytes: int) -> str | None:
    """``s`` cut to at most ``max_bytes`` UTF-8 bytes, not inside a character, plus an ellipsis;
    None if it fits."""
    b = s.encode()
    if len(b) <= max_bytes:
        return None
    cut = max_bytes
    while cut > 0 and b[cut] & 0xC0 == 0x80:
        cut -= 1
    return b[:cut].decode() + ELLIPSIS


class _Cut:
    """The limits as the walker applies them, and what they cut."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.truncated = self.dropped = 0

    def pairs(self, kvs) -> list[tuple[str, str, str]]:
        """(key, string form, stored JSON) of the kept attributes: the first ``max_attributes``;
        a value whose string form is too long is cut and stored as a string."""
        n = self.limits.max_attributes
        if len(kvs) > n:
            self.dropped += len(kvs) - n
        out = []
        for kv in kvs[:n]:
            s = value_str(kv.value)
            cut = truncate(s, self.limits.max_value_bytes)
            if cut is None:
                out.append((kv.key, s, value_json(kv.value)))
            else:
                self.truncated += 1
                out.append((kv.key, cut, json_str(cut)))
        return out


def attributes_json(pairs: list[tuple[str, str, str]]) -> tuple[str, dict[str, str]]:
    """(key, string form, stored JSON) triples → (the stored JSON object, {key: string form} in
    order, the first of a repeated key winning)."""
    parts = []
    values: dict[str, str] = {}
    for k, s, j in pairs:
        parts.append(f"{json_str(k)}:{j}")
        values.setdefault(k, s)
    return "{" + ",".join(parts) + "}", values


_I64 = "ts dur evts".split()
_U64 = ["tkey"]  # schema.TraceKey
_ESTIMATED = SPAN_SCHEMA.get_field_index(ESTIMATED_COST[0])


def _walk(req: ExportTraceServiceRequest, extract: Sequence[str], limits: Limits, maps: bool = False) -> dict:
    """Columns of ``req`` as arrays, the same as ``_otlp.decode`` gives, from protobuf objects."""
    n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    if n > limits.max_spans:
        raise BadRequest(f"the request holds more than {limits.max_spans} spans (max_spans_per_request)")
    cut = _Cut(limits)
    c: dict[str, list] = {name: [] for name in _STR + _I32 + _I64 + _U64}
    c["evoff"].append(0)
    c["lnoff"].append(0)
    xspan: list[list] = [[] for _ in extract]
    xres: list[list] = [[] for _ in extract]
    keys, errors, rejected = [], [], 0
    kv: dict[str, list[list[tuple[str, str]]]] = {name: [] for name in _SETS}  # per set: its (key, string form)s
    types: dict[str, list[str]] = {name: [] for name in _SETS}  # per set: its types (schema.MAP_TYPES)

    def pairs_of(name: str, attributes) -> list[tuple[str, str, str]]:
        pairs = cut.pairs(attributes)
        if maps:
            kv[name].append([(k, v) for k, v, _ in pairs])
            types[name].append("".join(_type(a.value, shown) for a, (_, shown, _) in zip(attributes, pairs)))
        return pairs

    for rs in req.resource_spans:
        pairs = pairs_of("rattrs", rs.resource.attributes)
        text, values = attributes_json(pairs)
        service = ""
        for k, v, _ in pairs:  # the last one wins
            if k == "service.name":
                service = v
        r_i = len(c["service"])
        c["service"].append(service)
        c["rattrs"].append(text)
        for j, k in enumerate(extract):
            xres[j].append(values.get(k))
        for ss in rs.scope_spans:
            s_i = len(c["scopename"])
            c["scopename"].append(ss.scope.name)
            c["scopever"].append(ss.scope.version)
            c["scopeattrs"].append(attributes_json(pairs_of("scopeattrs", ss.scope.attributes))[0])
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
                elif start > MAX_TIME_NS:
                    bad = f"start_time_unix_nano {_OUT_OF_RANGE}"
                elif end > MAX_TIME_NS:
                    bad = f"end_time_unix_nano {_OUT_OF_RANGE}"
                elif span.events and max(ev.time_unix_nano for ev in span.events) > MAX_TIME_NS:
                    bad = f"an event's time_unix_nano {_OUT_OF_RANGE}"
                if bad:
                    rejected += 1
                    if len(errors) < MAX_ERROR_MESSAGES:
                        errors.append(f"span {span.name!r}: {bad}")
                    continue
                text, values = attributes_json(pairs_of("sattrs", span.attributes))
                c["sattrs"].append(text)
                for j, k in enumerate(extract):
                    xspan[j].append(values.get(k))
                for ev in span.events:
                    t = ev.time_unix_nano
                    c["evts"].append(t)
                    c["evname"].append(ev.name)
                    c["evattrs"].append(attributes_json(pairs_of("evattrs", ev.attributes))[0])
                for ln in span.links:
                    c["lntid"].append(ln.trace_id.hex())
                    c["lnsid"].append(ln.span_id.hex())
                    c["lnstate"].append(ln.trace_state)
                    c["lnattrs"].append(attributes_json(pairs_of("lnattrs", ln.attributes))[0])
                c["evoff"].append(len(c["evts"]))
                c["lnoff"].append(len(c["lntid"]))
                c["ts"].append(start)
                c["dur"].append(end - start)
                c["tid"].append(tid.hex())
                c["tkey"].append(int.from_bytes(tid[8:], "big"))
                c["sid"].append(sid.hex())
                c["pid"].append(pid.hex())
                c["tstate"].append(span.trace_state)
                c["name"].append(span.name)
                kind, code = span.kind, span.status.code
                c["kind"].append(SPAN_KINDS[kind] if 0 <= kind < 6 else "Unspecified")
                c["status"].append(STATUS_CODES[code] if 0 <= code < 3 else "Unset")
                c["smsg"].append(span.status.message)
                c["scopeidx"].append(s_i)
                keys.append(tid + sid)
    out = {n: pa.array(c[n], pa.string()) for n in _STR}
    out.update({n: pa.array(c[n], pa.int32()) for n in _I32})
    out.update({n: pa.array(c[n], pa.int64()) for n in _I64})
    out.update({n: pa.array(c[n], pa.uint64()) for n in _U64})
    # None for a key no row has, as the native decoder gives it
    out["xspan"] = [pa.array(x, pa.string()) if any(v is not None for v in x) else None for x in xspan]
    out["xres"] = [pa.array(x, pa.string()) if any(v is not None for v in x) else None for x in xres]
    out["maps"] = [(_pairs_map(kv[name]), pa.array(types[name], pa.string())) for name in _SETS] if maps else None
    out.update(keys=keys, errors=errors, rejected=rejected, truncated=cut.truncated, dropped=cut.dropped)
    return out


_ONEOF_LETTER = dict(
    zip(
        ("string_value", "bool_value", "int_value", "double_value", "array_value", "kvlist_value", "bytes_value"),
        TYPE_LETTERS[1:],
    )
)


def _type(value: AnyValue, shown: str) -> str:
    """A value's letter in schema.MAP_TYPES, given the string form kept (a value cut to the
    limit is a string), an array's or a kvlist's stored JSON after its letter."""
    letter = _ONEOF_LETTER.get(value.WhichOneof("value"), "e")
    if letter != "s" and shown != value_str(value):
        return "s"  # cut
    return letter + value_json(value) if letter in "am" else letter


def _pairs_map(sets: list[list[tuple[str, str]]]) -> pa.MapArray:
    offsets = [0]
    for pairs in sets:
        offsets.append(offsets[-1] + len(pairs))
    flat = [p for pairs in sets for p in pairs]
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.array([k for k, _ in flat], pa.string()),
        pa.array([v for _, v in flat], pa.string()),
    )


# --- from the native decoder's buffers ------------------------------------------------------


def _string_array(col: tuple) -> pa.Array:
    n, offsets, data, valid = col
    return pa.Array.from_buffers(
        pa.string(), n, [None if valid is None else pa.py_buffer(valid), pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _from_native(d: dict) -> dict:
    out = {n: _string_array(d[n]) for n in _STR}
    out.update({n: pa.Array.from_buffers(pa.int32(), len(d[n]) // 4, [None, pa.py_buffer(d[n])]) for n in _I32})
    out.update({n: pa.Array.from_buffers(pa.int64(), len(d[n]) // 8, [None, pa.py_buffer(d[n])]) for n in _I64})
    out.update({n: pa.Array.from_buffers(pa.uint64(), len(d[n]) // 8, [None, pa.py_buffer(d[n])]) for n in _U64})
    out["xspan"] = [None if x is None else _string_array(x) for x in d["xspan"]]
    out["xres"] = [None if x is None else _string_array(x) for x in d["xres"]]
    out["maps"] = None
    if d["maps"] is not None:
        out["maps"] = [
            (
                pa.MapArray.from_arrays(
                    pa.Array.from_buffers(pa.int32(), len(off) // 4, [None, pa.py_buffer(off)]),
                    _string_array(k),
                    _string_array(v),
                ),
                _string_array(t),
            )
            for off, k, v, t in d["maps"]
        ]
    kb = d["keys"]
    out.update(
        keys=[kb[i : i + 24] for i in range(0, len(kb), 24)],
        errors=d["errors"],
        rejected=d["rejected"],
        truncated=d["truncated"],
        dropped=d["dropped"],
    )
    try:
        for name in _STR:  # protobuf strings must be UTF-8; checked in bulk, in C
            out[name].validate(full=True)
        for m, t in out["maps"] or ():  # the same bytes as the JSON's, but the keys and values apart
            m.keys.validate(full=True)
            m.items.validate(full=True)
            t.validate(full=True)
    except pa.ArrowInvalid:
        raise BadRequest("cannot decode OTLP protobuf request: a string field is not valid UTF-8") from None
    return out


# --- the batch ------------------------------------------------------------------------------


def _convert(value: str, typ: pa.DataType):
    if pa.types.is_boolean(typ):
        return {"true": True, "false": False, "1": True, "0": False}.get(value.lower())
    try:
        if not pa.types.is_integer(typ):
            return float(value)
        try:
            i = int(value)
        except ValueError:
            i = int(float(value))  # "12.0", "1e3"
    except (ValueError, OverflowError):
        return None
    limit = 1 << (typ.bit_width - 1)
    return i if -limit <= i < limit else None


def cast(strings: pa.Array, typ: pa.DataType) -> pa.Array:
    """Strings → ``typ``; a value that does not parse becomes null instead of failing the batch."""
    if pa.types.is_string(typ):
        return strings
    try:
        return pc.cast(strings, typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if s is None else _convert(s, typ) for s in strings.to_pylist()], typ)


def typed_column(col: Typed, strings: Sequence[pa.Array | None], n: int) -> pa.Array:
    """``col`` of ``n`` spans from the string forms of its keys' values (one array per key, in
    ``col.keys`` order, None for a key no span has): each key's values cast (and scaled), then
    the first that is set. Whole columns at a time; a key no span of the batch has (most of
    them, for any one sender) costs nothing."""
    found = []
    for key, values in zip(col.keys, strings):
        if values is None:
            continue
        if pa.types.is_string(col.arrow):
            empty = pc.equal(values, "")
            if pc.any(empty).as_py():
                values = pc.if_else(empty, pa.scalar(None, pa.string()), values)
            if col.lower:
                values = pc.utf8_lower(values)
        else:
            values = cast(values, col.arrow)
        if key in col.scale:
            values = pc.multiply(values, col.scale[key]).cast(col.arrow)
        found.append(values)
    if not found:
        return pa.nulls(n, col.arrow)
    return found[0] if len(found) == 1 else pc.coalesce(*found)


def _dimension(span: pa.Array | None, resource: pa.Array | None, res_take: pa.Array, n: int) -> pa.Array:
    """A span-metric dimension's values: the span's attribute, else its resource's."""
    if resource is None:
        return pa.nulls(n, pa.string()) if span is None else span
    resource = resource.take(res_take)
    return resource if span is None else pc.coalesce(span, resource)


class Decoder:
    """Decodes OTLP requests into ``SpanBatch``es, pulling out the typed columns and the given
    span-metric ``dimensions`` (span attribute, else resource attribute) on the way. With
    ``maps``, each batch also holds every attribute set as a map of string forms
    (``schema.STRING_MAPS``: the ClickHouse exporter's Map columns). Example::

        batch = Decoder(["llm.model"]).decode_protobuf(body)
    """

    def __init__(
        self,
        dimensions: Sequence[str] = (),
        native: bool = True,
        limits: Limits = Limits(),
        prices: Prices | None = None,
        maps: bool = False,
    ):
        self.dimensions = tuple(dimensions)
        self.maps = maps
        self.prices = prices  # estimates the cost of calls sent without one (None: not estimated)
        self.limits = limits
        typed_keys = [k for col in TYPED_COLUMNS for k in col.keys]
        self._extract = tuple(dict.fromkeys([*typed_keys, *self.dimensions]))
        self._slot = {k: i for i, k in enumerate(self._extract)}
        self.native = native and _otlp is not None

    def decode_protobuf(self, body: bytes) -> SpanBatch:
        """A serialized ``ExportTraceServiceRequest``; raises ``BadRequest`` if undecodable."""
        if self.native:
            lim = self.limits
            return self._batch(
                _from_native(
                    _otlp.decode(
                        body,
                        _render,
                        MAX_ERROR_MESSAGES,
                        self._extract,
                        lim.max_value_bytes,
                        lim.max_attributes,
                        lim.max_spans,
                        self.maps,
                    )
                )
            )
        req = ExportTraceServiceRequest()
        try:
            req.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as e:  # upb raises DecodeError
            raise BadRequest(f"cannot decode OTLP protobuf request: {e}") from None
        return self._batch(_walk(req, self._extract, self.limits, self.maps))

    def estimate_costs(self, table: pa.Table) -> pa.Table:
        """``table`` (decoded spans) with ``EstimatedCostUsd`` filled from the price table (left
        null without one). Run once per commit by the writer, on all its requests' spans
        together, rather than per request: its ~20 Arrow calls cost a fixed ~200-400 us a
        plano(llm) request, ~0.7 us a span of Plano's traffic."""
        if self.prices is None or table.num_rows == 0:
            return table
        return table.set_column(_ESTIMATED, ESTIMATED_COST[0], self.prices.estimate(table))

    def decode_json(self, body: bytes) -> SpanBatch:
        """An OTLP/JSON ``ExportTraceServiceRequest``; raises ``BadRequest`` if undecodable."""
        req = parse_json(body)
        if self.native:
            return self.decode_protobuf(req.SerializeToString())
        return self._batch(_walk(req, self._extract, self.limits, self.maps))

    def _batch(self, c: dict) -> SpanBatch:
        scope_take = c["scopeidx"]
        res_take = c["residx"].take(scope_take)
        events = pa.ListArray.from_arrays(
            c["evoff"],
            pa.StructArray.from_arrays(
                [c["evts"].cast(pa.timestamp("ns")), c["evname"], c["evattrs"]], fields=list(EVENT)
            ),
        )
        links = pa.ListArray.from_arrays(
            c["lnoff"],
            pa.StructArray.from_arrays([c["lntid"], c["lnsid"], c["lnstate"], c["lnattrs"]], fields=list(LINK)),
        )
        xspan, xres = c["xspan"], c["xres"]
        columns = [
            c["ts"].cast(pa.timestamp("ns")),
            c["tid"],
            c["sid"],
            c["pid"],
            c["tstate"],
            c["name"],
            c["kind"],
            c["service"].take(res_take),
            c["rattrs"].take(res_take),
            c["scopename"].take(scope_take),
            c["scopever"].take(scope_take),
            c["sattrs"],
            c["dur"],
            c["status"],
            c["smsg"],
            events,
            links,
        ]
        n = len(c["sattrs"])
        for col in TYPED_COLUMNS:
            columns.append(typed_column(col, [xspan[self._slot[k]] for k in col.keys], n))
        columns.append(c["tkey"])
        columns.append(c["scopeattrs"].take(scope_take))
        columns.append(pa.nulls(n, ESTIMATED_COST[1]))  # the price table's estimate: estimate_costs
        dims = [_dimension(xspan[self._slot[d]], xres[self._slot[d]], res_take, n) for d in self.dimensions]
        table = pa.Table.from_arrays(columns, schema=SPAN_SCHEMA)
        if c["maps"] is not None:
            for i, schema in enumerate((STRING_MAPS, MAP_TYPES)):  # the maps, then their types
                resource, scope, span, event, link = (m[i] for m in c["maps"])
                for field, values in zip(
                    schema,
                    (
                        resource.take(res_take),
                        scope.take(scope_take),
                        span,
                        pa.ListArray.from_arrays(c["evoff"], event),
                        pa.ListArray.from_arrays(c["lnoff"], link),
                    ),
                ):
                    table = table.append_column(field, values)
        return SpanBatch(
            table,
            c["keys"],
            dimensions=dims,
            rejected=c["rejected"],
            errors=c["errors"],
            truncated=c["truncated"],
            dropped=c["dropped"],
            limits=self.limits,
        )


# --- OTLP/JSON ------------------------------------------------------------------------------


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """An OTLP/JSON request body as the protobuf request (see ``otlp_json``); raises ``BadRequest``."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequest("request body is not valid JSON: nested too deeply") from None
    try:
        return otlp_json.parse(doc)
    except otlp_json.InvalidJSON as e:
        raise BadRequest(f"invalid OTLP/JSON request: {e}") from None


try:
    from . import _otlp
except ImportError:  # only where the extension was not built
    _otlp = None
    logging.getLogger("planoscope").warning(
        "the native OTLP decoder (planoscope.ingest._otlp) is not built: ingest uses the ~5x slower reference decoder"
    )
else:
    _otlp.set_error(BadRequest)
