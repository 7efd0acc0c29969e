"""Span-metric cardinality is bounded as the spanmetrics connector's ``aggregation_cardinality_limit``
bounds it: past the limit, the spans of series not seen before go to one series labelled
``otel_metric_overflow="true"``; known series keep counting; every span is counted once; and a
restart (clean or a crash, which replays the spans after the last snapshot) keeps the assignment."""

from __future__ import annotations

import pyarrow as pa

from conftest import grpc_export, now_base_ns, pb_request, pb_span
from planoscope.metrics.spanmetrics import OVERFLOW_SERIES, SpanMetrics

MS = 1_000_000
OVERFLOW = {"otel_metric_overflow": "true"}


def _batch(models: list[str], durations_ms: list[float] | None = None) -> pa.Table:
    """Spans of plano(llm), one per model given (in order), as ``scan_for_metrics`` selects them."""
    n = len(models)
    durations = [round(d * MS) for d in durations_ms] if durations_ms else [MS] * n
    cols = {
        "ServiceName": ["plano(llm)"] * n,
        "SpanName": ["chat"] * n,
        "SpanKind": ["Client"] * n,
        "StatusCode": ["Unset"] * n,
        "Duration": pa.array(durations, pa.int64()),
        "d0": models,
    }
    for i in range(1, 5):
        cols[f"d{i}"] = pa.array([None] * n, pa.string())
    return pa.table(cols)


def _calls(m: SpanMetrics) -> dict[str, int]:
    """``{llm_model or "OVERFLOW": calls}`` from what /metrics would show."""
    out = {}
    for family in m.collect():
        for s in family.samples:
            if s.name == "calls_total":
                key = "OVERFLOW" if s.labels == OVERFLOW else s.labels["llm_model"]
                out[key] = s.value
    return out


def _count(m: SpanMetrics, batch: pa.Table) -> dict[str, list]:
    """What the writer does with a committed batch; returns the deltas (the writer's dirty set)."""
    deltas = m.deltas(batch)
    m.apply(m.merge(deltas))
    return deltas


def test_new_series_beyond_the_limit_go_to_one_overflow_series():
    m = SpanMetrics(dimensions=("llm.model",) + ("a", "b", "c", "d"), cardinality_limit=3)
    _count(m, _batch(["m1", "m2"]))
    # One batch with three new series and one room left: the first by label values gets it.
    deltas = _count(m, _batch(["z9", "m3", "m1", "z9", "m4"], [1, 2, 3, 4, 5]))
    assert OVERFLOW_SERIES in deltas, "the writer's dirty set must hold the overflow series to snapshot it"
    assert _calls(m) == {"m1": 2, "m2": 1, "m3": 1, "OVERFLOW": 3}
    # Known series keep counting; new ones, and those already folded, keep going to the overflow.
    _count(m, _batch(["m2", "m4", "new", "m3", "z9"]))
    assert _calls(m) == {"m1": 2, "m2": 2, "m3": 2, "OVERFLOW": 6}
    # The overflow series is a whole histogram (sum and buckets of its spans), with only its label.
    hist = next(f for f in m.collect() if f.name == "duration_milliseconds")
    overflow = {s.name: s.value for s in hist.samples if {k: v for k, v in s.labels.items() if k != "le"} == OVERFLOW}
    assert overflow["duration_milliseconds_count"] == 6
    assert overflow["duration_milliseconds_sum"] == 1 + 4 + 5 + 1 + 1 + 1
    assert [
        s.labels for s in hist.samples if s.name == "duration_milliseconds_sum" and "llm_model" not in s.labels
    ] == [OVERFLOW]


def test_the_limit_is_per_metric_over_all_services():
    m = SpanMetrics(dimensions=(), cardinality_limit=2)
    t = _batch(["x"] * 4).drop_columns(["d0", "d1", "d2", "d3", "d4"])
    t = t.set_column(0, "ServiceName", pa.array(["s1", "s2", "s3", "s4"]))
    m.apply(m.merge(m.deltas(t)))
    calls = next(f for f in m.collect() if f.name == "calls")
    assert sorted((s.labels.get("service_name", "OVERFLOW"), s.value) for s in calls.samples) == [
        ("OVERFLOW", 2),
        ("s1", 1),
        ("s2", 1),
    ]


def test_replay_assigns_the_same_series_whatever_the_order_and_batching():
    """On start, spans after the snapshot are replayed in whatever order the store returns them."""
    spans = ["k1", "k2"] * 3 + [f"n{i:03d}" for i in range(50)] * 2
    results = []
    for order in (spans, spans[::-1], sorted(spans), spans[1::2] + spans[::2]):
        m = SpanMetrics(dimensions=("llm.model", "a", "b", "c", "d"), cardinality_limit=10)
        m.load(
            [
                (
                    '["plano(llm)","chat","SPAN_KIND_CLIENT","STATUS_CODE_UNSET","k1",null,null,null,null]',
                    5,
                    5.0,
                    [5] + [0] * 11,
                )
            ]
        )
        m.replay(_batch(order[i : i + 7]) for i in range(0, len(order), 7))
        results.append(_calls(m))
    assert all(r == results[0] for r in results), results
    # k1 was stored (5 calls before); nine more fit: k2 and the first eight new ones by label values.
    assert results[0] == {"k1": 8, "k2": 3, **{f"n{i:03d}": 2 for i in range(8)}, "OVERFLOW": 84}


