"""OTLP/JSON read as the OpenTelemetry Collector reads it (planoscope/ingest/otlp_json.py): enum
names that do not exist and values of the wrong JSON type refuse the request with a 400 naming
the field, never a Python internal; unknown fields are skipped; the collector's leniencies
(snake_case names, enum names, int64s as strings, null) are accepted."""

from __future__ import annotations

import copy
import json
import re

import httpx
import pytest

from conftest import now_base_ns, read_spans
from planoscope.ingest.decode import BadRequest, Decoder

TID, SID = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b166"


def span(**fields) -> dict:
    return {"traceId": TID, "spanId": SID, "name": "s", "startTimeUnixNano": "1", "endTimeUnixNano": "2", **fields}


def request(*spans: dict, resource: object = None) -> dict:
    rs = {"scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}]}
    if resource is not None:
        rs["resource"] = resource
    return {"resourceSpans": [rs]}


def attr(value: object, key: object = "k") -> dict:
    return request(span(attributes=[{"key": key, "value": value}]))


def nested(depth: int) -> dict:
    value: dict = {"intValue": "1"}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


S0 = "resourceSpans[0].scopeSpans[0].spans[0]"
A0 = f"{S0}.attributes[0].value"
# (name, request body, what the 400 says: the field's path first)
BAD = [
    ("kind by a name not in the enum", request(span(kind="server")), f"{S0}.kind: unknown enum value 'server'"),
    (
        "status code by a short name",
        request(span(status={"code": "ERROR"})),
        f"{S0}.status.code: unknown enum value 'ERROR'",
    ),
    ("kind as a fraction", request(span(kind=1.5)), f"{S0}.kind: expected an integer, got the number 1.5"),
    ("kind as a bool", request(span(kind=True)), f"{S0}.kind: expected an integer, got true"),
    (
        "spans a string",
        {"resourceSpans": [{"scopeSpans": [{"spans": "x"}]}]},
        "resourceSpans[0].scopeSpans[0].spans: expected an array, got the string 'x'",
    ),
    ("resourceSpans of numbers", {"resourceSpans": [1]}, "resourceSpans[0]: expected an object, got the number 1"),
    ("resourceSpans a string", {"resourceSpans": "nope"}, "resourceSpans: expected an array, got the string 'nope'"),
    ("resource a string", request(span(), resource="x"), "resourceSpans[0].resource: expected an object"),
    ("attributes an object", request(span(attributes={"a": 1})), f"{S0}.attributes: expected an array, got an object"),
    ("value an array", attr([]), f"{A0}: expected an object, got an array"),
    ("key a number", attr({"stringValue": "v"}, key=1), f"{S0}.attributes[0].key: expected a string, got the number 1"),
    ("int not a number", attr({"intValue": "abc"}), f"{A0}.intValue: expected an integer, got the string 'abc'"),
    ("int a fraction", attr({"intValue": 1.5}), f"{A0}.intValue: expected an integer, got the number 1.5"),
    (
        "int past int64",
        attr({"intValue": "9223372036854775808"}),
        f"{A0}.intValue: 9223372036854775808 is out of range",
    ),
    ("double not a number", attr({"doubleValue": "abc"}), f"{A0}.doubleValue: expected a number"),
    ("bool a string", attr({"boolValue": "true"}), f"{A0}.boolValue: expected true or false, got the string 'true'"),
    ("bytes not base64", attr({"bytesValue": "!!"}), f"{A0}.bytesValue: '!!' is not base64"),
    ("array values an object", attr({"arrayValue": {"values": {}}}), f"{A0}.arrayValue.values: expected an array"),
    ("a time before 1970", request(span(startTimeUnixNano=-1)), f"{S0}.startTimeUnixNano: -1 is out of range"),
    ("a name a number", request(span(name=5)), f"{S0}.name: expected a string, got the number 5"),
    ("an id a number", request(span(traceId=5)), f"{S0}.traceId: expected a hex string, got the number 5"),
    (
        "event time a bool",
        request(span(events=[{"timeUnixNano": False}])),
        f"{S0}.events[0].timeUnixNano: expected an integer, got false",
    ),
    ("values nested too deeply", attr(nested(40)), "nested more than 90 levels deep"),
    ("the body an array", [1, 2], "must be a JSON object with resourceSpans, not an array"),
    ("JSON nested too deeply", "[" * 100_000 + "]" * 100_000, "not valid JSON: nested too deeply"),
]
PYTHON_INTERNALS = re.compile(
    r"has no attribute|not iterable|NoneType|Traceback|literal for int|'(?:str|int|dict|list|float)'|bytes-like|Failed to parse"
)


def _body(doc) -> bytes:
    return doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()


@pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])
@pytest.mark.parametrize("doc, message", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_request_names_the_field(doc, message, native):
    with pytest.raises(BadRequest) as e:
        Decoder(native=native).decode_json(_body(doc))
    text = str(e.value)
    assert message in text, text
    assert not PYTHON_INTERNALS.search(text), text


def test_over_http_a_bad_request_is_a_400_naming_the_field_and_nothing_is_kept(server_factory, tmp_path):
    srv = server_factory(tmp_path / "data")
    base = now_base_ns()
    good = span(traceId="ab" * 16, startTimeUnixNano=str(base), endTimeUnixNano=str(base + 5))
    for name, doc, message in copy.deepcopy(BAD):
        if isinstance(doc, dict) and doc["resourceSpans"] and isinstance(doc["resourceSpans"][0], dict):
            doc["resourceSpans"].insert(0, request(good)["resourceSpans"][0])  # a good span before the bad
            message = message.replace("resourceSpans[0]", "resourceSpans[1]")
        r = httpx.post(srv.http_traces_url, content=_body(doc), headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (name, r.status_code, r.text)
        assert message in r.json()["message"], (name, r.text)
    assert srv.healthz()["spans_written"] == 0
    srv.stop()
    assert read_spans(srv.data_dir) == []


def test_what_the_collector_accepts_is_accepted():
    """Enum names that exist, snake_case field names, int64s as strings or numbers, null as the
    default, and fields this version does not know (skipped, as the collector skips them)."""
    doc = {
        "resource_spans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}], "future": 1},
                "scope_spans": [
                    {
                        "scope": {"name": "t", "attributes": [{"key": "a", "value": {"int_value": 7}}]},
                        "spans": [
                            {
                                "trace_id": TID,
                                "span_id": SID,
                                "parent_span_id": None,
                                "name": "s",
                                "kind": "SPAN_KIND_SERVER",
                                "start_time_unix_nano": 1,
                                "end_time_unix_nano": "2",
                                "status": {"code": "STATUS_CODE_ERROR", "message": None},
                                "attributes": [
                                    {"key": "d", "value": {"doubleValue": "NaN"}, "keyStrindex": 0},
                                    {"key": "i", "value": {"intValue": "-9223372036854775808"}},
                                    {"key": "e", "value": {}},
                                    {"key": "x", "value": {"someNewKind": {"v": 1}}},
                                ],
                                "somethingNew": {"deeply": ["nested"]},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    for native in (True, False):
        batch = Decoder(native=native).decode_json(json.dumps(doc).encode())
        row = batch.table.to_pylist()[0]
        assert (row["SpanKind"], row["StatusCode"], row["ServiceName"]) == ("Server", "Error", "svc")
        assert (row["Timestamp"].value, row["Duration"]) == (1, 1)
        assert row["SpanAttributes"] == '{"d":NaN,"i":-9223372036854775808,"e":null,"x":null}'
        assert row["ScopeAttributes"] == '{"a":7}'
