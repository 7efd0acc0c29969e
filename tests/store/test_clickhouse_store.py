"""The ClickHouse store on a real ClickHouse server: the exporter's tables with planoscope's
columns beside them, rows written as the exporter writes them, a collector's rows reading as
planoscope's, inserts that a replay after a crash cannot store twice, ClickHouse going away."""

from __future__ import annotations

import logging
import math
import shutil
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from conftest import key_values, pb_request, pb_span
from planoscope.ingest.decode import Decoder
from planoscope.metrics.spanmetrics import DEFAULT_DIMENSIONS
from planoscope.settings import ConfigError, build_settings
from planoscope.store import DuckDBStore, StoreError, clickhouse_schema
from planoscope.store.clickhouse import DEDUP_WINDOW, STATE_FILE, ClickHouseStore, ClickHouseUnavailable
from planoscope.store.clickhouse_columns import MATERIALIZED_COLUMNS, SENT_COLUMNS, STAMPED_COLUMNS
from planoscope.store.clickhouse_url import ClickHouseURL
from planoscope.store.schema import DERIVED_COLUMNS, LLM_CALL, TYPED_COLUMNS
from support.exporter import exporter_insert, exporter_rows, stored_attribute_sets

MS = 1_000_000
NOW = datetime.now(UTC).replace(tzinfo=None)
EXTRA = [n for n, _, _ in MATERIALIZED_COLUMNS]  # typed, TraceKey, derived


