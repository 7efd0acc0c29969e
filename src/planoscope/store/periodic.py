"""``Periodic``: a store's background job (retention's deletes, the rollups' thinning), run in an
asyncio task every ``interval`` seconds while the app runs, through ingest's writer thread (the
owner of the store's one write connection). A failed pass is logged and the next one tries again;
nothing else is affected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol


class Writer(Protocol):
    """What a background job needs of ingest's writer (``ingest.writer.SpanWriter``)."""

    async def call(self, fn: Callable[[], Any]) -> Any: ...


class Periodic:
    """Async context manager running ``run_once`` every ``interval`` s (not at all when ``enabled``
    is false). Subclasses name the job: ``name`` (its task's), ``failed`` and ``log`` (what a
    failed pass logs, where)."""

    name = "planoscope-periodic"
    failed = "a background pass failed"
    log = logging.getLogger("planoscope.store")

    def __init__(self, writer: Writer, interval: float, enabled: bool = True):
        self.writer, self.interval, self.enabled = writer, interval, enabled
        self._task: asyncio.Task | None = None

    async def run_once(self) -> Any:
        raise NotImplementedError

    async def __aenter__(self):
        if self.enabled:
            self._task = asyncio.create_task(self._loop(), name=self.name)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the next pass tries again
                self.log.warning("%s: %s", self.failed, e)
            await asyncio.sleep(self.interval)
