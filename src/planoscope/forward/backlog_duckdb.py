"""What a forwarder has still to send, on the DuckDB store (``forwarder.Backlog``): the spans
committed after the cursor, an ``IngestedAt`` (one per commit), read from the data directory's
file, whose every span this instance ingested."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ..query.otlp import SPAN_SELECT

if TYPE_CHECKING:
    from ..store import SpanStore


class DuckDBBacklog:
    def __init__(self, store: SpanStore):
        self.store = store

    def end(self) -> datetime:
        return self.store.last_ingested() or datetime(1970, 1, 1)

    def batch(self, after: datetime, spans: int) -> tuple[datetime | None, list[tuple]]:
        upper = self.store.read(
            "SELECT max(IngestedAt) FROM (SELECT IngestedAt FROM otel_traces WHERE IngestedAt > ?"
            " ORDER BY IngestedAt LIMIT ?)",
            [after, spans],
        )[0][0]
        if upper is None:
            return None, []
        rows = self.store.read(
            f"{SPAN_SELECT} WHERE IngestedAt > ? AND IngestedAt <= ? ORDER BY IngestedAt", [after, upper]
        )
        return upper, rows

    def pending(self, after: datetime) -> int | None:
        return self.store.read("SELECT count(*) FROM otel_traces WHERE IngestedAt > ?", [after])[0][0]

    @staticmethod
    def shown(cursor: datetime) -> str:
        return cursor.isoformat()
