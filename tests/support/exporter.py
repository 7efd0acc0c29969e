"""What the OpenTelemetry Collector's ClickHouse exporter inserts for an OTLP request: its rows
built here the way its Go code builds them, for tests to insert as a collector would, or to
compare with what planoscope wrote."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from planoscope.store import clickhouse_schema
from planoscope.store.attributes import value_str

SPAN_KIND = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")  # pdata SpanKind.String()
STATUS_CODE = ("Unset", "Ok", "Error")  # pdata StatusCode.String()


def _map(attributes) -> dict[str, str]:
    """internal.AttributesToMap: every value as pcommon AsString() renders it."""
    return {kv.key: value_str(kv.value) for kv in attributes}


def exporter_rows(req: ExportTraceServiceRequest) -> list[list]:
    """The values exporter_traces.go's pushTraceData appends per span, in INSERT_COLUMNS order."""
    rows = []
    for rs in req.resource_spans:
        res = _map(rs.resource.attributes)
        service = next((value_str(kv.value) for kv in rs.resource.attributes if kv.key == "service.name"), "")
        for ss in rs.scope_spans:
            for s in ss.spans:
                rows.append(
                    [
                        s.start_time_unix_nano,  # time.Time; DateTime64(9) ticks
                        s.trace_id.hex() if any(s.trace_id) else "",
                        s.span_id.hex() if any(s.span_id) else "",
                        s.parent_span_id.hex() if any(s.parent_span_id) else "",
                        s.trace_state,
                        s.name,
                        SPAN_KIND[s.kind],
                        service,
                        res,
                        ss.scope.name,
                        ss.scope.version,
                        _map(s.attributes),
                        (s.end_time_unix_nano - s.start_time_unix_nano) % 2**64,  # pcommon.Timestamp, unsigned
                        STATUS_CODE[s.status.code],
                        s.status.message,
                        [e.time_unix_nano for e in s.events],
                        [e.name for e in s.events],
                        [_map(e.attributes) for e in s.events],
                        [lk.trace_id.hex() if any(lk.trace_id) else "" for lk in s.links],
                        [lk.span_id.hex() if any(lk.span_id) else "" for lk in s.links],
                        [lk.trace_state for lk in s.links],
                        [_map(lk.attributes) for lk in s.links],
                    ]
                )
    return rows


def exporter_insert(client, table: str, req: ExportTraceServiceRequest) -> None:
    """Insert ``req``'s spans into ``table`` as the exporter does: its columns, in its order."""
    client.insert(table, exporter_rows(req), column_names=clickhouse_schema.insert_columns())


_SETS_SQL = (
    "SELECT AttributeTypes, mapKeys(ResourceAttributes), mapValues(ResourceAttributes), mapKeys(ScopeAttributes),"
    " mapValues(ScopeAttributes), mapKeys(SpanAttributes), mapValues(SpanAttributes),"
    " arrayMap(m -> mapKeys(m), `Events.Attributes`), arrayMap(m -> mapValues(m), `Events.Attributes`),"
    " arrayMap(m -> mapKeys(m), `Links.Attributes`), arrayMap(m -> mapValues(m), `Links.Attributes`)"
    " FROM otel_traces WHERE SpanId = {id:String}"
)


def stored_attribute_sets(client, span_id: str) -> list[list]:
    """The attribute sets of the row of ``span_id`` as planoscope reads them back (resource,
    scope, span, each event's, each link's): its maps pair by pair (a dict would fold repeated
    keys) and its AttributeTypes, through ``clickhouse_rows.attribute_sets``."""
    from planoscope.store.clickhouse_rows import attribute_sets

    types, rk, rv, sk, sv, pk, pv, ek, ev, lk, lv = client.query(_SETS_SQL, parameters={"id": span_id}).result_rows[0]
    sets = [list(zip(rk, rv)), list(zip(sk, sv)), list(zip(pk, pv))]
    sets += [list(zip(k, v)) for k, v in zip(ek, ev)] + [list(zip(k, v)) for k, v in zip(lk, lv)]
    return attribute_sets(types, sets)
