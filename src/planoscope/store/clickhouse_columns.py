"""planoscope's columns on the exporter's ``otel_traces`` table, and its own samples table.

The exporter's columns are never changed (``clickhouse_schema``); planoscope adds its own after
them with ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``, so a stock exporter's INSERT, which names
its columns, keeps working unchanged, and a ``SELECT`` that names the exporter's columns sees the
table it knows. Two kinds:

- ``MATERIALIZED``: computed by ClickHouse from the exporter's columns as each row is inserted,
  by whoever inserts it (a collector, planoscope): the typed copies of attributes
  (``schema.TYPED_COLUMNS``, read from the ``SpanAttributes`` map), the look-up key
  (``TraceKey``) and the derived columns (``schema.DERIVED_COLUMNS``: requested and resolved
  model, flagged, failure class). One definition on ClickHouse, so a row a collector wrote and one
  planoscope wrote read the same. Parts written before a column was added compute it when read.
- plain columns with a default, which only planoscope sends: ``ScopeAttributes`` (the exporter
  drops the scope's attributes), ``AttributeTypes`` (below), ``EstimatedCostUsd`` (the price
  table's estimate, which needs Python), ``IngestedBy`` and ``JournalPosition`` (the instance that
  inserted the row and the journal position of its insert: what forwarding reads) and
  ``IngestedAt`` (stamped by the server). A collector's row holds the defaults.

Attribute types. The exporter's maps hold each value's string form (``AsString``: 429, 0.5,
true, JSON for arrays and maps, base64 for bytes), and so do planoscope's rows, written as the
exporter writes them (every pair in order, a repeated key too: ClickHouse's ``m['k']`` gives the
first, as planoscope reads it). A map cannot tell 429 the int from "429" the string; dashboards
never need to (the typed columns are typed), but the trace view and forwarding give values back
as they were sent. So planoscope keeps, in ``AttributeTypes``, the type of every value: a letter
a pair (``schema.TYPE_LETTERS``: s string, i int, d double, b bool, e empty, y bytes, a array, m
key-value list, the last two followed by the value's typed JSON), the sets in the order
resource ``|`` scope ``|`` span ``|`` each event's, ``,`` between them ``|`` each link's, ``,``
between them. From a string form and its letter the value is exact (an int's decimal digits, a
double's shortest round-trip digits, base64): ``clickhouse_rows.attribute_sets`` reads them
back. It costs next to nothing: the letters of a kind of span repeat from row to row and compress
to almost nothing, where keeping planoscope's typed JSON beside the maps measured a third of the
table (docs/scale-out.md). A collector's row has '' there: its values are strings, as the
collector stored them.

Typed values are parsed from the string forms as ingest parses them on DuckDB, for the values
senders send (strings, ints, doubles, bools, or their plain string forms); where ClickHouse's
parsers differ is in what no sender sends (``" 12"``, ``"1_000"``: null here).
"""

from __future__ import annotations

from .clickhouse_schema import quote_identifier
from .schema import DERIVED_COLUMNS, FAILURE_CLASSES, FLAG, LLM_CALL_COLUMNS, LLM_SERVICE, TYPED_COLUMNS, Typed

_ATTRS = "Map(LowCardinality(String), String)"
# Typed string columns with a few distinct values are dictionary-encoded; ids are not.
_HIGH_CARDINALITY = {"SessionId", "UserId"}
_TYPES = {
    "INTEGER": "Nullable(Int32)",
    "BIGINT": "Nullable(Int64)",
    "DOUBLE": "Nullable(Float64)",
    "BOOLEAN": "Nullable(Bool)",
}


