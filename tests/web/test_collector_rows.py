"""Rows a stock OpenTelemetry Collector wrote into ClickHouse (its exporter's INSERT: the Map
columns of string forms, no AttributeTypes, no estimated cost), before planoscope first started
on the tables and while it runs, are found by the trace search, shown by the trace view and
counted in sessions: the same answers as a DuckDB server sent the same spans, but that a
collector's attribute values are the strings it stored, and that it estimates no cost."""

from __future__ import annotations

import copy

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import grpc_export, now_base_ns, pb_request, pb_span
from planoscope.store import clickhouse_schema
from planoscope.store.attributes import value_str
from support.exporter import exporter_insert

MS = 1_000_000
BASE = now_base_ns()
RATE_LIMITED, FAILED_EARLY, UNPRICED = "a1" * 16, "b2" * 16, "c3" * 16


def _requests():
    """Three traces: a rate-limited call under its inbound root, an LLM call that failed before
    dispatch, a call with tokens and no cost; the first two of session s-1, the third of s-2."""
    inbound = pb_span(
        RATE_LIMITED,
        "a1" * 8,
        "POST /v1/chat/completions",
        BASE,
        BASE + 40 * MS,
        kind=Span.SPAN_KIND_SERVER,
        attrs={"http.status_code": 429, "component": "proxy"},
    )
    call = pb_span(
        RATE_LIMITED,
        "a2" * 8,
        "POST /v1/chat/completions openai/gpt-4o",
        BASE + 2 * MS,
        BASE + 30 * MS,
        parent="a1" * 8,
        kind=Span.SPAN_KIND_CLIENT,
        attrs={
            "llm.model": "openai/gpt-4o",
            "http.status_code": 429,
            "llm.usage.prompt_tokens": 100,
            "llm.usage.completion_tokens": 20,
            "llm.usage.total_tokens": 120,
            "llm.usage.total_cost_usd": 0.002,
            "llm.is_streaming": True,
            "plano.session_id": "s-1",
            "plano.distinct_id": "u-1",
            "ratio": 0.5,
        },
        events=[Span.Event(time_unix_nano=BASE + 9 * MS, name="first token", attributes=[])],
    )
    early = pb_span(FAILED_EARLY, "b2" * 8, "llm", BASE + 100 * MS, BASE + 101 * MS, attrs={"plano.session_id": "s-1"})
    unpriced = pb_span(
        UNPRICED,
        "c3" * 8,
        "POST /v1/chat/completions openai/gpt-4o",
        BASE + 200 * MS,
        BASE + 260 * MS,
        attrs={
            "llm.model": "openai/gpt-4o",
            "llm.usage.prompt_tokens": 1000,
            "llm.usage.completion_tokens": 100,
            "plano.session_id": "s-2",
        },
    )
    first = pb_request(({"service.name": "plano(inbound)"}, [inbound]), ({"service.name": "plano(llm)"}, [call]))
    later = pb_request(({"service.name": "plano(llm)", "host.name": "gw-1"}, [early, unpriced]))
    return first, later


@pytest.fixture(scope="module")
def servers(module_server_factory, module_clickhouse_database, tmp_path_factory):
    """(DuckDB server, ClickHouse server): the first sent the spans over OTLP, the second reading
    what a collector inserted, before it started (the tables the exporter made) and after."""
    db = module_clickhouse_database
    first, later = _requests()
    clickhouse_schema.create_tables(db.client, db.name)
    exporter_insert(db.client, "otel_traces", first)
    clickhouse = module_server_factory(tmp_path_factory.mktemp("ch"), env={"PLANOSCOPE_STORE": db.url})
    exporter_insert(db.client, "otel_traces", later)
    duckdb = module_server_factory(tmp_path_factory.mktemp("duck"))
    for req in (first, later):
        assert grpc_export(duckdb.grpc_target, req).partial_success.rejected_spans == 0
    return duckdb, clickhouse


