"""The requests a receiver holds at once (``max_concurrent_requests``), from their headers to
their answer, and how long a client may take to send one.

A request takes a slot as soon as its headers are in, since its body (gRPC: its message) is read
into memory before it can be admitted. A slot is not held for free: the body must arrive within
``request_timeout``, and when every slot is taken a new request takes the one of the request that
has waited longest for its body, once that one has waited more than ``EVICT_AFTER``. So requests
that stall or trickle their body give way to any request that arrives complete, and only
requests whose body is in (being decoded, journaled) are never pushed out: they are bounded by
the count here and by admission's queue. On loopback or a LAN a body of a few MB arrives in
milliseconds; a client far slower than that only loses its slot while the receiver is full.

Example::

    slot = slots.take()           # None: every slot holds a request that keeps it
    try:
        async with slot.receiving():
            body = await read_body()  # TimeoutError: too slow, or evicted (slot.evicted)
        ...                           # decode, journal, answer
    finally:
        slot.release()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

# A request that has waited this long for its body gives its slot to a newcomer when all are taken.
EVICT_AFTER = 1.0


class Slot:
    """One request's hold on a slot of ``Slots``."""

    __slots__ = ("_slots", "_timeout", "started", "evicted", "released")

    def __init__(self, slots: Slots):
        self._slots = slots
        self._timeout: asyncio.Timeout | None = None
        self.started = time.monotonic()
        self.evicted = False
        self.released = False

    @contextlib.asynccontextmanager
    async def receiving(self) -> AsyncIterator[None]:
        """While the body is read: ``TimeoutError`` once ``request_timeout`` has passed since the
        slot was taken, or at once if the slot is given to another request (``evicted`` is set)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._slots.request_timeout - (time.monotonic() - self.started)
        async with asyncio.timeout_at(deadline) as timeout:
            self._timeout = timeout
            self._slots._receiving[self] = None
            try:
                yield
            finally:
                self._slots._receiving.pop(self, None)
                self._timeout = None

    def _evict(self) -> None:
        self.evicted = True
        self._slots._receiving.pop(self, None)
        self.release()  # at once: the newcomer takes it now, the evicted one only unwinds
        if self._timeout is not None:
            self._timeout.reschedule(asyncio.get_running_loop().time())

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._slots.held -= 1


class Slots:
    """At most ``size`` requests at once (touched on the event loop only)."""

    def __init__(self, size: int, request_timeout: float):
        self.size = size
        self.request_timeout = request_timeout
        self.held = 0
        self._receiving: dict[Slot, None] = {}  # the slots whose body is being read, oldest first

    def take(self) -> Slot | None:
        """A slot for a request whose headers just arrived, or None if all are kept."""
        if self.held >= self.size and not self._evict_oldest():
            return None
        self.held += 1
        return Slot(self)

    def _evict_oldest(self) -> bool:
        oldest = next(iter(self._receiving), None)
        if oldest is None or time.monotonic() - oldest.started < EVICT_AFTER:
            return False
        oldest._evict()
        return True
