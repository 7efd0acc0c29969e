"""Attribute values keep their OTLP types in the store (planoscope/store/attributes.py): the JSON
both decoders write for every kind of value, what it reads back as, and what DuckDB makes of it."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import duckdb
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

from conftest import any_value
from planoscope.ingest.decode import Decoder, Limits
from planoscope.store.attributes import key_values, stored_str, value_json, value_str
from planoscope.store.schema import ATTR_MACRO

sys.path.insert(0, str(Path(__file__).parents[1] / "ingest"))
from test_decode import _value  # noqa: E402  (random AnyValues of every kind, nested)

NAN = float("nan")


def kvlist(*pairs) -> AnyValue:
    """A kvlist with these pairs in order, repeated keys included."""
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=any_value(v)) for k, v in pairs]))


# (name, value, the JSON stored, its string form: the collector's AsString())
CASES = [
    ("string", "gpt-4o", '"gpt-4o"', "gpt-4o"),
    ("awkward string", 'q"uo\\te\n🙂\x01', json.dumps('q"uo\\te\n🙂\x01', ensure_ascii=False), 'q"uo\\te\n🙂\x01'),
    ("string of digits", "429", '"429"', "429"),
    ("int", 429, "429", "429"),
    ("int max", 2**63 - 1, "9223372036854775807", "9223372036854775807"),
    ("int min", -(2**63), "-9223372036854775808", "-9223372036854775808"),
    ("double", 0.1, "0.1", "0.1"),
    ("double whole", 2.0, "2.0", "2"),
    ("double negative zero", -0.0, "-0.0", "-0"),
    ("double huge", 1e21, "1e+21", "1e+21"),
    ("double whole and long", 1e20, "100000000000000000000.0", "100000000000000000000"),
    ("double smallest", 5e-324, "5e-324", "5e-324"),
    ("double small", 4.5e-5, "0.000045", "0.000045"),
    ("double tiny", 1.5e-7, "1.5e-7", "1.5e-7"),
    ("NaN", NAN, "NaN", "NaN"),
    ("Infinity", math.inf, "Infinity", "Infinity"),
    ("-Infinity", -math.inf, "-Infinity", "-Infinity"),
    ("bool", True, "true", "true"),
    ("bool false", False, "false", "false"),
    ("empty", AnyValue(), "null", ""),
    ("bytes", b"\x00\x01\xfe", '{"bytesValue":"AAH+"}', "AAH+"),
    ("no bytes", b"", '{"bytesValue":""}', ""),
    ("empty array", [], "[]", "[]"),
    ("empty kvlist", kvlist(), "{}", "{}"),
    (
        "nested array",
        [1, 2.0, "x", True, AnyValue(), [1.5, [NAN]], {"k": -1}, b"\x01"],
        '[1,2.0,"x",true,null,[1.5,[NaN]],{"k":-1},{"bytesValue":"AQ=="}]',
        '[1,2.0,"x",true,null,[1.5,[NaN]],{"k":-1},"AQ=="]',
    ),
    (
        "kvlist with a repeated key",
        kvlist(("a", 1), ("b", {"c": [True]}), ("a", "again")),
        '{"a":1,"b":{"c":[true]},"a":"again"}',
        '{"a":"again","b":{"c":[true]}}',
    ),
    # A kvlist that would look like bytes is wrapped once more; bytes inside one are bytes.
    (
        "kvlist like bytes",
        kvlist(("bytesValue", "AAH+")),
        '{"bytesValue":{"bytesValue":"AAH+"}}',
        '{"bytesValue":"AAH+"}',
    ),
    (
        "kvlist holding bytes",
        kvlist(("bytesValue", b"\x01")),
        '{"bytesValue":{"bytesValue":{"bytesValue":"AQ=="}}}',
        '{"bytesValue":"AQ=="}',
    ),
    ("kvlist of two", kvlist(("bytesValue", "x"), ("y", 1)), '{"bytesValue":"x","y":1}', '{"bytesValue":"x","y":1}'),
]
IDS = [c[0] for c in CASES]


def _request(values: list[AnyValue]) -> bytes:
    req = ExportTraceServiceRequest()
    span = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=1, end_time_unix_nano=2)
    )
    span.attributes.extend(KeyValue(key=f"k{i}", value=v) for i, v in enumerate(values))
    return req.SerializeToString()


def _same(a: list[KeyValue], b: list[KeyValue]) -> bool:
    """Exact equality, NaN equal to NaN (protobuf's == says NaN != NaN)."""
    return [x.SerializeToString(deterministic=True) for x in a] == [x.SerializeToString(deterministic=True) for x in b]


@pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])
def test_every_kind_of_value_is_stored_in_its_json_type(native):
    values = [any_value(v) for _, v, _, _ in CASES]
    batch = Decoder([f"k{i}" for i in range(len(CASES))], native=native).decode_protobuf(_request(values))
    text = batch.table.column("SpanAttributes")[0].as_py()
    assert text == "{" + ",".join(f'"k{i}":{c[2]}' for i, c in enumerate(CASES)) + "}"
    # the string forms are what the typed columns and span-metric dimensions are made of
    assert [d[0].as_py() for d in batch.dimensions] == [c[3] for c in CASES]
    # and it reads back as sent, every value typed
    sent = [KeyValue(key=f"k{i}", value=v) for i, v in enumerate(values)]
    assert _same(key_values(text), sent)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_reference_renderings(case):
    _, v, stored, string = case
    v = any_value(v)
    assert (value_json(v), value_str(v), stored_str(stored)) == (stored, string, string)


