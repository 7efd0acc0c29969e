"""The native decoder (planoscope._otlp) against the reference walker over protobuf objects.

Both must give the same batch for any request, and refuse the same undecodable ones. Requests
are generated from a seeded RNG with every value kind, awkward strings and invalid spans mixed in.
"""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from planoscope.ingest import decode
from planoscope.ingest.decode import BadRequest, Decoder
from planoscope.metrics.spanmetrics import DEFAULT_DIMENSIONS
from planoscope.store.attributes import double_json, double_str, value_json, value_str
from planoscope.store.schema import MAP_TYPES, SPAN_SCHEMA, STRING_MAPS

STRINGS = [
    "",
    "gpt-4o",
    "plano(llm)",
    'q"uote',
    "back\\slash",
    "tab\there",
    "new\nline",
    "\x01ctl",
    "é ünïcødé",
    "emoji 🙂",
    "x" * 300,
]
KEYS = [
    "llm.model",
    "gen_ai.request.model",
    "llm.usage.prompt_tokens",
    "gen_ai.usage.input_tokens",
    "llm.usage.total_cost_usd",
    "llm.is_streaming",
    "http.status_code",
    "agent_id",
    "selection.listener",
    "http.method",
    "service.name",
    "k",
    'we"ird\\key',
    "dup",
]
DOUBLES = [
    0.0,
    -0.0,
    0.5,
    2.0,
    0.0123,
    0.1 + 0.2,
    1e-7,
    1e-5,
    1e16,
    1e21,
    123456789.123,
    float("inf"),
    float("-inf"),
    float("nan"),
    5e-324,
    -17.25,
]


# Around the latest time the store holds (decode.MAX_TIME_NS = 2**63 - 2): kept up to it, rejected after.
EDGE_TIMES = [2**53 + 1, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 1]


def _value(rng: random.Random, depth: int = 0) -> AnyValue:
    kind = rng.randrange(8 if depth < 2 else 5)
    if kind == 0:
        return AnyValue(string_value=rng.choice(STRINGS))
    if kind == 1:
        return AnyValue(int_value=rng.choice([0, -1, 42, 2**63 - 1, -(2**63), rng.randrange(-(10**6), 10**6)]))
    if kind == 2:
        return AnyValue(double_value=rng.choice(DOUBLES))
    if kind == 3:
        return AnyValue(bool_value=rng.random() < 0.5)
    if kind == 4:
        return AnyValue()  # no value set
    if kind == 5:
        return AnyValue(bytes_value=rng.randbytes(rng.randrange(6)))
    if kind == 6:
        return AnyValue(array_value=ArrayValue(values=[_value(rng, depth + 1) for _ in range(rng.randrange(4))]))
    return AnyValue(
        kvlist_value=KeyValueList(
            values=[KeyValue(key=rng.choice(KEYS), value=_value(rng, depth + 1)) for _ in range(rng.randrange(4))]
        )
    )


def _attrs(rng: random.Random, n: int) -> list[KeyValue]:
    return [KeyValue(key=rng.choice(KEYS), value=_value(rng)) for _ in range(n)]


def random_request(seed: int) -> bytes:
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    for _ in range(rng.randrange(1, 4)):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(_attrs(rng, rng.randrange(4)))
        if rng.random() < 0.8:
            rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=rng.choice(STRINGS)))
        for _ in range(rng.randrange(0, 3)):
            ss = rs.scope_spans.add()
            ss.scope.name = rng.choice(STRINGS)
            ss.scope.version = rng.choice(["", "1.2.3"])
            ss.scope.attributes.extend(_attrs(rng, rng.randrange(3)))
            for _ in range(rng.randrange(0, 6)):
                s = ss.spans.add()
                s.trace_id = rng.randbytes(16) if rng.random() < 0.9 else rng.choice([bytes(16), rng.randbytes(15)])
                s.span_id = rng.randbytes(8) if rng.random() < 0.9 else rng.choice([bytes(8), b""])
                s.parent_span_id = rng.choice([b"", rng.randbytes(8)]) if rng.random() < 0.95 else rng.randbytes(3)
                s.trace_state = rng.choice(["", "a=b"])
                s.name = rng.choice(STRINGS)
                s.kind = rng.randrange(7)
                s.start_time_unix_nano = rng.randrange(1, 2**62) if rng.random() < 0.95 else rng.choice(EDGE_TIMES)
                s.end_time_unix_nano = min(
                    2**64 - 1, s.start_time_unix_nano + (-1 if rng.random() < 0.05 else rng.choice([0, 1, 5_000_000]))
                )
                if rng.random() < 0.03:  # a long span: the start at 0, the end anywhere
                    s.start_time_unix_nano, s.end_time_unix_nano = 0, rng.choice(EDGE_TIMES)
                s.attributes.extend(_attrs(rng, rng.randrange(8)))
                for _ in range(rng.randrange(3)):
                    e = s.events.add()
                    e.name = rng.choice(STRINGS)
                    e.time_unix_nano = rng.randrange(2**62) if rng.random() < 0.95 else rng.choice(EDGE_TIMES)
                    e.attributes.extend(_attrs(rng, rng.randrange(3)))
                for _ in range(rng.randrange(2)):
                    ln = s.links.add()
                    ln.trace_id, ln.span_id = rng.randbytes(16), rng.randbytes(8)
                    ln.trace_state = rng.choice(["", "x=y"])
                    ln.attributes.extend(_attrs(rng, rng.randrange(3)))
                s.status.code = rng.randrange(4)
                s.status.message = rng.choice(STRINGS)
    return req.SerializeToString()


