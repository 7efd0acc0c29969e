"""OTLP ingest end to end: the OpenTelemetry SDK's own OTLP exporters (gRPC and HTTP, plain and
gzip) send Plano-shaped spans to a real ``planoscope serve``; once it has stopped, every field of
every stored span is checked against what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from conftest import (
    COMPUTED_COLUMNS,
    SPAN_COLUMNS,
    TABLE_COLUMNS,
    TYPED_COLUMNS,
    _wait,
    now_base_ns,
    read_spans,
    spans_by_id,
    table_columns,
    typed,
)

MS = 1_000_000
S = 1_000_000_000

# --------------------------------------------------------------------------------------------
# What is sent, and what must be stored. Attribute triples are (key, value sent, its string form:
# the collector's AsString(), what the typed columns and span-metric labels are made of); the
# value is stored in its type.
# --------------------------------------------------------------------------------------------

RESOURCES: dict[str, list[tuple[str, Any, str]]] = {
    "orchestrator": [
        ("service.name", "plano(orchestrator)", "plano(orchestrator)"),
        ("service.version", "0.4.2", "0.4.2"),
        ("deployment.environment", "test", "test"),
        ("host.cpu.count", 8, "8"),
        ("plano.node.warm", True, "true"),
        ("process.runtime.weights", [0.5, 0.25], "[0.5,0.25]"),
    ],
    "agent": [("service.name", "plano(agent)", "plano(agent)")],
    "llm": [
        ("service.name", "plano(llm)", "plano(llm)"),
        ("cloud.region", "eu-west-1", "eu-west-1"),
    ],
    "routing": [("service.name", "plano(routing)", "plano(routing)")],
    "genai": [
        ("service.name", "support-bot", "support-bot"),
        ("telemetry.sdk.language", "python", "python"),
    ],
}


@dataclass
class SpanSpec:
    key: str
    resource: str
    scope: tuple[str, str | None]
    name: str
    kind: SpanKind
    start: int  # offset from the base time, ns
    duration: int  # ns
    parent: str | None = None  # key of a span sent before, or "remote"
    attrs: list[tuple[str, Any, str]] = field(default_factory=list)
    events: list[tuple[str, int, list[tuple[str, Any, str]]]] = field(default_factory=list)
    links: list[tuple[str, str, list[tuple[str, str]], list[tuple[str, Any, str]]]] = field(default_factory=list)
    status: tuple[StatusCode, str | None] = (StatusCode.UNSET, None)
    stored_status: tuple[str, str] = ("Unset", "")
    typed: dict[str, Any] = field(default_factory=dict)


REMOTE_PARENT_SPAN = "fedcba9876543210"
REMOTE_TRACE_STATE = [("plano", "abc"), ("vendor", "x1")]
LINKED_TRACE = "abcdef0123456789abcdef0123456789"
LINKED_SPAN = "0123456789abcdef"

SPECS: list[SpanSpec] = [
    SpanSpec(
        "orchestrator",
        "orchestrator",
        ("brightstaff", "0.4.2"),
        "POST /v1/chat/completions",
        SpanKind.SERVER,
        start=0,
        duration=1500 * MS,
        attrs=[
            ("selection.listener", "travel_listener", "travel_listener"),
            ("selection.agent_count", 2, "2"),
            ("selection.agents", "flights,hotels", "flights,hotels"),
            ("selection.determination_ms", 12.5, "12.5"),
            ("http.method", "POST", "POST"),
            ("http.status_code", 200, "200"),
            ("http.path", "/v1/chat/completions", "/v1/chat/completions"),
            ("plano.session_id", "sess-9f2c", "sess-9f2c"),
        ],
        events=[
            (
                "selection.done",
                12_500_000 + 3,
                [
                    ("selection.agents", "flights,hotels", "flights,hotels"),
                    ("score", 0.75, "0.75"),
                ],
            )
        ],
        status=(StatusCode.OK, None),
        stored_status=("Ok", ""),
        typed={
            "SelectionListener": "travel_listener",
            "HttpMethod": "POST",
            "HttpStatusCode": 200,
            "SessionId": "sess-9f2c",
        },
    ),
    SpanSpec(
        "agent",
        "agent",
        ("brightstaff", "0.4.2"),
        "flights /v1/chat/completions",
        SpanKind.INTERNAL,
        start=20 * MS,
        duration=1400 * MS,
        parent="orchestrator",
        attrs=[("agent_id", "flights", "flights"), ("message_count", 3, "3")],
        typed={"AgentId": "flights"},
    ),
    SpanSpec(
        "llm_ok",
        "llm",
        ("brightstaff", "0.4.2"),
        "POST /v1/chat/completions gpt-4o",
        SpanKind.CLIENT,
        start=30 * MS + 7,
        duration=1_234_567_891,
        parent="agent",
        attrs=[
            ("llm.model", "gpt-4o", "gpt-4o"),
            ("llm.provider", "openai", "openai"),
            ("llm.operation_type", "chat", "chat"),
            ("llm.is_streaming", True, "true"),
            ("llm.response_bytes", 20480, "20480"),
            ("llm.duration_ms", 1234, "1234"),
            ("llm.time_to_first_token", 231.5, "231.5"),
            ("llm.usage.prompt_tokens", 1200, "1200"),
            ("llm.usage.completion_tokens", 345, "345"),
            ("llm.usage.total_tokens", 1545, "1545"),
            ("llm.usage.cached_input_tokens", 0, "0"),
            ("llm.usage.input_cost_usd", 0.006, "0.006"),
            ("llm.usage.output_cost_usd", 0.0063, "0.0063"),
            ("llm.usage.total_cost_usd", 0.0123, "0.0123"),
            ("llm.temperature", 2.0, "2"),
            ("llm.top_p", 0.95, "0.95"),
            ("llm.max_tokens", 4096, "4096"),
            ("llm.tools", ["get_weather", "book_flight"], '["get_weather","book_flight"]'),
            ("llm.user_message_preview", "Book me a flight to Zürich ✈", "Book me a flight to Zürich ✈"),
            ("http.method", "POST", "POST"),
            ("http.status_code", 200, "200"),
            ("http.upstream_target", "api.openai.com:443", "api.openai.com:443"),
            ("test.int_array", [1, 2, -3], "[1,2,-3]"),
            ("test.bool_array", [True, False], "[true,false]"),
            ("test.double_array", [1.5, 0.25], "[1.5,0.25]"),
            ("test.mixed_array", [7, "x"], '[7,"x"]'),
            ("test.map", {"a": 1, "b": "x"}, '{"a":1,"b":"x"}'),
            ("test.bytes", b"\x00\x01\xfe", "AAH+"),
            ("test.big_int", 2**53 + 1, "9007199254740993"),
            ("test.negative", -42, "-42"),
            ("test.empty", "", ""),
        ],
        events=[
            (
                "llm.first_token",
                30 * MS + 7 + 231_500_000,
                [
                    ("llm.time_to_first_token", 231.5, "231.5"),
                    ("bytes", 512, "512"),
                    ("final", False, "false"),
                ],
            ),
            ("llm.done", 30 * MS + 7 + 1_234_567_891, []),
        ],
        links=[
            (
                LINKED_TRACE,
                LINKED_SPAN,
                [("vendor", "v1"), ("plano", "p2")],
                [
                    ("link.reason", "retry_of", "retry_of"),
                    ("attempt", 2, "2"),
                ],
            )
        ],
        status=(StatusCode.OK, None),
        stored_status=("Ok", ""),
        typed={
            "LlmModel": "gpt-4o",
            "LlmProvider": "openai",
            "HttpMethod": "POST",
            "HttpStatusCode": 200,
            "IsStreaming": True,
            "TimeToFirstTokenMs": 231.5,
            "PromptTokens": 1200,
            "CompletionTokens": 345,
            "TotalTokens": 1545,
            "CostUsd": 0.0123,
            "CachedInputTokens": 0,
            "InputCostUsd": 0.006,
            "OutputCostUsd": 0.0063,
        },
    ),
    SpanSpec(
        "llm_error",
        "llm",
        ("brightstaff", "0.4.2"),
        "POST /v1/chat/completions claude-3-5-sonnet",
        SpanKind.CLIENT,
        start=40 * MS,
        duration=95 * MS,
        parent="agent",
        attrs=[
            ("llm.model", "claude-3-5-sonnet", "claude-3-5-sonnet"),
            ("llm.provider", "anthropic", "anthropic"),
            ("llm.is_streaming", False, "false"),
            ("http.status_code", 429, "429"),
            ("error", True, "true"),
            ("error.type", "rate_limited", "rate_limited"),
            ("error.message", "too many requests", "too many requests"),
        ],
        events=[
            (
                "exception",
                40 * MS + 90 * MS,
                [
                    ("exception.type", "RateLimited", "RateLimited"),
                    ("exception.message", "429 Too Many Requests", "429 Too Many Requests"),
                ],
            )
        ],
        status=(StatusCode.ERROR, "upstream returned 429: rate limited"),
        stored_status=("Error", "upstream returned 429: rate limited"),
        typed={
            "LlmModel": "claude-3-5-sonnet",
            "LlmProvider": "anthropic",
            "HttpStatusCode": 429,
            "IsStreaming": False,
            "FailureClass": "429",
        },
    ),
    SpanSpec(
        "routing",
        "routing",
        ("brightstaff", None),
        "POST /v1/chat/completions",
        SpanKind.PRODUCER,
        start=25 * MS,
        duration=3 * MS + 1,
        parent="orchestrator",
        attrs=[
            ("routing.strategy", "preference", "preference"),
            ("routing.upstream_endpoint", "http://127.0.0.1:12000", "http://127.0.0.1:12000"),
            ("routing.determination_ms", 3, "3"),
            ("routing.is_fallback", False, "false"),
            ("plano.route.name", "code_generation", "code_generation"),
        ],
        typed={"RouteName": "code_generation"},
    ),
    SpanSpec(
        "genai",
        "genai",
        ("opentelemetry.instrumentation.openai", "0.30.0"),
        "chat gpt-4o-mini",
        SpanKind.CLIENT,
        start=2 * S,
        duration=800 * MS,
        parent="remote",
        attrs=[
            ("gen_ai.system", "openai", "openai"),
            ("gen_ai.request.model", "gpt-4o-mini", "gpt-4o-mini"),
            ("gen_ai.usage.input_tokens", 77, "77"),
            ("gen_ai.usage.output_tokens", 12, "12"),
            ("http.request.method", "POST", "POST"),
            ("http.response.status_code", 201, "201"),
        ],
        status=(StatusCode.ERROR, ""),
        stored_status=("Error", ""),
        typed={
            "LlmModel": "gpt-4o-mini",
            "LlmProvider": "openai",
            "PromptTokens": 77,
            "CompletionTokens": 12,
            "HttpMethod": "POST",
            "HttpStatusCode": 201,
            "FailureClass": "error_status",
            "EstimatedCostUsd": (77 * 0.15 + 12 * 0.6) / 1e6,  # gpt-4o-mini by genai-prices; no cost was sent
        },
    ),
    SpanSpec(
        # Both naming conventions on one span: Plano's own names win whatever their order;
        # typed columns also accept values that arrive as strings.
        "mixed",
        "genai",
        ("opentelemetry.instrumentation.openai", "0.30.0"),
        "chat mixed",
        SpanKind.CONSUMER,
        start=2 * S + 1,
        duration=0,
        parent="genai",
        attrs=[
            ("gen_ai.request.model", "genai-model", "genai-model"),
            ("llm.model", "plano-model", "plano-model"),
            ("gen_ai.usage.input_tokens", 5, "5"),
            ("llm.usage.prompt_tokens", 6, "6"),
            ("llm.is_streaming", "true", "true"),
            ("http.status_code", "503", "503"),
            ("llm.usage.total_cost_usd", "0.5", "0.5"),
        ],
        typed={
            "LlmModel": "plano-model",
            "PromptTokens": 6,
            "IsStreaming": True,
            "HttpStatusCode": 503,
            "CostUsd": 0.5,
            "FailureClass": "5xx",
        },
    ),
]

KIND_NAMES = {
    SpanKind.INTERNAL: "Internal",
    SpanKind.SERVER: "Server",
    SpanKind.CLIENT: "Client",
    SpanKind.PRODUCER: "Producer",
    SpanKind.CONSUMER: "Consumer",
}

TRANSPORTS = ["grpc", "http", "grpc-gzip", "http-gzip"]


def trace_ids(variant: int) -> tuple[str, str]:
    """Two trace ids per transport; the second has leading zero bytes."""
    return f"{variant:02x}" + "a5" * 14 + "01", "0" * 30 + f"{variant:02x}"


def span_id(variant: int, i: int) -> str:
    return f"{variant:04x}{i + 1:012x}"  # leading zero bytes on purpose


# --------------------------------------------------------------------------------------------
# Sending through the SDK
# --------------------------------------------------------------------------------------------


class ScriptedIds(IdGenerator):
    """Ids chosen by the test, so the stored hex can be checked against literal values."""

    def __init__(self):
        self.next_trace = 0
        self.next_span = 0

    def generate_trace_id(self) -> int:
        return self.next_trace

    def generate_span_id(self) -> int:
        return self.next_span


def _sdk_attrs(triples):
    return {k: v for k, v, _ in triples}


def _stored_attrs(triples):
    return {k: v for k, v, _ in triples}


def emit(variant: int, base: int, exporter_processor) -> dict[str, dict]:
    """Create SPECS through the SDK (one TracerProvider per resource); return expected rows."""
    ids = ScriptedIds()
    collected = InMemorySpanExporter()
    providers: dict[str, TracerProvider] = {}
    for name, attrs in RESOURCES.items():
        tp = TracerProvider(resource=Resource(_sdk_attrs(attrs)), id_generator=ids, shutdown_on_exit=False)
        tp.add_span_processor(SimpleSpanProcessor(collected))
        if exporter_processor is not None:
            tp.add_span_processor(exporter_processor)
        providers[name] = tp
    t1, t2 = trace_ids(variant)
    sdk_spans: dict[str, trace.Span] = {}
    expected: dict[str, dict] = {}
    for i, spec in enumerate(SPECS):
        sid = span_id(variant, i)
        ids.next_span = int(sid, 16)
        if spec.parent is None:
            ctx, tid, parent_hex, tstate = None, t1, "", ""
            ids.next_trace = int(t1, 16)
        elif spec.parent == "remote":
            remote = SpanContext(
                int(t2, 16),
                int(REMOTE_PARENT_SPAN, 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
                trace_state=TraceState(REMOTE_TRACE_STATE),
            )
            ctx = trace.set_span_in_context(NonRecordingSpan(remote))
            tid, parent_hex, tstate = t2, REMOTE_PARENT_SPAN, "plano=abc,vendor=x1"
        else:
            parent = sdk_spans[spec.parent]
            ctx = trace.set_span_in_context(parent)
            pctx = parent.get_span_context()
            tid = f"{pctx.trace_id:032x}"
            parent_hex = f"{pctx.span_id:016x}"
            tstate = expected[spec.parent]["TraceState"]
        links = [
            Link(
                SpanContext(
                    int(lt, 16), int(ls, 16), is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState(lstate)
                ),
                attributes=_sdk_attrs(lattrs),
            )
            for lt, ls, lstate, lattrs in spec.links
        ]
        tracer = providers[spec.resource].get_tracer(spec.scope[0], spec.scope[1])
        span = tracer.start_span(
            spec.name,
            context=ctx,
            kind=spec.kind,
            attributes=_sdk_attrs(spec.attrs),
            links=links,
            start_time=base + spec.start,
        )
        for ename, ets, eattrs in spec.events:
            span.add_event(ename, attributes=_sdk_attrs(eattrs), timestamp=base + ets)
        code, description = spec.status
        if code != StatusCode.UNSET:
            span.set_status(Status(code, description))
        sdk_spans[spec.key] = span
        expected[spec.key] = {
            "Timestamp": base + spec.start,
            "TraceId": tid,
            "SpanId": sid,
            "ParentSpanId": parent_hex,
            "TraceState": tstate,
            "SpanName": spec.name,
            "SpanKind": KIND_NAMES[spec.kind],
            "ServiceName": dict((k, s) for k, _, s in RESOURCES[spec.resource])["service.name"],
            "ResourceAttributes": _stored_attrs(RESOURCES[spec.resource]),
            "ScopeName": spec.scope[0],
            "ScopeVersion": spec.scope[1] or "",
            "SpanAttributes": _stored_attrs(spec.attrs),
            "Duration": spec.duration,
            "StatusCode": spec.stored_status[0],
            "StatusMessage": spec.stored_status[1],
            "Events": [
                {"Timestamp": base + ets, "Name": en, "Attributes": _stored_attrs(ea)} for en, ets, ea in spec.events
            ],
            # The SDK's OTLP encoder does not send a link's trace state (test_otlp_json covers it).
            "Links": [
                {"TraceId": lt, "SpanId": ls, "TraceState": "", "Attributes": _stored_attrs(la)}
                for lt, ls, lstate, la in spec.links
            ],
            **{c: spec.typed.get(c) for c in TYPED_COLUMNS},
            **{c: spec.typed.get(c, _computed(spec).get(c)) for c in COMPUTED_COLUMNS},
        }
    # End children before parents, as a real request does.
    for spec in reversed(SPECS):
        sdk_spans[spec.key].end(end_time=base + spec.start + spec.duration)
    assert len(collected.get_finished_spans()) == len(SPECS)
    expected["__finished__"] = collected.get_finished_spans()
    for tp in providers.values():
        tp.shutdown()
    return expected


# An LLM call: a plano(llm) span, or one with a model or a token count.
_MODEL_OR_TOKENS = ("LlmModel", "PromptTokens", "CompletionTokens", "TotalTokens", "CachedInputTokens")
_MODEL_OR_TOKENS += ("CacheCreationTokens", "ReasoningTokens")


def _computed(spec: SpanSpec) -> dict[str, Any]:
    """The computed columns a span without a ``requested -> resolved`` name gets (the failure
    class is in ``typed`` where the span failed)."""
    service = dict((k, s) for k, _, s in RESOURCES[spec.resource])["service.name"]
    model = spec.typed.get("LlmModel")
    llm = service == "plano(llm)" or any(spec.typed.get(c) is not None for c in _MODEL_OR_TOKENS)
    return {
        "RequestedModel": model,
        "ResolvedModel": model,
        "Flagged": False if service == "plano(llm)" else None,
        "LlmCall": llm,
    }


def send(transport: str, srv, variant: int, base: int) -> dict[str, dict]:
    if transport == "http":
        # One export request per span, as the SDK's SimpleSpanProcessor makes them.
        exporter = HttpSpanExporter(endpoint=srv.http_traces_url, timeout=30)
        processor = SimpleSpanProcessor(exporter)
        expected = emit(variant, base, processor)  # shutting the providers down shuts it down
        expected.pop("__finished__")
        return expected
    # The other transports export every span of the variant in one request (several resources).
    if transport.startswith("grpc"):
        compression = grpc.Compression.Gzip if transport.endswith("gzip") else None
        exporter = GrpcSpanExporter(endpoint=srv.grpc_target, insecure=True, timeout=30, compression=compression)
    else:
        exporter = HttpSpanExporter(endpoint=srv.http_traces_url, timeout=30, compression=HttpCompression.Gzip)
    expected = emit(variant, base, None)
    try:
        result = exporter.export(expected.pop("__finished__"))
    finally:
        exporter.shutdown()
    assert result == SpanExportResult.SUCCESS, f"{transport} export failed: {result}"
    return expected


@pytest.fixture(scope="module")
def ingested(module_server_factory, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ingest") / "data"
    srv = module_server_factory(data_dir)
    base = now_base_ns()
    before = datetime.now(UTC).replace(tzinfo=None)
    expected: dict[str, dict[str, dict]] = {}
    for variant, transport in enumerate(TRANSPORTS, start=1):
        expected[transport] = send(transport, srv, variant, base)
    # An export is acknowledged once journaled; the store's write follows within moments.
    sent = sum(len(exp) for exp in expected.values())
    health = _wait(lambda: (h := srv.healthz())["spans_written"] >= sent and h, 30, f"{sent} spans written")
    after = datetime.now(UTC).replace(tzinfo=None)
    srv.stop()
    rows = read_spans(data_dir)
    return {
        "expected": expected,
        "rows": rows,
        "before": before,
        "after": after,
        "health": health,
        "data_dir": data_dir,
    }


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


def test_table_has_the_clickhouse_exporter_columns_then_typed_columns(ingested):
    assert table_columns(ingested["data_dir"]) == TABLE_COLUMNS


def test_every_span_is_stored_exactly_once(ingested):
    stored = spans_by_id(ingested["rows"])  # fails on a duplicate SpanId
    sent = {row["SpanId"] for exp in ingested["expected"].values() for row in exp.values()}
    assert len(sent) == len(TRANSPORTS) * len(SPECS)
    assert set(stored) == sent
    assert ingested["health"]["spans_written"] == len(sent)


def test_trace_key_is_the_last_8_bytes_of_the_trace_id(ingested):
    assert ingested["rows"]
    for row in ingested["rows"]:
        assert row["TraceKey"] == int.from_bytes(bytes.fromhex(row["TraceId"])[8:], "big"), row["TraceId"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("key", [s.key for s in SPECS])
def test_every_field_of_every_span(ingested, transport, key):
    want = ingested["expected"][transport][key]
    assert set(want) == set(SPAN_COLUMNS)
    got = spans_by_id(ingested["rows"]).get(want["SpanId"])
    assert got is not None, f"span {want['SpanId']} ({transport}, {key}) not stored"
    diff = {c: (got[c], want[c]) for c in SPAN_COLUMNS if typed(got[c]) != typed(want[c])}
    assert not diff, "stored (left) differs from sent (right):\n" + "\n".join(
        f"  {c}: {g!r} != {w!r}" for c, (g, w) in diff.items()
    )


def test_ingested_at_is_the_commit_time(ingested):
    slack = timedelta(seconds=1)
    for row in ingested["rows"]:
        assert ingested["before"] - slack <= row["IngestedAt"] <= ingested["after"] + slack


def _grpc_row(ingested, key):
    want = ingested["expected"]["grpc"][key]
    return spans_by_id(ingested["rows"])[want["SpanId"]]


def test_ids_are_lowercase_zero_padded_hex(ingested):
    root = _grpc_row(ingested, "orchestrator")
    assert root["TraceId"] == "01" + "a5" * 14 + "01"
    assert root["SpanId"] == "0001000000000001"
    assert root["ParentSpanId"] == ""
    child = _grpc_row(ingested, "agent")
    assert child["ParentSpanId"] == "0001000000000001"
    genai = _grpc_row(ingested, "genai")
    assert genai["TraceId"] == "0000000000000000000000000000000" + "1"
    assert genai["ParentSpanId"] == REMOTE_PARENT_SPAN
    assert genai["TraceState"] == "plano=abc,vendor=x1"


def test_attribute_values_keep_their_types(ingested):
    attrs = _grpc_row(ingested, "llm_ok")["SpanAttributes"]
    assert typed(attrs["llm.is_streaming"]) == ("bool", True)
    assert typed(attrs["llm.usage.prompt_tokens"]) == ("int", 1200)
    assert typed(attrs["llm.usage.total_cost_usd"]) == ("float", 0.0123)
    assert typed(attrs["llm.temperature"]) == ("float", 2.0)
    assert typed(attrs["test.int_array"]) == [("int", 1), ("int", 2), ("int", -3)]
    assert typed(attrs["test.bool_array"]) == [("bool", True), ("bool", False)]
    assert attrs["llm.tools"] == ["get_weather", "book_flight"]
    assert attrs["test.bytes"] == b"\x00\x01\xfe"
    assert typed(_grpc_row(ingested, "llm_error")["SpanAttributes"]["llm.is_streaming"]) == ("bool", False)


def test_attr_finds_strings_ints_and_bools_by_their_string_form(ingested):
    """Trace search's ``attr`` look-up (schema.ATTR_MACRO) over the typed JSON gives the string
    form a user types (429, true), as it did when values were stored as strings; a double gives
    DuckDB's shortest form, ``2.0`` for the collector's ``2``."""
    import duckdb

    from conftest import db_path

    spec = next(s for s in SPECS if s.key == "llm_ok")
    con = duckdb.connect(str(db_path(ingested["data_dir"])), read_only=True)
    try:
        for key, value, text in spec.attrs:
            (got,) = con.execute(
                "SELECT attr(SpanAttributes, ?) FROM otel_traces WHERE SpanId = ?",
                [key, _grpc_row(ingested, "llm_ok")["SpanId"]],
            ).fetchone()
            if isinstance(value, (str, int)):  # bools are ints
                assert got == text, key
            elif isinstance(value, float):
                assert float(got) == value, key
    finally:
        con.close()


def test_genai_conventions_fill_the_typed_columns(ingested):
    row = _grpc_row(ingested, "genai")
    assert (row["LlmModel"], row["PromptTokens"], row["CompletionTokens"], row["LlmProvider"]) == (
        "gpt-4o-mini",
        77,
        12,
        "openai",
    )
    assert (row["HttpMethod"], row["HttpStatusCode"]) == ("POST", 201)
    mixed = _grpc_row(ingested, "mixed")
    assert (mixed["LlmModel"], mixed["PromptTokens"]) == ("plano-model", 6)


def test_status_codes_and_messages(ingested):
    got = {
        k: (_grpc_row(ingested, k)["StatusCode"], _grpc_row(ingested, k)["StatusMessage"])
        for k in ("orchestrator", "agent", "llm_error")
    }
    assert got == {
        "orchestrator": ("Ok", ""),
        "agent": ("Unset", ""),
        "llm_error": ("Error", "upstream returned 429: rate limited"),
    }


def test_span_kinds(ingested):
    assert {_grpc_row(ingested, s.key)["SpanKind"] for s in SPECS} == {
        "Server",
        "Client",
        "Internal",
        "Producer",
        "Consumer",
    }


# Arrays and maps, nested, with doubles that are whole numbers inside: stored as JSON arrays and
# objects whose values keep their types.


@pytest.fixture(scope="module")
def json_valued(module_server_factory, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ingest-json") / "data"
    srv = module_server_factory(data_dir)
    tp = TracerProvider(resource=Resource({"service.name": "plano(llm)"}), shutdown_on_exit=False)
    exporter = GrpcSpanExporter(endpoint=srv.grpc_target, insecure=True, timeout=30)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    base = now_base_ns()
    span = tp.get_tracer("t").start_span(
        "json",
        attributes={"d": [1.5, 2.0, -0.125], "m": {"z": 1, "a": "x", "n": {"k": [True, 2.5]}}, "e": []},
        start_time=base,
    )
    span.end(end_time=base + MS)
    tp.shutdown()
    srv.stop()
    rows = read_spans(data_dir)
    assert len(rows) == 1
    return rows[0]["SpanAttributes"]


@pytest.mark.parametrize(
    "key, value",
    [
        ("d", [1.5, 2.0, -0.125]),
        ("m", {"z": 1, "a": "x", "n": {"k": [True, 2.5]}}),
        ("e", []),
    ],
)
def test_arrays_and_maps_keep_their_values_types(json_valued, key, value):
    assert typed(json_valued[key]) == typed(value)