def test_duckdb_and_python_read_the_json_and_attr_gives_the_string_form_of_scalars():
    text = "{" + ",".join(f'"k{i}":{c[2]}' for i, c in enumerate(CASES)) + "}"
    json.loads(text)  # NaN and Infinity included
    con = duckdb.connect()
    con.execute(ATTR_MACRO)
    assert con.execute("SELECT json_valid(?)", [text]).fetchone() == (True,)
    for i, (name, v, _, string) in enumerate(CASES):
        got, as_double = con.execute(
            "SELECT attr(?, ?), TRY_CAST(json_extract(?, ?) AS DOUBLE)", [text, f"k{i}", text, f"/k{i}"]
        ).fetchone()
        if isinstance(v, (str, int)):  # strings, ints and bools: the string form, as before
            assert got == string, name
        elif isinstance(v, float):  # doubles: the same value, in DuckDB's shortest form
            assert repr(as_double) == repr(v), name


def test_random_values_read_back_exactly():
    rng = random.Random(7)
    values = [_value(rng) for _ in range(3000)]
    for i in range(0, len(values), 100):
        chunk = values[i : i + 100]
        sent = [KeyValue(key=f"k{j}", value=v) for j, v in enumerate(chunk)]
        for native in (True, False):
            batch = Decoder(native=native, limits=Limits(max_attributes=1000)).decode_protobuf(_request(chunk))
            assert _same(key_values(batch.table.column("SpanAttributes")[0].as_py()), sent)


@pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])
def test_a_value_cut_to_the_limit_is_stored_as_a_string(native):
    values = [any_value(v) for v in (123456789, [1, 2, 3, 4], 0.125, True)]
    batch = Decoder(native=native, limits=Limits(max_value_bytes=5)).decode_protobuf(_request(values))
    assert json.loads(batch.table.column("SpanAttributes")[0].as_py()) == {
        "k0": "12345…",
        "k1": "[1,2,…",
        "k2": 0.125,
        "k3": True,
    }
    assert batch.truncated == 2


def test_a_store_from_before_values_were_typed_reads_as_strings():
    assert _same(
        key_values('{"http.status_code":"429","ok":"true","cost":"0.5","tools":"[\\"a\\"]"}'),
        [
            KeyValue(key="http.status_code", value=AnyValue(string_value="429")),
            KeyValue(key="ok", value=AnyValue(string_value="true")),
            KeyValue(key="cost", value=AnyValue(string_value="0.5")),
            KeyValue(key="tools", value=AnyValue(string_value='["a"]')),
        ],
    )
