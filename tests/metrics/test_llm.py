"""The LLM metrics on /metrics (metrics/llm.py), exactly: every family's values from known,
real-shaped Plano spans (tests/plano_llm.py) and from the GenAI, OpenInference and OpenLIT names;
the same after a clean restart, a crash (the commits after the last snapshot replayed) and on a
store from before these metrics (everything counted from the stored spans); each family bounded
by the cardinality limit. (The exposition's HELP, TYPE and UNIT lines: tests/web/test_exposition.py.)"""

from __future__ import annotations

from fractions import Fraction

import duckdb
import pyarrow as pa
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from conftest import Metrics, db_path, grpc_export, now_base_ns, pb_request, pb_span, read_spans
from plano_llm import CALLS, CLAUDE, GPT, LLM, Call, request
from planoscope.ingest.decode import Decoder
from planoscope.metrics.llm import DURATION_BUCKETS_S, TOKEN_BUCKETS, TTFC_BUCKETS_S, LlmMetrics

MS = 1_000_000
TOKENS, DURATION = "gen_ai_client_token_usage", "gen_ai_client_operation_duration_seconds"
TTFC = "gen_ai_client_operation_time_to_first_chunk_seconds"
COST, REQUESTS = "planoscope_llm_cost_usd_total", "planoscope_llm_requests_total"
OPENAI = {"gen_ai_request_model": GPT, "gen_ai_provider_name": "openai"}
ANTHROPIC = {"gen_ai_request_model": CLAUDE, "gen_ai_provider_name": "anthropic"}
MODEL = {GPT: OPENAI, CLAUDE: ANTHROPIC, None: {}}
OVERFLOW = {"otel_metric_overflow": "true"}


def _bounds(bounds) -> list[str]:
    return [str(b) for b in bounds] + ["+Inf"]


def cumulative(values, bounds) -> dict[str, int]:
    """Expected cumulative bucket counts, exactly (no floating point): le is inclusive."""
    out = {str(b): sum(1 for v in values if Fraction(str(v)) <= Fraction(str(b))) for b in bounds}
    out["+Inf"] = len(values)
    return out


def histogram(m: Metrics, name: str, labels: dict) -> tuple[float, float, dict[str, float]]:
    """(count, sum, cumulative buckets) of one series of histogram ``name``."""
    return m.value(name + "_count", labels), m.value(name + "_sum", labels), m.buckets(name, labels)


def check_plano_calls(m: Metrics, estimated: dict[str, float]) -> None:
    """/metrics after ``CALLS``: each family's values, worked out by hand from what was sent."""
    tokens = {
        (GPT, "input"): [1200, 40],
        (GPT, "output"): [300, 17],
        (GPT, "cached_input"): [1024],
        (GPT, "reasoning"): [0],
        (CLAUDE, "input"): [5000],
        (CLAUDE, "output"): [800],
        (CLAUDE, "cached_input"): [4096],
        (CLAUDE, "reasoning"): [256],
    }
    assert len(m.series(TOKENS + "_count")) == len(tokens)
    for (model, kind), values in tokens.items():
        count, total, buckets = histogram(m, TOKENS, {**MODEL[model], "gen_ai_token_type": kind})
        assert (count, total) == (len(values), sum(values)), (model, kind)
        assert buckets == cumulative(values, TOKEN_BUCKETS) and list(buckets) == _bounds(TOKEN_BUCKETS)
    # input 40 -> le=64, 1200 -> le=4096; cached 1024 -> le=1024 (inclusive); reasoning 0 -> le=1
    assert m.buckets(TOKENS, {**OPENAI, "gen_ai_token_type": "input"})["64"] == 1
    assert m.buckets(TOKENS, {**OPENAI, "gen_ai_token_type": "cached_input"})["1024"] == 1

    durations = {  # seconds, by failure class (error_type)
        (GPT, None): [1.5, 0.64],
        (GPT, "429"): [0.015],
        (GPT, "5xx"): [2.0],
        (CLAUDE, None): [81.92, 100.0],
        (None, "before_dispatch"): [0.001],
    }
    assert len(m.series(DURATION + "_count")) == len(durations)
    for (model, error), values in durations.items():
        labels = {
            **MODEL[model],
            **({"error_type": error} if error else {}),
        }
        count, total, buckets = histogram(m, DURATION, labels)
        assert count == len(values) and total == pytest.approx(sum(values), rel=1e-12), labels
        assert buckets == cumulative(values, DURATION_BUCKETS_S) and list(buckets) == _bounds(DURATION_BUCKETS_S)
    assert m.buckets(DURATION, ANTHROPIC)["81.92"] == 1  # 81.92 s exactly is in le=81.92, 100 s only in +Inf

    ttfc = {GPT: (OPENAI, [0.32, 0.085, 0.012]), CLAUDE: (ANTHROPIC, [1.28, 0.64])}  # the 503 sent no first chunk
    assert len(m.series(TTFC + "_count")) == 2
    for labels, values in ttfc.values():
        count, total, buckets = histogram(m, TTFC, labels)
        assert count == len(values) and total == pytest.approx(sum(values), rel=1e-12)
        assert buckets == cumulative(values, TTFC_BUCKETS_S)
    assert m.buckets(TTFC, OPENAI)["0.32"] - m.buckets(TTFC, OPENAI)["0.16"] == 1  # 320 ms is in le=0.32

    costs = {
        (GPT, "sent"): 0.0105,
        (CLAUDE, "sent"): 0.027,
        **{(model, "estimated"): c for model, c in estimated.items()},
    }
    assert len(m.series(COST)) == len(costs)
    for (model, source), usd in costs.items():
        labels = {**MODEL[model], "source": source}
        assert m.value(COST, labels) == pytest.approx(usd, rel=1e-12)

    requests = {
        (GPT, "none", "code_generation"): 2,
        (GPT, "429", "code_generation"): 1,
        (GPT, "5xx", "code_generation"): 1,
        (CLAUDE, "none", "fast"): 1,
        (CLAUDE, "none", None): 1,
        (None, "before_dispatch", None): 1,
    }
    assert len(m.series(REQUESTS)) == len(requests)
    for (model, failure, route), n in requests.items():
        labels = {**MODEL[model], "failure_class": failure}
        assert m.value(REQUESTS, {**labels, **({"route": route} if route else {})}) == n


