"""Span storage behind one interface (``SpanStore``): DuckDB, the embedded default, or ClickHouse
in the OpenTelemetry Collector ClickHouse exporter's table layout, for scale-out."""

from __future__ import annotations

from pathlib import Path

from .clickhouse_url import is_clickhouse
from .duckdb import DuckDBStore
from .spanstore import SpanStore, StoreError

__all__ = ["DuckDBStore", "SpanStore", "StoreError", "open_store"]


def open_store(store: str, data_dir: Path, retention_s: float = 0.0) -> SpanStore:
    """The store a ``store`` setting names: ``duckdb`` (the data directory's file) or a
    ``clickhouse://`` URL. Raises ``StoreError``."""
    if is_clickhouse(store):
        from .clickhouse import ClickHouseStore  # clickhouse-connect is imported only when used

        return ClickHouseStore(store, data_dir, retention_s)
    return DuckDBStore(data_dir)
