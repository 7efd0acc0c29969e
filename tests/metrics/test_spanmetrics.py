"""``/metrics``: the spanmetrics connector's ``calls_total`` and ``duration_milliseconds``
histogram, checked exactly against a known set of spans sent by the OpenTelemetry SDK.
"""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.trace import SpanKind, StatusCode

from conftest import grpc_export, now_base_ns, pb_request, pb_span, sdk_export

MS = 1_000_000
DEFAULT_BOUNDS = ["5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000"]

LLM = {"service.name": "plano(llm)"}
AGENT = {"service.name": "plano(agent)"}
ORCH = {"service.name": "plano(orchestrator)"}
FILTER = {"service.name": "plano(filter)", "agent_id": "res-agent"}


def cumulative(durations_ns: list[int], bounds: list[str]) -> dict[str, int]:
    """Expected cumulative bucket counts, computed exactly (no floating point)."""
    out = {le: sum(1 for d in durations_ns if Fraction(d, MS) <= Fraction(le)) for le in bounds}
    out["+Inf"] = len(durations_ns)
    return out


def spans_for(base: int) -> tuple[list[dict], list[tuple[dict, list[int]]]]:
    """(spans to send, expected [(labels, durations)] per series) for the default settings."""
    gpt_ok = {"llm.model": "gpt-4o", "http.method": "POST", "http.status_code": 200}
    gpt_ok_durations = [5 * MS, 5 * MS + 1, 10_000 * MS, 10_001 * MS]
    spans = [
        {
            "resource": LLM,
            "name": "POST /v1/chat/completions gpt-4o",
            "kind": SpanKind.CLIENT,
            "start": base,
            "end": base + d,
            "attrs": gpt_ok,
            "status": (StatusCode.OK, None),
        }
        for d in gpt_ok_durations
    ] + [
        {
            "resource": LLM,
            "name": "POST /v1/chat/completions gpt-4o",
            "kind": SpanKind.CLIENT,
            "start": base,
            "end": base + 120 * MS,
            "status": (StatusCode.ERROR, "429"),
            "attrs": {"llm.model": "gpt-4o", "http.method": "POST", "http.status_code": 429},
        },
        {
            "resource": LLM,
            "name": "POST /v1/chat/completions claude-3-5-sonnet",
            "kind": SpanKind.CLIENT,
            "start": base,
            "end": base,
            "attrs": {"llm.model": "claude-3-5-sonnet", "llm.provider": "anthropic"},
        },
        {
            "resource": AGENT,
            "name": "flights /v1/chat/completions",
            "kind": SpanKind.INTERNAL,
            "start": base,
            "end": base + 42 * MS,
            "attrs": {"agent_id": "flights", "message_count": 3},
        },
        {
            "resource": AGENT,
            "name": "flights /v1/chat/completions",
            "kind": SpanKind.INTERNAL,
            "start": base + MS,
            "end": base + 59 * MS,
            "attrs": {"agent_id": "flights", "message_count": 5},
        },
        {
            "resource": ORCH,
            "name": "POST /v1/chat/completions",
            "kind": SpanKind.SERVER,
            "start": base,
            "end": base + 250 * MS,
            "status": (StatusCode.OK, None),
            "attrs": {
                "selection.listener": "travel",
                "http.method": "POST",
                "http.status_code": 200,
                "selection.agents": "flights,hotels",
            },
        },
        {"resource": FILTER, "name": "input_guard", "kind": SpanKind.PRODUCER, "start": base, "end": base + MS},
        {
            "resource": FILTER,
            "name": "input_guard",
            "kind": SpanKind.PRODUCER,
            "start": base,
            "end": base + MS,
            "attrs": {"agent_id": "span-agent"},
        },
    ]
    llm = {"service_name": "plano(llm)", "span_kind": "SPAN_KIND_CLIENT"}
    series = [
        (
            {
                **llm,
                "span_name": "POST /v1/chat/completions gpt-4o",
                "status_code": "STATUS_CODE_OK",
                "llm_model": "gpt-4o",
                "http_method": "POST",
                "http_status_code": "200",
            },
            gpt_ok_durations,
        ),
        (
            {
                **llm,
                "span_name": "POST /v1/chat/completions gpt-4o",
                "status_code": "STATUS_CODE_ERROR",
                "llm_model": "gpt-4o",
                "http_method": "POST",
                "http_status_code": "429",
            },
            [120 * MS],
        ),
        (
            {
                **llm,
                "span_name": "POST /v1/chat/completions claude-3-5-sonnet",
                "status_code": "STATUS_CODE_UNSET",
                "llm_model": "claude-3-5-sonnet",
            },
            [0],
        ),
        (
            {
                "service_name": "plano(agent)",
                "span_name": "flights /v1/chat/completions",
                "span_kind": "SPAN_KIND_INTERNAL",
                "status_code": "STATUS_CODE_UNSET",
                "agent_id": "flights",
            },
            [42 * MS, 58 * MS],
        ),
        (
            {
                "service_name": "plano(orchestrator)",
                "span_name": "POST /v1/chat/completions",
                "span_kind": "SPAN_KIND_SERVER",
                "status_code": "STATUS_CODE_OK",
                "selection_listener": "travel",
                "http_method": "POST",
                "http_status_code": "200",
            },
            [250 * MS],
        ),
        # A dimension missing from the span is looked up in its resource...
        (
            {
                "service_name": "plano(filter)",
                "span_name": "input_guard",
                "span_kind": "SPAN_KIND_PRODUCER",
                "status_code": "STATUS_CODE_UNSET",
                "agent_id": "res-agent",
            },
            [MS],
        ),
        # ... and the span's own value wins over the resource's.
        (
            {
                "service_name": "plano(filter)",
                "span_name": "input_guard",
                "span_kind": "SPAN_KIND_PRODUCER",
                "status_code": "STATUS_CODE_UNSET",
                "agent_id": "span-agent",
            },
            [MS],
        ),
    ]
    return spans, series


