"""The span table: the OpenTelemetry Collector ClickHouse exporter's ``otel_traces`` columns,
plus typed copies of the attributes that dashboards filter and group on.

One definition serves the Arrow batches built at decode time and the DuckDB DDL, so the two
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
#
# Declared once, as data: (class, conditions over the span's columns, all of which hold), the
# first rule that holds giving the class. DuckDB reads it as the ``failure_class`` macro, filled
# into the stored column at insert; Arrow as ``failure_classes``, for what is counted from a
# decoded batch before it is stored (the LLM metrics).
FAILURE_CLASSES = ("429", "4xx", "5xx", "before_dispatch", "error_status")
FAILURE_RULES: tuple[tuple[str, tuple[tuple[str, str, int | str], ...]], ...] = (
    ("429", (("HttpStatusCode", "=", 429),)),
    ("5xx", (("HttpStatusCode", ">=", 500),)),
    ("4xx", (("HttpStatusCode", ">=", 400),)),
    ("before_dispatch", (("ServiceName", "=", "plano(llm)"), ("SpanName", "=", "llm"))),
    ("error_status", (("StatusCode", "=", "Error"),)),
)
_FAILURE_ARGS = {
    "StatusCode": "status_code",
    "HttpStatusCode": "http_status_code",
    "ServiceName": "service_name",
    "SpanName": "span_name",
}
_ARROW_OPS = {"=": pc.equal, ">=": pc.greater_equal}


def _sql_literal(value: int | str) -> str:
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


FAILURE_MACRO = (
    f"CREATE OR REPLACE MACRO failure_class({', '.join(_FAILURE_ARGS.values())}) AS CASE"
    + "".join(
        " WHEN "
        + " AND ".join(f"{_FAILURE_ARGS[c]} {op} {_sql_literal(v)}" for c, op, v in conditions)
        + f" THEN '{cls}'"
        for cls, conditions in FAILURE_RULES
    )
    + " END"
)


def failure_rule_index(spans: pa.Table | pa.RecordBatch) -> np.ndarray:
    """Per span of ``spans`` (columns as ``FAILURE_RULES`` name them): the index in
    ``FAILURE_RULES`` of the first rule that holds, -1 when none does (not failed). A null (no
    HTTP status) holds no condition, as a NULL condition in SQL's CASE WHEN."""
    out = np.full(spans.num_rows, -1, np.int8)
    for i in reversed(range(len(FAILURE_RULES))):  # the first rule that holds writes last
        holds = None
        for column, op, value in FAILURE_RULES[i][1]:
            test = _ARROW_OPS[op](spans.column(column), value)
            holds = test if holds is None else pc.and_kleene(holds, test)
        out[pc.fill_null(holds, False).to_numpy(zero_copy_only=False)] = i
    return out


_CLASS_OF_RULE = pa.array([cls for cls, _ in FAILURE_RULES] + [None], pa.string())


def failure_classes(spans: pa.Table | pa.RecordBatch) -> pa.Array:
    """The failure class of each span of ``spans``, null when it did not fail: the
    ``failure_class`` macro's value, computed by Arrow."""
    index = failure_rule_index(spans)
    return _CLASS_OF_RULE.take(np.where(index < 0, len(FAILURE_RULES), index))


# An LLM call (LLM_CONTRACT.md): a span with a model or any token count, or a plano(llm) span
# (those that failed before dispatch have neither). ``LLM_CALL_SQL`` defines it over the span
# table and fills the stored column ``LlmCall`` (DERIVED_COLUMNS) as a span is inserted;
# ``llm_calls`` is the same in Arrow, from the same declaration.
LLM_SERVICE = "plano(llm)"
LLM_CALL_COLUMNS = (
    "LlmModel",
    "PromptTokens",
    "CompletionTokens",
    "TotalTokens",
    "CachedInputTokens",
    "CacheCreationTokens",
    "ReasoningTokens",
)
LLM_CALL_SQL = (
    f"(ServiceName IS NOT DISTINCT FROM '{LLM_SERVICE}' OR "
    + " OR ".join(f'"{c}" IS NOT NULL' for c in LLM_CALL_COLUMNS)
    + ")"
)


