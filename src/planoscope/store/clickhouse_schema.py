"""The OpenTelemetry Collector ClickHouse exporter's trace tables, as planoscope creates them.

NOTICE: the table layout (names, types, codecs, skip indexes, keys, TTL and settings), its
templating and the INSERT column order are those of the ClickHouse exporter of the OpenTelemetry
Collector Contrib project, exporter/clickhouseexporter (internal/sqltemplates/traces_table.sql,
traces_id_ts_lookup_table.sql, traces_id_ts_lookup_mv.sql, traces_insert.sql, and
exporter_traces.go), Copyright The OpenTelemetry Authors, licensed under the Apache License 2.0.
Written here as planoscope's own SQL; it creates the same tables.

Three statements, in the exporter's order, after ``CREATE DATABASE`` unless the database is
``default``: the span table ``<table>`` (``otel_traces``), the trace-id look-up table
``<table>_trace_id_ts`` and the materialized view ``<table>_trace_id_ts_mv`` that fills it on each
insert with each trace's first and last span start, to the second. A table planoscope creates is
one an exporter already writing to the same database would have created, and the other way round.

The exporter's main branch after EXPORTER_VERSION (pull request #50878) adds text indexes on
ClickHouse 26.2 and later and makes the look-up table an AggregatingMergeTree; its INSERT is the
same, so either layout takes the rows the other is sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

EXPORTER_VERSION = "v0.154.0"  # opentelemetry-collector-contrib release whose layout this is
DEFAULT_DATABASE = "default"
DEFAULT_TABLE = "otel_traces"
DEFAULT_ENGINE = "MergeTree()"

# The exporter's INSERT columns, in its order (traces_insert.sql). Events and Links are Nested
# columns: with ClickHouse's default flatten_nested=1 each field is an array column of its own, one
# element per event or link. The exporter sends, per span (exporter_traces.go, pushTraceData):
#   Timestamp           the start time, nanoseconds (DateTime64(9))
#   TraceId, SpanId     lowercase hex; ParentSpanId and a zero id are ''
#   SpanKind            "Unspecified" "Internal" "Server" "Client" "Producer" "Consumer"
#   ServiceName         the resource's service.name, or ''
#   *Attributes         Map(LowCardinality(String), String): each value as pcommon AsString()
#                       writes it (ints decimal, doubles in ES6 form, bools true/false, bytes
#                       base64, arrays and maps JSON)
#   Duration            end - start in nanoseconds, unsigned (UInt64)
#   StatusCode          "Unset" "Ok" "Error"
#   Events.Timestamp    Array(DateTime64(9)), with Events.Name and Events.Attributes
INSERT_COLUMNS: tuple[str, ...] = (
    "Timestamp",
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
)

_ATTRS = "Map(LowCardinality(String), String)"

_TRACES_TABLE = f"""CREATE TABLE IF NOT EXISTS {{table}} {{cluster}} (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes {_ATTRS} CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes {_ATTRS} CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes {_ATTRS}
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes {_ATTRS}
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = {{engine}}
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
{{ttl}}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"""

_TRACE_ID_TS_TABLE = """CREATE TABLE IF NOT EXISTS {lookup} {cluster} (
    TraceId String CODEC(ZSTD(1)),
    Start DateTime CODEC(Delta, ZSTD(1)),
    End DateTime CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = {engine}
PARTITION BY toDate(Start)
ORDER BY (TraceId, Start)
{ttl}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"""

_TRACE_ID_TS_VIEW = """CREATE MATERIALIZED VIEW IF NOT EXISTS {view} {cluster}
TO {lookup}
AS SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End
FROM {table}
WHERE TraceId != ''
GROUP BY TraceId"""

_ENGINE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\(.*\)", re.DOTALL)


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted ClickHouse identifier, as the exporter quotes its database and
    table names, with backslashes and quotes escaped. Raises ``ValueError`` if empty or has NUL."""
    if not name or "\0" in name:
        raise ValueError(f"not a ClickHouse identifier: {name!r}")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ttl_clause(ttl: timedelta | None, column: str) -> str:
    """The exporter's TTL clause (GenerateTTLExpr): ``TTL <column> + toInterval<Unit>(n)`` in the
    largest unit that divides ``ttl`` (day, hour, minute, else whole seconds); '' for none or 0."""
    if ttl is None or ttl <= timedelta(0):
        return ""
    for unit, size in (("Day", timedelta(days=1)), ("Hour", timedelta(hours=1)), ("Minute", timedelta(minutes=1))):
        if ttl % size == timedelta(0):
            return f"TTL {column} + toInterval{unit}({ttl // size})"
    return f"TTL {column} + toIntervalSecond({ttl // timedelta(seconds=1)})"


def cluster_clause(cluster: str | None) -> str:
    """``ON CLUSTER "<cluster>"``, or '' when the tables are not created on a cluster."""
    return f"ON CLUSTER {quote_identifier(cluster)}" if cluster else ""


def engine_clause(engine: str = DEFAULT_ENGINE) -> str:
    """The table engine as the exporter writes it, ``Name(params)``: ``MergeTree()`` by default,
    ``ReplicatedMergeTree('/clickhouse/tables/{shard}/{table}', '{replica}')`` for instance."""
    if not _ENGINE.fullmatch(engine.strip()):
        raise ValueError(f"a table engine is Name(params), got {engine!r}")
    return engine.strip()


def create_database_sql(database: str = DEFAULT_DATABASE, *, cluster: str | None = None) -> str | None:
    """``CREATE DATABASE IF NOT EXISTS``; None for ``default``, which the exporter never creates."""
    if database == DEFAULT_DATABASE:
        return None
    return f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)} {cluster_clause(cluster)}".rstrip()


