"""A decoded batch (``schema.SPAN_SCHEMA`` + ``schema.STRING_MAPS`` + ``schema.MAP_TYPES``) as the
rows the ClickHouse exporter inserts into ``otel_traces``, plus the columns planoscope sends
beside them; and the attribute sets of a stored row as they were sent (``attribute_sets``).

Column for column what the exporter's ``pushTraceData`` sends (``clickhouse_schema``): the start
time in nanoseconds, lowercase hex ids with '' for a zero one, the kind and status names, each
attribute set as a map of string forms, events and links as the parallel arrays of their Nested
columns, the duration in nanoseconds. Whole columns at a time, in Arrow: nothing here is a Python
loop over spans.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from .attributes import stored_value
from .clickhouse_schema import INSERT_COLUMNS
from .schema import MAP_TYPES, STRING_MAPS

_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _or_empty(ids: pa.Array, zero: str) -> pa.Array:
    """A hex id column with the exporter's '' for an all-zero id (TraceIDToHexOrEmptyString)."""
    return pc.if_else(pc.equal(ids, zero), "", ids)


def _field(lists: pa.ListArray, name: str) -> pa.ListArray:
    """One field of a list of structs, as a list of its values (the same offsets)."""
    return pa.ListArray.from_arrays(lists.offsets, lists.values.field(name))


def _attribute_types(t: pa.Table) -> pa.Array:
    """``AttributeTypes`` (clickhouse_columns): the sets' types, resource | scope | span | the
    events' (joined by ,) | the links' (joined by ,)."""
    col = t.column
    return pc.binary_join_element_wise(
        col("ResourceAttributesTypes"),
        col("ScopeAttributesTypes"),
        col("SpanAttributesTypes"),
        pc.binary_join(col("EventsAttributesTypes"), ","),
        pc.binary_join(col("LinksAttributesTypes"), ","),
        "|",
    )


_READ = [
    *("Timestamp TraceId SpanId ParentSpanId TraceState SpanName SpanKind ServiceName ScopeName ScopeVersion".split()),
    *("Duration StatusCode StatusMessage Events Links EstimatedCostUsd".split()),
    *STRING_MAPS.names,
    *MAP_TYPES.names,
]


def exporter_rows(batch: pa.Table) -> pa.Table:
    """``batch`` as the exporter's INSERT columns (``INSERT_COLUMNS``, in order), then
    ScopeAttributes, AttributeTypes and EstimatedCostUsd: one record batch, so that ClickHouse
    makes one block of it (one part per partition, named by the insert's deduplication token)."""
    # Only what is sent is copied into one chunk (the JSON attribute columns are the largest).
    t = batch.select(_READ).combine_chunks()
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
        "AttributeTypes": _attribute_types(t),
        "EstimatedCostUsd": col("EstimatedCostUsd"),
    }
    assert list(columns)[: len(INSERT_COLUMNS)] == list(INSERT_COLUMNS)
    return pa.table(columns)


# --- reading the types back -------------------------------------------------------------------

_JSON = json.JSONDecoder()


def _value(letter: str, shown: str) -> AnyValue:
    if letter == "s":
        return AnyValue(string_value=shown)
    if letter == "i":
        return AnyValue(int_value=int(shown))
    if letter == "d":
        return AnyValue(double_value=float(shown))  # NaN, Infinity, -0 and 1e+21 read back too
    if letter == "b":
        return AnyValue(bool_value=shown == "true")
    if letter == "y":
        return AnyValue(bytes_value=base64.b64decode(shown))
    if letter == "e":
        return AnyValue()
    raise ValueError(f"not a type letter: {letter!r}")


def attribute_sets(types: str, sets: Sequence[Sequence[tuple[str, str]]]) -> list[list[KeyValue]]:
    """The attribute sets of a row as they were sent, from its maps' ``(key, string form)`` pairs
    (every pair in order: ``mapKeys``/``mapValues``, not a dict), the sets in AttributeTypes'
    order (resource, scope, span, each event's, each link's), and its ``AttributeTypes``. A row
    without types (a collector's: '') gives every value as the string it holds."""
    out: list[list[KeyValue]] = []
    pos = 0
    for pairs in sets:
        values = []
        for key, shown in pairs:
            if not types:
                values.append(KeyValue(key=key, value=AnyValue(string_value=shown)))
                continue
            while types[pos] in "|,":  # between two sets
                pos += 1
            letter = types[pos]
            if letter in "am":  # the typed JSON follows its letter
                _, end = _JSON.raw_decode(types, pos + 1)
                value, pos = stored_value(types[pos + 1 : end]), end
            else:
                value, pos = _value(letter, shown), pos + 1
            values.append(KeyValue(key=key, value=value))
        out.append(values)
    return out
