"""Ingest into ClickHouse, end to end: real ``planoscope serve`` processes with
``--store clickhouse://…`` on a real ClickHouse server, the OpenTelemetry SDK's exporters and raw
OTLP clients in front. Spans arrive once, as the collector's exporter would have written them;
a kill -9 under load, a ClickHouse that stops under load and two instances on one ClickHouse lose
nothing acknowledged and store nothing twice."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from conftest import EXPORT_METHOD, Metrics, _wait, now_base_ns, pb_request, pb_span
from support.exporter import exporter_rows, stored_attribute_sets

MS = 1_000_000
SPANS_PER_REQUEST = 200


def serve(server_factory, path, url: str, *args: str):
    """planoscope on ClickHouse; the URL (and its password) through the environment, as advised."""
    return server_factory(path, "--retention", "7d", *args, env={"PLANOSCOPE_STORE": url})


def stored(srv, timeout: float = 90) -> None:
    """Wait until every span ``srv`` acknowledged is in ClickHouse."""
    _wait(lambda: srv.healthz()["pending_spans"] == 0, timeout, "the acknowledged spans to reach ClickHouse")


def counts(client, where: str = "1") -> tuple[int, int]:
    """Spans in otel_traces and distinct span ids among them."""
    return client.query(f"SELECT count(), uniqExact(SpanId) FROM otel_traces WHERE {where}").result_rows[0]


def span_ids(client) -> set[str]:
    return {r[0] for r in client.query("SELECT SpanId FROM otel_traces").result_rows}


# --- what arrives ----------------------------------------------------------------------------


def _sdk_spans(service: str, n: int):
    """Finished SDK spans with every kind of attribute value, events and links."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource({"service.name": service, "host.name": "gw-1"}), shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("brightstaff", "0.4.19")
    base = now_base_ns()
    for i in range(n):
        root = tracer.start_span("plano(inbound)", kind=SpanKind.SERVER, start_time=base)
        child = tracer.start_span(
            "POST /v1/chat/completions openai/gpt-4o",
            context=trace.set_span_in_context(root),
            kind=SpanKind.CLIENT,
            start_time=base + MS,
            links=[Link(root.get_span_context(), {"reason": "retry", "n": i})],
            attributes={
                "llm.model": "openai/gpt-4o",
                "http.status_code": 429 if i % 2 else 200,
                "llm.usage.total_cost_usd": 0.00125,
                "llm.is_streaming": True,
                "llm.tools": ["search", "book"],
                "i": i,
            },
        )
        child.add_event("llm.time_to_first_token", {"ms": 180, "ratio": 0.5}, timestamp=base + 3 * MS)
        child.set_status(Status(StatusCode.ERROR, "rate limited"))
        child.end(end_time=base + 9 * MS + i)
        root.end(end_time=base + 10 * MS)
    tp.shutdown()
    return list(mem.get_finished_spans())


def _export(srv, spans, protocol: str) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    if protocol == "grpc":
        exporter = GrpcExporter(endpoint=srv.grpc_target, insecure=True, timeout=30)
    else:
        exporter = HttpExporter(endpoint=srv.http_traces_url, timeout=30)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


EXPORTER_COLUMNS = (
    "SELECT toUnixTimestamp64Nano(Timestamp), * EXCEPT (Timestamp, ScopeAttributes, AttributeTypes, EstimatedCostUsd,"
    " IngestedBy, JournalPosition, IngestedAt) REPLACE (arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`) AS `Events.Timestamp`)"
    " FROM otel_traces ORDER BY SpanId"
)


