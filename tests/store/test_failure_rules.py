"""The failure definition and "an LLM call" are declared once (schema.FAILURE_RULES,
schema.LLM_CALL_COLUMNS) and read twice: by DuckDB (the ``failure_class`` macro, which fills the
stored FailureClass at insert; ``LLM_CALL_SQL``, which fills the stored LlmCall) and by Arrow (``failure_classes``,
``llm_calls``: what the LLM metrics count from a decoded batch before it is stored). Both readings
must agree on every combination of the columns they read, nulls included."""

from __future__ import annotations

import itertools
from datetime import datetime

import duckdb
import pyarrow as pa

from planoscope.ingest.decode import Decoder
from planoscope.store import DuckDBStore
from planoscope.store.schema import (
    FAILURE_CLASSES,
    FAILURE_MACRO,
    FAILURE_RULES,
    LLM_CALL_COLUMNS,
    LLM_CALL_SQL,
    failure_classes,
    llm_calls,
)

HTTP = [None, 0, 200, 399, 400, 404, 428, 429, 430, 499, 500, 503, 599, 600]
SERVICES = [None, "plano(llm)", "plano(outbound)", "plano(LLM)", ""]
NAMES = [None, "llm", "LLM", "llm ", "POST /v1/chat/completions openai/gpt-4o"]
STATUSES = [None, "Unset", "Ok", "Error", "error"]


def _grid() -> pa.Table:
    rows = list(itertools.product(HTTP, SERVICES, NAMES, STATUSES))
    return pa.table(
        {
            "HttpStatusCode": pa.array([r[0] for r in rows], pa.int32()),
            "ServiceName": pa.array([r[1] for r in rows], pa.string()),
            "SpanName": pa.array([r[2] for r in rows], pa.string()),
            "StatusCode": pa.array([r[3] for r in rows], pa.string()),
        }
    )


def test_the_arrow_failure_class_is_the_macros_on_every_combination():
    grid = _grid()
    con = duckdb.connect()
    con.execute(FAILURE_MACRO)
    con.register("grid", grid)
    sql = con.execute("SELECT failure_class(StatusCode, HttpStatusCode, ServiceName, SpanName) FROM grid").fetchall()
    arrow = failure_classes(grid).to_pylist()
    assert arrow == [r[0] for r in sql]
    # every class occurs, and only the declared ones
    assert set(arrow) == {*FAILURE_CLASSES, None}
    assert {cls for cls, _ in FAILURE_RULES} == set(FAILURE_CLASSES)


def test_the_stored_failure_class_is_what_the_metrics_computed_from_the_batch(tmp_path):
    """Decoded spans (HTTP status as an int, a string, semconv's key, none), inserted through the
    store: the FailureClass DuckDB stored equals the Arrow class of the decoded batch."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Status

    from conftest import pb_request, pb_span

    spans = []
    n = 0
    for status in [None, 200, 429, "429", 503, "503", 404, "x"]:
        for name in ["llm", "POST /v1/chat/completions openai/gpt-4o"]:
            for code in [Status.STATUS_CODE_UNSET, Status.STATUS_CODE_ERROR]:
                n += 1
                key = "http.status_code" if n % 3 else "http.response.status_code"
                attrs = {} if status is None else {key: status}
                spans.append(
                    pb_span(n.to_bytes(16, "big"), n.to_bytes(8, "big"), name, 1, 2, attrs=attrs, status_code=code)
                )
    req = pb_request(({"service.name": "plano(llm)"}, spans), ({"service.name": "plano(outbound)"}, spans))
    batch = Decoder().decode_protobuf(req.SerializeToString())
    store = DuckDBStore(tmp_path / "d")
    try:
        store.append_spans(batch.table, datetime(2026, 1, 1))
        stored = store.query("SELECT SpanId, ServiceName, FailureClass FROM otel_traces")
    finally:
        store.close()
    assert len(stored) == 2 * len(spans)
    by_row = {}
    for (span_id, service), cls in zip(
        zip(batch.table.column("SpanId").to_pylist(), batch.table.column("ServiceName").to_pylist()),
        failure_classes(batch.table).to_pylist(),
    ):
        by_row[(span_id, service)] = cls
    assert {(s, svc): cls for s, svc, cls in stored} == by_row
    assert set(by_row.values()) == {*FAILURE_CLASSES, None}


def test_the_arrow_llm_call_mask_is_the_sql_condition():
    rows = list(itertools.product(SERVICES, [None, "m"], [None, 7], [None, 0]))
    n = len(rows)
    columns = {
        "ServiceName": pa.array([r[0] for r in rows], pa.string()),
        "LlmModel": pa.array([r[1] for r in rows], pa.string()),
    }
    for i, column in enumerate(c for c in LLM_CALL_COLUMNS if c != "LlmModel"):
        # one token column set per row pattern, the others null
        columns[column] = pa.array([r[2] if i % 2 else r[3] for r in rows] if i < 2 else [None] * n, pa.int64())
    table = pa.table(columns)
    con = duckdb.connect()
    con.register("otel_traces", table)
    sql = [r[0] for r in con.execute(f"SELECT {LLM_CALL_SQL} FROM otel_traces").fetchall()]
    assert llm_calls(table).to_pylist() == sql
    assert set(sql) == {True, False}  # both kinds of span in the grid, and never NULL
