"""The span table: the OpenTelemetry Collector ClickHouse exporter's ``otel_traces`` columns,
plus typed copies of the attributes that dashboards filter and group on.

One definition serves the Arrow batches built at decode time and the DuckDB DDL, so the two
cannot drift apart.
"""

from __future__ import annotations

import pyarrow as pa

# An attribute set is one JSON object, {"llm.model":"gpt-4o","http.status_code":429,...}, each
# value in its JSON type (attributes.py): the ClickHouse exporter's Map(String, String) holds the
# string forms, this keeps the types. Measured on this 2-core class of machine,
# DuckDB spends ~10 us a row building a MAP (it validates keys) and ~9.5 us a row more storing a
# list of key/value structs than one JSON string, including checkpoint compression; look-ups
# cost the same. Look a value up with the ``attr`` macro: attr(SpanAttributes, 'llm.model').
# The key goes into a JSON pointer (RFC 6901: only ~ and / are escaped, as ~0 and ~1), not a
# JSONPath: pasted into '$."key"', a key holding " or a trailing \ was a syntax error (a 500 from
# /api/v1/traces?attr=a%22b) and an escaped quote looked up another key. ``attr`` gives a string,
# an int or a bool as its string form (gpt-4o, 429, true), a double as DuckDB writes it (0.5,
# 2.0, 1e21), an array or a map as JSON, an empty value as NULL.
ATTR_MAP = pa.string()
ATTR_DDL = "VARCHAR"
ATTR_MACRO = (
    "CREATE OR REPLACE MACRO attr(attributes, name) AS "
    "json_extract_string(attributes, '/' || replace(replace(name, '~', '~0'), '/', '~1'))"
)
# Whether an attribute set holds the key, whatever its value (an empty value is JSON null, which
# attr() cannot tell from a missing key).
HAS_ATTR_MACRO = (
    "CREATE OR REPLACE MACRO has_attr(attributes, name) AS "
    "json_exists(attributes, '/' || replace(replace(name, '~', '~0'), '/', '~1'))"
)

# What Plano means by a failed call (reference/plano-telemetry: brightstaff never sets a span
# status, Envoy sets ERROR only for >= 500, a 429 is UNSET everywhere): a span failed when its
# HTTP status (``HttpStatusCode``, parsed at decode time from an int or a string, from
# http.status_code or semconv's http.response.status_code) is >= 400, or it is a plano(llm) span
# that never got a model (named ``llm``: failed before dispatch), or its status is ERROR. The class
# says why, the most specific cause first: what the caller was answered (429, then any other
# 5xx or 4xx: an ERROR Envoy span with 503 is 5xx), then before_dispatch, then error_status (an
# ERROR status with no HTTP code). NULL: not failed. Every search, count, mark and panel on
# failures calls this macro (through ``FAILURE_CLASS``); the span-metric status_code label stays
# the collector's (the span status).
FAILURE_CLASSES = ("429", "4xx", "5xx", "before_dispatch", "error_status")
FAILURE_MACRO = (
    "CREATE OR REPLACE MACRO failure_class(status_code, http_status_code, service_name, span_name) AS CASE"
    " WHEN http_status_code = 429 THEN '429'"
    " WHEN http_status_code >= 500 THEN '5xx'"
    " WHEN http_status_code >= 400 THEN '4xx'"
    " WHEN service_name = 'plano(llm)' AND span_name = 'llm' THEN 'before_dispatch'"
    " WHEN status_code = 'Error' THEN 'error_status'"
    " END"
)
# A span's failure class as a query writes it (a stored column later: only this changes).
FAILURE_CLASS = "failure_class(StatusCode, HttpStatusCode, ServiceName, SpanName)"
# The macros every connection has, by name: (re)defined on open (see DuckDBStore._create_macros).
MACROS = {"attr": ATTR_MACRO, "has_attr": HAS_ATTR_MACRO, "failure_class": FAILURE_MACRO}

EVENT = pa.struct([("Timestamp", pa.timestamp("ns")), ("Name", pa.string()), ("Attributes", ATTR_MAP)])
LINK = pa.struct(
    [
        ("TraceId", pa.string()),
        ("SpanId", pa.string()),
        ("TraceState", pa.string()),
        ("Attributes", ATTR_MAP),
    ]
)