def test_spans_the_sdk_sends_arrive_once_as_the_exporter_writes_them(server_factory, clickhouse_database, tmp_path):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    db = clickhouse_database
    srv = serve(server_factory, tmp_path / "p", db.url)
    grpc_spans, http_spans = _sdk_spans("plano(llm)", 20), _sdk_spans("plano(agent)", 15)
    _export(srv, grpc_spans, "grpc")
    _export(srv, http_spans, "http")
    _export(srv, grpc_spans[:6], "grpc")  # a client's retry: within the de-duplication window, stored once
    stored(srv)
    assert counts(db.client) == (70, 70)
    want = exporter_rows(encode_spans(grpc_spans + http_spans))
    got = [list(r) for r in db.client.query(EXPORTER_COLUMNS).result_rows]
    assert got == sorted(want, key=lambda r: r[2])
    # planoscope's columns, computed by ClickHouse from the exporter's maps
    rows = db.client.query(
        "SELECT HttpStatusCode, FailureClass, CostUsd, IsStreaming, count() FROM otel_traces"
        " WHERE LlmModel = 'openai/gpt-4o' GROUP BY ALL ORDER BY ALL"
    ).result_rows
    assert rows == [(200, "error_status", 0.00125, True, 18), (429, "429", 0.00125, True, 17)]  # ERROR: the status
    # every value reads back as sent, ints and doubles apart
    encoded = {
        sp.span_id.hex(): sp
        for rs in encode_spans(grpc_spans).resource_spans
        for ss in rs.scope_spans
        for sp in ss.spans
    }
    child = next(sp for sp in encoded.values() if sp.links)
    resource, _, span, event, link = stored_attribute_sets(db.client, child.span_id.hex())
    assert [(kv.key, kv.value) for kv in span] == [(kv.key, kv.value) for kv in child.attributes]
    assert [(kv.key, kv.value) for kv in event] == [(kv.key, kv.value) for kv in child.events[0].attributes]
    assert [(kv.key, kv.value) for kv in link] == [(kv.key, kv.value) for kv in child.links[0].attributes]
    assert {kv.key: kv.value.WhichOneof("value") for kv in span}["http.status_code"] == "int_value"
    # this instance's span metrics count what it stored, once
    m = srv.metrics()
    assert sum(v for n, _, v in m.samples if n == "calls_total") == 70
    health = srv.healthz()
    assert health["status"] == "ok" and health["store"]["kind"] == "clickhouse"
    assert db.server.password not in json.dumps(health) and db.server.password not in srv.output()


# --- load, a kill, ClickHouse going away -----------------------------------------------------


def load_request(prefix: int, client: int, batch: int) -> tuple[bytes, set[str]]:
    """SPANS_PER_REQUEST new spans, their ids starting with ``prefix`` (one byte, hex)."""
    base = now_base_ns()
    ids = [f"{prefix:02x}{client:02x}{batch:06x}{i:06x}" for i in range(SPANS_PER_REQUEST)]
    attrs = {"llm.model": "gpt-4o", "http.status_code": 200, "llm.user_message_preview": "x" * 200}
    spans = [
        pb_span(
            f"{prefix:02x}{client:06x}{batch:024x}",
            sid,
            "POST /v1/chat/completions gpt-4o",
            base,
            base + 5 * MS,
            kind=3,
            attrs=attrs,
        )
        for sid in ids
    ]
    return pb_request(({"service.name": "plano(llm)"}, spans)).SerializeToString(), set(ids)


def llm_load_request(prefix: int, client: int, batch: int) -> tuple[bytes, set[str]]:
    """As ``load_request``, half of the spans LLM calls (plano(llm), a model, tokens; every tenth
    one refused with 429), half not (plano(inbound), no model nor tokens)."""
    base = now_base_ns()
    trace = f"{prefix:02x}{client:06x}{batch:024x}"
    ids = [f"{prefix:02x}{client:02x}{batch:06x}{i:06x}" for i in range(SPANS_PER_REQUEST)]
    calls, others = [], []
    for i, sid in enumerate(ids):
        if i % 2:
            others.append(pb_span(trace, sid, "POST /v1/chat/completions", base, base + 9 * MS, kind=2))
            continue
        attrs = {
            "llm.model": "gpt-4o",
            "llm.provider": "openai",
            "http.status_code": 429 if i % 20 == 0 else 200,
            "llm.usage.prompt_tokens": 10 + i % 7,
            "llm.usage.completion_tokens": 3 + batch % 5,
        }
        calls.append(pb_span(trace, sid, "POST /v1/chat/completions gpt-4o", base, base + 5 * MS, kind=3, attrs=attrs))
    resources = ({"service.name": "plano(llm)"}, calls), ({"service.name": "plano(inbound)"}, others)
    return pb_request(*resources).SerializeToString(), set(ids)


