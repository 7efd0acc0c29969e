"""The exporter's trace tables on a real ClickHouse server: created by planoscope, written the way
the OpenTelemetry Collector's ClickHouse exporter writes them, read back through clickhouse-connect."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from conftest import any_value, pb_request, pb_span
from planoscope.store import clickhouse_schema as schema
from support.exporter import exporter_rows

T0 = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z


TRACE_A, TRACE_B = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"
LLM_ATTRS = {
    "llm.model": "openai/gpt-4o",
    "http.status_code": 200,
    "llm.usage.total_cost_usd": 0.00125,
    "llm.is_streaming": True,
    "llm.tools": ["search", 2],
    "request": {"id": "r1", "n": 1},
    "blob": b"\x00\xff",
    "tiny": 1e-7,
}


def _request() -> ExportTraceServiceRequest:
    event = Span.Event(time_unix_nano=T0 + 5_000_000, name="llm.time_to_first_token")
    event.attributes.add(key="ms", value=any_value(180))
    link = Span.Link(trace_id=bytes.fromhex(TRACE_B), span_id=bytes.fromhex("00f067aa0ba902b7"), trace_state="k=v")
    spans = [
        pb_span(TRACE_A, "1111111111111111", "plano(inbound)", T0, T0 + 900_000_000, kind=Span.SPAN_KIND_SERVER),
        pb_span(
            TRACE_A,
            "2222222222222222",
            "POST /v1/chat/completions",
            T0 + 1_000_000,
            T0 + 800_000_001,
            parent="1111111111111111",
            kind=Span.SPAN_KIND_CLIENT,
            attrs=LLM_ATTRS,
            status_code=Status.STATUS_CODE_ERROR,
            status_message="upstream 500",
            events=[event],
            links=[link],
            trace_state="plano=1",
        ),
        pb_span(TRACE_B, "3333333333333333", "plano(routing)", T0 + 3_600_000_000_000, T0 + 3_600_000_000_001),
    ]
    return pb_request(({"service.name": "plano", "host.name": "gw-1"}, spans, "brightstaff", "0.4.19"))


def test_the_tables_are_the_exporters(clickhouse_database):
    db = clickhouse_database
    schema.create_tables(db.client, db.name, ttl=timedelta(hours=72))
    schema.create_tables(db.client, db.name, ttl=timedelta(hours=72))  # again: IF NOT EXISTS
    tables = dict(db.client.query(f"SELECT name, engine FROM system.tables WHERE database = '{db.name}'").result_rows)
    assert tables == {
        "otel_traces": "MergeTree",
        "otel_traces_trace_id_ts": "MergeTree",
        "otel_traces_trace_id_ts_mv": "MaterializedView",
    }
    columns = db.client.query(
        "SELECT name, type, compression_codec FROM system.columns WHERE database = {db:String} AND table = 'otel_traces'",
        parameters={"db": db.name},
    ).result_rows
    attrs = "Map(LowCardinality(String), String)"
    assert [(n, t) for n, t, _ in columns] == [
        ("Timestamp", "DateTime64(9)"),
        ("TraceId", "String"),
        ("SpanId", "String"),
        ("ParentSpanId", "String"),
        ("TraceState", "String"),
        ("SpanName", "LowCardinality(String)"),
        ("SpanKind", "LowCardinality(String)"),
        ("ServiceName", "LowCardinality(String)"),
        ("ResourceAttributes", attrs),
        ("ScopeName", "String"),
        ("ScopeVersion", "String"),
        ("SpanAttributes", attrs),
        ("Duration", "UInt64"),
        ("StatusCode", "LowCardinality(String)"),
        ("StatusMessage", "String"),
        ("Events.Timestamp", "Array(DateTime64(9))"),
        ("Events.Name", "Array(LowCardinality(String))"),
        ("Events.Attributes", f"Array({attrs})"),
        ("Links.TraceId", "Array(String)"),
        ("Links.SpanId", "Array(String)"),
        ("Links.TraceState", "Array(String)"),
        ("Links.Attributes", f"Array({attrs})"),
    ]
    # The INSERT names every column, in table order.
    assert [n for n, _, _ in columns] == schema.insert_columns()
    codecs = {n: c for n, _, c in columns}
    assert codecs["Timestamp"] == "CODEC(Delta(8), ZSTD(1))"
    assert set(codecs.values()) == {"CODEC(Delta(8), ZSTD(1))", "CODEC(ZSTD(1))"}

    keys = db.client.query(
        "SELECT name, partition_key, sorting_key, primary_key FROM system.tables WHERE database = {db:String}"
        " AND engine = 'MergeTree' ORDER BY name",
        parameters={"db": db.name},
    ).result_rows
    assert keys == [
        (
            "otel_traces",
            "toDate(Timestamp)",
            "ServiceName, SpanName, toDateTime(Timestamp)",
            "ServiceName, SpanName, toDateTime(Timestamp)",
        ),
        ("otel_traces_trace_id_ts", "toDate(Start)", "TraceId, Start", "TraceId, Start"),
    ]
    indexes = db.client.query(
        "SELECT table, name, type_full, expr, granularity FROM system.data_skipping_indices"
        " WHERE database = {db:String} ORDER BY table, name",
        parameters={"db": db.name},
    ).result_rows
    assert indexes == [
        ("otel_traces", "idx_duration", "minmax", "Duration", 1),
        ("otel_traces", "idx_res_attr_key", "bloom_filter(0.01)", "mapKeys(ResourceAttributes)", 1),
        ("otel_traces", "idx_res_attr_value", "bloom_filter(0.01)", "mapValues(ResourceAttributes)", 1),
        ("otel_traces", "idx_span_attr_key", "bloom_filter(0.01)", "mapKeys(SpanAttributes)", 1),
        ("otel_traces", "idx_span_attr_value", "bloom_filter(0.01)", "mapValues(SpanAttributes)", 1),
        ("otel_traces", "idx_trace_id", "bloom_filter(0.001)", "TraceId", 1),
        ("otel_traces_trace_id_ts", "idx_trace_id", "bloom_filter(0.01)", "TraceId", 1),
    ]
    ddl = dict(
        db.client.query(
            "SELECT name, create_table_query FROM system.tables WHERE database = {db:String}",
            parameters={"db": db.name},
        ).result_rows
    )
    # 72 h is whole days: the exporter writes toIntervalDay(3)
    assert (
        "TTL toDateTime(Timestamp) + toIntervalDay(3) SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"
        in ddl["otel_traces"]
    )
    assert (
        "TTL toDateTime(Start) + toIntervalDay(3) SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"
        in ddl["otel_traces_trace_id_ts"]
    )
    assert "Start DateTime CODEC(Delta(4), ZSTD(1))" in ddl["otel_traces_trace_id_ts"].replace("`", "")
    view = ddl["otel_traces_trace_id_ts_mv"]
    assert f"TO {db.name}.otel_traces_trace_id_ts" in view
    assert (
        f"SELECT TraceId, min(Timestamp) AS Start, max(Timestamp) AS End FROM {db.name}.otel_traces WHERE TraceId != '' GROUP BY TraceId"
        in view
    )


def test_exporter_rows_read_back_and_fill_the_trace_id_table(clickhouse_database):
    db = clickhouse_database
    schema.create_tables(db.client, db.name)
    rows = exporter_rows(_request())
    # an exporter's span with an all-zero trace id: stored with TraceId '', kept out of the look-up
    rows.append(
        [T0, "", "4444444444444444", "", "", "orphan", "Internal", "plano", {}, "", "", {}, 0, "Unset", ""] + [[]] * 7
    )
    db.client.insert("otel_traces", rows, column_names=schema.insert_columns())

    got = db.client.query(
        "SELECT toUnixTimestamp64Nano(Timestamp), * EXCEPT Timestamp REPLACE ("
        " arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`) AS `Events.Timestamp`)"
        " FROM otel_traces ORDER BY SpanId"
    ).result_rows
    assert [list(r) for r in got] == sorted(rows, key=lambda r: r[2])
    llm = next(r for r in got if r[2] == "2222222222222222")
    # pcommon AsString(): ints decimal, doubles ES6, bools, arrays and maps JSON, bytes base64
    assert llm[11] == {
        "llm.model": "openai/gpt-4o",
        "http.status_code": "200",
        "llm.usage.total_cost_usd": "0.00125",
        "llm.is_streaming": "true",
        "llm.tools": '["search",2]',
        "request": '{"id":"r1","n":1}',
        "blob": "AP8=",
        "tiny": "1e-7",
    }
    assert (llm[0], llm[12], llm[13], llm[6]) == (T0 + 1_000_000, 799_000_001, "Error", "Client")
    assert (llm[15], llm[16], llm[17]) == ([T0 + 5_000_000], ["llm.time_to_first_token"], [{"ms": "180"}])
    assert (llm[18], llm[19], llm[20]) == ([TRACE_B], ["00f067aa0ba902b7"], ["k=v"])
    # a map value is looked up by key, as the exporter's users query it
    assert db.client.command("SELECT count() FROM otel_traces WHERE SpanAttributes['llm.model'] = 'openai/gpt-4o'") == 1

    # The view writes one row per trace id per INSERT block: first and last span start, to the second.
    lookup = db.client.query("SELECT TraceId, Start, End FROM otel_traces_trace_id_ts ORDER BY TraceId").result_rows
    assert [(t, int(s.timestamp()), int(e.timestamp())) for t, s, e in lookup] == [
        (TRACE_A, T0 // 10**9, (T0 + 1_000_000) // 10**9),
        (TRACE_B, (T0 + 3_600_000_000_000) // 10**9, (T0 + 3_600_000_000_000) // 10**9),
    ]


def test_ttl_is_the_templates(clickhouse_database):
    db = clickhouse_database
    schema.create_tables(db.client, db.name, ttl=timedelta(days=1))
    now = time.time_ns()

    def insert(ts: int, trace: str) -> None:
        row = [ts, trace, "1111111111111111", "", "", "op", "Internal", "svc", {}, "", "", {}, 1, "Unset", ""]
        db.client.insert("otel_traces", [row + [[]] * 7], column_names=schema.insert_columns())

    insert(now, TRACE_A)
    # Each part's rows expire one day after toDateTime(Timestamp), its look-up rows after Start.
    parts = db.client.query(
        "SELECT table, toUnixTimestamp(delete_ttl_info_min), toUnixTimestamp(delete_ttl_info_max) FROM system.parts"
        " WHERE database = {db:String} AND active ORDER BY table",
        parameters={"db": db.name},
    ).result_rows
    expires = now // 10**9 + 86_400
    assert parts == [("otel_traces", expires, expires), ("otel_traces_trace_id_ts", expires, expires)]
    # A span that started three days ago is past its TTL: ClickHouse drops its part at the next
    # TTL merge (held back here, to see it happen).
    tables = ("otel_traces", "otel_traces_trace_id_ts")
    for table in tables:
        db.client.command(f"SYSTEM STOP TTL MERGES {table}")
    insert(now - 3 * 86_400 * 10**9, TRACE_B)
    for table in tables:
        assert db.client.command(f"SELECT count() FROM {table}") == 2
        db.client.command(f"SYSTEM START TTL MERGES {table}")
        db.client.command(f"OPTIMIZE TABLE {table} FINAL")
        assert db.client.query(f"SELECT TraceId FROM {table}").result_rows == [(TRACE_A,)]


@pytest.mark.parametrize(
    "ttl, clause",
    [
        (None, ""),
        (timedelta(0), ""),
        (timedelta(days=7), "TTL toDateTime(Timestamp) + toIntervalDay(7)"),
        (timedelta(hours=36), "TTL toDateTime(Timestamp) + toIntervalHour(36)"),
        (timedelta(minutes=90), "TTL toDateTime(Timestamp) + toIntervalMinute(90)"),
        (timedelta(seconds=45.5), "TTL toDateTime(Timestamp) + toIntervalSecond(45)"),
    ],
)
def test_ttl_clause_in_the_largest_whole_unit(ttl, clause):
    assert schema.ttl_clause(ttl, "toDateTime(Timestamp)") == clause


def test_names_cluster_and_engine_are_templated_as_the_exporter_does():
    sql = schema.schema_sql(
        'ob"s', "spans", cluster="ch-cluster", engine="ReplicatedMergeTree('/t/{shard}', '{replica}')"
    )
    assert sql[0] == 'CREATE DATABASE IF NOT EXISTS "ob\\"s" ON CLUSTER "ch-cluster"'
    assert sql[1].startswith('CREATE TABLE IF NOT EXISTS "ob\\"s"."spans" ON CLUSTER "ch-cluster" (')
    assert "ENGINE = ReplicatedMergeTree('/t/{shard}', '{replica}')\nPARTITION BY" in sql[1]
    assert sql[2].startswith('CREATE TABLE IF NOT EXISTS "ob\\"s"."spans_trace_id_ts" ON CLUSTER')
    assert 'MATERIALIZED VIEW IF NOT EXISTS "ob\\"s"."spans_trace_id_ts_mv"' in sql[3]
    assert 'TO "ob\\"s"."spans_trace_id_ts"' in sql[3] and 'FROM "ob\\"s"."spans"' in sql[3]
    assert len(schema.schema_sql()) == 3  # the exporter never creates the database 'default'
    for bad in ("", "a\0b"):
        with pytest.raises(ValueError):
            schema.schema_sql(bad)
    with pytest.raises(ValueError, match="Name\\(params\\)"):
        schema.schema_sql("x", engine="MergeTree; DROP TABLE t")


def test_insert_throughput_of_100k_exporter_rows(clickhouse_database, record_property):
    """One INSERT of 100 000 Plano-shaped spans through clickhouse-connect; the figures are reported."""
    db = clickhouse_database
    schema.create_tables(db.client, db.name)
    resource = {"service.name": "plano", "host.name": "gw-1", "telemetry.sdk.language": "rust"}
    rows = []
    for i in range(100_000):
        attrs = {
            "component": "llm",
            "request_id": f"req-{i:08d}",
            "http.method": "POST",
            "http.path": "/v1/chat/completions",
            "llm.model": ("openai/gpt-4o", "anthropic/claude-sonnet-4")[i % 2],
            "llm.provider": ("openai", "anthropic")[i % 2],
            "http.status_code": ("200", "429", "500")[i % 3],
            "llm.time_to_first_token": str(100 + i % 900),
            "llm.usage.prompt_tokens": str(i % 4000),
            "llm.usage.completion_tokens": str(i % 700),
        }
        ts = T0 + i * 1_000_000
        rows.append(
            [ts, f"{i:032x}", f"{i:016x}", "", "", "POST /v1/chat/completions", "Client", "plano", resource]
            + ["brightstaff", "0.4.19", attrs, 250_000_000 + i, "Unset", ""]
            + [[ts + 90_000_000], ["llm.time_to_first_token"], [{}], [], [], [], []]
        )
    t0 = time.perf_counter()
    db.client.insert("otel_traces", rows, column_names=schema.insert_columns())
    seconds = time.perf_counter() - t0
    assert db.client.command("SELECT count() FROM otel_traces") == 100_000
    assert db.client.command("SELECT count() FROM otel_traces_trace_id_ts") == 100_000
    rss = db.server.rss_bytes()
    record_property("rows_per_second", round(100_000 / seconds))
    record_property("server_rss_mb", rss >> 20)
    print(
        f"\n100k exporter rows in one INSERT: {seconds:.2f} s, {100_000 / seconds:,.0f} rows/s; server RSS {rss >> 20} MB"
    )