# Kinds the SDK cannot make (UNSPECIFIED) go as hand-made protobuf.
def raw_request(base: int):
    spans = [
        pb_span("11" * 16, "21" * 8, "bare", base, base + 2 * MS, kind=PbSpan.SPAN_KIND_UNSPECIFIED),
        pb_span(
            "11" * 16,
            "22" * 8,
            "consume",
            base,
            base + 3 * MS,
            kind=PbSpan.SPAN_KIND_CONSUMER,
            attrs={"http.status_code": 204},
        ),
    ]
    series = [
        (
            {
                "service_name": "plano",
                "span_name": "bare",
                "span_kind": "SPAN_KIND_UNSPECIFIED",
                "status_code": "STATUS_CODE_UNSET",
            },
            [2 * MS],
        ),
        (
            {
                "service_name": "plano",
                "span_name": "consume",
                "span_kind": "SPAN_KIND_CONSUMER",
                "status_code": "STATUS_CODE_UNSET",
                "http_status_code": "204",
            },
            [3 * MS],
        ),
    ]
    return pb_request(({"service.name": "plano"}, spans)), series


def check_series(metrics, series, bounds, prefix=""):
    calls, hist = prefix + "calls_total", prefix + "duration_milliseconds"
    assert sorted(map(sorted_items, metrics.series(calls))) == sorted(sorted_items(lb) for lb, _ in series)
    for labels, durations in series:
        assert metrics.value(calls, labels) == len(durations), labels
        assert metrics.buckets(hist, labels) == cumulative(durations, bounds), labels
        assert metrics.value(hist + "_count", labels) == len(durations), labels
        assert metrics.value(hist + "_sum", labels) == pytest.approx(sum(durations) / MS, rel=1e-12, abs=1e-9)


def sorted_items(d):
    return tuple(sorted(d.items()))