class Load:
    """OTLP/gRPC clients sending requests of SPANS_PER_REQUEST new spans each (ids prefixed by
    ``prefix``; ``request`` makes them), retrying refusals (UNAVAILABLE) after the suggested delay
    until acknowledged, until ``stop`` or ``batches`` requests each. ``acked``: the ids acknowledged."""

    def __init__(
        self,
        target: str,
        prefix: int,
        clients: int = 2,
        batches: int = 10_000,
        deadline_s: float = 240,
        request=load_request,
    ):
        self.target, self.prefix, self.request = target, prefix, request
        self.acked: set[str] = set()
        self.sent: set[str] = set()
        self.refusals = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + deadline_s
        self.threads = [threading.Thread(target=self._run, args=(c, batches), daemon=True) for c in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, client: int, batches: int) -> None:
        with grpc.insecure_channel(self.target) as ch:
            call = ch.unary_unary(EXPORT_METHOD)
            for b in range(batches):
                body, ids = self.request(self.prefix, client, b)
                with self._lock:
                    self.sent |= ids
                while not self.stop.is_set():
                    try:
                        ExportTraceServiceResponse.FromString(call(body, timeout=30))
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > self._deadline:
                            with self._lock:
                                self.errors.append(f"{e.code()} {e.details()}")
                            return
                        with self._lock:
                            self.refusals += 1
                        time.sleep(0.1)
                        continue
                    with self._lock:
                        self.acked |= ids
                    break
                if self.stop.is_set():
                    return

    def wait_acked(self, n: int, timeout: float = 60) -> None:
        _wait(lambda: len(self.acked) >= n, timeout, f"{n} acknowledged spans")

    def join(self, timeout: float = 240) -> None:
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads)


def test_two_instances_on_one_clickhouse_and_a_kill_9_under_load(server_factory, clickhouse_database, tmp_path):
    """Two ingest instances load one ClickHouse; one is killed (SIGKILL) with acknowledged spans
    still only in its journal, then started again: every acknowledged span of both is stored,
    once, and the killed one's span metrics count its spans once."""
    db = clickhouse_database
    a = serve(server_factory, tmp_path / "a", db.url)
    b = serve(server_factory, tmp_path / "b", db.url)
    assert a.healthz()["store"]["instance"] != b.healthz()["store"]["instance"]
    load_a, load_b = Load(a.grpc_target, 0xA), Load(b.grpc_target, 0xB)
    load_a.wait_acked(20 * SPANS_PER_REQUEST)
    # an insert into ClickHouse behind us, then more acknowledged and not inserted yet (inserts
    # go every 5 s): the kill leaves those in the journal only
    _wait(lambda: counts(db.client, "startsWith(SpanId, '0a')")[0] > 0, 60, "a first insert of a's spans")
    load_a.wait_acked(len(load_a.acked) + 10 * SPANS_PER_REQUEST)
    pending = a.healthz()["pending_spans"]
    a.kill()
    load_a.stop.set()
    load_a.join()
    load_b.wait_acked(40 * SPANS_PER_REQUEST)
    load_b.stop.set()
    load_b.join()
    assert load_b.errors == [] and pending > 0

    a.start()  # the journal's leftovers go in, behind the restart
    assert any("from the journal" in ln for ln in a.lines("err")), a.output()
    stored(a)
    stored(b)
    for load, srv in ((load_a, a), (load_b, b)):
        prefix = f"{load.prefix:02x}"
        count, unique = counts(db.client, f"startsWith(SpanId, '{prefix}')")
        ids = {i for i in span_ids(db.client) if i.startswith(prefix)}
        assert count == unique, f"{count - unique} spans of {prefix} stored twice"
        assert load.acked <= ids <= load.sent  # a request in flight at the kill may be in too
        calls = sum(v for n, _, v in srv.metrics().samples if n == "calls_total")
        assert calls == count, (calls, count)  # this instance's spans, counted once across the kill


def llm_requests(srv) -> float:
    """The LLM calls ``srv``'s LLM metrics counted."""
    return sum(v for n, _, v in srv.metrics().samples if n == "planoscope_llm_requests_total")


