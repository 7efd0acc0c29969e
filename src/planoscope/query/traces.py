"""The trace explorer's queries: find traces (``search``) and fetch one (``get_trace``), in the
OTLP/JSON shape other tools read (``otlp.to_otlp_json``).

A search follows Jaeger's semantics: a trace matches when **one of its spans** matches every
span filter given (service, span name, model, agent, status, duration, attributes) and started
in the searched range. Each result summarises the whole trace from its spans that started within
``TRACE_MARGIN_S`` of its earliest matching span.

A span failed as Plano means it (``schema.FAILURE_MACRO``: an HTTP status >= 400, an LLM call
that failed before dispatch, or status ERROR), with a class; ``errors_only`` and ``failures``
search on that, and the summaries count failed spans by it.

Plano exports children first (a span when it ends, batched every ~5 s), so the newest traces
have no root yet: a trace is *in flight* while no root span of it is stored and its newest span
arrived less than ``IN_FLIGHT_S`` ago. A search leaves such traces out unless asked
(``in_flight``), and says how many it left out.

What is asked is written once, here: the parameters and their checks (``TraceSearch``), the
rules (a summary's margin, the in-flight rule's window) and the answers' shape. How a store
finds it is its ``TraceReads``: SQL over DuckDB (``traces_duckdb.py``) or over the collector
exporter's ClickHouse tables (``traces_clickhouse.py``), picked by the store's ``dialect``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from ..store import SpanStore
from ..store.schema import FAILURE_CLASSES
from .otlp import to_otlp_json
from .params import QueryError, check_bounds
from .traces_clickhouse import ClickHouseTraces
from .traces_duckdb import DuckDBTraces

TRACE_MARGIN_S = 600  # spans of a matched trace up to 10 min outside the range count in its summary
MAX_LIMIT = 500
# Paging deeper than this is not browsing; beyond int64 it was a 500 from DuckDB.
MAX_OFFSET = 1_000_000_000
# Each attribute filter is a JSON look-up per span scanned: 2,000 of them took ~5 s a query and,
# looped by four clients, cut ingest by 45 %.
MAX_ATTR_FILTERS = 20
# Durations are int64 nanoseconds: a bound above this cannot be compared with any span.
MAX_DURATION_MS = (2**63 - 1) / 1e6
SORTS = ("start", "duration")
COST_SOURCES = ("sent", "estimated")  # the cost filter: the calls with a cost the sender sent, or an estimated one
# The LLM Usage panels' drill-downs: each filter is a typed column equal to the value.
LLM_FILTERS = {
    "provider": "LlmProvider",
    "route": "RouteName",
    "session": "SessionId",
    "quality": "SignalsQuality",
    "requested_model": "RequestedModel",
    "resolved_model": "ResolvedModel",
}
# Plano's exporters flush every ~5 s, and a root ends (so is exported) soon after its last child:
# a root not there 30 s after the newest span of its trace arrived is not on its way (a direct
# LLM call whose parent is the client's own span, or a lost export). A trace is in flight until then.
IN_FLIGHT_S = 30.0

_HEX_ID = re.compile(r"[0-9a-fA-F]{32}")
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h)?\s*")
_DURATION_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3, None: 1.0}


def parse_trace_id(text: str) -> str:
    """A trace id as stored: 32 lowercase hex digits, not all zero (OTLP's invalid id)."""
    if not _HEX_ID.fullmatch(text or ""):
        raise QueryError(f"trace id {text!r} is not 32 hex digits")
    if set(text) == {"0"}:
        raise QueryError("the all-zero trace id is invalid (OTLP)")
    return text.lower()


def parse_duration_ms(text: str, what: str = "duration") -> float:
    """``"250ms"``, ``"1.5s"``, ``"2m"``, ``"300us"``; a bare number is milliseconds."""
    m = _DURATION.fullmatch(text or "")
    if not m:
        raise QueryError(f"{what} {text[:40]!r} is not a duration such as 250ms, 1.5s or 2m")
    return float(m.group(1)) * _DURATION_MS[m.group(2)]  # inf from 400 digits: TraceSearch.check refuses it


def parse_attribute(text: str) -> tuple[str, str | None]:
    """``key=value`` (the attribute has this value) or ``key`` (the attribute is present). Any
    key can be looked up, quotes, backslashes and dots included (see ``schema.ATTR_MACRO``)."""
    key, eq, value = (text or "").partition("=")
    key = key.strip()
    if not key:
        raise QueryError(f"attr filter {text[:40]!r} has no key: write key=value or key")
    return key, (value if eq else None)


@dataclass
class TraceSearch:
    """What to find; every field but the range is optional. Durations are in ms."""

    start: float
    end: float
    service: str | None = None
    name: str | None = None
    model: str | None = None
    agent: str | None = None
    errors_only: bool = False  # spans that failed, whatever the class
    failures: list[str] = field(default_factory=list)  # spans that failed with one of these classes
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    trace_id: str | None = None
    llm_only: bool = False  # spans that are LLM calls (schema.LLM_CALL)
    llm: dict[str, str] = field(default_factory=dict)  # LLM_FILTERS: {"route": "code_generation", ...}
    cost: str | None = None  # COST_SOURCES
    flagged: bool = False  # plano(llm) spans Plano flagged (a span name ending in 🚩)
    sort: str = "start"
    descending: bool = True
    limit: int = 20
    offset: int = 0
    in_flight: bool = False  # include the traces whose root has not arrived yet (see IN_FLIGHT_S)

    def check(self) -> None:
        check_bounds(self.start, self.end)
        if self.sort not in SORTS:
            raise QueryError(f"sort must be one of {', '.join(SORTS)}, not {self.sort!r}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise QueryError(f"offset must be between 0 and {MAX_OFFSET}")
        if len(self.attributes) > MAX_ATTR_FILTERS:
            raise QueryError(f"at most {MAX_ATTR_FILTERS} attr filters, got {len(self.attributes)}")
        for what, ms in (("min_duration", self.min_duration_ms), ("max_duration", self.max_duration_ms)):
            if ms is not None and not 0 <= ms <= MAX_DURATION_MS:
                raise QueryError(f"{what} must be at most {MAX_DURATION_MS / 3_600_000:.0f}h (int64 nanoseconds)")
        lo, hi = self.min_duration_ms, self.max_duration_ms
        if lo is not None and hi is not None and hi < lo:
            raise QueryError(f"max duration ({hi} ms) is below min duration ({lo} ms)")
        if self.trace_id is not None:
            self.trace_id = parse_trace_id(self.trace_id)
        for name in self.llm:
            if name not in LLM_FILTERS:
                raise QueryError(f"no LLM filter {name[:40]!r}: one of {', '.join(LLM_FILTERS)}")
        if self.cost is not None and self.cost not in COST_SOURCES:
            raise QueryError(f"cost must be one of {', '.join(COST_SOURCES)}, not {self.cost[:40]!r}")
        for f in self.failures:
            if f not in FAILURE_CLASSES:
                raise QueryError(f"failure {f[:40]!r} is not a failure class: one of {', '.join(FAILURE_CLASSES)}")

    def equal_columns(self) -> list[tuple[str, str]]:
        """The filters that are a column equal to a value: ``(column, value)``, columns of both stores."""
        pairs = [
            ("ServiceName", self.service),
            ("SpanName", self.name),
            ("LlmModel", self.model),
            ("AgentId", self.agent),
            *((LLM_FILTERS[name], value) for name, value in self.llm.items()),
        ]
        return [(column, value) for column, value in pairs if value is not None]

    @property
    def min_duration_ns(self) -> int | None:
        return None if self.min_duration_ms is None else _ns(self.min_duration_ms)

    @property
    def max_duration_ns(self) -> int | None:
        return None if self.max_duration_ms is None else _ns(self.max_duration_ms)


def _ns(ms: float) -> int:
    return min(round(ms * 1e6), 2**63 - 1)  # MAX_DURATION_MS in float rounds up to 2**63


class TraceReads(Protocol):
    """What the trace explorer asks a store (``traces_duckdb.DuckDBTraces``,
    ``traces_clickhouse.ClickHouseTraces``). Rows are tuples, in the orders said."""

    def rank(self, q: TraceSearch, in_flight_s: float, margin_s: int) -> list[tuple]:
        """The traces with a span that matches ``q`` (checked), ranked and paged as ``search``
        says: ``(total, in flight, trace id, trace key, first matching start in ns, whether it
        is in flight)`` per trace of the page, the totals in each row; one row with the totals and None for a
        page with no trace. A trace is in flight when it has a span that arrived less than
        ``in_flight_s`` ago and no root span stored from ``margin_s`` before the first start of
        such traces."""

    def summaries(self, ids: list[str], after_ns: int, until_ns: int) -> list[tuple]:
        """Per trace of ``ids``, its spans that started in (``after_ns``, ``until_ns``] summed
        up: the trace id, then ``_RESULT_FIELDS`` after it, in any order of traces."""

    def facets(self, start: float, end: float, limit: int) -> list[tuple]:
        """``(facet index in FACETS, value, spans)``: each facet's ``limit`` most frequent values
        among the spans that started in (start, end] (ties by value), in any order."""

    def spans(self, trace_id: str) -> list[tuple]:
        """The spans of the trace as ``otlp.SPAN_SELECT`` rows, by start then span id; [] when none."""

    def failed(self, trace_id: str) -> list[tuple]:
        """``(span id, failure class or None, HTTP status, status code, status message)`` of every
        span of the trace, by start then span id; [] when none."""


_READS: dict[str, type] = {"duckdb": DuckDBTraces, "clickhouse": ClickHouseTraces}


def reads(store: SpanStore) -> TraceReads:
    """The trace explorer's SQL for ``store``, by its ``dialect``."""
    return _READS[store.dialect](store)


_RESULT_FIELDS = (
    "trace_id",
    "start_ns",
    "duration_ns",
    "span_count",
    "error_count",
    *(f"failures.{c}" for c in FAILURE_CLASSES),
    "root_service",
    "root_name",
    "has_root",
    "listener",
    "agents",
    "services",
    "models",
    "tokens",
    "cost_usd",
)


def search(store: SpanStore, q: TraceSearch) -> dict:
    """``{"traces": [summary, ...], "total": matching traces, "in_flight": matching traces in
    flight, "limit", "offset"}``.

    ``sort="start"`` orders traces by their earliest matching span (newest first unless
    ``q.descending`` is false), ``sort="duration"`` by their longest matching span: with a
    filter such as ``service=plano(llm)`` the slowest LLM calls, without one the longest roots.
    The traces in flight count in ``in_flight``; they are in ``traces`` and ``total`` only
    with ``q.in_flight``."""
    q.check()
    sql = reads(store)
    ranked = sql.rank(q, IN_FLIGHT_S, TRACE_MARGIN_S)
    total, in_flight = ranked[0][:2]
    if ranked[0][2] is None:  # no trace on this page
        return {"traces": [], "total": total, "in_flight": in_flight, "limit": q.limit, "offset": q.offset}
    ids, first = [r[2] for r in ranked], [r[4] for r in ranked]
    flying_ids = {r[2] for r in ranked if r[5]}
    margin_ns = TRACE_MARGIN_S * 10**9
    rows = sql.summaries(ids, _us(min(first) - margin_ns), _us(max(first) + margin_ns))
    position = {trace_id: i for i, trace_id in enumerate(ids)}
    rows.sort(key=lambda r: position[r[0]])
    traces = []
    for values in rows:
        t = dict(zip(_RESULT_FIELDS, values))
        t["failures"] = {c: t.pop(f"failures.{c}") for c in FAILURE_CLASSES}
        t["start"] = t.pop("start_ns") / 1e9
        t["duration_ms"] = t.pop("duration_ns") / 1e6
        t["in_flight"] = t["trace_id"] in flying_ids
        if t["cost_usd"] is not None:
            t["cost_usd"] = round(t["cost_usd"], 10)
        traces.append(t)
    return {"traces": traces, "total": total, "in_flight": in_flight, "limit": q.limit, "offset": q.offset}


def _us(ns: int) -> int:
    """Down to the microsecond, as the stores' range bounds are (params.unix_ns)."""
    return ns // 1000 * 1000


# The search filters whose values the form's pickers list, in the order of the stores' facet indexes.
FACETS = ("service", "name", "model", "agent", "failure")
MAX_FACET_VALUES = 200


def facets(store: SpanStore, start: float, end: float) -> dict[str, list[dict]]:
    """``{filter: [{"value", "spans"}, ...]}``: the values of each search filter in the range,
    most frequent first (at most ``MAX_FACET_VALUES`` each); ``failure``: the failed spans per class."""
    rows = reads(store).facets(start, end, MAX_FACET_VALUES)
    out: dict[str, list[dict]] = {name: [] for name in FACETS}
    for f, v, n in sorted(rows, key=lambda r: (r[0], -r[2], r[1])):
        out[FACETS[f]].append({"value": v, "spans": n})
    return out


# --- why a trace's spans failed ---------------------------------------------------------------

_HTTP_REASONS = {"429": "rate limited", "4xx": "client error", "5xx": "server error"}


def failure_reason(failure: str, http_status_code: int | None, status_code: str, status_message: str) -> str:
    """Why a span of class ``failure`` failed, for a person: ``HTTP 429 (rate limited)``,
    ``failed before dispatch (no model)``, ``status ERROR: upstream timeout``."""
    error = f"status ERROR: {status_message}" if status_message else "status ERROR"
    if failure in _HTTP_REASONS:
        http = f"HTTP {http_status_code} ({_HTTP_REASONS[failure]})"
        return f"{http}; {error}" if status_code == "Error" else http
    if failure == "before_dispatch":
        return "failed before dispatch (no model)"
    return error


def trace_failures(store: SpanStore, trace_id: str) -> dict[str, dict] | None:
    """``{span_id: {"class", "http_status_code", "reason"}}`` for the failed spans of trace
    ``trace_id`` (none: {}), or None when no span of it is stored. What the trace view marks."""
    rows = reads(store).failed(parse_trace_id(trace_id))
    if not rows:
        return None
    return {
        span_id: {"class": failure, "http_status_code": http, "reason": failure_reason(failure, http, status, message)}
        for span_id, failure, http, status, message in rows
        if failure is not None
    }


# --- one trace ------------------------------------------------------------------------------


def get_trace(store: SpanStore, trace_id: str) -> dict | None:
    """Trace ``trace_id`` in the OTLP/JSON shape, or None when no span of it is stored."""
    rows = reads(store).spans(parse_trace_id(trace_id))
    return to_otlp_json(rows) if rows else None
