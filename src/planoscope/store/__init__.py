"""Span storage. The embedded default is DuckDB; the table layout follows the OpenTelemetry
Collector ClickHouse exporter so the same queries can later run on ClickHouse."""

from .duckdb import DuckDBStore, StoreError

__all__ = ["DuckDBStore", "StoreError"]