def llm_call(table: str = "") -> str:
    """SQL true for an LLM call over the columns of ``table`` (an alias with its dot, or none):
    the stored flag, never NULL (the start fills it in rows stored before it), so that ``NOT``
    it is the other spans. Stored rather than written out: DuckDB pushes a filter on one column
    into the scan, and reads the other columns of the calls only; the eight-column OR it stands
    for was evaluated on every span of the range (at 7 days of 10 M spans, the LLM Usage
    dashboard's refresh went from ~610 to ~470 ms with the flag, benchmarks/dashboard.py)."""
    return f'{table}"LlmCall"'


LLM_CALL = llm_call()


def llm_calls(spans: pa.Table | pa.RecordBatch) -> pa.Array:
    """Which spans of ``spans`` are LLM calls (``LLM_CALL``), as a boolean mask without nulls."""
    mask = pc.fill_null(pc.equal(spans.column("ServiceName"), LLM_SERVICE), False)
    for column in LLM_CALL_COLUMNS:
        mask = pc.or_(mask, pc.is_valid(spans.column(column)))
    return mask


# A span's failure class as a query writes it: the stored column, which the macro fills as the
# span is inserted (DERIVED_COLUMNS). Spans stored before the column existed hold NULL until
# they are filled from the same macro.
FAILURE_CLASS = '"FailureClass"'
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


@dataclass(frozen=True)
class Typed:
    """A typed column filled from span attributes: the first of ``keys`` (the sender's names,
    Plano's first) whose value parses as the type gives it; a value that does not parse is
    skipped, an empty string counts as none. A key in ``scale`` is sent in another unit and is
    multiplied into the column's (seconds to milliseconds: 1000); ``lower`` lowercases (Plano
    sent ``Good`` before 0.4.28, ``good`` since).

    Filled at decode time from the string forms the decoders pull out (decode.Decoder._batch);
    ``sql`` gives the same value from a stored attribute set, for rows stored before the column."""

    name: str
    arrow: pa.DataType
    ddl: str
    keys: tuple[str, ...]
    scale: dict[str, float] = field(default_factory=dict)
    lower: bool = False

    def sql(self, value: Callable[[str], str] = lambda key: f"attr(SpanAttributes, '{key}')") -> str:
        """The column's value as DuckDB SQL, given ``value(key)``, the SQL of a key's stored value
        as a string (by default the ``attr`` macro on SpanAttributes): equal to what ingest gives
        for values sent in their type (strings, ints, doubles, bools) or as their plain string
        forms. (Where they differ: a double sent for a string column reads ``2.0`` here and ``2``
        at ingest; an integer column truncates a fractional string at ingest and rounds here.)
        Keys are constants of this module, never user input."""
        parts = []
        for key in self.keys:
            value_sql = value(key)
            if self.ddl == "VARCHAR":
                value_sql = f"nullif({value_sql}, '')"
                if self.lower:
                    value_sql = f"lower({value_sql})"
            else:
                value_sql = f"TRY_CAST({value_sql} AS {self.ddl})"
            if key in self.scale:
                value_sql = f"CAST({value_sql} * {self.scale[key]!r} AS {self.ddl})"
            parts.append(value_sql)
        return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"


