"""Shared test parts: a real ``planoscope serve`` subprocess, OTLP request builders, raw
transports, a reader of the DuckDB store and a parser of ``/metrics``.

Nothing here is a mock: every test talks to the real console program over real sockets.

Reuse from a test module::

    def test_x(server_factory, tmp_path):
        srv = server_factory(tmp_path / "data", "--metrics-namespace", "x")
        srv.grpc_target, srv.http_traces_url, srv.web_url
        srv.restart()                     # same data dir, same flags
        srv.stop()                        # SIGTERM, asserts exit code 0
        rows = read_spans(srv.data_dir)   # only once stopped (DuckDB is single-process)
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from prometheus_client.parser import text_string_to_metric_families

from support.clickhouse_fixtures import (  # noqa: F401 (fixtures: a real ClickHouse server)
    clickhouse_database,
    clickhouse_server,
    clickhouse_server_factory,
    module_clickhouse_database,
)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60

# The columns of the store's span table: the ClickHouse exporter's otel_traces columns, then
# planoscope's typed columns (from span attributes), then the computed ones (TABLE_COLUMNS: the
# table's order, the columns added since after IngestedAt).
OTEL_COLUMNS = [
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
    "Events",
    "Links",
]
TYPED_COLUMNS = [
    "LlmModel",
    "LlmProvider",
    "AgentId",
    "SelectionListener",
    "HttpMethod",
    "HttpStatusCode",
    "IsStreaming",
    "TimeToFirstTokenMs",
    "PromptTokens",
    "CompletionTokens",
    "TotalTokens",
    "CostUsd",
    "CachedInputTokens",
    "CacheCreationTokens",
    "ReasoningTokens",
    "InputCostUsd",
    "OutputCostUsd",
    "RouteName",
    "SessionId",
    "UserId",
    "SignalsQuality",
]
COMPUTED_COLUMNS = ["EstimatedCostUsd", "RequestedModel", "ResolvedModel", "Flagged", "FailureClass", "LlmCall"]
SPAN_COLUMNS = OTEL_COLUMNS + TYPED_COLUMNS + COMPUTED_COLUMNS
TABLE_COLUMNS = (
    OTEL_COLUMNS
    + TYPED_COLUMNS[:12]
    + ["TraceKey", "IngestedAt", "ScopeAttributes"]
    + TYPED_COLUMNS[12:]
    + COMPUTED_COLUMNS
)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class ServerError(AssertionError):
    """planoscope did not start or stop as expected; the message carries its output."""


_LIVE_SERVERS: list[Server] = []  # servers whose output is attached to a failing test's report


class Server:
    """One ``planoscope serve`` subprocess on free ports and a data directory.

    ``start()`` waits for ``planoscope: ready`` and parses the printed addresses;
    ``stop()`` sends SIGTERM and asserts the exit code; ``restart(*args)`` stops and starts
    again on the same data directory (with new extra flags if given).
    """

    def __init__(self, data_dir: Path | str, *args: str, env: Mapping[str, str] | None = None):
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self._lines: list[str] = []  # this run's output: "out| ..." / "err| ..."
        self.history: list[str] = []  # every run's output
        self._cond = threading.Condition()
        self._readers: list[threading.Thread] = []
        self.grpc_target = self.http_traces_url = self.web_url = ""
        self.startup_span_count: int | None = None

    # --- lifecycle ---------------------------------------------------------------------
    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "planoscope",
            "serve",
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            # No scraping unless a test asks (its --scrape comes later and wins): an Envoy that
            # happens to listen on 9901 must not change what a test sees on /metrics. No retention
            # either unless asked: many tests send spans from fixed past dates, which a pass of
            # the default 7-day retention (every minute) would delete in the middle of a module.
            "--data-dir",
            str(self.data_dir),
            "--scrape",
            "",
            "--retention",
            "0",
            *self.args,
        ]

    def start(self, *args: str) -> Server:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if args:
            self.args = list(args)
        self.runs += 1
        self._lines = []
        self.history.append(f"--- run {self.runs}: {' '.join(self.command)}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLANOSCOPE_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for t in self._readers:
            t.start()
        if self not in _LIVE_SERVERS:
            _LIVE_SERVERS.append(self)
        deadline = time.monotonic() + READY_TIMEOUT_S
        with self._cond:
            while not any(line == "out| planoscope: ready" for line in self._lines):
                if self.proc.poll() is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        if not any(line == "out| planoscope: ready" for line in self._lines):
            rc = self.proc.poll()
            if rc is None:
                self.proc.kill()
                self.proc.wait()
            self._join_readers()
            raise ServerError(f"planoscope did not become ready (exit code {self.proc.returncode}):\n" + self.output())
        self._parse_addresses()
        return self

    def _read(self, stream, tag: str) -> None:
        for line in stream:
            line = f"{tag}| {line.rstrip(chr(10))}"
            with self._cond:
                self._lines.append(line)
                self.history.append(line)
                self._cond.notify_all()
        stream.close()

    def _join_readers(self) -> None:
        for t in self._readers:
            t.join(10)

    def _parse_addresses(self) -> None:
        text = "\n".join(self.lines("out"))
        grpc_m = re.search(r"^planoscope: OTLP/gRPC listening on (\S+)$", text, re.M)
        http_m = re.search(r"^planoscope: OTLP/HTTP listening on (http://\S+/v1/traces)$", text, re.M)
        web_m = re.search(r"^planoscope: UI, API and /metrics on (http://\S+)$", text, re.M)
        count_m = re.search(r"^planoscope \S+: data in .* \((\d+) spans\)$", text, re.M)
        if not (grpc_m and http_m and web_m):
            raise ServerError("planoscope's start-up lines lack an address:\n" + self.output())
        self.grpc_target = grpc_m.group(1)
        self.http_traces_url = http_m.group(1)
        self.web_url = web_m.group(1)
        self.startup_span_count = int(count_m.group(1)) if count_m else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, expect_rc: int | None = 0) -> int:
        """SIGTERM, wait, and (by default) require exit code 0."""
        assert self.proc is not None, "never started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._join_readers()
            raise ServerError(
                f"planoscope did not stop within {STOP_TIMEOUT_S}s of SIGTERM:\n" + self.output()
            ) from None
        self._join_readers()
        if expect_rc is not None and rc != expect_rc:
            raise ServerError(f"planoscope exited with {rc}, expected {expect_rc}:\n" + self.output())
        return rc

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown at all."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._join_readers()

    def restart(self, *args: str) -> Server:
        self.stop()
        return self.start(*args)

    def close(self) -> None:
        """Teardown: stop if still running (kill if it will not), forget the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._join_readers()
        if self in _LIVE_SERVERS:
            _LIVE_SERVERS.remove(self)

    # --- output ------------------------------------------------------------------------
    def lines(self, tag: str | None = None) -> list[str]:
        """This run's output lines (``tag``: "out", "err" or None for both)."""
        with self._cond:
            lines = list(self._lines)
        if tag is None:
            return lines
        return [ln[len(tag) + 2 :] for ln in lines if ln.startswith(tag + "| ")]

    def output(self, last: int = 300) -> str:
        with self._cond:
            hist = list(self.history)
        return "\n".join(hist[-last:])

    # --- HTTP helpers ------------------------------------------------------------------
    def get(self, path: str) -> httpx.Response:
        with httpx.Client(timeout=30) as c:
            return c.get(self.web_url + path)

    def metrics_text(self) -> str:
        r = self.get("/metrics")
        assert r.status_code == 200, r.text
        return r.text

    def metrics(self) -> Metrics:
        return Metrics(self.metrics_text())

    def healthz(self) -> dict:
        r = self.get("/healthz")
        assert r.status_code == 200, r.text
        return r.json()

    def settled(self, timeout: float = 60.0) -> None:
        """Wait until every acknowledged span is in the store. A read waits at most 2 s for the
        inserts behind the journal (docs/guarantees.md): enough for DuckDB, not always for a
        ClickHouse taking an hour of traffic on a busy machine (a page then showed no sessions)."""
        _wait(lambda: self.healthz()["pending_spans"] == 0, timeout, "the acknowledged spans to be stored")