def _get(srv, path: str, **params):
    r = httpx.get(srv.web_url + path, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


RANGE = {"start": BASE / 1e9 - 60, "end": BASE / 1e9 + 60}


@pytest.mark.parametrize(
    "filters,found",
    [
        ({}, [UNPRICED, FAILED_EARLY, RATE_LIMITED]),
        ({"attr": "http.status_code=429"}, [RATE_LIMITED]),
        ({"attr": "llm.is_streaming=true", "service": "plano(llm)"}, [RATE_LIMITED]),
        ({"attr": "ratio=0.50"}, [RATE_LIMITED]),
        ({"model": "openai/gpt-4o", "failure": "429"}, [RATE_LIMITED]),
        ({"failure": "before_dispatch"}, [FAILED_EARLY]),
        ({"session": "s-1", "llm": "true"}, [FAILED_EARLY, RATE_LIMITED]),
        ({"attr": "host.name=gw-1", "sort": "duration"}, [UNPRICED, FAILED_EARLY]),
    ],
)
def test_the_search_finds_them_as_on_duckdb(servers, filters, found):
    duckdb, clickhouse = servers
    got = _get(clickhouse, "/api/v1/traces", **RANGE, **filters)
    assert [t["trace_id"] for t in got["traces"]] == found
    assert got == _get(duckdb, "/api/v1/traces", **RANGE, **filters)


def test_the_summary_counts_their_tokens_cost_and_failures(servers):
    _, clickhouse = servers
    row = _get(clickhouse, "/api/v1/traces", **RANGE, trace_id=RATE_LIMITED)["traces"][0]
    assert (row["root_service"], row["span_count"], row["error_count"]) == ("plano(inbound)", 2, 2)
    assert (row["tokens"], row["cost_usd"], row["models"], row["failures"]["429"]) == (120, 0.002, ["openai/gpt-4o"], 2)


def _as_strings(doc: dict) -> dict:
    """An OTLP/JSON document with every attribute value as the string a collector stores."""
    doc = copy.deepcopy(doc)

    def strings(kvs: list[dict]) -> None:
        for kv in kvs:
            kv["value"] = {"stringValue": value_str(json_format.ParseDict(kv["value"], AnyValue()))}

    for rs in doc["resourceSpans"]:
        strings(rs["resource"]["attributes"])
        for ss in rs["scopeSpans"]:
            strings(ss["scope"]["attributes"])
            for sp in ss["spans"]:
                strings(sp["attributes"])
                for e in sp["events"]:
                    strings(e["attributes"])
    return doc


@pytest.mark.parametrize("trace_id", [RATE_LIMITED, FAILED_EARLY, UNPRICED])
def test_the_trace_view_shows_them_with_string_values(servers, trace_id):
    duckdb, clickhouse = servers
    typed = _get(duckdb, f"/api/v1/traces/{trace_id}")
    shown = _get(clickhouse, f"/api/v1/traces/{trace_id}")
    assert shown == _as_strings(typed)
    if trace_id == RATE_LIMITED:
        assert shown != typed  # ints, a double and a bool were sent: a collector's row has their strings
        span = next(s for rs in shown["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"] if s["events"])
        assert {"key": "llm.usage.total_tokens", "value": {"stringValue": "120"}} in span["attributes"]
    assert _get(clickhouse, f"/api/v1/traces/{trace_id}/failures") == _get(
        duckdb, f"/api/v1/traces/{trace_id}/failures"
    )


def test_sessions_count_them_with_the_costs_they_carry(servers):
    duckdb, clickhouse = servers
    listed = _get(clickhouse, "/api/v1/sessions", **RANGE)
    on_duckdb = _get(duckdb, "/api/v1/sessions", **RANGE)
    # s-2's call has tokens and no cost: DuckDB's ingest estimated it from the price table; a
    # collector estimates nothing, so it has no cost on ClickHouse.
    estimated = next(s for s in on_duckdb["sessions"] if s["session_id"] == "s-2")
    assert estimated["cost_estimated"] and estimated["cost_usd"] > 0
    estimated.update(cost_usd=None, cost_estimated=False)
    on_duckdb["sessions"].sort(key=lambda s: s["cost_usd"] is None)  # the costliest first, no cost last
    assert listed == on_duckdb
    assert [(s["session_id"], s["llm_calls"], s["failures"], s["user_id"]) for s in listed["sessions"]] == [
        ("s-1", 2, 2, "u-1"),
        ("s-2", 1, 0, None),
    ]
    assert _get(clickhouse, "/api/v1/sessions/s-1") == _get(duckdb, "/api/v1/sessions/s-1")
