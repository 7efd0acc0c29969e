"""What a forwarder has still to send, on the ClickHouse store (``forwarder.Backlog``).

ClickHouse's table holds every writer's rows (other instances', stock collectors'); an instance
forwards the rows it inserted: those whose ``IngestedBy`` is its instance id
(``store/clickhouse_columns.py``; a collector's rows have ''). Each of its inserts carries
``JournalPosition``, the journal position it reaches, which grows insert after insert: a
destination's cursor is such a position, and a batch is the whole inserts after it, in their
order. Only inserts the store has committed locally (``journal_applied``) are read: their rows
are all in ClickHouse, where the rows of an insert in doubt (a crash between the insert and its
local commit) may be, and are read once its replay, deduplicated by ClickHouse, commits. The
cursors are kept in the instance's state file (``ClickHouseStore.forward_cursors``), beside the
journal position: a lost state file is a new instance id, whose rows start anew.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..query.traces_clickhouse import SPAN_SELECT, span_row
from ..store import StoreError
from ..store.clickhouse import SPANS

if TYPE_CHECKING:
    from ..store.clickhouse import ClickHouseStore

_MINE = "IngestedBy = {instance:String} AND JournalPosition > {after:UInt64}"
_UPPER = (
    f"SELECT maxOrNull(JournalPosition) FROM (SELECT JournalPosition FROM {SPANS}"
    f" WHERE {_MINE} AND JournalPosition <= {{applied:UInt64}} ORDER BY JournalPosition LIMIT {{spans:UInt64}})"
)
_ROWS = f"{SPAN_SELECT} WHERE {_MINE} AND JournalPosition <= {{upper:UInt64}} ORDER BY JournalPosition"
_PENDING = f"SELECT count() FROM {SPANS} WHERE {_MINE}"


class ClickHouseBacklog:
    def __init__(self, store: ClickHouseStore):
        self.store = store

    def end(self) -> int:
        return self.store.journal_applied()

    def batch(self, after: int, spans: int) -> tuple[int | None, list[tuple]]:
        applied = self.store.journal_applied()  # before the read: every insert up to it is in ClickHouse
        if applied <= after:
            return None, []
        mine = {"instance": self.store.instance, "after": after}
        upper = self.store.read(_UPPER, {**mine, "applied": applied, "spans": spans})[0][0]
        if upper is None:  # inserts without spans of this instance: nothing to send up to there
            return applied, []
        return upper, [span_row(r) for r in self.store.read(_ROWS, {**mine, "upper": upper})]

    def pending(self, after: int) -> int | None:
        if self.store.journal_applied() <= after:
            return 0
        try:  # /healthz asks: within a second, or not known
            return self.store.read_quick(_PENDING, {"instance": self.store.instance, "after": after})[0][0]
        except StoreError:
            return None

    @staticmethod
    def shown(cursor: int) -> int:
        return cursor


class ClickHouseForwardState:
    """``forwarder.ForwardState`` in the ClickHouse store's state file: each destination's journal position."""

    def __init__(self, store: ClickHouseStore):
        self.store = store
        self.cursors = store.forward_cursors()

    def cursor(self, dest) -> int | None:
        return self.cursors.get(dest.shown)

    def save(self, url: str, cursor: int) -> None:
        self.store.save_forward_cursor(url, cursor)
        self.cursors[url] = cursor