def _llm_spans(models: list[str], base: int, seq: list[int]) -> bytes:
    spans = []
    for model in models:
        seq[0] += 1
        n = seq[0]
        spans.append(
            pb_span(
                n.to_bytes(16, "big"), n.to_bytes(8, "big"), "chat", base, base + 3 * MS, attrs={"llm.model": model}
            )
        )
    return pb_request(({"service.name": "plano(llm)"}, spans)).SerializeToString()


def _model_calls(srv) -> dict[str, float]:
    m = srv.metrics()
    out = {}
    for name, labels, value in m.samples:
        if name == "calls_total":
            assert labels == OVERFLOW or set(labels) == {
                "service_name",
                "span_name",
                "span_kind",
                "status_code",
                "llm_model",
            }, labels
            out["OVERFLOW" if labels == OVERFLOW else labels["llm_model"]] = value
    return out


def test_overflow_counts_are_exact_across_a_restart_and_a_crash(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d", "--metrics-cardinality-limit", "3")
    base, seq = now_base_ns(), [0]
    grpc_export(srv.grpc_target, _llm_spans(["a", "b", "c"], base, seq))
    grpc_export(srv.grpc_target, _llm_spans(["d", "a", "e", "e"], base, seq))
    expected = {"a": 2, "b": 1, "c": 1, "OVERFLOW": 3}
    assert _model_calls(srv) == expected
    # /metrics holds the limit's series and the overflow one, each histogram whole.
    assert len(srv.metrics().series("duration_milliseconds_count")) == 4

    srv.restart()  # a clean stop snapshots the totals
    assert _model_calls(srv) == expected
    grpc_export(srv.grpc_target, _llm_spans(["b", "d", "f"], base, seq))
    expected = {"a": 2, "b": 2, "c": 1, "OVERFLOW": 5}
    assert _model_calls(srv) == expected

    # A crash: the spans since the last snapshot are replayed from the store on start.
    grpc_export(srv.grpc_target, _llm_spans(["c", "g", "a", "e"], base, seq))
    assert _model_calls(srv) == {"a": 3, "b": 2, "c": 2, "OVERFLOW": 7}
    srv.kill()
    srv.start()
    assert _model_calls(srv) == {"a": 3, "b": 2, "c": 2, "OVERFLOW": 7}
    srv.restart()
    assert _model_calls(srv) == {"a": 3, "b": 2, "c": 2, "OVERFLOW": 7}
    assert sum(_model_calls(srv).values()) == seq[0]


def test_without_the_limit_reached_nothing_overflows(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d")
    base, seq = now_base_ns(), [0]
    models = [f"model-{i:04d}" for i in range(300)]
    grpc_export(srv.grpc_target, _llm_spans(models, base, seq))
    calls = _model_calls(srv)
    assert "OVERFLOW" not in calls and len(calls) == 300


def test_the_commits_after_a_snapshot_are_replayed_as_they_were_counted():
    """After a crash, the commits the last snapshot missed are counted again from the store. As
    one batch they would give the room below the limit to other series than the live process did
    (the first by label values of all of them): here ``a`` and ``b`` instead of ``z`` and ``a``.
    Replayed commit by commit, in order, /metrics shows after the crash what it showed before."""
    dims = ("llm.model", "a", "b", "c", "d")
    commits = [["z"], ["a", "b", "c", "a"], ["c", "d", "z"]]
    live = SpanMetrics(dimensions=dims, cardinality_limit=2)
    for models in commits:
        _count(live, _batch(models))
    assert _calls(live) == {"z": 2, "a": 2, "OVERFLOW": 4}

    def stamped(i: int, models: list[str]) -> pa.Table:  # a commit as scan_for_metrics(by_commit=True) gives it
        t = _batch(models)
        return t.append_column("IngestedAt", pa.array([i] * len(models), pa.timestamp("us")))

    whole = pa.concat_tables([stamped(i, m) for i, m in enumerate(commits)])
    for batch_rows in (1, 2, 3, 100):  # however the store cuts the scan into batches
        replayed = SpanMetrics(dimensions=dims, cardinality_limit=2)
        replayed.replay_commits(whole.to_batches(max_chunksize=batch_rows))
        assert _calls(replayed) == _calls(live), batch_rows
    one_batch = SpanMetrics(dimensions=dims, cardinality_limit=2)
    one_batch.replay([whole.drop_columns(["IngestedAt"])])
    assert _calls(one_batch) != _calls(live)  # what replaying as one batch would have shown