def _same(x: pa.ChunkedArray, y: pa.ChunkedArray) -> bool:
    if x.equals(y):
        return True
    # Arrow's equality says NaN != NaN; the typed double columns may hold NaN.
    return pa.types.is_floating(x.type) and repr(x.to_pylist()) == repr(y.to_pylist())


def _both(body: bytes, maps: bool = False):
    native = Decoder(DEFAULT_DIMENSIONS, maps=maps)
    reference = Decoder(DEFAULT_DIMENSIONS, native=False, maps=maps)
    assert native.native and not reference.native
    return native.decode_protobuf(body), reference.decode_protobuf(body)


@pytest.mark.parametrize("maps", [False, True], ids=["json", "json+maps"])
@pytest.mark.parametrize("seed", range(200))
def test_native_decoder_matches_the_reference(seed, maps):
    a, b = _both(random_request(seed), maps)
    assert a.table.schema == b.table.schema
    assert a.table.schema.names == SPAN_SCHEMA.names + (STRING_MAPS.names + MAP_TYPES.names if maps else [])
    for name in a.table.column_names:
        assert _same(a.table.column(name), b.table.column(name)), name
    assert a.keys == b.keys
    assert (a.rejected, a.errors) == (b.rejected, b.errors)
    assert [d.to_pylist() for d in a.dimensions] == [d.to_pylist() for d in b.dimensions]


@pytest.mark.parametrize("seed", range(40))
def test_maps_hold_each_attribute_as_the_clickhouse_exporter_writes_it(seed):
    """Decoder(maps=True): every attribute set of every kept span as (key, AsString form) pairs,
    in order, repeated keys kept, and their types (a letter each, an array's or a map's typed
    JSON after it); the JSON columns are those of Decoder() unchanged."""
    body = random_request(seed)
    batch = Decoder(DEFAULT_DIMENSIONS, maps=True).decode_protobuf(body)
    plain = Decoder(DEFAULT_DIMENSIONS).decode_protobuf(body)
    assert batch.table.select(SPAN_SCHEMA.names).equals(plain.table)
    req = ExportTraceServiceRequest.FromString(body)
    limit = decode.Limits().max_attributes

    def pairs(attributes):
        return [(kv.key, value_str(kv.value)) for kv in attributes[:limit]]

    letters = {"string_value": "s", "bool_value": "b", "int_value": "i", "double_value": "d", "bytes_value": "y"}

    def types(attributes):
        out = ""
        for kv in attributes[:limit]:
            which = kv.value.WhichOneof("value")
            if which in ("array_value", "kvlist_value"):
                out += which[0].replace("k", "m") + value_json(kv.value)
            else:
                out += letters.get(which, "e")
        return out

    want, kept = [], [bytes(k) for k in batch.keys]  # the kept spans' ids, in order
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                if len(want) == len(kept) or sp.trace_id + sp.span_id != kept[len(want)]:
                    continue  # rejected
                want.append(
                    {
                        "ResourceAttributesMap": pairs(rs.resource.attributes),
                        "ScopeAttributesMap": pairs(ss.scope.attributes),
                        "SpanAttributesMap": pairs(sp.attributes),
                        "EventsAttributesMap": [pairs(e.attributes) for e in sp.events],
                        "LinksAttributesMap": [pairs(lk.attributes) for lk in sp.links],
                        "ResourceAttributesTypes": types(rs.resource.attributes),
                        "ScopeAttributesTypes": types(ss.scope.attributes),
                        "SpanAttributesTypes": types(sp.attributes),
                        "EventsAttributesTypes": [types(e.attributes) for e in sp.events],
                        "LinksAttributesTypes": [types(lk.attributes) for lk in sp.links],
                    }
                )
    assert len(want) == len(kept)
    assert batch.table.select(STRING_MAPS.names + MAP_TYPES.names).to_pylist() == want