_S_TO_MS = 1000.0
# Filled at decode time from SpanAttributes; the OpenTelemetry GenAI conventions', OpenInference's
# and OpenLIT's names fill the same columns as Plano's (reference/plano-telemetry, "Other LLM
# senders"), after them.
_TYPED_FIRST: list[Typed] = [
    Typed(
        "LlmModel",
        pa.string(),
        "VARCHAR",
        ("llm.model", "gen_ai.request.model", "gen_ai.response.model", "llm.model_name"),
    ),
    Typed("LlmProvider", pa.string(), "VARCHAR", ("llm.provider", "gen_ai.system", "gen_ai.provider.name")),
    Typed("AgentId", pa.string(), "VARCHAR", ("agent_id", "gen_ai.agent.id")),
    Typed("SelectionListener", pa.string(), "VARCHAR", ("selection.listener",)),
    Typed("HttpMethod", pa.string(), "VARCHAR", ("http.method", "http.request.method")),
    Typed("HttpStatusCode", pa.int32(), "INTEGER", ("http.status_code", "http.response.status_code")),
    Typed("IsStreaming", pa.bool_(), "BOOLEAN", ("llm.is_streaming",)),
    Typed(
        "TimeToFirstTokenMs",
        pa.float64(),
        "DOUBLE",
        ("llm.time_to_first_token", "gen_ai.response.time_to_first_chunk", "gen_ai.server.time_to_first_token"),
        scale={"gen_ai.response.time_to_first_chunk": _S_TO_MS, "gen_ai.server.time_to_first_token": _S_TO_MS},
    ),
    Typed(
        "PromptTokens",
        pa.int64(),
        "BIGINT",
        (
            "llm.usage.prompt_tokens",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
        ),
    ),
    Typed(
        "CompletionTokens",
        pa.int64(),
        "BIGINT",
        (
            "llm.usage.completion_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
        ),
    ),
    Typed(
        "TotalTokens",
        pa.int64(),
        "BIGINT",
        ("llm.usage.total_tokens", "llm.token_count.total", "gen_ai.usage.total_tokens"),
    ),
    # The cost the sender sent (Plano: only on 2xx, with a session and a configured price source).
    Typed(
        "CostUsd",
        pa.float64(),
        "DOUBLE",
        ("llm.usage.total_cost_usd", "llm.cost.total", "gen_ai.usage.cost", "gen_ai.usage.cost.amount"),
    ),
]
# Added with the LLM usage dashboard (ADDED_COLUMNS).
_TYPED_LLM: list[Typed] = [
    Typed(
        "CachedInputTokens",
        pa.int64(),
        "BIGINT",
        (
            "llm.usage.cached_input_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "llm.token_count.prompt_details.cache_read",
        ),
    ),
    Typed(
        "CacheCreationTokens",
        pa.int64(),
        "BIGINT",
        (
            "llm.usage.cache_creation_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
            "llm.token_count.prompt_details.cache_write",
        ),
    ),
    Typed(
        "ReasoningTokens",
        pa.int64(),
        "BIGINT",
        ("llm.usage.reasoning_tokens", "llm.token_count.completion_details.reasoning"),
    ),
    Typed("InputCostUsd", pa.float64(), "DOUBLE", ("llm.usage.input_cost_usd", "llm.cost.prompt")),
    Typed("OutputCostUsd", pa.float64(), "DOUBLE", ("llm.usage.output_cost_usd", "llm.cost.completion")),
    Typed("RouteName", pa.string(), "VARCHAR", ("plano.route.name",)),
    Typed("SessionId", pa.string(), "VARCHAR", ("plano.session_id", "gen_ai.conversation.id", "session.id")),
    Typed("UserId", pa.string(), "VARCHAR", ("plano.distinct_id", "user.id")),
    Typed("SignalsQuality", pa.string(), "VARCHAR", ("signals.quality",), lower=True),
]
TYPED_COLUMNS: list[Typed] = _TYPED_FIRST + _TYPED_LLM

# What a call costs by the price table when the sender sent no cost (CostUsd null) but tokens;
# null for a model the table does not know. In the decoded batch, filled there.
ESTIMATED_COST = ("EstimatedCostUsd", pa.float64(), "DOUBLE")


@dataclass(frozen=True)
class Derived:
    """A column computed from the span's other columns by DuckDB as the span is inserted
    (DuckDBStore.append_spans): ``sql`` is its one definition, over the table's columns, for
    new spans and for rows stored before it (an ``UPDATE ... SET`` with the same expression)."""

    name: str
    arrow: pa.DataType
    ddl: str
    sql: str


