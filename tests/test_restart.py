"""Restarts on the same data directory: stored spans stay, span metrics continue from where
they were (cumulative since the data began), and changed span-metric settings are recomputed
from the stored spans. Also: what was acknowledged survives a hard kill.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from conftest import Metrics, now_base_ns, read_spans, sdk_export, spans_by_id

MS = 1_000_000
LLM = {"service.name": "plano(llm)"}
GPT = {
    "service_name": "plano(llm)",
    "span_name": "POST /v1/chat/completions gpt-4o",
    "span_kind": "SPAN_KIND_CLIENT",
    "status_code": "STATUS_CODE_OK",
    "llm_model": "gpt-4o",
    "http_status_code": "200",
}
AGENT = {
    "service_name": "plano(agent)",
    "span_name": "flights /v1/chat/completions",
    "span_kind": "SPAN_KIND_INTERNAL",
    "status_code": "STATUS_CODE_UNSET",
    "agent_id": "flights",
}
DEFAULT_BOUNDS = ["5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000"]


def llm_span(base, duration_ns):
    return {
        "resource": LLM,
        "name": "POST /v1/chat/completions gpt-4o",
        "kind": SpanKind.CLIENT,
        "start": base,
        "end": base + duration_ns,
        "status": (StatusCode.OK, None),
        "attrs": {"llm.model": "gpt-4o", "http.status_code": 200},
    }


def agent_span(base, duration_ns):
    return {
        "resource": {"service.name": "plano(agent)"},
        "name": "flights /v1/chat/completions",
        "kind": SpanKind.INTERNAL,
        "start": base,
        "end": base + duration_ns,
        "attrs": {"agent_id": "flights"},
    }


def cumulative(durations_ns, bounds):
    out = {le: sum(1 for d in durations_ns if Fraction(d, MS) <= Fraction(le)) for le in bounds}
    out["+Inf"] = len(durations_ns)
    return out


def check(m: Metrics, labels, durations, bounds):
    assert m.value("calls_total", labels) == len(durations)
    assert m.value("duration_milliseconds_count", labels) == len(durations)
    assert m.value("duration_milliseconds_sum", labels) == pytest.approx(sum(durations) / MS, rel=1e-12)
    assert m.buckets("duration_milliseconds", labels) == cumulative(durations, bounds)


def span_ids(finished):
    return {f"{s.context.span_id:016x}" for s in finished}


def test_restart_keeps_spans_and_continues_metrics(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    srv = server_factory(data_dir)
    assert srv.startup_span_count == 0
    base = now_base_ns()
    llm1, agent1 = [3 * MS, 7 * MS, 40 * MS], [30 * MS]
    ids = span_ids(sdk_export(srv, [llm_span(base, d) for d in llm1] + [agent_span(base, d) for d in agent1]))
    before = srv.metrics()
    check(before, GPT, llm1, DEFAULT_BOUNDS)
    check(before, AGENT, agent1, DEFAULT_BOUNDS)

    srv.restart()
    assert srv.startup_span_count == 4
    after = srv.metrics()
    assert sorted(map(repr, after.samples)) == sorted(map(repr, before.samples))

    # More spans after the restart add to the restored totals.
    llm2 = [5 * MS, 2_000 * MS]
    ids |= span_ids(sdk_export(srv, [llm_span(base + 1, d) for d in llm2], protocol="http"))
    m = srv.metrics()
    check(m, GPT, llm1 + llm2, DEFAULT_BOUNDS)
    check(m, AGENT, agent1, DEFAULT_BOUNDS)
    assert srv.healthz()["spans_written"] == 2  # this process wrote only the new ones

    srv.restart()
    assert srv.startup_span_count == 6
    check(srv.metrics(), GPT, llm1 + llm2, DEFAULT_BOUNDS)
    srv.stop()
    assert set(spans_by_id(read_spans(data_dir))) == ids


def test_changed_metric_settings_are_recomputed_from_stored_spans(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    srv = server_factory(data_dir)
    base = now_base_ns()
    llm, agent = [MS, 3 * MS, 40 * MS, 2_000 * MS], [30 * MS, 75 * MS]
    sdk_export(srv, [llm_span(base, d) for d in llm] + [agent_span(base, d) for d in agent])
    check(srv.metrics(), GPT, llm, DEFAULT_BOUNDS)

    # New buckets: the histogram is recomputed from every stored span, not started afresh.
    srv.restart("--metrics-buckets-ms", "2,50,1000")
    m = srv.metrics()
    check(m, GPT, llm, ["2", "50", "1000"])
    check(m, AGENT, agent, ["2", "50", "1000"])
    assert m.buckets("duration_milliseconds", GPT) == {"2": 1, "50": 3, "1000": 3, "+Inf": 4}

    # Counting continues on the recomputed totals.
    sdk_export(srv, [llm_span(base + 1, 10 * MS)])
    check(srv.metrics(), GPT, llm + [10 * MS], ["2", "50", "1000"])

    # New dimensions: the label sets change, the counts are recomputed.
    srv.restart("--metrics-dimensions", "agent_id,service.name")
    m = srv.metrics()
    assert (
        m.value(
            "calls_total",
            {
                "service_name": "plano(llm)",
                "span_name": GPT["span_name"],
                "span_kind": "SPAN_KIND_CLIENT",
                "status_code": "STATUS_CODE_OK",
            },
        )
        == 5
    )
    assert (
        m.value(
            "calls_total",
            {
                "service_name": "plano(agent)",
                "span_name": AGENT["span_name"],
                "span_kind": "SPAN_KIND_INTERNAL",
                "status_code": "STATUS_CODE_UNSET",
                "agent_id": "flights",
            },
        )
        == 2
    )
    assert len(m.series("calls_total")) == 2

    # Back to the defaults: the same totals as if nothing had changed.
    srv.restart("--log-level", "info")
    m = srv.metrics()
    check(m, GPT, llm + [10 * MS], DEFAULT_BOUNDS)
    check(m, AGENT, agent, DEFAULT_BOUNDS)
    srv.stop()


def test_sigterm_exits_0_after_committing(server_factory, tmp_path):
    """SIGTERM after several commits: exit code 0, 'stopped', no traceback, every span kept."""
    data_dir = tmp_path / "data"
    srv = server_factory(data_dir)
    base = now_base_ns()
    ids = set()
    for i in range(3):  # three separate requests, three commits
        ids |= span_ids(sdk_export(srv, [llm_span(base + i, MS)]))
    rc = srv.stop(expect_rc=None)
    err = "\n".join(srv.lines("err"))
    assert rc == 0, srv.output()
    assert "Traceback" not in err, err
    assert srv.lines("out")[-1] == "planoscope: stopped"
    assert set(spans_by_id(read_spans(data_dir))) == ids


def test_acknowledged_spans_survive_a_hard_kill(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    srv = server_factory(data_dir)
    base = now_base_ns()
    ids = span_ids(sdk_export(srv, [llm_span(base, d) for d in (MS, 2 * MS)]))
    ids |= span_ids(sdk_export(srv, [agent_span(base, 5 * MS)], protocol="http"))
    srv.kill()  # SIGKILL right after the acknowledgements: no shutdown, no checkpoint
    # Acknowledged means journaled (DuckDB may not have them yet): the restart inserts them.
    assert list((data_dir / "journal").glob("*.log"))
    srv.start()
    assert srv.startup_span_count == 3
    assert any("inserted 2 requests (3 spans) from the journal" in ln for ln in srv.lines("err")), srv.output()
    m = srv.metrics()
    check(m, GPT, [MS, 2 * MS], DEFAULT_BOUNDS)
    check(m, AGENT, [5 * MS], DEFAULT_BOUNDS)
    srv.stop()
    assert set(spans_by_id(read_spans(data_dir))) == ids
    assert not list((data_dir / "journal").glob("*.log"))  # all in DuckDB: the journal is emptied on stop