def test_random_requests_cover_rejections_and_every_value_kind():
    # The generator above must exercise what it claims, or the equivalence test proves little.
    rejected = kept = 0
    for seed in range(200):
        a, _ = _both(random_request(seed))
        rejected += a.rejected
        kept += a.table.num_rows
    assert rejected > 50 and kept > 500
    letters = set()
    for seed in range(40):  # the maps' test above: every type letter occurs
        batch = Decoder(DEFAULT_DIMENSIONS, maps=True).decode_protobuf(random_request(seed))
        letters |= {c for t in batch.table.column("SpanAttributesTypes").to_pylist() for c in t[:1]}
        letters |= {c for ts in batch.table.column("EventsAttributesTypes").to_pylist() for t in ts for c in t}
    assert set("esbidamy") <= letters


@pytest.mark.parametrize("seed", range(40))
def test_truncated_requests_are_refused_or_decoded_alike(seed):
    body = random_request(seed)
    cut = random.Random(seed).randrange(1, max(2, len(body)))
    outcomes = []
    for native in (True, False):
        try:
            batch = Decoder(DEFAULT_DIMENSIONS, native=native).decode_protobuf(body[:cut])
            outcomes.append(("ok", batch.table, batch.rejected))
        except BadRequest as e:
            outcomes.append(("bad", str(e).startswith("cannot decode OTLP protobuf request")))
    if outcomes[0][0] == "ok" and outcomes[1][0] == "ok":
        (_, ta, ra), (_, tb, rb) = outcomes
        assert ra == rb and all(_same(ta.column(n), tb.column(n)) for n in ta.column_names)
    else:
        assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("body", [b"\xff", b"\x0a\x05abc", b"\x08", b"\x0b", b"\x0a\xff\xff\xff\xff\x0f"])
def test_garbage_is_a_bad_request(body):
    with pytest.raises(BadRequest, match="cannot decode OTLP protobuf request"):
        Decoder().decode_protobuf(body)


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_invalid_utf8_in_a_span_name_refuses_the_request():
    # Written by hand: protobuf's Python API will not produce invalid UTF-8.
    span = _field(1, b"\x01" * 16) + _field(2, b"\x02" * 8) + _field(5, b"\xff\xfe")
    body = _field(1, _field(2, _field(2, span)))
    for native in (True, False):
        with pytest.raises(BadRequest):
            Decoder(native=native).decode_protobuf(body)
    valid = _field(1, _field(2, _field(2, _field(1, b"\x01" * 16) + _field(2, b"\x02" * 8) + _field(5, b"ok"))))
    assert Decoder().decode_protobuf(valid).table.column("SpanName").to_pylist() == ["ok"]


def test_doubles_are_written_as_the_collector_writes_them():
    """As pdata's Value.AsString: Go's strconv.FormatFloat(f, 'f' or 'e', -1, 64), 'e' only below
    1e-6 or from 1e21 on, with "e-07" cleaned up to "e-7"."""
    cases = {
        0.5: "0.5",
        2.0: "2",
        0.0123: "0.0123",
        1e-4: "0.0001",
        1e-5: "0.00001",
        4.5e-5: "0.000045",
        -2.5e-6: "-0.0000025",
        1e-6: "0.000001",
        9.999999999999997e-7: "9.999999999999997e-7",  # the double just below 1e-6
        1e-7: "1e-7",
        1.5e-300: "1.5e-300",
        1e21: "1e+21",
        1e20: "100000000000000000000",
        1e16: "10000000000000000",
        -0.0: "-0",
        float("inf"): "Infinity",
        float("-inf"): "-Infinity",
        float("nan"): "NaN",
        0.1 + 0.2: "0.30000000000000004",
        5e-324: "5e-324",
    }
    for value, text in cases.items():
        assert double_str(value) == text, value