def test_llm_metrics_count_each_llm_call_once_across_a_kill_9(server_factory, clickhouse_database, tmp_path):
    """The LLM metrics of a ClickHouse-backed instance count exactly the LLM calls it stored (not
    the other spans), as its span metrics count its spans: killed (SIGKILL) under load right after
    an insert, with acknowledged calls only in its journal, and started again, each call counted
    once, its tokens and failure class too."""
    db = clickhouse_database
    srv = serve(server_factory, tmp_path / "p", db.url)
    load = Load(srv.grpc_target, 0xC, request=llm_load_request)
    # The kill comes right after the first insert (inserts go every 5 s, the metric snapshots
    # every 10 s): the totals of that insert are only in the local commit that went with it.
    _wait(lambda: counts(db.client)[0] > 0, 60, "a first insert")
    load.wait_acked(len(load.acked) + 5 * SPANS_PER_REQUEST)
    pending = srv.healthz()["pending_spans"]
    srv.kill()
    load.stop.set()
    load.join()
    assert load.errors == [] and pending > 0

    srv.start()
    assert any("from the journal" in ln for ln in srv.lines("err")), srv.output()
    stored(srv)
    calls, prompt, completion, refused = db.client.query(
        "SELECT count(), sum(PromptTokens), sum(CompletionTokens), countIf(HttpStatusCode = 429)"
        " FROM otel_traces WHERE ServiceName = 'plano(llm)'"
    ).result_rows[0]
    count, unique = counts(db.client)
    assert count == unique and load.acked <= span_ids(db.client) <= load.sent
    assert 0 < calls < count and refused > 0
    any_llm_column = "ServiceName = 'plano(llm)' OR LlmModel IS NOT NULL OR PromptTokens IS NOT NULL"
    assert counts(db.client, any_llm_column) == (calls, calls)  # the other spans are no LLM calls
    for _ in range(2):  # after the kill, and again after a clean restart (from the state file alone)
        m = srv.metrics()
        model = {"gen_ai_request_model": "gpt-4o", "gen_ai_provider_name": "openai"}
        assert llm_requests(srv) == calls
        assert m.value("planoscope_llm_requests_total", {**model, "failure_class": "429"}) == refused
        assert m.value("planoscope_llm_requests_total", {**model, "failure_class": "none"}) == calls - refused
        assert m.value("gen_ai_client_token_usage_count", {**model, "gen_ai_token_type": "input"}) == calls
        assert m.value("gen_ai_client_token_usage_sum", {**model, "gen_ai_token_type": "input"}) == prompt
        assert m.value("gen_ai_client_token_usage_sum", {**model, "gen_ai_token_type": "output"}) == completion
        assert sum(v for n, _, v in m.samples if n == "calls_total") == count
        srv.restart()


def test_a_crash_between_the_insert_and_its_local_commit_stores_and_counts_once(
    server_factory, clickhouse_database, tmp_path
):
    """The crash the tokens are for: ClickHouse took the insert, the local commit of the journal
    position never happened. Its state file is put back as it was (applied 0, the insert in
    doubt) beside the journal the kill left; the restart inserts the records again, ClickHouse
    keeps the first copy, and the span metrics and the LLM metrics count the spans once."""
    from planoscope.store import DuckDBStore
    from planoscope.store.clickhouse import STATE_FILE

    db = clickhouse_database
    data = tmp_path / "p"
    srv = serve(server_factory, data, db.url)
    srv.stop()  # the state file of an instance that has stored nothing yet
    shutil.copy(data / STATE_FILE, tmp_path / "state-before")
    srv.start()
    for i in range(3):
        _export(srv, _sdk_spans("plano(llm)", 50), "grpc" if i % 2 else "http")
    stored(srv)
    srv.kill()
    state = DuckDBStore(data, STATE_FILE)
    end = state.journal_applied()
    state.close()
    shutil.copy(tmp_path / "state-before", data / STATE_FILE)
    state = DuckDBStore(data, STATE_FILE)
    state.commit_state(meta={"insert_in_doubt": str(end)})  # written before every insert
    state.close()
    assert end > 0 and counts(db.client) == (300, 300)

    srv.start()
    assert any(f"(journal position {end}) may or may not be in the store" in ln for ln in srv.lines("err"))
    stored(srv)
    assert counts(db.client) == (300, 300)
    assert db.client.query("SELECT count() FROM otel_traces_trace_id_ts").result_rows == [(150,)]
    assert sum(v for n, _, v in srv.metrics().samples if n == "calls_total") == 300
    assert llm_requests(srv) == 300  # plano(llm)'s spans are LLM calls


def test_clickhouse_stopped_under_load_refuses_retryably_and_loses_nothing(
    server_factory, clickhouse_server_factory, tmp_path
):
    ch = clickhouse_server_factory(tmp_path / "ch", password="s3cret-under-load")
    one_request = len(load_request(1, 0, 0)[0])
    srv = serve(
        server_factory,
        tmp_path / "p",
        ch.url("default"),
        "--max-queued-bytes",
        str(20 * one_request),
        "--overload-retry-delay",
        "200ms",
    )
    load = Load(srv.grpc_target, 1, clients=3, batches=60)
    load.wait_acked(10 * SPANS_PER_REQUEST)
    ch.stop()
    # The journal takes what ClickHouse does not, up to max_queued_bytes; then refusals.
    refused_before = load.refusals
    _wait(lambda: load.refusals > refused_before + 5, 60, "retryable refusals once the journal is full")
    health = srv.healthz()
    assert health["status"] == "degraded" and health["pending_spans"] > 0
    shown = f"ClickHouse at clickhouse://planoscope@127.0.0.1:{ch.http_port}/default: "
    assert any("inserts into the store have failed" in p and shown in p for p in health["problems"]), health
    assert "s3cret-under-load" not in json.dumps(health)
    # The views that read ClickHouse say it does not answer, retryably.
    for path in ("/api/v1/traces", "/api/v1/traces/" + "ab" * 16, "/api/v1/sessions"):
        r = srv.get(path)
        assert r.status_code == 503 and r.json()["detail"].startswith(shown), (path, r.text)
        assert "s3cret-under-load" not in r.text
    acked_while_down = len(load.acked)
    ch.start()
    load.join()
    assert load.errors == [] and len(load.acked) == 3 * 60 * SPANS_PER_REQUEST > acked_while_down
    stored(srv)
    client = ch.client()
    assert counts(client) == (len(load.acked), len(load.acked))
    assert span_ids(client) == load.acked
    _wait(lambda: srv.healthz()["status"] == "ok", 30, "the health to recover")
    srv.stop()
    assert "s3cret-under-load" not in srv.output()