class _ServerPool:
    def __init__(self):
        self.servers: list[Server] = []

    def __call__(
        self, data_dir: Path | str, *args: str, env: Mapping[str, str] | None = None, start: bool = True
    ) -> Server:
        srv = Server(data_dir, *args, env=env)
        self.servers.append(srv)
        _LIVE_SERVERS.append(srv)
        return srv.start() if start else srv

    def close(self) -> None:
        for srv in self.servers:
            srv.close()


@pytest.fixture
def server_factory():
    """``server_factory(data_dir, *flags)`` → a started ``Server``, stopped after the test."""
    pool = _ServerPool()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def module_server_factory():
    """As ``server_factory``, for servers shared by the tests of one module."""
    pool = _ServerPool()
    yield pool
    pool.close()


def _demo_pool(started: list):
    from support.demo_server import DemoServer  # it builds on Server, defined here

    def start(data_dir: Path | None, *args: str):
        srv = DemoServer(data_dir, *args)
        started.append(srv)
        return srv.start()

    return start


@pytest.fixture
def demo_factory():
    """``demo_factory(data_dir or None, *args)`` → a started ``planoscope demo`` (a
    ``support.demo_server.DemoServer``), stopped after the test."""
    started: list = []
    yield _demo_pool(started)
    for srv in started:
        srv.close()