def _estimated(data_dir) -> dict[str, float]:
    """The estimated cost the store holds per model (the price table's, filled at ingest)."""
    out: dict[str, float] = {}
    for row in read_spans(data_dir):
        if row["EstimatedCostUsd"] is not None:
            out[row["LlmModel"]] = out.get(row["LlmModel"], 0.0) + row["EstimatedCostUsd"]
    return out


def test_every_family_from_plano_calls_survives_restart_crash_and_a_recount(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d")
    base = now_base_ns()
    calls = list(enumerate(CALLS, 1))
    # Two commits (a read waits for the insert of what came before it), counted apart.
    assert grpc_export(srv.grpc_target, request(calls[:3], base)).partial_success.rejected_spans == 0
    srv.metrics()
    assert grpc_export(srv.grpc_target, request(calls[3:], base)).partial_success.rejected_spans == 0
    live = srv.metrics()
    srv.stop()
    estimated = _estimated(srv.data_dir)
    # The one call with tokens, no sent cost and a model the price table knows.
    assert set(estimated) == {GPT} and estimated[GPT] > 0
    check_plano_calls(live, estimated)

    def llm_samples(m: Metrics) -> list:
        return sorted(
            (n, sorted(lb.items()), v) for n, lb, v in m.samples if n.startswith(("gen_ai_", "planoscope_llm"))
        )

    def same(got: list, want: list) -> None:
        """Counts and buckets exactly; a float sum, added up in another order (a recount, or the
        rows of a commit read back in another order), to the last digit or so."""
        assert [(n, lb) for n, lb, _ in got] == [(n, lb) for n, lb, _ in want]
        for (name, labels, g), (_, _, w) in zip(got, want):
            assert g == (pytest.approx(w, rel=1e-12) if name.endswith("_sum") or name == COST else w), (name, labels)

    want = llm_samples(live)
    srv.start()  # the clean stop snapshotted the totals
    assert llm_samples(srv.metrics()) == want

    # A crash: nothing snapshotted since the start, the commits after the watermark are replayed.
    more = [(n + 100, c) for n, c in calls]
    grpc_export(srv.grpc_target, request(more[:4], base))
    srv.metrics()
    grpc_export(srv.grpc_target, request(more[4:], base))
    doubled = llm_samples(srv.metrics())
    srv.kill()
    srv.start()
    same(llm_samples(srv.metrics()), doubled)
    assert srv.metrics().value(REQUESTS, {**OPENAI, "failure_class": "429", "route": "code_generation"}) == 2

    # A store from before the LLM metrics (no totals of them stored): counted from the spans.
    srv.stop()
    con = duckdb.connect(str(db_path(srv.data_dir)))
    con.execute("DELETE FROM planoscope_meta WHERE key LIKE 'llmmetrics%'")
    con.execute("DROP TABLE llmmetrics_state")
    con.close()
    srv.start()
    assert any("recomputing LLM metrics from the stored spans" in line for line in srv.lines())
    same(llm_samples(srv.metrics()), doubled)


def test_a_store_from_before_the_llm_columns_is_filled_then_counted(server_factory, tmp_path):
    """An upgraded store: the new columns (cached and reasoning tokens, route, the estimated cost,
    the failure class) are filled from the stored attributes on start, before the LLM metrics are
    counted from the stored spans, so they count what a live ingest counted."""
    from planoscope.store.schema import ADDED_COLUMNS

    srv = server_factory(tmp_path / "d")
    grpc_export(srv.grpc_target, request(list(enumerate(CALLS, 1)), now_base_ns()))
    srv.stop()
    estimated = _estimated(srv.data_dir)
    con = duckdb.connect(str(db_path(srv.data_dir)))
    for name, _, _ in ADDED_COLUMNS[1:]:  # the LLM usage dashboard's, as before it
        con.execute(f'ALTER TABLE otel_traces DROP COLUMN "{name}"')
    con.execute("DELETE FROM planoscope_meta WHERE key LIKE 'llmmetrics%'")
    con.execute("DROP TABLE llmmetrics_state")
    con.close()
    srv.start()
    assert any("filling the new columns" in line for line in srv.lines())
    assert any("recomputing LLM metrics from the stored spans" in line for line in srv.lines())
    check_plano_calls(srv.metrics(), estimated)


def test_the_estimated_cost_is_its_own_series_never_mixed_with_the_sent_cost():
    """The decoded batch's EstimatedCostUsd (the price table's, for calls with tokens and no sent
    cost) is counted under source="estimated"; an unknown model's null estimate counts nothing."""
    decoder = Decoder()
    base = now_base_ns()
    calls = [
        (1, Call(GPT, 100, usage={"prompt_tokens": 10, "completion_tokens": 5}, cost=0.5)),
        (2, Call(GPT, 100, usage={"prompt_tokens": 10, "completion_tokens": 5})),
        (3, Call(GPT, 100, usage={"prompt_tokens": 30, "completion_tokens": 1})),
        (4, Call("acme/unknown-model", 100, usage={"prompt_tokens": 7})),
    ]
    table = decoder.decode_protobuf(request(calls, base).SerializeToString()).table
    llm_rows = zip(table.column("TraceId").to_pylist(), table.column("ServiceName").to_pylist())
    by_name = {trace: i for i, (trace, service) in enumerate(llm_rows) if service == "plano(llm)"}
    estimate = [None] * table.num_rows
    estimate[by_name[f"{2:032x}"]], estimate[by_name[f"{3:032x}"]] = 0.125, 0.25  # the price table's
    i = table.schema.get_field_index("EstimatedCostUsd")
    table = table.set_column(i, "EstimatedCostUsd", pa.array(estimate, pa.float64()))
    m = LlmMetrics(100)
    m.apply(m.merge(m.deltas(table)))
    costs = {tuple(s.labels.values()): s.value for f in m.collect() for s in f.samples if s.name == COST}
    assert costs == {(GPT, "openai", "sent"): 0.5, (GPT, "openai", "estimated"): 0.375}


def test_each_family_is_bounded_by_the_cardinality_limit():
    """Past the limit, a family's new series go to its one overflow series; every observation is
    counted once, so sums over a family stay exact; each family has its own room."""
    decoder = Decoder()
    models = [f"p/m{i}" for i in range(5)]
    calls = [(n, Call(model, 100, ttft_ms=50, usage={"prompt_tokens": n})) for n, model in enumerate(models, 1)]
    table = decoder.decode_protobuf(request(calls, now_base_ns()).SerializeToString()).table
    m = LlmMetrics(cardinality_limit=2)
    m.apply(m.merge(m.deltas(table)))
    samples = [(s.name, s.labels, s.value) for f in m.collect() for s in f.samples]

    def by_model(name: str) -> dict:
        return {lb.get("gen_ai_request_model", "OVERFLOW"): v for n, lb, v in samples if n == name}

    # Two series per family kept (the first by label values), the other three models' in the overflow.
    assert by_model(REQUESTS) == {"p/m0": 1, "p/m1": 1, "OVERFLOW": 3}
    assert by_model(TOKENS + "_sum") == {"p/m0": 1, "p/m1": 2, "OVERFLOW": 3 + 4 + 5}
    assert by_model(TTFC + "_count") == {"p/m0": 1, "p/m1": 1, "OVERFLOW": 3}
    overflow = [lb for n, lb, _ in samples if n.endswith(("_total", "_count")) and "gen_ai_request_model" not in lb]
    assert overflow == [OVERFLOW] * 4  # tokens, duration, TTFC, requests: only the overflow label
    # Known series keep counting; new ones keep going to the overflow.
    again = [(n + 10, Call(model, 100, usage={"prompt_tokens": 1})) for n, model in enumerate(["p/m1", "p/m9"])]
    m.apply(m.merge(m.deltas(decoder.decode_protobuf(request(again, now_base_ns()).SerializeToString()).table)))
    assert {
        s.labels.get("gen_ai_request_model", "OVERFLOW"): s.value
        for f in m.collect()
        for s in f.samples
        if s.name == REQUESTS
    } == {"p/m0": 1, "p/m1": 2, "OVERFLOW": 4}


def test_a_batch_of_many_models_counts_each_call_under_its_own_labels():
    """More (model, provider) pairs than calls: the pairs that occur are numbered instead (so no
    series index can overflow), and every call still lands in its own series."""
    calls = [
        (n, Call(f"p{n % 7}/m{n}", 100, ttft_ms=n % 50, usage={"prompt_tokens": n}, route=f"r{n % 13}"))
        for n in range(1, 3001)
    ]
    table = Decoder().decode_protobuf(request(calls, now_base_ns()).SerializeToString()).table
    m = LlmMetrics(10**6)
    m.apply(m.merge(m.deltas(table)))
    samples = [(s.name, s.labels, s.value) for f in m.collect() for s in f.samples]
    tokens = {
        lb["gen_ai_request_model"]: (lb["gen_ai_provider_name"], v) for n, lb, v in samples if n == TOKENS + "_sum"
    }
    assert tokens == {f"p{n % 7}/m{n}": (f"p{n % 7}", n) for n in range(1, 3001)}
    requests = {(lb["gen_ai_request_model"], lb["route"]): v for n, lb, v in samples if n == REQUESTS}
    assert requests == {(f"p{n % 7}/m{n}", f"r{n % 13}"): 1 for n in range(1, 3001)}


def test_overflow_counts_are_exact_across_a_crash(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d", "--metrics-cardinality-limit", "2")
    base = now_base_ns()

    def send(first: int, models: list[str]) -> None:
        calls = [(n, Call(model, 100, usage={"prompt_tokens": 10})) for n, model in enumerate(models, first)]
        assert grpc_export(srv.grpc_target, request(calls, base)).partial_success.rejected_spans == 0
        srv.metrics()  # one commit each: a read waits for the insert

    def requests() -> dict:
        return {lb.get("gen_ai_request_model", "OVERFLOW"): v for n, lb, v in srv.metrics().samples if n == REQUESTS}

    send(1, ["p/c", "p/a"])
    send(10, ["p/b", "p/a", "p/d"])
    want = {"p/a": 2, "p/c": 1, "OVERFLOW": 2}
    assert requests() == want
    srv.kill()
    srv.start()
    assert requests() == want
    send(20, ["p/e", "p/c"])
    srv.restart()
    assert requests() == {"p/a": 2, "p/c": 2, "OVERFLOW": 3}
    tokens = sum(v for n, lb, v in srv.metrics().samples if n == TOKENS + "_sum")
    assert tokens == 10 * 7


def _other_sender_spans(base: int):
    """An OpenAI app's LLM spans as the GenAI conventions, OpenInference and OpenLIT name them."""
    client = Status.STATUS_CODE_UNSET
    genai = pb_span(
        b"\x01" * 16,
        b"\x01" * 8,
        "chat gpt-4o-mini",
        base,
        base + 1200 * MS,
        kind=3,
        attrs={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.usage.cache_read.input_tokens": 64,
            "gen_ai.response.time_to_first_chunk": 0.25,
            "gen_ai.conversation.id": "conv-1",
        },
        status_code=client,
    )
    openinference = pb_span(
        b"\x02" * 16,
        b"\x02" * 8,
        "ChatCompletion",
        base,
        base + 300 * MS,
        attrs={
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
            "llm.provider": "openai",
            "llm.token_count.prompt": 50,
            "llm.token_count.completion": 10,
            "llm.token_count.total": 60,
            "llm.token_count.prompt_details.cache_read": 32,
            "llm.token_count.completion_details.reasoning": 8,
            "llm.cost.total": 0.0004,
            "session.id": "s-1",
        },
    )
    openinference_error = pb_span(
        b"\x03" * 16,
        b"\x03" * 8,
        "ChatCompletion",
        base,
        base + 20 * MS,
        attrs={"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.provider": "openai"},
        status_code=Status.STATUS_CODE_ERROR,
        status_message="Connection error.",
    )
    openlit = pb_span(
        b"\x04" * 16,
        b"\x04" * 8,
        "openai.chat.completions",
        base,
        base + 2 * 1000 * MS,
        kind=3,
        attrs={
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-3.5-turbo",
            "gen_ai.usage.input_tokens": 20,
            "gen_ai.usage.output_tokens": 5,
            "gen_ai.usage.cost": 0.00002,
            "gen_ai.server.time_to_first_token": 0.5,
            "http.response.status_code": 200,
        },
    )
    not_llm = pb_span(b"\x05" * 16, b"\x05" * 8, "GET /health", base, base + MS, kind=2)
    return pb_request(
        ({"service.name": "my-openai-app"}, [genai, openinference, openinference_error, openlit, not_llm])
    )


def test_genai_openinference_and_openlit_attributes_feed_the_same_families(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d")
    assert grpc_export(srv.grpc_target, _other_sender_spans(now_base_ns())).partial_success.rejected_spans == 0
    m = srv.metrics()
    mini = {"gen_ai_request_model": "gpt-4o-mini", "gen_ai_provider_name": "openai"}
    oi = {"gen_ai_request_model": "gpt-4o", "gen_ai_provider_name": "openai"}
    lit = {"gen_ai_request_model": "gpt-3.5-turbo", "gen_ai_provider_name": "openai"}
    token_sums = {
        (lb["gen_ai_request_model"], lb["gen_ai_token_type"]): v for n, lb, v in m.samples if n == TOKENS + "_sum"
    }
    assert token_sums == {
        ("gpt-4o-mini", "input"): 120,
        ("gpt-4o-mini", "output"): 30,
        ("gpt-4o-mini", "cached_input"): 64,
        ("gpt-4o", "input"): 50,
        ("gpt-4o", "output"): 10,
        ("gpt-4o", "cached_input"): 32,
        ("gpt-4o", "reasoning"): 8,
        ("gpt-3.5-turbo", "input"): 20,
        ("gpt-3.5-turbo", "output"): 5,
    }
    # TTFT in seconds from both senders' seconds attributes (stored as ms).
    assert histogram(m, TTFC, mini)[:2] == (1, 0.25) and m.buckets(TTFC, mini)["0.32"] == 1
    assert histogram(m, TTFC, lit)[:2] == (1, 0.5) and m.buckets(TTFC, lit)["0.32"] == 0
    assert len(m.series(TTFC + "_count")) == 2
    costs = {lb["gen_ai_request_model"]: (lb["source"], v) for n, lb, v in m.samples if n == COST}
    assert costs["gpt-4o"] == ("sent", 0.0004) and costs["gpt-3.5-turbo"] == ("sent", 0.00002)
    assert m.value(REQUESTS, {**oi, "failure_class": "error_status"}) == 1
    assert m.value(REQUESTS, {**oi, "failure_class": "none"}) == 1
    assert m.value(REQUESTS, {**mini, "failure_class": "none"}) == 1
    assert m.value(REQUESTS, {**lit, "failure_class": "none"}) == 1
    assert len(m.series(REQUESTS)) == 4  # the health check is no LLM call
    assert histogram(m, DURATION, {**oi, "error_type": "error_status"})[:2] == (1, 0.02)


def test_a_span_that_is_no_llm_call_counts_nothing():
    """Envoy's outbound hop carries http.status_code "429" (a string), the routing span a model
    name under its own keys: neither is an LLM call."""
    calls = [(1, Call(GPT, 15, status=429, ttft_ms=12))]
    table = Decoder().decode_protobuf(request(calls, now_base_ns()).SerializeToString()).table
    assert table.num_rows == 3
    m = LlmMetrics(100)
    deltas = m.deltas(table)
    assert {s.split(",")[0] for s in deltas} == {f'["{n}"' for n in (DURATION, TTFC, "planoscope_llm_requests")}
    assert sum(acc[0] for s, acc in deltas.items() if "planoscope_llm_requests" in s) == 1
    assert LLM == {"service.name": "plano(llm)"}