@pytest.fixture(scope="module")
def default_metrics(module_server_factory, tmp_path_factory):
    srv = module_server_factory(tmp_path_factory.mktemp("spanmetrics") / "data")
    empty = srv.metrics()
    base = now_base_ns()
    spans, series = spans_for(base)
    sdk_export(srv, spans)
    req, raw_series = raw_request(base)
    grpc_export(srv.grpc_target, req)
    return {"empty": empty, "metrics": srv.metrics(), "series": series + raw_series}


def test_no_series_before_any_span(default_metrics):
    # (planoscope's own planoscope_* metrics are there from the start)
    assert [s for s in default_metrics["empty"].samples if not s[0].startswith("planoscope_")] == []


def test_metric_types(default_metrics):
    types = default_metrics["metrics"].family_types()
    # (the LLM metrics, gen_ai_* and planoscope_llm_*, are tests/metrics/test_llm.py's)
    assert {k: v for k, v in types.items() if not k.startswith(("planoscope_", "gen_ai_"))} == {
        "calls": "counter",
        "duration_milliseconds": "histogram",
    }


def test_calls_and_histograms_per_label_set(default_metrics):
    check_series(default_metrics["metrics"], default_metrics["series"], DEFAULT_BOUNDS)


def test_bucket_boundaries_are_inclusive_upper_bounds(default_metrics):
    m = default_metrics["metrics"]
    labels = default_metrics["series"][0][0]
    b = m.buckets("duration_milliseconds", labels)
    # 5 ms exactly is in le="5"; 5 ms + 1 ns is not, but is in le="10".
    assert (b["5"], b["10"]) == (1, 2)
    # 10000 ms exactly is in le="10000"; 10001 ms only in +Inf.
    assert (b["5000"], b["10000"], b["+Inf"]) == (2, 3, 4)
    assert list(b) == DEFAULT_BOUNDS + ["+Inf"]
    assert m.value("duration_milliseconds_sum", labels) == pytest.approx(20011.000001, rel=1e-12)
    assert m.value("duration_milliseconds_count", labels) == 4


def test_a_missing_dimension_is_an_absent_label(default_metrics):
    for labels in default_metrics["metrics"].series("calls_total"):
        assert "" not in labels.values(), labels
    agent = default_metrics["series"][3][0]
    assert default_metrics["metrics"].value("calls_total", agent) == 2
    assert "llm_model" not in agent and "http_method" not in agent


def test_every_label_name(default_metrics):
    names = set()
    for labels in default_metrics["metrics"].series("calls_total"):
        names |= set(labels)
    assert names == {
        "service_name",
        "span_name",
        "span_kind",
        "status_code",
        "llm_model",
        "agent_id",
        "selection_listener",
        "http_method",
        "http_status_code",
    }


def test_metrics_namespace_renames_the_metrics(server_factory, tmp_path):
    srv = server_factory(tmp_path / "data", "--metrics-namespace", "traces_span_metrics")
    base = now_base_ns()
    spans, series = spans_for(base)
    sdk_export(srv, spans, protocol="http")
    m = srv.metrics()
    # (the LLM metrics keep their GenAI names)
    assert {k: v for k, v in m.family_types().items() if not k.startswith(("planoscope_", "gen_ai_"))} == {
        "traces_span_metrics_calls": "counter",
        "traces_span_metrics_duration_milliseconds": "histogram",
    }
    assert {name for name, _, _ in m.samples if not name.startswith(("planoscope_", "gen_ai_"))} == {
        "traces_span_metrics_calls_total",
        "traces_span_metrics_duration_milliseconds_bucket",
        "traces_span_metrics_duration_milliseconds_sum",
        "traces_span_metrics_duration_milliseconds_count",
    }
    check_series(m, series, DEFAULT_BOUNDS, prefix="traces_span_metrics_")