# A plano(llm) span is named "POST {path} {requested} -> {resolved}" when an alias, the router or
# the session router changed the model, with " 🚩" appended when its signals are concerning
# (reference/plano-telemetry, "Span names"). The regular expression runs only on such names.
FLAG = " \U0001f6a9"
_CHANGED = "ServiceName = 'plano(llm)' AND contains(SpanName, ' -> ')"
_MODELS = f"'^\\S+ \\S+ (\\S+) -> (\\S+)(?:{FLAG})?$'"
DERIVED_COLUMNS: list[Derived] = [
    Derived(
        "RequestedModel",
        pa.string(),
        "VARCHAR",
        f"CASE WHEN {_CHANGED} THEN coalesce(nullif(regexp_extract(SpanName, {_MODELS}, 1), ''), LlmModel)"
        " ELSE LlmModel END",
    ),
    Derived(
        "ResolvedModel",
        pa.string(),
        "VARCHAR",
        f"CASE WHEN {_CHANGED} THEN coalesce(nullif(regexp_extract(SpanName, {_MODELS}, 2), ''), LlmModel)"
        " ELSE LlmModel END",
    ),
    # Null on spans other than plano(llm)'s: only those can be flagged.
    Derived(
        "Flagged", pa.bool_(), "BOOLEAN", f"CASE WHEN ServiceName = 'plano(llm)' THEN suffix(SpanName, '{FLAG}') END"
    ),
    Derived("FailureClass", pa.string(), "VARCHAR", "failure_class(StatusCode, HttpStatusCode, ServiceName, SpanName)"),
    Derived("LlmCall", pa.bool_(), "BOOLEAN", LLM_CALL_SQL),
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
    # The LLM usage dashboard's: typed, the estimated cost, derived.
    *((c.name, c.arrow, c.ddl) for c in _TYPED_LLM),
    ESTIMATED_COST,
    *((c.name, c.arrow, c.ddl) for c in DERIVED_COLUMNS),
]
_ADDED = {n for n, _, _ in ADDED_COLUMNS}
_TYPED_OR_DERIVED = {c.name for c in TYPED_COLUMNS} | {c.name for c in DERIVED_COLUMNS}

# A decoded batch: otel_traces' columns, then the typed ones, the look-up key, the added ones
# that are neither typed nor derived (ScopeAttributes, EstimatedCostUsd). The derived ones are
# computed as it is inserted.
SPAN_SCHEMA = pa.schema(
    [pa.field(n, t) for n, t, _ in OTEL_COLUMNS]
    + [pa.field(c.name, c.arrow) for c in TYPED_COLUMNS]
    + [pa.field(n, t) for n, t, _ in LOOKUP_COLUMNS]
    + [pa.field(n, t) for n, t, _ in ADDED_COLUMNS if n not in _TYPED_OR_DERIVED]
)
COLUMN_NAMES = SPAN_SCHEMA.names

# The attribute sets as the ClickHouse exporter's Map(LowCardinality(String), String) columns hold
# them: each key to its value's string form (attributes.value_str, the collector's AsString),
# every pair in order, repeated keys included; and, in MAP_TYPES, what it takes to read them back
# as sent: a letter a pair, in the map's order (TYPE_LETTERS), an array's or a key-value list's
# letter followed by its value as stored (attributes.value_json). A decoded batch has both after
# SPAN_SCHEMA's columns when its store writes them (Decoder(maps=True)); DuckDB keeps the JSON.
STRING_MAP = pa.map_(pa.string(), pa.string())
STRING_MAPS = pa.schema(
    [
        ("ResourceAttributesMap", STRING_MAP),
        ("ScopeAttributesMap", STRING_MAP),
        ("SpanAttributesMap", STRING_MAP),
        ("EventsAttributesMap", pa.list_(STRING_MAP)),
        ("LinksAttributesMap", pa.list_(STRING_MAP)),
    ]
)
MAP_TYPES = pa.schema(
    [
        ("ResourceAttributesTypes", pa.string()),
        ("ScopeAttributesTypes", pa.string()),
        ("SpanAttributesTypes", pa.string()),
        ("EventsAttributesTypes", pa.list_(pa.string())),
        ("LinksAttributesTypes", pa.list_(pa.string())),
    ]
)
# By AnyValue oneof: (empty), string, bool, int, double, array, kvlist, bytes. A value cut to
# max_attribute_value_bytes is a string.
TYPE_LETTERS = "esbidamy"

SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")


def trace_key(trace_id: str) -> int:
    """The TraceKey of a 32-digit hex trace id (the native decoder writes it from the id's bytes)."""
    return int(trace_id[16:], 16)


def duckdb_ddl(table: str = "otel_traces") -> str:
    cols = [f'"{n}" {d}' for n, _, d in OTEL_COLUMNS]
    cols += [f'"{c.name}" {c.ddl}' for c in TYPED_COLUMNS if c.name not in _ADDED]
    cols += [f'"{n}" {d}' for n, _, d in LOOKUP_COLUMNS]
    cols.append('"IngestedAt" TIMESTAMP NOT NULL')
    cols += [f'"{n}" {d}' for n, _, d in ADDED_COLUMNS]
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  " + ",\n  ".join(cols) + "\n)"