# (column, arrow type, DuckDB type) in table order. The first 17 are otel_traces'.
OTEL_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("Timestamp", pa.timestamp("ns"), "TIMESTAMP_NS"),
    ("TraceId", pa.string(), "VARCHAR"),
    ("SpanId", pa.string(), "VARCHAR"),
    ("ParentSpanId", pa.string(), "VARCHAR"),
    ("TraceState", pa.string(), "VARCHAR"),
    ("SpanName", pa.string(), "VARCHAR"),
    ("SpanKind", pa.string(), "VARCHAR"),
    ("ServiceName", pa.string(), "VARCHAR"),
    ("ResourceAttributes", ATTR_MAP, ATTR_DDL),
    ("ScopeName", pa.string(), "VARCHAR"),
    ("ScopeVersion", pa.string(), "VARCHAR"),
    ("SpanAttributes", ATTR_MAP, ATTR_DDL),
    ("Duration", pa.int64(), "BIGINT"),
    ("StatusCode", pa.string(), "VARCHAR"),
    ("StatusMessage", pa.string(), "VARCHAR"),
    (
        "Events",
        pa.list_(EVENT),
        f'STRUCT("Timestamp" TIMESTAMP_NS, "Name" VARCHAR, "Attributes" {ATTR_DDL})[]',
    ),
    (
        "Links",
        pa.list_(LINK),
        f'STRUCT("TraceId" VARCHAR, "SpanId" VARCHAR, "TraceState" VARCHAR, "Attributes" {ATTR_DDL})[]',
    ),
]

# Typed columns: (column, arrow type, DuckDB type, span attribute keys in order of preference).
# Filled at decode time from SpanAttributes (attributes.typed_columns); a value that does not
# parse as the type is null. The OpenTelemetry GenAI names fill the same columns.
TYPED_COLUMNS: list[tuple[str, pa.DataType, str, tuple[str, ...]]] = [
    ("LlmModel", pa.string(), "VARCHAR", ("llm.model", "gen_ai.request.model", "gen_ai.response.model")),
    ("LlmProvider", pa.string(), "VARCHAR", ("llm.provider", "gen_ai.system", "gen_ai.provider.name")),
    ("AgentId", pa.string(), "VARCHAR", ("agent_id", "gen_ai.agent.id")),
    ("SelectionListener", pa.string(), "VARCHAR", ("selection.listener",)),
    ("HttpMethod", pa.string(), "VARCHAR", ("http.method", "http.request.method")),
    ("HttpStatusCode", pa.int32(), "INTEGER", ("http.status_code", "http.response.status_code")),
    ("IsStreaming", pa.bool_(), "BOOLEAN", ("llm.is_streaming",)),
    ("TimeToFirstTokenMs", pa.float64(), "DOUBLE", ("llm.time_to_first_token",)),
    ("PromptTokens", pa.int64(), "BIGINT", ("llm.usage.prompt_tokens", "gen_ai.usage.input_tokens")),
    (
        "CompletionTokens",
        pa.int64(),
        "BIGINT",
        ("llm.usage.completion_tokens", "gen_ai.usage.output_tokens"),
    ),
    ("TotalTokens", pa.int64(), "BIGINT", ("llm.usage.total_tokens",)),
    ("CostUsd", pa.float64(), "DOUBLE", ("llm.usage.total_cost_usd",)),
]

# Finding a trace by id without an index: DuckDB scans a random VARCHAR id column of 10 M spans
# in ~200 ms, an integer column in ~16 ms (benchmarks/traces.py). TraceKey is the trace id's
# last 8 bytes as an unsigned big-endian integer: the random part (W3C Trace Context), where a
# 64-bit id from a Zipkin or Jaeger client padded to 128 bits has zeros in its first 8 bytes.
# A look-up filters on TraceKey, then on TraceId; a search groups on TraceKey (an integer
# groups ~4x faster than the 32-character id).
LOOKUP_COLUMNS: list[tuple[str, pa.DataType, str]] = [("TraceKey", pa.uint64(), "UBIGINT")]

# Columns added since, in the order they were added. A table created before gets each on start
# (ALTER TABLE ... ADD COLUMN, see DuckDBStore._migrate), after IngestedAt, where a new table has
# them too; the rows stored before hold NULL.
ADDED_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    # The instrumentation scope's attributes (otel_traces has none: the exporter drops them).
    ("ScopeAttributes", ATTR_MAP, ATTR_DDL),
]

# A decoded batch: otel_traces' columns, then the typed ones, the look-up key, the added ones.
SPAN_SCHEMA = pa.schema(
    [pa.field(n, t) for n, t, _ in OTEL_COLUMNS]
    + [pa.field(n, t) for n, t, _, _ in TYPED_COLUMNS]
    + [pa.field(n, t) for n, t, _ in LOOKUP_COLUMNS]
    + [pa.field(n, t) for n, t, _ in ADDED_COLUMNS]
)
COLUMN_NAMES = SPAN_SCHEMA.names

SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")


def trace_key(trace_id: str) -> int:
    """The TraceKey of a 32-digit hex trace id (the native decoder writes it from the id's bytes)."""
    return int(trace_id[16:], 16)


def duckdb_ddl(table: str = "otel_traces") -> str:
    cols = [f'"{n}" {d}' for n, _, d in OTEL_COLUMNS]
    cols += [f'"{n}" {d}' for n, _, d, _ in TYPED_COLUMNS]
    cols += [f'"{n}" {d}' for n, _, d in LOOKUP_COLUMNS]
    cols.append('"IngestedAt" TIMESTAMP NOT NULL')
    cols += [f'"{n}" {d}' for n, _, d in ADDED_COLUMNS]
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  " + ",\n  ".join(cols) + "\n)"