def test_dimensions_and_buckets_are_configurable(server_factory, tmp_path):
    srv = server_factory(
        tmp_path / "data",
        "--metrics-dimensions",
        "llm.model,llm.is_streaming,deployment.environment,plano.route.name",
        "--metrics-buckets-ms",
        "1,2.5,100",
    )
    base = now_base_ns()
    res = {"service.name": "plano(llm)", "deployment.environment": "prod"}
    attrs = {"llm.model": "gpt-4o", "llm.is_streaming": True, "http.method": "POST", "agent_id": "a"}
    durations = [2_500_000, MS + 1, MS // 2, 150 * MS, MS]
    spans = [
        {"resource": res, "name": "chat", "kind": SpanKind.CLIENT, "start": base, "end": base + d, "attrs": attrs}
        for d in durations
    ]
    spans.append(
        {
            "resource": res,
            "name": "route",
            "kind": SpanKind.INTERNAL,
            "start": base,
            "end": base + 100 * MS,
            "attrs": {"plano.route.name": "code"},
        }
    )
    sdk_export(srv, spans)
    series = [
        (
            {
                "service_name": "plano(llm)",
                "span_name": "chat",
                "span_kind": "SPAN_KIND_CLIENT",
                "status_code": "STATUS_CODE_UNSET",
                "llm_model": "gpt-4o",
                "llm_is_streaming": "true",
                "deployment_environment": "prod",
            },
            durations,
        ),
        (
            {
                "service_name": "plano(llm)",
                "span_name": "route",
                "span_kind": "SPAN_KIND_INTERNAL",
                "status_code": "STATUS_CODE_UNSET",
                "deployment_environment": "prod",
                "plano_route_name": "code",
            },
            [100 * MS],
        ),
    ]
    m = srv.metrics()
    check_series(m, series, ["1", "2.5", "100"])
    b = m.buckets("duration_milliseconds", series[0][0])
    assert b == {"1": 2, "2.5": 4, "100": 4, "+Inf": 5}


def test_durations_past_2_to_the_53_ns_are_bucketed_exactly():
    """A float64 holds ns exactly only up to 2**53 (104 days): Arrow's safe cast of a longer span
    raised, which once stopped the writer for good. Buckets compare the int64 ns themselves."""
    import pyarrow as pa

    from planoscope.metrics.spanmetrics import SpanMetrics

    durations = [2_500_000, 2_500_001, 2**53 + 1, 10**12 * MS, 10**12 * MS + 1, 2**63 - 2]
    n = len(durations)
    spans = pa.table(
        {
            "ServiceName": ["s"] * n,
            "SpanName": ["x"] * n,
            "SpanKind": ["Internal"] * n,
            "StatusCode": ["Unset"] * n,
            "Duration": pa.array(durations, pa.int64()),
        }
    )
    m = SpanMetrics(dimensions=(), buckets_ms=(2.5, 5, 10**12))
    ((calls, sum_ms, buckets),) = m.deltas(spans).values()
    assert calls == n and buckets == [1, 1, 2, 2]  # 2.5 ms is in le=2.5; 10**12 ms in le=1e12
    assert sum_ms == pytest.approx(sum(Fraction(d, MS) for d in durations), rel=1e-12)


# --- labels counted live and recounted from the store -------------------------------------------
# Live, a dimension's label is the string form the decoder pulls out (the collector's AsString());
# on start the spans after the last snapshot, or all of them when the settings changed, are
# recounted from the stored JSON. Both must give the same label for every kind of value, or a
# series splits in two at a restart.


def test_labels_recounted_from_the_store_are_the_labels_counted_live(tmp_path):
    import sys
    from datetime import datetime, timedelta
    from pathlib import Path

    from planoscope.ingest.decode import Decoder
    from planoscope.metrics.spanmetrics import SpanMetrics
    from planoscope.store import DuckDBStore

    sys.path.insert(0, str(Path(__file__).parents[1] / "ingest"))
    from test_decode import KEYS, random_request  # every kind of value under these keys, nested

    dims = [k for k in KEYS if k != "service.name"]
    decoder = Decoder(dims)
    live = SpanMetrics(dimensions=dims, cardinality_limit=10**6)
    store = DuckDBStore(tmp_path / "d")
    try:
        for seed in range(150):
            batch = decoder.decode_protobuf(random_request(seed))
            live.apply(live.merge(live.deltas(batch.table, batch.dimensions)))
            store.append_spans(batch.table, datetime(2026, 1, 1) + timedelta(seconds=seed))
        recounted = SpanMetrics(dimensions=dims, cardinality_limit=10**6)
        recounted.replay(store.scan_for_metrics(dims))
        by_commit = SpanMetrics(dimensions=dims, cardinality_limit=10**6)
        by_commit.replay_commits(store.scan_for_metrics(dims, after=datetime(2025, 1, 1), by_commit=True))
    finally:
        store.close()
    want = sorted(live.snapshot())
    assert len(want) > 300
    labels = [json.loads(s) for s, *_ in want]
    # doubles whole and not, arrays, maps, bytes and empty values among the labels
    assert {type(v) for row in labels for v in row} == {str, type(None)}
    assert any(v is not None and v.startswith("[") for row in labels for v in row)
    assert sorted(recounted.snapshot()) == want
    assert sorted(by_commit.snapshot()) == want


TYPED_DIMENSIONS = {
    "http.status_code": 429,
    "llm.usage.total_cost_usd": 0.0123,
    "plano.cache.warm": True,
    "llm.model": "openai/gpt-4o",
    "t.whole": 2.0,
    "t.negative_zero": -0.0,
    "t.huge": 1e21,
    "t.small": 4.5e-5,
    "t.nan": float("nan"),
    "t.inf": float("-inf"),
    "t.big": -(2**63),
    "t.array": [1, 2.5, "x", [True]],
    "t.map": {"a": 1.0, "b": {"c": None}},
    "t.bytes": b"\x00\xff",
    "t.empty": None,
}


def test_span_metric_labels_of_every_type_survive_restarts(server_factory, tmp_path):
    """Live, after a crash (the commits after the last snapshot recounted from the store) and
    after a settings change (everything recounted): the same series, label for label."""
    dims = ",".join(TYPED_DIMENSIONS)
    srv = server_factory(tmp_path / "data", "--metrics-dimensions", dims)
    base = now_base_ns()
    spans = [
        pb_span(bytes([i + 1]) * 16, bytes([i + 1]) * 8, "typed", base, base + (i + 1) * MS, attrs=TYPED_DIMENSIONS)
        for i in range(3)
    ]
    assert (
        grpc_export(srv.grpc_target, pb_request(({"service.name": "plano(llm)"}, spans))).partial_success.rejected_spans
        == 0
    )

    def calls():
        return sorted((sorted_items(lb), v) for n, lb, v in srv.metrics().samples if n == "calls_total")

    live = calls()
    ((series, n),) = live
    labels = dict(series)
    assert n == 3
    assert labels["http_status_code"] == "429" and labels["plano_cache_warm"] == "true"
    assert labels["t_whole"] == "2" and labels["t_negative_zero"] == "-0" and labels["t_huge"] == "1e+21"
    assert labels["t_small"] == "0.000045" and labels["t_nan"] == "NaN" and labels["t_inf"] == "-Infinity"
    assert labels["t_array"] == '[1,2.5,"x",[true]]' and labels["t_bytes"] == "AP8="
    assert labels["t_map"] == '{"a":1.0,"b":{"c":null}}' and labels["t_empty"] == ""
    srv.kill()  # no snapshot on the way out: the commits after the last one are recounted
    srv.start()
    assert calls() == live
    srv.restart("--metrics-dimensions", dims, "--metrics-buckets-ms", "1,10")  # everything is recounted
    assert any("recomputing span metrics" in line for line in srv.lines())
    assert calls() == live