def _random_doubles(rng: random.Random, n: int) -> list[float]:
    """Doubles of every class: any bit pattern, every decade, few decimals, powers of two (their
    neighbours are not equally far), tiny costs (exponent form), subnormals."""
    import struct

    out = [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e-5, 5e-324, 2.2250738585072014e-308, 1e15, 1e16, 1e21]
    for i in range(n):
        k = i % 6
        if k == 0:
            out.append(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])
        elif k == 1:
            out.append(rng.random() * 10 ** rng.randint(-12, 17))
        elif k == 2:
            out.append(round(rng.random() * 1000, rng.randint(0, 6)))
        elif k == 3:
            out.append(2.0 ** rng.randint(-1074, 1023) * rng.choice([1, -1, 3, 0.75]))
        elif k == 4:
            out.append(round(rng.random() * 1e-4, rng.randint(5, 12)))
        else:
            out.append(rng.random() * 1e-310)
    return out


def test_native_doubles_match_python_and_stay_in_c(monkeypatch):
    """The native decoder renders doubles itself (a Python call retakes the GIL mid-parse) and
    writes exactly what the reference writes: the string form (pulled out for span-metric
    dimensions) and the stored JSON."""
    values = _random_doubles(random.Random(11), 60_000)
    rendered = []
    real = decode._render
    monkeypatch.setattr(decode, "_render", lambda kind, raw: rendered.append(raw) or real(kind, raw))
    keys = [f"k{j}" for j in range(40)]
    decoder = Decoder(keys)
    strings, stored = [], []
    for i in range(0, len(values), len(keys)):
        chunk = values[i : i + len(keys)]
        req = ExportTraceServiceRequest()
        span = (
            req.resource_spans.add()
            .scope_spans.add()
            .spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=1, end_time_unix_nano=2)
        )
        span.attributes.extend(KeyValue(key=k, value=AnyValue(double_value=v)) for k, v in zip(keys, chunk))
        batch = decoder.decode_protobuf(req.SerializeToString())
        strings.extend(d[0].as_py() for d in batch.dimensions[: len(chunk)])
        stored.append(batch.table.column("SpanAttributes")[0].as_py())
        want = "{" + ",".join(f'"{k}":{double_json(v)}' for k, v in zip(keys, chunk)) + "}"
        assert stored[-1] == want
    assert strings == [double_str(v) for v in values]
    # and the stored JSON reads back as the same double, in Python and in DuckDB
    import duckdb

    back = [v for text in stored for v in json.loads(text).values()]
    assert all(type(v) is float for v in back) and repr(back) == repr(values)
    con = duckdb.connect()
    pointers = [f"/{k}" for k in keys]
    in_duckdb = con.execute(
        "SELECT list_transform(?::VARCHAR[], lambda p: json_extract(j, p)::DOUBLE) FROM unnest(?::VARCHAR[]) t(j)",
        [pointers, stored],
    ).fetchall()
    assert repr([v for (row,) in in_duckdb for v in row][: len(values)]) == repr(values)

    # Values of the sizes spans carry (costs, latencies, rates) never leave C; Python is left the
    # powers of two, subnormals, huge and non-finite values.
    def everyday(v: float) -> bool:
        return 1e-12 < abs(v) < 1e15 and float(v).hex().split("p")[0].rstrip("0") not in ("0x1.", "-0x1.")

    assert sum(map(everyday, values)) > 25_000
    assert [v for v in rendered if everyday(v)] == []


# --- limits: both decoders cut, drop and refuse alike -------------------------------------------

TIGHT = [decode.Limits(max_value_bytes=b, max_attributes=a, max_spans=100_000) for b, a in [(5, 2), (7, 3), (16, 1)]]


@pytest.mark.parametrize("limits", TIGHT, ids=lambda lim: f"{lim.max_value_bytes}B-{lim.max_attributes}attrs")
@pytest.mark.parametrize("seed", range(60))
def test_native_decoder_matches_the_reference_under_tight_limits(seed, limits):
    body = random_request(seed)
    a = Decoder(DEFAULT_DIMENSIONS, limits=limits, maps=True).decode_protobuf(body)
    b = Decoder(DEFAULT_DIMENSIONS, native=False, limits=limits, maps=True).decode_protobuf(body)
    for name in a.table.column_names:
        assert _same(a.table.column(name), b.table.column(name)), name
    assert (a.truncated, a.dropped, a.rejected, a.keys) == (b.truncated, b.dropped, b.rejected, b.keys)
    assert [d.to_pylist() for d in a.dimensions] == [d.to_pylist() for d in b.dimensions]
    assert a.error_message == b.error_message


def test_tight_limits_cut_and_drop_somewhere():
    # The equivalence above must cover cutting inside multi-byte characters and dropping.
    lim = TIGHT[0]
    truncated = dropped = 0
    for seed in range(60):
        batch = Decoder(DEFAULT_DIMENSIONS, limits=lim).decode_protobuf(random_request(seed))
        truncated += batch.truncated
        dropped += batch.dropped
    assert truncated > 50 and dropped > 50


