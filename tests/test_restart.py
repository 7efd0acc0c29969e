"""Restarts on the same data directory: stored spans stay, span metrics continue from where
they were (cumulative since the data began), and changed span-metric settings are recomputed
from the stored spans. Also: what was acknowledged survives a hard kill.
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
from fractions import Fraction

import httpx
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from conftest import Metrics, _wait, http_post, now_base_ns, pb_request, pb_span, read_spans, sdk_export, spans_by_id

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


def _data(m: Metrics) -> list:
    # what the process holds in memory (the samples head) and where the rollups' thinning is
    # (it goes on after a restart: tested in tests/promql/test_rollups.py)
    moving = ("planoscope_samples_head_samples", "planoscope_samples_rollup_watermark_seconds")
    return [s for s in m.samples if s[0] not in moving]


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
    # Everything but what the process holds in memory (the samples head: the table's last hours,
    # which hold the samples of /metrics taken before the restart too) continues as it was.
    assert sorted(map(repr, _data(after))) == sorted(map(repr, _data(before)))

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


# --------------------------------------------------------------------------------------------
# What once stopped storage for good, or lost acknowledged spans on a restart
# --------------------------------------------------------------------------------------------


def test_a_span_longer_than_2_to_the_53_ns_stops_neither_storage_nor_a_restart(server_factory, tmp_path):
    """One unauthenticated OTLP/JSON request (start 0, end now) killed the writer within 5 s on a
    float cast: the spans acknowledged before it never reached DuckDB, all later ingest was
    refused, and every restart replayed it and died again."""
    data_dir = tmp_path / "data"
    srv = server_factory(data_dir)
    base = now_base_ns()
    ids = span_ids(sdk_export(srv, [llm_span(base, MS)]))
    end = time.time_ns()
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0123456789abcdef0123456789abcdef",
                                "spanId": "0123456789abcdef",
                                "name": "x",
                                "startTimeUnixNano": "0",
                                "endTimeUnixNano": str(end),
                            }
                        ]
                    }
                ]
            }
        ]
    }
    r = http_post(srv.http_traces_url, json.dumps(doc).encode(), "application/json")
    assert r.status_code == 200 and not r.json().get("partialSuccess"), r.text
    srv.kill()  # at once: the long span is in the journal only, for the restart to replay
    srv.start()
    assert any("from the journal" in line for line in srv.lines("err")), srv.output()
    assert srv.healthz()["status"] == "ok"
    ids |= span_ids(sdk_export(srv, [llm_span(base + 1, 2 * MS)], protocol="http"))  # ingest goes on
    m = srv.metrics()
    long = {
        "service_name": "",
        "span_name": "x",
        "span_kind": "SPAN_KIND_UNSPECIFIED",
        "status_code": "STATUS_CODE_UNSET",
    }
    assert m.buckets("duration_milliseconds", long)["10000"] == 0 and m.value("calls_total", long) == 1
    assert m.value("duration_milliseconds_sum", long) == pytest.approx(end / MS)
    srv.restart()  # and again: nothing left to trip over
    srv.stop()
    stored = spans_by_id(read_spans(data_dir))
    assert set(stored) == ids | {"0123456789abcdef"}
    assert stored["0123456789abcdef"]["Duration"] == end


@pytest.mark.parametrize("damage", ["length field", "body byte"])
def test_a_corrupt_first_record_of_a_segment_costs_at_most_itself(server_factory, tmp_path, damage):
    """Four corrupt bytes of the first record's length field were taken for a torn tail and the
    whole segment (20,000 acknowledged spans in the probe) was cut off. Now a record whose header
    alone is corrupt is kept whole; one whose body is corrupt is copied to a .corrupt file, and
    every intact record after it is inserted."""
    data_dir = tmp_path / "data"
    srv = server_factory(data_dir)
    base = now_base_ns()
    sent: list[set[str]] = []
    for r in range(10):
        spans = [pb_span(f"{r + 1:032x}", f"{r + 1:04x}{i + 1:012x}", "s", base, base + MS) for i in range(50)]
        resp = http_post(srv.http_traces_url, pb_request((LLM, spans)).SerializeToString())
        assert resp.status_code == 200
        sent.append({s.span_id.hex() for s in spans})
    srv.kill()  # before the insert: everything is in the journal only
    (segment,) = (data_dir / "journal").glob("*.log")
    data = bytearray(segment.read_bytes())
    length = struct.unpack_from("<I", data)[0]
    if damage == "length field":
        struct.pack_into("<I", data, 0, 0xFFFFFFFF)
    else:
        data[9 + length // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    srv.start()
    srv.stop()
    stored = set(spans_by_id(read_spans(data_dir)))
    corrupt = list((data_dir / "journal").glob("*.corrupt"))
    if damage == "length field":
        assert stored == set().union(*sent) and not corrupt
    else:
        assert stored == set().union(*sent[1:])
        assert [p.name for p in corrupt] == [f"{segment.name}.0.corrupt"]
        assert corrupt[0].read_bytes() == bytes(data[: 9 + length])  # the record, as the disk holds it


def test_a_full_disk_is_seen_waited_out_and_loses_nothing(server_factory, tmp_path):
    """The data directory on a small tmpfs, filled by ingest. Once every failed insert was logged
    as the rollback's "no transaction is active", /healthz said ok, and a stop with acknowledged
    spans only in the journal said "stopped" and exited 0."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        data_dir = mnt / "data"
        srv = server_factory(data_dir)
        base = now_base_ns()
        acked: set[str] = set()
        refused = 0
        with httpx.Client(timeout=30) as c:
            for r in range(400):
                spans = [
                    pb_span(f"{r + 1:032x}", f"{r + 1:06x}{i + 1:010x}", "s", base, base + MS, attrs={"pad": "x" * 200})
                    for i in range(200)
                ]
                resp = c.post(
                    srv.http_traces_url,
                    content=pb_request((LLM, spans)).SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf"},
                )
                if resp.status_code == 200:
                    acked |= {s.span_id.hex() for s in spans}
                    continue
                assert resp.status_code == 503, resp.text  # retryable, and no path of ours in it
                assert str(mnt) not in resp.text and "journal" in resp.text
                refused += 1
                if refused >= 3 and srv.healthz()["status"] == "degraded":
                    break
        health = _wait(
            lambda: (h := srv.healthz())["status"] == "degraded" and len(h["problems"]) == 2 and h,
            what="/healthz degraded: the journal and the inserts failing",
        )
        journal, inserts = health["problems"]
        assert "journal cannot be written" in journal and "inserts into the store have failed" in inserts
        assert all("No space left on device" in p and str(mnt) not in p for p in (journal, inserts)), health
        assert 0 < health["pending_spans"] <= len(acked)
        err = "\n".join(srv.lines("err"))
        assert "No space left on device" in err and "no transaction is active" not in err
        assert srv.stop(expect_rc=None) == 1
        last = srv.lines("err")[-1]
        assert last.startswith("planoscope: error: ") and "acknowledged spans are still only in the journal" in last
        assert "they will be inserted on the next start" in last
        subprocess.run(["mount", "-o", "remount,size=256m", str(mnt)], check=True)
        srv.start()
        srv.stop()
        rows = read_spans(data_dir)
        assert len(rows) == len(acked) and set(spans_by_id(rows)) == acked  # each once, none lost
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
