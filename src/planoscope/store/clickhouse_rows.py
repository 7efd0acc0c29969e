"""A decoded batch (``schema.SPAN_SCHEMA`` + ``schema.STRING_MAPS``) as the rows the ClickHouse
exporter inserts into ``otel_traces``, plus the columns planoscope sends beside them.

Column for column what the exporter's ``pushTraceData`` sends (``clickhouse_schema``): the start
time in nanoseconds, lowercase hex ids with '' for a zero one, the kind and status names, each
attribute set as a map of string forms, events and links as the parallel arrays of their Nested
columns, the duration in nanoseconds. Whole columns at a time, in Arrow: nothing here is a Python
loop over spans.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .clickhouse_schema import INSERT_COLUMNS

_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _or_empty(ids: pa.Array, zero: str) -> pa.Array:
    """A hex id column with the exporter's '' for an all-zero id (TraceIDToHexOrEmptyString)."""
    return pc.if_else(pc.equal(ids, zero), "", ids)


def _field(lists: pa.ListArray, name: str) -> pa.ListArray:
    """One field of a list of structs, as a list of its values (the same offsets)."""
    return pa.ListArray.from_arrays(lists.offsets, lists.values.field(name))


def _typed_attributes(t: pa.Table, events: pa.ListArray, links: pa.ListArray) -> pa.Array:
    """Every attribute set of each span in planoscope's typed JSON (clickhouse_columns):
    ``{"resource":{…},"scope":{…},"span":{…},"events":[{…},…],"links":[{…},…]}``."""
    ev = pc.binary_join(_field(events, "Attributes"), ",")
    ln = pc.binary_join(_field(links, "Attributes"), ",")
    parts = [
        '{"resource":',
        t.column("ResourceAttributes").combine_chunks(),
        ',"scope":',
        t.column("ScopeAttributes").combine_chunks(),
        ',"span":',
        t.column("SpanAttributes").combine_chunks(),
        ',"events":[',
        ev,
        '],"links":[',
        ln,
        "]}",
    ]
    return pc.binary_join_element_wise(*parts, "")


def exporter_rows(batch: pa.Table) -> pa.Table:
    """``batch`` as the exporter's INSERT columns (``INSERT_COLUMNS``, in order), then
    ScopeAttributes, TypedAttributes and EstimatedCostUsd: one record batch, so that ClickHouse
    makes one block of it (one part per partition, named by the insert's deduplication token)."""
    t = batch.combine_chunks()
    events = t.column("Events").chunk(0) if t.num_rows else pa.array([], t.schema.field("Events").type)
    links = t.column("Links").chunk(0) if t.num_rows else pa.array([], t.schema.field("Links").type)
    col = t.column
    columns = {
        "Timestamp": col("Timestamp"),
        "TraceId": col("TraceId"),
        "SpanId": col("SpanId"),
        "ParentSpanId": _or_empty(col("ParentSpanId"), _ZERO_SPAN),
        "TraceState": col("TraceState"),
        "SpanName": col("SpanName"),
        "SpanKind": col("SpanKind"),
        "ServiceName": col("ServiceName"),
        "ResourceAttributes": col("ResourceAttributesMap"),
        "ScopeName": col("ScopeName"),
        "ScopeVersion": col("ScopeVersion"),
        "SpanAttributes": col("SpanAttributesMap"),
        "Duration": col("Duration").cast(pa.uint64()),
        "StatusCode": col("StatusCode"),
        "StatusMessage": col("StatusMessage"),
        "Events.Timestamp": _field(events, "Timestamp"),
        "Events.Name": _field(events, "Name"),
        "Events.Attributes": col("EventsAttributesMap"),
        "Links.TraceId": pa.ListArray.from_arrays(links.offsets, _or_empty(links.values.field("TraceId"), _ZERO_TRACE)),
        "Links.SpanId": pa.ListArray.from_arrays(links.offsets, _or_empty(links.values.field("SpanId"), _ZERO_SPAN)),
        "Links.TraceState": _field(links, "TraceState"),
        "Links.Attributes": col("LinksAttributesMap"),
        "ScopeAttributes": col("ScopeAttributesMap"),
        "TypedAttributes": _typed_attributes(t, events, links),
        "EstimatedCostUsd": col("EstimatedCostUsd"),
    }
    assert list(columns)[: len(INSERT_COLUMNS)] == list(INSERT_COLUMNS)
    return pa.table(columns).combine_chunks()