def _base() -> int:
    return (time.time_ns() // 10**9 - 3600) * 10**9


def _store(db, tmp_path, name: str = "p", retention_s: float = 0.0) -> ClickHouseStore:
    return ClickHouseStore(db.url, tmp_path / name, retention_s)


def _batch(req: ExportTraceServiceRequest, maps: bool = True) -> pa.Table:
    return Decoder(DEFAULT_DIMENSIONS, maps=maps).decode_protobuf(req.SerializeToString()).table


def _count(db, table: str = "otel_traces") -> int:
    return db.client.query(f"SELECT count() FROM {table}").result_rows[0][0]


def _stored(db) -> tuple[int, int]:
    """Spans in otel_traces, and distinct span ids among them."""
    return db.client.query("SELECT count(), uniqExact(SpanId) FROM otel_traces").result_rows[0]


# --- the URL ---------------------------------------------------------------------------------


def test_the_url_is_parsed_and_its_password_never_shown():
    u = ClickHouseURL.parse("clickhouses://ob%40s:p%3Ass@[::1]:9440/traces")
    assert (u.secure, u.host, u.port, u.user, u.password, u.database) == (True, "::1", 9440, "ob@s", "p:ss", "traces")
    assert u.shown == "clickhouses://ob@s@[::1]:9440/traces" and "p:ss" not in repr(u)
    d = ClickHouseURL.parse("clickhouse://ch.example")
    assert (d.port, d.user, d.password, d.database) == (8123, "default", "", "default")
    for bad in (
        "clickhouse://u:s3cret@host:99999/db",
        "clickhouse://u:s3cret@host:8123/db?secure=1",
        "clickhouse://u:s3cret@host:8123/a/b",
        "clickhouse://u:s3cret@:8123/db",
        "http://u:s3cret@host:8123/db",
        "mysql://u:s3cret@host",
    ):
        with pytest.raises(ConfigError) as e:
            build_settings(None, {"PLANOSCOPE_STORE": bad}, {})
        message = str(e.value)
        assert message.startswith("bad value for store (from PLANOSCOPE_STORE): ") and "\n" not in message
        assert "s3cret" not in message, message
    assert build_settings(None, {}, {"store": "DuckDB"}).store == "duckdb"
    settings = build_settings(None, {}, {"store": "clickhouse://u:s3cret@h:8123/db"})
    assert settings.store == "clickhouse://u:s3cret@h:8123/db" and "s3cret" not in repr(settings)


# --- the tables ------------------------------------------------------------------------------


def _columns(client, database: str, table: str = "otel_traces") -> list[tuple]:
    return client.query(
        "SELECT name, type, default_kind, default_expression FROM system.columns"
        " WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        parameters={"db": database, "t": table},
    ).result_rows


def test_a_new_database_gets_the_exporters_tables_with_planoscopes_columns_after_them(
    clickhouse_database, clickhouse_server, tmp_path
):
    db = clickhouse_database
    store = _store(db, tmp_path, retention_s=2 * 86400)
    store.close()
    ref = clickhouse_server.client()  # the exporter's own tables, in a database of their own
    ref.command(f"CREATE DATABASE `{db.name}_ref`")
    try:
        clickhouse_schema.create_tables(ref, f"{db.name}_ref")
        exporter = [(n, t) for n, t, _, _ in _columns(ref, f"{db.name}_ref")]
    finally:
        ref.command(f"DROP DATABASE `{db.name}_ref`")
        ref.close()
    cols = _columns(db.client, db.name)
    # the exporter's columns, unchanged and first; planoscope's after them
    assert [(n, t) for n, t, _, _ in cols[: len(exporter)]] == exporter
    assert [n for n, _, _, _ in cols[len(exporter) :]] == EXTRA + [n for n, _, _ in SENT_COLUMNS + STAMPED_COLUMNS]
    kinds = {n: k for n, _, k, _ in cols}
    assert {kinds[n] for n in EXTRA} == {"MATERIALIZED"} and {kinds[n] for n, _, _ in SENT_COLUMNS} == {"DEFAULT"}
    ddl = dict(
        db.client.query(f"SELECT name, create_table_query FROM system.tables WHERE database = '{db.name}'").result_rows
    )
    assert set(ddl) == {"otel_traces", "otel_traces_trace_id_ts", "otel_traces_trace_id_ts_mv", "planoscope_samples"}
    for table in ("otel_traces", "otel_traces_trace_id_ts"):  # deduplicated inserts, on both
        assert f"non_replicated_deduplication_window = {DEDUP_WINDOW}" in ddl[table]
    assert "TTL toDateTime(Timestamp) + toIntervalDay(2)" in ddl["otel_traces"]
    assert "TTL toDateTime(Start) + toIntervalDay(2)" in ddl["otel_traces_trace_id_ts"]
    assert "TTL toDateTime(Timestamp) + toIntervalDay(2)" in ddl["planoscope_samples"]
    # opening again changes nothing
    _store(db, tmp_path).close()
    assert _columns(db.client, db.name) == cols


def test_an_existing_table_keeps_its_ttl(clickhouse_database, tmp_path, caplog):
    db = clickhouse_database
    clickhouse_schema.create_tables(db.client, db.name, ttl=timedelta(days=30))
    with caplog.at_level(logging.WARNING, "planoscope.store"):
        _store(db, tmp_path, retention_s=7 * 86400).close()
    ddl = db.client.command(
        f"SELECT create_table_query FROM system.tables WHERE database = '{db.name}' AND name = 'otel_traces'"
    )
    assert "TTL toDateTime(Timestamp) + toIntervalDay(30)" in ddl
    assert "keeps its own TTL (toDateTime(Timestamp) + toIntervalDay(30)), not retention's" in caplog.text


# --- rows ------------------------------------------------------------------------------------

# Every kind of value, in each attribute set; a zero parent and link ids (the exporter writes '').
VALUES = {
    "s": "gpt-4o",
    "awkward": 'q"uo\\te\n🙂|,',
    "s.digits": "429",
    "i": 429,
    "i.max": 2**63 - 1,
    "i.min": -(2**63),
    "d": 0.1,
    "d.whole": 2.0,
    "d.tiny": 1e-7,
    "d.huge": 1e21,
    "d.smallest": 5e-324,
    "d.negative_zero": -0.0,
    "d.nan": math.nan,
    "d.inf": math.inf,
    "b": True,
    "b.false": False,
    "empty": None,
    "bytes": b"\x00\x01\xfe\xff",
    "array": [1, 2.5, "x|,", False, None, [b"\x07", [math.nan]], {"k": [1.0]}],
    "kvlist": {"a": 1, "b": {"c": -0.0, "bytesValue": "not bytes"}, "e": []},
    "kvlist.like_bytes": {"bytesValue": "AAH+"},
}


def _every_value_request(base: int) -> ExportTraceServiceRequest:
    event = Span.Event(time_unix_nano=base + 5 * MS, name="llm.time_to_first_token", attributes=key_values(VALUES))
    links = [
        Span.Link(trace_id=bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"), span_id=b"\x00\xf0gz\x0b\xa9\x02\xb7"),
        Span.Link(trace_id=bytes(16), span_id=bytes(8), trace_state="k=v", attributes=key_values({"n": 1})),
    ]
    spans = [
        pb_span("0af7651916cd43dd8448eb211c80319c", "1111111111111111", "plano(inbound)", base, base + 900 * MS),
        pb_span(
            "0af7651916cd43dd8448eb211c80319c",
            "2222222222222222",
            "POST /v1/chat/completions openai/gpt-4o",
            base + MS,
            base + 800 * MS + 1,
            parent=bytes(8),
            kind=Span.SPAN_KIND_CLIENT,
            attrs=[*VALUES.items(), ("llm.model", "openai/gpt-4o"), ("llm.model", "gpt-4o-2024-08-06")],
            status_code=Status.STATUS_CODE_ERROR,
            status_message="upstream 500",
            events=[event],
            links=links,
            trace_state="plano=1",
        ),
    ]
    req = pb_request(({"service.name": "plano(llm)", **VALUES}, spans, "brightstaff", "0.4.19"))
    req.resource_spans[0].scope_spans[0].scope.attributes.extend(key_values({"scope.i": 7, "scope.d": 0.5}))
    return req


EXPORTER_SELECT = (
    "SELECT toUnixTimestamp64Nano(Timestamp), * EXCEPT (Timestamp, ScopeAttributes, AttributeTypes, EstimatedCostUsd,"
    " IngestedBy, JournalPosition, IngestedAt) REPLACE (arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`) AS `Events.Timestamp`)"
    " FROM otel_traces ORDER BY SpanId"
)


def test_planoscope_writes_each_span_as_the_exporter_does_and_keeps_its_types(clickhouse_database, tmp_path):
    db = clickhouse_database
    req = _every_value_request(_base())
    store = _store(db, tmp_path)
    store.append_spans(_batch(req), NOW, 100)
    assert store.journal_applied() == 100 and store.journal_in_doubt() is None
    got = [list(r) for r in db.client.query(EXPORTER_SELECT).result_rows]
    assert got == sorted(exporter_rows(req), key=lambda r: r[2])
    # whose rows, up to which journal position: what forwarding reads back
    owners = db.client.query("SELECT DISTINCT IngestedBy, JournalPosition FROM otel_traces").result_rows
    assert owners == [(store.instance, 100)]
    assert got[1][3] == "" and got[1][19] == ["00f0677a0ba902b7", ""] and got[1][18][1] == ""  # zero ids: ''
    # Beside them: the scope's attributes (the exporter drops them); and every set reads back as it
    # was sent, from the maps and AttributeTypes: types, order, a repeated key, nested values.
    scope = db.client.query("SELECT ScopeAttributes FROM otel_traces WHERE SpanId = '2222222222222222'").result_rows
    assert scope == [({"scope.i": "7", "scope.d": "0.5"},)]
    span = req.resource_spans[0].scope_spans[0].spans[1]
    sent = [
        req.resource_spans[0].resource.attributes,
        req.resource_spans[0].scope_spans[0].scope.attributes,
        span.attributes,
        *(e.attributes for e in span.events),
        *(lk.attributes for lk in span.links),
    ]
    back = stored_attribute_sets(db.client, "2222222222222222")
    assert len(back) == len(sent) == 6
    for got_set, sent_set in zip(back, sent):  # NaN == NaN only as bytes
        assert [(kv.key, kv.value.SerializeToString()) for kv in got_set] == [
            (kv.key, kv.value.SerializeToString()) for kv in sent_set
        ]
    types = db.client.query("SELECT AttributeTypes FROM otel_traces WHERE SpanId = '1111111111111111'").result_rows
    nested = '[1,2.5,"x|,",false,null,[{"bytesValue":"Bw=="},[NaN]],{"k":[1.0]}]m{"a":1,"b":{"c":-0.0,"bytesValue"' + (
        ':"not bytes"},"e":[]}m{"bytesValue":{"bytesValue":"AAH+"}}'
    )
    # its resource's letters, its scope's, none of its own, no event, no link
    assert types == [(f"ssssiiiddddddddbbeya{nested}|id|||",)]
    store.close()


# Spans that exercise every typed and derived column, sent as Plano and other senders send them.
def _plano_request(base: int, trace: int) -> ExportTraceServiceRequest:
    t = f"{trace:032x}"
    llm = [
        (
            "POST /v1/chat/completions openai/gpt-4o",
            {
                "llm.model": "openai/gpt-4o",
                "llm.provider": "openai",
                "http.status_code": 200,
                "http.method": "POST",
                "llm.time_to_first_token": 180,
                "llm.usage.prompt_tokens": 1200,
                "llm.usage.completion_tokens": 300,
                "llm.usage.total_tokens": 1500,
                "llm.usage.cached_input_tokens": 1000,
                "llm.usage.cache_creation_tokens": 0,
                "llm.usage.reasoning_tokens": 64,
                "llm.usage.total_cost_usd": 0.00125,
                "llm.usage.input_cost_usd": 0.001,
                "llm.usage.output_cost_usd": 0.00025,
                "plano.route.name": "code",
                "plano.session_id": "s-1",
                "plano.distinct_id": "u-1",
                "signals.quality": "Good",
                "llm.is_streaming": True,
            },
        ),
        (
            "POST /v1/chat/completions auto -> anthropic/claude-sonnet-4 \U0001f6a9",
            {"llm.model": "auto", "http.status_code": 429, "llm.time_to_first_token": 95},
        ),
        ("POST /v1/messages fast -> gpt-4o-mini", {"llm.model": "fast", "http.status_code": "503"}),
        ("llm", {}),
    ]
    spans = [
        pb_span(t, f"{trace:08x}{i:08x}", name, base + i * MS, base + (i + 2) * MS, attrs=attrs)
        for i, (name, attrs) in enumerate(llm)
    ]
    other = [
        pb_span(
            t,
            f"{trace:08x}{10:08x}",
            "POST api.openai.com/v1/chat/completions",
            base,
            base + MS,
            kind=Span.SPAN_KIND_SERVER,
            attrs={"http.status_code": "404", "http.method": "POST"},
        ),
        pb_span(
            t,
            f"{trace:08x}{11:08x}",
            "chat gpt-4o",
            base,
            base + MS,
            status_code=Status.STATUS_CODE_ERROR,
            attrs={
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.system": "openai",
                "gen_ai.usage.input_tokens": "12.0",
                "gen_ai.usage.output_tokens": 7,
                "gen_ai.response.time_to_first_chunk": 0.25,
                "gen_ai.conversation.id": "c-9",
                "gen_ai.agent.id": "flights",
                "llm.is_streaming": "FALSE",
            },
        ),
        pb_span(
            t,
            f"{trace:08x}{12:08x}",
            "travel",
            base,
            base + MS,
            attrs={
                "selection.listener": "travel",
                "llm.token_count.prompt": 3,
                "llm.cost.total": 0.5,
                "session.id": "oi-1",
                "user.id": "oi-u",
                "agent_id": "a1",
                "http.status_code": "not a code",
            },
        ),
    ]
    return pb_request(({"service.name": "plano(llm)"}, spans), ({"service.name": "plano(outbound)"}, other))


def test_a_collectors_rows_fill_planoscopes_columns_as_duckdb_computes_them(clickhouse_database, tmp_path):
    """Rows a stock exporter inserted (before planoscope added its columns, and after) read the
    same typed and derived values as planoscope's DuckDB store computes for the same spans."""
    db = clickhouse_database
    base = _base()
    before, after = _plano_request(base, 1), _plano_request(base, 2)
    clickhouse_schema.create_tables(db.client, db.name)  # a collector's tables, and its rows
    exporter_insert(db.client, "otel_traces", before)
    _store(db, tmp_path).close()
    exporter_insert(db.client, "otel_traces", after)  # the exporter's INSERT, unchanged, still works
    names = [c.name for c in TYPED_COLUMNS] + ["TraceKey"] + [c.name for c in DERIVED_COLUMNS]
    got = {r[0]: r[1:] for r in db.client.query(f"SELECT SpanId, {', '.join(names)} FROM otel_traces").result_rows}
    duck = DuckDBStore(tmp_path / "duck")
    for req in (before, after):
        duck.append_spans(_batch(req, maps=False), NOW, None)
    want = {r[0]: r[1:] for r in duck.query(f"SELECT SpanId, {', '.join(names)} FROM otel_traces")}
    duck.close()
    assert len(got) == len(want) == 14
    for span_id, values in want.items():
        assert dict(zip(names, got[span_id])) == dict(zip(names, values)), span_id
    # what the spans were chosen to show
    by_name = dict(zip(names, got["0000000100000001"]))
    assert (by_name["RequestedModel"], by_name["ResolvedModel"], by_name["Flagged"]) == (
        "auto",
        "anthropic/claude-sonnet-4",
        True,
    )
    assert (
        by_name["FailureClass"] == "429" and dict(zip(names, got["000000010000000b"]))["FailureClass"] == "error_status"
    )
    assert dict(zip(names, got["000000010000000b"]))["TimeToFirstTokenMs"] == 250.0
    assert dict(zip(names, got["0000000100000003"]))["FailureClass"] == "before_dispatch"
    # a collector's row has no AttributeTypes: its values read back as the strings it stored
    span = {kv.key: kv.value for kv in stored_attribute_sets(db.client, "0000000100000000")[2]}
    assert span["http.status_code"] == AnyValue(string_value="200") and span["llm.is_streaming"].string_value == "true"


# --- exactly once ----------------------------------------------------------------------------


def _llm_request(base: int, first: int, n: int) -> ExportTraceServiceRequest:
    spans = [
        pb_span(
            f"{i:032x}",
            f"{i:016x}",
            "POST /v1/chat/completions gpt-4o",
            base,
            base + 5 * MS,
            attrs={"llm.model": "gpt-4o", "http.status_code": 200},
        )
        for i in range(first, first + n)
    ]
    return pb_request(({"service.name": "plano(llm)"}, spans))


def test_an_insert_replayed_after_a_crash_is_stored_once(clickhouse_database, tmp_path):
    """A crash after ClickHouse took an insert and before the local commit of its journal
    position: the state file is as it was before the insert (copied back here); the replay's
    insert carries the same token and ClickHouse drops it, the trace-id view's rows too."""
    db = clickhouse_database
    base = _base()
    store = _store(db, tmp_path)
    store.append_spans(_batch(_llm_request(base, 1, 100)), NOW, 1000)
    state = tmp_path / "p" / STATE_FILE
    store.close()
    shutil.copy(state, tmp_path / "before")
    store = _store(db, tmp_path)
    store.append_spans(_batch(_llm_request(base, 101, 50)), NOW, 2000)  # (1000, 2000]: then the crash
    assert (_count(db), _count(db, "otel_traces_trace_id_ts")) == (150, 150)
    store.close()
    shutil.copy(tmp_path / "before", state)
    store = _store(db, tmp_path)
    assert store.journal_applied() == 1000
    store.append_spans(_batch(_llm_request(base, 101, 50)), NOW, 2000)  # the replay
    assert (_count(db), _count(db, "otel_traces_trace_id_ts")) == (150, 150)
    assert store.journal_applied() == 2000
    store.append_spans(_batch(_llm_request(base, 151, 10)), NOW, 2500)
    assert _stored(db) == (160, 160)
    store.close()


def test_two_instances_never_share_a_token(clickhouse_database, tmp_path):
    """Two instances at the same journal positions insert different spans: both are stored."""
    db = clickhouse_database
    base = _base()
    a, b = _store(db, tmp_path, "a"), _store(db, tmp_path, "b")
    assert a.instance != b.instance
    a.append_spans(_batch(_llm_request(base, 1, 20)), NOW, 500)
    b.append_spans(_batch(_llm_request(base, 21, 20)), NOW, 500)
    assert _stored(db) == (40, 40)
    a.close()
    b.close()


def test_the_position_and_the_metric_totals_are_kept_together(clickhouse_database, tmp_path):
    db = clickhouse_database
    store = _store(db, tmp_path)
    store.save_metric_totals([("s1", 1, 5.0, [1, 1])], None, "fp", replace=True)
    store.save_metric_totals([], None, "llm-fp", replace=True, name="llmmetrics")
    store.append_spans(
        _batch(_llm_request(_base(), 1, 3)),
        NOW,
        300,
        {"spanmetrics": [("s1", 4, 20.0, [3, 4]), ("s2", 1, 1.0, [1, 1])], "llmmetrics": [("l1", 3, 0.5, [])]},
    )
    store.close()
    store = _store(db, tmp_path)
    assert store.journal_applied() == 300
    assert sorted(store.metric_totals("fp")[0]) == [("s1", 4, 20.0, [3, 4]), ("s2", 1, 1.0, [1, 1])]
    assert store.metric_totals("llm-fp", "llmmetrics") == ([("l1", 3, 0.5, [])], None)  # each set its own
    assert store.metric_totals("other settings") == ([], None)  # this instance's counters start again
    assert store.metric_totals("fp", "othermetrics") == ([], None)  # a set it never kept: from zero too
    # Nothing to recount from ClickHouse, which holds every writer's spans, not this instance's.
    assert list(store.scan_for_metrics(DEFAULT_DIMENSIONS)) == []
    assert list(store.scan_spans(["LlmModel"], where=LLM_CALL)) == []
    store.close()


def test_samples_go_to_clickhouse(clickhouse_database, tmp_path):
    db = clickhouse_database
    store = _store(db, tmp_path)
    ts = datetime(2026, 1, 1, 12, 0, 0, 500_000)
    store.append_samples(
        pa.table(
            {
                "Timestamp": pa.array([ts, ts], pa.timestamp("us")),
                "Target": ["envoy", "envoy"],
                "MetricName": ["envoy_wasmcustom_ratelimited_rq", "up"],
                "Labels": ['{"le":"1"}', "{}"],
                "Value": [3.0, 1.0],
            }
        )
    )
    rows = db.client.query(
        "SELECT Timestamp, Target, MetricName, Labels, Value FROM planoscope_samples ORDER BY MetricName"
    )
    assert [(r[0].replace(tzinfo=None), *r[1:]) for r in rows.result_rows] == [
        (ts, "envoy", "envoy_wasmcustom_ratelimited_rq", '{"le":"1"}', 3.0),
        (ts, "envoy", "up", "{}", 1.0),
    ]
    assert store.oldest()[1].replace(tzinfo=None) == ts
    store.close()


def test_clickhouse_down_is_a_store_that_cannot_be_written_now(clickhouse_server_factory, tmp_path):
    server = clickhouse_server_factory(tmp_path / "ch", password="s3cret-pass")
    url = server.url("default")
    store = ClickHouseStore(url, tmp_path / "p")
    base = _base()
    server.stop()
    with pytest.raises(ClickHouseUnavailable) as e:
        store.append_spans(_batch(_llm_request(base, 1, 10)), NOW, 100)
    assert store.unwritable(e.value) and "s3cret-pass" not in str(e.value)
    assert store.journal_in_doubt() == 100  # the insert may have been made: its replay must be this one
    t0 = time.monotonic()
    assert store.oldest() == (None, None)  # /healthz still answers, at once
    assert time.monotonic() - t0 < 5
    server.start()
    store.append_spans(_batch(_llm_request(base, 1, 10)), NOW, 100)
    assert store.journal_in_doubt() is None and store.journal_applied() == 100
    assert server.client().query("SELECT count() FROM otel_traces").result_rows == [(10,)]
    store.close()
    server.stop()
    with pytest.raises(StoreError) as e:  # a start with ClickHouse away: one line, no password
        ClickHouseStore(url, tmp_path / "p")
    assert str(e.value).startswith(
        f"cannot use ClickHouse at clickhouse://planoscope@127.0.0.1:{server.http_port}/default: "
    )
    assert "s3cret-pass" not in str(e.value) and "\n" not in str(e.value)


def test_the_reads_of_recent_spans_of_a_session_and_of_a_backlog_skip_the_other_parts(clickhouse_database, tmp_path):
    """planoscope's skip indexes (clickhouse_columns.INDEXES): the in-flight rule's recent spans
    (IngestedAt), a session's calls (SessionId) and an instance's forwarding backlog
    (JournalPosition) are read from the part that has them, not from every part."""
    db = clickhouse_database
    base = _base()
    store = _store(db, tmp_path)
    for i, session in enumerate(("s-old", "s-new")):
        req = _llm_request(base, 1 + 100 * i, 100)
        for span in req.resource_spans[0].scope_spans[0].spans:
            span.attributes.add(key="plano.session_id").value.string_value = session
        store.append_spans(_batch(req), NOW, 1000 * (i + 1))  # one insert, one part each
        if i == 0:
            time.sleep(0.05)
            between = db.client.query("SELECT now64(6)").result_rows[0][0]
            time.sleep(0.05)
    store.close()
    indexes = db.client.query(
        "SELECT name, expr, type FROM system.data_skipping_indices WHERE database = {db:String}"
        " AND table = 'otel_traces' AND name LIKE 'planoscope_%' ORDER BY name",
        parameters={"db": db.name},
    ).result_rows
    assert indexes == [
        ("planoscope_ingested_at", "IngestedAt", "minmax"),
        ("planoscope_journal_position", "JournalPosition", "minmax"),
        ("planoscope_session_id", "SessionId", "bloom_filter"),
    ]

    def granules(where: str, parameters: dict) -> tuple[str, list[str]]:
        plan = db.client.query(
            f"EXPLAIN indexes = 1 SELECT count() FROM otel_traces WHERE {where}", parameters=parameters
        )
        lines = [r[0].strip() for r in plan.result_rows]
        count = db.client.query(f"SELECT count() FROM otel_traces WHERE {where}", parameters=parameters)
        return count.result_rows[0][0], lines

    for where, params, index in (
        ("IngestedAt > {t:DateTime64(6)}", {"t": between}, "planoscope_ingested_at"),
        ("SessionId = {s:String}", {"s": "s-new"}, "planoscope_session_id"),
        ("JournalPosition > {p:UInt64}", {"p": 1000}, "planoscope_journal_position"),
    ):
        count, plan = granules(where, params)
        assert count == 100, where
        at = plan.index(f"Name: {index}")
        assert "Parts: 1/2" in plan[at : at + 5], (where, plan)