def _literal(s: str) -> str:
    """A ClickHouse string literal (keys and names are this module's constants)."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _type(name: str, ddl: str) -> str:
    if ddl == "VARCHAR":
        return "Nullable(String)" if name in _HIGH_CARDINALITY else "LowCardinality(Nullable(String))"
    return _TYPES[ddl]


def _value(col: Typed, key: str) -> str:
    """One key's value in ``col``'s type, from the map (a missing key reads ''): as decode.cast
    parses it (an integer column also takes "12.0" and "1e3", truncated; a bool takes true,
    false, 1, 0 in any case)."""
    v = f"SpanAttributes[{_literal(key)}]"
    if col.ddl == "VARCHAR":
        sql = f"nullIf({v}, '')"
        return f"lower({sql})" if col.lower else sql
    if col.ddl in ("INTEGER", "BIGINT"):
        to = "toInt32OrNull" if col.ddl == "INTEGER" else "toInt64OrNull"
        sql = f"coalesce({to}({v}), {to}(toString(trunc(toFloat64OrNull({v})))))"
    elif col.ddl == "DOUBLE":
        sql = f"toFloat64OrNull({v})"
    else:
        sql = f"multiIf(lower({v}) IN ('true', '1'), true, lower({v}) IN ('false', '0'), false, NULL)"
    if key in col.scale:
        sql = f"{sql} * {col.scale[key]!r}"
    return sql


def typed_sql(col: Typed) -> str:
    """``col``'s value as ClickHouse SQL over the exporter's ``SpanAttributes``: the first key set."""
    parts = [_value(col, key) for key in col.keys]
    return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"


_LLM_CHANGED = "ServiceName = 'plano(llm)' AND position(SpanName, ' -> ') > 0"
_MODELS = _literal(f"^\\S+ \\S+ (\\S+) -> (\\S+)(?:{FLAG})?$")
# schema.DERIVED_COLUMNS, in ClickHouse's SQL (their DuckDB definitions are over the same columns).
DERIVED_SQL = {
    "RequestedModel": f"if({_LLM_CHANGED}, coalesce(nullIf(regexpExtract(SpanName, {_MODELS}, 1), ''), LlmModel),"
    " LlmModel)",
    "ResolvedModel": f"if({_LLM_CHANGED}, coalesce(nullIf(regexpExtract(SpanName, {_MODELS}, 2), ''), LlmModel),"
    " LlmModel)",
    "Flagged": f"if(ServiceName = 'plano(llm)', endsWith(SpanName, {_literal(FLAG)}), NULL)",
    # schema.FAILURE_MACRO: the most specific cause first
    "FailureClass": "multiIf(HttpStatusCode = 429, '429', HttpStatusCode >= 500, '5xx', HttpStatusCode >= 400, '4xx',"
    " ServiceName = 'plano(llm)' AND SpanName = 'llm', 'before_dispatch', StatusCode = 'Error', 'error_status', NULL)",
    # schema.LLM_CALL_SQL
    "LlmCall": f"ServiceName = {_literal(LLM_SERVICE)} OR " + " OR ".join(f"isNotNull({c})" for c in LLM_CALL_COLUMNS),
}
assert set(DERIVED_SQL) == {c.name for c in DERIVED_COLUMNS}
assert all(_literal(c) in DERIVED_SQL["FailureClass"] for c in FAILURE_CLASSES)

# The look-up key (schema.LOOKUP_COLUMNS): the trace id's last 8 bytes, big-endian.
TRACE_KEY_SQL = "reinterpretAsUInt64(reverse(unhex(substring(TraceId, 17, 16))))"

# (name, type, clause) in the order they are added: a column refers only to columns before it.
MATERIALIZED_COLUMNS: list[tuple[str, str, str]] = [
    *((c.name, _type(c.name, c.ddl), typed_sql(c)) for c in TYPED_COLUMNS),
    ("TraceKey", "UInt64", TRACE_KEY_SQL),
    *((c.name, _type(c.name, c.ddl), DERIVED_SQL[c.name]) for c in DERIVED_COLUMNS),
]
# What planoscope sends beside the exporter's columns; a collector's rows hold the default.
SENT_COLUMNS: list[tuple[str, str, str]] = [
    ("ScopeAttributes", _ATTRS, "DEFAULT map()"),
    ("AttributeTypes", "String", "DEFAULT ''"),
    ("EstimatedCostUsd", "Nullable(Float64)", "DEFAULT NULL"),
    # Which planoscope instance inserted the row, and the journal position its insert reached:
    # what the instance forwards, in order (forward/backlog_clickhouse.py). A collector's row: '' and 0.
    ("IngestedBy", "LowCardinality(String)", "DEFAULT ''"),
    ("JournalPosition", "UInt64", "DEFAULT 0"),
]
STAMPED_COLUMNS: list[tuple[str, str, str]] = [("IngestedAt", "DateTime64(6)", "DEFAULT now64(6)")]


# Skip indexes on planoscope's columns, for the reads that filter on a column the table's key
# does not order: the in-flight rule's recent spans (IngestedAt), a session's calls (SessionId),
# an instance's forwarding backlog (JournalPosition). (name, expression, type). A part written
# before an index was added is read whole until it merges.
INDEXES: list[tuple[str, str, str]] = [
    ("planoscope_ingested_at", "IngestedAt", "minmax"),
    ("planoscope_session_id", "SessionId", "bloom_filter(0.01)"),
    ("planoscope_journal_position", "JournalPosition", "minmax"),
]


def additions_sql(table: str) -> list[str]:
    """``ALTER TABLE <table> ADD COLUMN IF NOT EXISTS`` for every planoscope column, then ``ADD
    INDEX IF NOT EXISTS`` for its skip indexes (``table`` quoted already): idempotent, changes
    of metadata only (no part is rewritten)."""
    out = [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote_identifier(n)} {t} MATERIALIZED {sql} CODEC(ZSTD(1))"
        for n, t, sql in MATERIALIZED_COLUMNS
    ]
    out += [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote_identifier(n)} {t} {default} CODEC(ZSTD(1))"
        for n, t, default in SENT_COLUMNS + STAMPED_COLUMNS
    ]
    out += [
        f"ALTER TABLE {table} ADD INDEX IF NOT EXISTS {quote_identifier(n)} {quote_identifier(col)} TYPE {typ}"
        " GRANULARITY 1"
        for n, col, typ in INDEXES
    ]
    return out


def samples_table_sql(table: str, ttl: str) -> str:
    """Scraped Prometheus samples (the DuckDB store's ``samples``), ``ttl`` the retention clause."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    Timestamp DateTime64(3) CODEC(Delta, ZSTD(1)),
    Target LowCardinality(String) CODEC(ZSTD(1)),
    MetricName LowCardinality(String) CODEC(ZSTD(1)),
    Labels String CODEC(ZSTD(1)),
    Value Float64 CODEC(ZSTD(1))
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
ORDER BY (MetricName, Target, Timestamp)
{ttl}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"""
