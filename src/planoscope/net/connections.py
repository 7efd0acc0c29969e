"""The connections of an HTTP listener: at most ``limit`` at once, and none held for free.

uvicorn closes a kept-alive connection after ``timeout_keep_alive`` without data, but it waits for
a request's headers for ever, and any byte restarts its timer. Here a connection that is not
serving a request (it has just opened, or has had its answer) is *idle*: its next request's
headers must be complete within ``HEADER_TIMEOUT`` however they trickle in, and when the listener
is full a new connection takes the place of the oldest idle one, which is closed, as nginx reuses
idle keep-alive connections. Idle connections, however many, thus never keep a client out (a
probe of ``/healthz`` gets through); only connections serving a request are never closed, and a
new one that finds all ``limit`` of them serving is closed at once.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

from .fds import Throttled

HEADER_TIMEOUT = 10.0  # seconds for a request line and headers (uvicorn caps their size at 16 KiB)

log = logging.getLogger("planoscope.net")


class ConnectionLimit:
    """The shared state of one listener's connections."""

    def __init__(self, limit: int | None, name: str = "HTTP", header_timeout: float = HEADER_TIMEOUT):
        self.limit = limit
        self.name = name
        self.header_timeout = header_timeout
        self.idle: dict[LimitedH11Protocol, None] = {}  # oldest first
        self.refused = 0
        self._log = Throttled(log)

    def make_room(self, connections: set) -> bool:
        """Whether a connection beyond ``limit`` may stay, once the oldest idle one is closed."""
        if self.limit is None or len(connections) <= self.limit:
            return True
        oldest = next(iter(self.idle), None)
        if oldest is None:
            self.refused += 1
            self._log.warning(
                "%s: a connection was refused: all %d connections allowed are serving a request",
                self.name,
                self.limit,
            )
            return False
        oldest.close()
        return True


class LimitedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, held to a ``ConnectionLimit`` and its header timeout."""

    def __init__(self, *args, limit: ConnectionLimit, **kwargs):
        super().__init__(*args, **kwargs)
        self._limit = limit
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self._limit.make_room(self.connections):
            self.close()
            return
        self._idle()

    def connection_lost(self, exc) -> None:
        self._busy()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._serving():
            self._busy()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # (may start serving a pipelined request)
        if not self._serving() and not self.transport.is_closing():
            self._idle()

    def close(self) -> None:
        self._busy()
        self.connections.discard(self)  # no longer counted, though it takes a moment to go
        self.transport.close()

    def _serving(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _idle(self) -> None:
        self._busy()
        self._limit.idle[self] = None
        self._header_timer = self.loop.call_later(self._limit.header_timeout, self.close)

    def _busy(self) -> None:
        self._limit.idle.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