def schema_sql(
    database: str = DEFAULT_DATABASE,
    table: str = DEFAULT_TABLE,
    *,
    ttl: timedelta | None = None,
    cluster: str | None = None,
    engine: str = DEFAULT_ENGINE,
) -> list[str]:
    """The exporter's DDL for ``database.table``, statement by statement, in the order it runs them:
    the database (unless ``default``), the span table, the trace-id look-up table and its view.

    ``ttl`` drops spans (whole parts, ``ttl_only_drop_parts``) that started longer ago; the look-up
    rows go by their trace's first span. ``cluster`` adds ``ON CLUSTER``; ``engine`` replaces
    ``MergeTree()`` in both tables (say a ReplicatedMergeTree).
    """
    q = quote_identifier
    names = {
        "table": f"{q(database)}.{q(table)}",
        "lookup": f"{q(database)}.{q(table + '_trace_id_ts')}",
        "view": f"{q(database)}.{q(table + '_trace_id_ts_mv')}",
        "cluster": cluster_clause(cluster),
        "engine": engine_clause(engine),
    }
    statements = [
        _TRACES_TABLE.format(**names, ttl=ttl_clause(ttl, "toDateTime(Timestamp)")),
        _TRACE_ID_TS_TABLE.format(**names, ttl=ttl_clause(ttl, "toDateTime(Start)")),
        _TRACE_ID_TS_VIEW.format(**names),
    ]
    db = create_database_sql(database, cluster=cluster)
    return ([db] if db else []) + statements


def insert_columns() -> list[str]:
    """The columns of the exporter's INSERT, in its order (one value of each per span)."""
    return list(INSERT_COLUMNS)


class _Commands(Protocol):
    def command(self, cmd: str, *args: Any, **kwargs: Any) -> Any: ...


def create_tables(client: _Commands, database: str = DEFAULT_DATABASE, table: str = DEFAULT_TABLE, **options) -> None:
    """Run ``schema_sql(database, table, **options)`` through a clickhouse-connect client; each
    statement is IF NOT EXISTS, so running it again, or where the exporter ran it, changes nothing."""
    statements: Sequence[str] = schema_sql(database, table, **options)
    for sql in statements:
        client.command(sql)