def _one_span_request(attrs: list[tuple[str, str]], n_spans: int = 1, resource=()) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in resource)
    ss = rs.scope_spans.add()
    for i in range(n_spans):
        s = ss.spans.add(
            trace_id=b"\x01" * 16,
            span_id=(i + 1).to_bytes(8, "big"),
            name="s",
            start_time_unix_nano=1,
            end_time_unix_nano=2,
        )
        s.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs)
    return req.SerializeToString()


@pytest.mark.parametrize("native", [True, False])
def test_a_long_value_is_cut_at_a_character_boundary_and_marked(native):
    lim = decode.Limits(max_value_bytes=10, max_attributes=128, max_spans=10)
    body = _one_span_request(
        [("fits", "é" * 5), ("euro", "€" * 4), ("llm.model", "x" * 11)], resource=[("service.name", "s" * 20)]
    )
    batch = Decoder(["llm.model"], native=native, limits=lim).decode_protobuf(body)
    import json

    attrs = json.loads(batch.table.column("SpanAttributes")[0].as_py())
    assert attrs == {"fits": "é" * 5, "euro": "€" * 3 + "…", "llm.model": "x" * 10 + "…"}
    assert batch.table.column("LlmModel").to_pylist() == ["x" * 10 + "…"]  # the typed column holds what is stored
    assert batch.table.column("ServiceName").to_pylist() == ["s" * 10 + "…"]
    assert batch.truncated == 3 and batch.rejected == 0
    assert batch.error_message == ("3 attribute values longer than 10 bytes were truncated (max_attribute_value_bytes)")


@pytest.mark.parametrize("native", [True, False])
def test_attributes_beyond_the_limit_are_dropped_first_ones_kept(native):
    lim = decode.Limits(max_value_bytes=100, max_attributes=3, max_spans=10)
    body = _one_span_request([(f"k{i}", str(i)) for i in range(5)], n_spans=2)
    batch = Decoder(native=native, limits=lim).decode_protobuf(body)
    import json

    assert [json.loads(x) for x in batch.table.column("SpanAttributes").to_pylist()] == [
        {"k0": "0", "k1": "1", "k2": "2"}
    ] * 2
    assert batch.dropped == 4 and "4 attributes beyond 3 in one set were dropped" in batch.error_message


@pytest.mark.parametrize("native", [True, False])
def test_too_many_spans_refuse_the_request(native):
    lim = decode.Limits(max_value_bytes=100, max_attributes=3, max_spans=10)
    assert Decoder(native=native, limits=lim).decode_protobuf(_one_span_request([], n_spans=10)).table.num_rows == 10
    with pytest.raises(BadRequest, match=r"^the request holds more than 10 spans \(max_spans_per_request\)$"):
        Decoder(native=native, limits=lim).decode_protobuf(_one_span_request([], n_spans=11))


@pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])
def test_times_are_kept_up_to_the_latest_the_store_holds(native):
    """decode.MAX_TIME_NS = 2**63 - 2: DuckDB's TIMESTAMP_NS reads 2**63 - 1 as infinity."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    latest = decode.MAX_TIME_NS
    assert latest == 2**63 - 2
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    cases = [  # (name, start, end, event time or None, kept)
        ("latest", latest, latest, latest, True),
        ("long", 0, latest, None, True),
        ("start", latest + 1, latest + 1, None, False),
        ("end", 0, latest + 1, None, False),
        ("event", 1, 2, latest + 1, False),
    ]
    for i, (name, start, end, event, _) in enumerate(cases, start=1):
        s = Span(trace_id=bytes([i]) * 16, span_id=bytes([i]) * 8, name=name)
        s.start_time_unix_nano, s.end_time_unix_nano = start, end
        if event is not None:
            s.events.add(time_unix_nano=event, name="e")
        spans.append(s)
    batch = Decoder(native=native).decode_protobuf(req.SerializeToString())
    assert batch.table.column("SpanName").to_pylist() == [c[0] for c in cases if c[4]]
    ts = batch.table.column("Timestamp").cast(pa.int64()).to_pylist()
    assert ts == [latest, 0] and batch.table.column("Duration").to_pylist() == [0, latest]
    assert batch.rejected == 3
    assert [e.split(": ", 1)[1].split(" is ")[0] for e in batch.errors] == [
        "start_time_unix_nano",
        "end_time_unix_nano",
        "an event's time_unix_nano",
    ]