@pytest.fixture(scope="module")
def module_demo_factory():
    """As ``demo_factory``, for a demo shared by the tests of one module."""
    started: list = []
    yield _demo_pool(started)
    for srv in started:
        srv.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in list(_LIVE_SERVERS):
            rep.sections.append((f"planoscope output ({srv.data_dir})", srv.output()))


# --------------------------------------------------------------------------------------------
# Reading the store (only while no server has the file open)
# --------------------------------------------------------------------------------------------

_READ_SQL = """
SELECT * REPLACE (
    epoch_ns("Timestamp") AS "Timestamp",
    list_transform("Events", lambda e: {
        'Timestamp': epoch_ns(e."Timestamp"), 'Name': e."Name", 'Attributes': e."Attributes"
    }) AS "Events"
) FROM otel_traces
"""


def db_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / "planoscope.duckdb"


def py_value(v: AnyValue) -> Any:
    """An AnyValue as a plain Python value: str, int, float, bool, None (empty), list (array),
    dict (kvlist: the first of a repeated key), bytes."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [py_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        out: dict[str, Any] = {}
        for kv in v.kvlist_value.values:
            out.setdefault(kv.key, py_value(kv.value))
        return out
    return getattr(v, which)


def typed(v: Any) -> Any:
    """``v`` with every leaf tagged by its type, to compare values exactly: 2 == 2.0 and 1 == True
    in Python, not here (NaN is not equal to itself either way: compare its repr)."""
    if isinstance(v, dict):
        return {k: typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [typed(x) for x in v]
    return (type(v).__name__, v)


def attrs_dict(value: Any) -> dict[str, Any]:
    """An attribute column's value as a dict of typed values: the store keeps each attribute set
    as one JSON object, each value in its JSON type (see planoscope/store/attributes.py; a MAP or
    a list of key/value structs of strings are accepted too). A key sent twice (Plano repeats
    ``service.name.override`` and ``llm.model``) is kept as sent; the first wins here, as
    planoscope reads it."""
    from planoscope.store.attributes import key_values

    if isinstance(value, str):
        assert isinstance(json.loads(value), dict), f"not a JSON object: {value!r}"
        out = {}
        for kv in key_values(value):
            out.setdefault(kv.key, py_value(kv.value))
        return out
    if value is None:  # ScopeAttributes of a span stored before the column existed
        return {}
    if isinstance(value, dict) and set(value) != {"key", "value"}:
        return value
    if isinstance(value, list):
        out: dict[str, str] = {}
        for kv in value:
            assert set(kv) == {"key", "value"}, f"not a key/value struct: {kv!r}"
            assert kv["key"] not in out, f"attribute {kv['key']!r} stored twice: {value!r}"
            out[kv["key"]] = kv["value"]
        return out
    raise AssertionError(f"not an attribute map: {value!r}")


def _normalize(row: dict[str, Any]) -> dict[str, Any]:
    for col in ("ResourceAttributes", "SpanAttributes", "ScopeAttributes"):
        row[col] = attrs_dict(row[col])
    for col in ("Events", "Links"):
        row[col] = [{**x, "Attributes": attrs_dict(x["Attributes"])} for x in row[col]]
    return row


def read_spans(data_dir: Path | str) -> list[dict[str, Any]]:
    """Every row of ``otel_traces`` as a dict; timestamps (also the events') as int ns, attribute
    columns as dicts."""
    con = duckdb.connect(str(db_path(data_dir)), read_only=True)
    try:
        cur = con.execute(_READ_SQL)
        names = [d[0] for d in cur.description]
        return [_normalize(dict(zip(names, row))) for row in cur.fetchall()]
    finally:
        con.close()


def table_columns(data_dir: Path | str) -> list[str]:
    con = duckdb.connect(str(db_path(data_dir)), read_only=True)
    try:
        return [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'otel_traces'"
                " ORDER BY ordinal_position"
            ).fetchall()
        ]
    finally:
        con.close()


def spans_by_id(rows: Iterable[dict]) -> dict[str, dict]:
    """Rows keyed by SpanId; fails if a SpanId is stored twice."""
    out: dict[str, dict] = {}
    for r in rows:
        assert r["SpanId"] not in out, f"span {r['SpanId']} stored more than once"
        out[r["SpanId"]] = r
    return out


# --------------------------------------------------------------------------------------------
# /metrics
# --------------------------------------------------------------------------------------------


class Metrics:
    """Parsed Prometheus text exposition: ``m.value(name, labels)`` is exact on the label set."""

    def __init__(self, text: str):
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples = [(s.name, dict(s.labels), s.value) for f in self.families for s in f.samples]

    def family_types(self) -> dict[str, str]:
        return {f.name: f.type for f in self.families}

    def series(self, name: str) -> list[dict[str, str]]:
        """Label sets of every sample called ``name``."""
        return [labels for n, labels, _ in self.samples if n == name]

    def value(self, name: str, labels: Mapping[str, str]) -> float:
        found = [v for n, lb, v in self.samples if n == name and lb == dict(labels)]
        assert len(found) == 1, (
            f"expected one sample {name}{dict(labels)}, found {len(found)}; samples named {name}:\n"
            + "\n".join(f"  {lb} {v}" for n, lb, v in self.samples if n == name)
        )
        return found[0]

    def buckets(self, name: str, labels: Mapping[str, str]) -> dict[str, float]:
        """``{le: cumulative count}`` of histogram ``name`` (e.g. "duration_milliseconds")."""
        out = {}
        for n, lb, v in self.samples:
            if n == name + "_bucket":
                rest = {k: x for k, x in lb.items() if k != "le"}
                if rest == dict(labels):
                    out[lb["le"]] = v
        return out


# --------------------------------------------------------------------------------------------
# OTLP protobuf builders and raw transports
# --------------------------------------------------------------------------------------------


def any_value(v: Any) -> AnyValue:
    """A Python value as an AnyValue: None is the empty value, lists arrays, dicts kvlists."""
    if isinstance(v, AnyValue):
        return v
    if v is None:
        return AnyValue()
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=key_values(v)))
    raise TypeError(f"no AnyValue for {v!r}")


def key_values(attrs: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> list[KeyValue]:
    items = attrs.items() if isinstance(attrs, Mapping) else (attrs or [])
    return [KeyValue(key=k, value=any_value(v)) for k, v in items]


def _id(x: bytes | str) -> bytes:
    return bytes.fromhex(x) if isinstance(x, str) else x


def pb_span(
    trace_id: bytes | str,
    span_id: bytes | str,
    name: str,
    start_ns: int,
    end_ns: int,
    *,
    parent: bytes | str = b"",
    kind: int = Span.SPAN_KIND_INTERNAL,
    attrs=None,
    status_code: int = Status.STATUS_CODE_UNSET,
    status_message: str = "",
    events: Sequence[Span.Event] = (),
    links: Sequence[Span.Link] = (),
    trace_state: str = "",
) -> Span:
    return Span(
        trace_id=_id(trace_id),
        span_id=_id(span_id),
        parent_span_id=_id(parent),
        name=name,
        kind=kind,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=end_ns,
        attributes=key_values(attrs),
        status=Status(code=status_code, message=status_message),
        events=list(events),
        links=list(links),
        trace_state=trace_state,
    )


def pb_request(
    *resources: tuple[Mapping[str, Any], Sequence[Span]] | tuple[Mapping[str, Any], Sequence[Span], str, str],
) -> ExportTraceServiceRequest:
    """``pb_request((resource_attrs, spans[, scope_name, scope_version]), ...)``."""
    req = ExportTraceServiceRequest()
    for res in resources:
        attrs, spans = res[0], res[1]
        scope_name, scope_version = (res[2], res[3]) if len(res) > 2 else ("planoscope.tests", "1.0")
        rs = ResourceSpans()
        rs.resource.attributes.extend(key_values(attrs))
        ss = ScopeSpans(spans=list(spans))
        ss.scope.name = scope_name
        ss.scope.version = scope_version
        rs.scope_spans.append(ss)
        req.resource_spans.append(rs)
    return req


def grpc_export(
    target: str,
    body: bytes | ExportTraceServiceRequest,
    *,
    compression: grpc.Compression | None = None,
    timeout: float = 30,
) -> ExportTraceServiceResponse:
    """One raw OTLP/gRPC Export call of ``body`` (bytes are sent as they are)."""
    if isinstance(body, ExportTraceServiceRequest):
        body = body.SerializeToString()
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
        raw = call(body, timeout=timeout, compression=compression)
    resp = ExportTraceServiceResponse()
    resp.ParseFromString(raw)
    return resp


def http_post(
    url: str,
    body: bytes,
    content_type: str = "application/x-protobuf",
    *,
    gzip_body: bool = False,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    h = {"Content-Type": content_type, **(headers or {})}
    if gzip_body:
        body = gzip.compress(body)
        h["Content-Encoding"] = "gzip"
    with httpx.Client(timeout=30) as c:
        return c.post(url, content=body, headers=h)


def http_export_pb(url: str, req: ExportTraceServiceRequest, **kw) -> ExportTraceServiceResponse:
    r = http_post(url, req.SerializeToString(), **kw)
    assert r.status_code == 200, (r.status_code, r.content)
    assert r.headers["content-type"].startswith("application/x-protobuf")
    resp = ExportTraceServiceResponse()
    resp.ParseFromString(r.content)
    return resp


def http_export_json(url: str, doc: dict | bytes, **kw) -> dict:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    r = http_post(url, body, "application/json", **kw)
    assert r.status_code == 200, (r.status_code, r.content)
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def now_base_ns() -> int:
    """A recent whole second in ns (minus a minute), so stored spans are well within retention."""
    return (time.time_ns() // 1_000_000_000 - 60) * 1_000_000_000


# --------------------------------------------------------------------------------------------
# Sending through the OpenTelemetry SDK's own exporters
# --------------------------------------------------------------------------------------------


def sdk_export(
    srv: Server,
    spans: Sequence[Mapping[str, Any]],
    protocol: str = "grpc",
    scope: tuple[str, str] = ("brightstaff", "0.4.2"),
) -> list:
    """Create ``spans`` with the SDK and export them in one request through its OTLP exporter.

    Each span is a mapping: ``resource`` (attrs), ``name``, ``kind`` (SDK ``SpanKind``),
    ``start`` and ``end`` (ns), optional ``attrs`` and ``status`` (``(StatusCode, description)``).
    Returns the SDK's finished spans (for their ids). Fails unless the export succeeded.
    """
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status as SdkStatus

    collected = InMemorySpanExporter()
    providers: dict[str, TracerProvider] = {}
    for spec in spans:
        rkey = json.dumps(spec["resource"], sort_keys=True)
        tp = providers.get(rkey)
        if tp is None:
            tp = providers[rkey] = TracerProvider(resource=Resource(dict(spec["resource"])), shutdown_on_exit=False)
            tp.add_span_processor(SimpleSpanProcessor(collected))
        span = tp.get_tracer(*scope).start_span(
            spec["name"], kind=spec["kind"], attributes=dict(spec.get("attrs") or {}), start_time=spec["start"]
        )
        if spec.get("status"):
            span.set_status(SdkStatus(*spec["status"]))
        span.end(end_time=spec["end"])
    finished = list(collected.get_finished_spans())
    for tp in providers.values():
        tp.shutdown()
    assert len(finished) == len(spans)
    if protocol == "grpc":
        exporter = GrpcExporter(endpoint=srv.grpc_target, insecure=True, timeout=30)
    else:
        exporter = HttpExporter(endpoint=srv.http_traces_url, timeout=30)
    try:
        result = exporter.export(finished)
    finally:
        exporter.shutdown()
    assert result == SpanExportResult.SUCCESS, f"OTLP/{protocol} export of {len(spans)} spans failed"
    return finished


# --------------------------------------------------------------------------------------------
# Shared by several test modules
# --------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


RL = "envoy_wasmcustom_ratelimited_rq"


class FakeTarget:
    """An Envoy admin endpoint in a thread; ``mode`` says how it answers the next scrape."""

    def __init__(self, port: int = 0):
        self.counter = 0
        self.mode = "ok"  # ok | hang | 500 | garbage | huge
        self.release = threading.Event()  # frees handlers stuck in "hang"
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                mode = target.mode
                if mode == "hang":
                    target.release.wait(10)
                    return
                if mode == "500":
                    body, code = b"upstream connect error", 500
                elif mode == "garbage":
                    body, code = b"<html><body>not metrics</body></html>\n", 200
                elif mode == "huge":
                    body, code = b"# " + b"x" * (3 * 1024 * 1024) + b"\n", 200
                else:
                    body, code = target.text().encode(), 200
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                if mode != "huge":  # a huge body's length is not announced: the cap must count
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/stats/prometheus"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def text(self) -> str:
        """Envoy's quirks: counters without ``_total`` and with empty braces, a histogram."""
        return (
            "# TYPE envoy_cluster_upstream_rq counter\n"
            'envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="openai"} 7\n'
            f"# TYPE {RL} counter\n"
            f"{RL}{{}} {self.counter}\n"
            "# TYPE envoy_wasmcustom_active_http_calls gauge\n"
            "envoy_wasmcustom_active_http_calls{} 2\n"
            "# TYPE envoy_wasmcustom_request_latency histogram\n"
            'envoy_wasmcustom_request_latency_bucket{le="0.5"} 0\n'
            'envoy_wasmcustom_request_latency_bucket{le="+Inf"} 3\n'
            "envoy_wasmcustom_request_latency_sum{} 1234.5\n"
            "envoy_wasmcustom_request_latency_count{} 3\n"
        )

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _wait(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _samples(srv, metric=RL, target="envoy"):
    import httpx

    now = time.time()
    r = httpx.get(
        f"{srv.web_url}/api/v1/metrics/{metric}/samples", params={"start": now - 600, "end": now + 60}, timeout=30
    )
    if r.status_code == 404 and "no samples" in r.json()["detail"]:
        return []  # not scraped yet (a loaded machine can take a while for the first commit)
    assert r.status_code == 200, (r.status_code, r.text)
    data = r.json()
    return [p for s in data["series"] if s["labels"]["target"] == target for p in s["points"]]


def make_spans(n: int, service: str):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource({"service.name": service}), shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("plano", "1.0")
    for i in range(n):
        tracer.start_span(
            "POST /v1/chat/completions gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={"llm.model": "gpt-4o", "http.status_code": 200, "i": i},
        ).end()
    tp.shutdown()
    return list(mem.get_finished_spans())


def ids(spans) -> set[str]:
    return {f"{s.context.span_id:016x}" for s in spans}


def _many_spans(n: int) -> bytes:
    """One request of ``n`` spans (ids 1…n), assembled from one serialized span: fast to build."""
    base = now_base_ns()
    marker = b"\xee" * 8
    template = pb_span("ab" * 16, marker, "big", base, base + 1_000_000, attrs={"k": "v" * 100}).SerializeToString()
    head, tail = template.split(marker)
    spans = b"".join(b"\x12" + _varint(len(template)) + head + (i + 1).to_bytes(8, "big") + tail for i in range(n))
    scope_spans = b"\x12" + _varint(len(spans)) + spans  # ResourceSpans.scope_spans, holding ScopeSpans.spans
    return b"\x0a" + _varint(len(scope_spans)) + scope_spans  # ExportTraceServiceRequest.resource_spans


CHROMIUM = "/usr/bin/chromium"


# Chromium as root in a closed network: no sandbox, and no background calls that would be refused.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --------------------------------------------------------------------------------------------
# Chromium (Debian's, through Playwright) for the browser tests
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # A deadline, not a speed goal: the suite runs three test files at once on two cores, and a
    # page's redraw can wait seconds for the CPU (Playwright's default is 5 s).
    expect.set_options(timeout=15_000)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    """A fresh page (the test module's ``VIEWPORT``, else 1600x1000) that fails the test on any
    error the page reports, except those a test names in ``page.allowed_errors``."""
    ctx = browser.new_context(viewport=getattr(request.module, "VIEWPORT", {"width": 1600, "height": 1000}))
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.allowed_errors = []  # a test that provokes an error names it here
    yield pg
    ctx.close()
    errors = [e for e in errors if not any(a in e for a in pg.allowed_errors)]
    assert errors == [], f"errors in the page: {errors}"