def test_a_clickhouse_that_hangs_is_reported_and_waited_out(server_factory, clickhouse_server_factory, tmp_path):
    """ClickHouse frozen (SIGSTOP) in the middle of an insert: /healthz keeps answering at once
    and says the insert hangs; once ClickHouse runs again, the spans are in, once."""
    ch = clickhouse_server_factory(tmp_path / "ch")
    srv = serve(server_factory, tmp_path / "p", ch.url("default"))
    _export(srv, _sdk_spans("plano(llm)", 10), "grpc")
    os.kill(ch.proc.pid, signal.SIGSTOP)  # before the insert, which comes within 5 s
    try:

        def hang_reported():
            t0 = time.monotonic()
            health = srv.healthz()
            assert time.monotonic() - t0 < 5, "/healthz waited for ClickHouse"
            return health if any("has been running for" in p for p in health["problems"]) else None

        health = _wait(hang_reported, 60, "/healthz to report the hanging insert")
        assert health["status"] == "degraded" and health["pending_spans"] == 20
    finally:
        os.kill(ch.proc.pid, signal.SIGCONT)
    stored(srv)
    assert counts(ch.client()) == (20, 20)
    assert srv.healthz()["status"] == "ok"


# --- the URL and its password ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url, message",
    [
        ("clickhouse://planoscope:s3cret@127.0.0.1:1/db?x=1", "takes no query string"),
        ("clickhous://planoscope:s3cret@127.0.0.1:1/db", "use duckdb or clickhouse://"),
    ],
)
def test_a_bad_store_url_is_one_line_without_the_password(server_factory, tmp_path, url, message):
    srv = server_factory(tmp_path / "p", env={"PLANOSCOPE_STORE": url}, start=False)
    with pytest.raises(AssertionError):
        srv.start()
    err = [ln for ln in srv.lines("err") if ln.startswith("planoscope: error:")]
    assert len(err) == 1 and message in err[0] and "s3cret" not in srv.output(), srv.output()


def test_a_clickhouse_that_refuses_the_login_fails_the_start_in_one_line(server_factory, clickhouse_server, tmp_path):
    url = f"clickhouse://{clickhouse_server.user}:wrong-pass-1@127.0.0.1:{clickhouse_server.http_port}/default"
    srv = server_factory(tmp_path / "p", env={"PLANOSCOPE_STORE": url}, start=False)
    with pytest.raises(AssertionError):
        srv.start()
    assert srv.proc.returncode == 1
    err = [ln for ln in srv.lines("err") if ln.startswith("planoscope: error:")]
    shown = f"clickhouse://{clickhouse_server.user}@127.0.0.1:{clickhouse_server.http_port}/default"
    assert len(err) == 1 and err[0].startswith(f"planoscope: error: cannot use ClickHouse at {shown}: Code: 516."), err
    assert "wrong-pass-1" not in srv.output()


def test_metrics_of_an_instance_are_its_own(server_factory, clickhouse_database, tmp_path):
    """A restart keeps this instance's span metrics and LLM metrics (kept with its journal
    position); another instance's spans in the same ClickHouse are not counted here."""
    db = clickhouse_database
    a = serve(server_factory, tmp_path / "a", db.url)
    b = serve(server_factory, tmp_path / "b", db.url)
    _export(a, _sdk_spans("plano(llm)", 5), "grpc")
    _export(b, _sdk_spans("plano(llm)", 7), "http")
    stored(a)
    stored(b)
    a.restart()
    calls = [sum(v for n, _, v in Metrics(srv.metrics_text()).samples if n == "calls_total") for srv in (a, b)]
    assert calls == [10, 14]
    assert [llm_requests(srv) for srv in (a, b)] == [10, 14]
    assert counts(db.client) == (24, 24)
