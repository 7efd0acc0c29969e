"""File descriptors: the process' limit, raised to the hard one at start; the share of it each
listener may hold in connections; and asyncio's complaint when they run out, logged once a minute.

Every connection holds a descriptor, and so do the database, the journal and the outgoing
scrapes. With the common soft limit of 1,024, idle connections to one port used to take them
all: every listener then failed to accept, and asyncio logged a traceback per failed accept.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger("planoscope.net")

# Connections asyncio accepts in one pass of its loop. A connection reaches its protocol, which
# may close it as one too many, two passes later and its descriptor is freed one pass after that:
# under a flood a listener holds about three batches beyond its share (measured: 94 descriptors
# for two flooded listeners). uvicorn's default of 2,048 made that thousands.
ACCEPT_BATCH = 16
# Kept for everything but the listeners' connections: the database, the journal, outgoing
# scrapes and forwards, gRPC's own, and four accept batches per HTTP listener beyond its share.
RESERVED = 128 + 2 * 4 * ACCEPT_BATCH
# Connections per listener even when descriptors abound: an idle HTTP connection costs ~10 KB and
# the oldest idle one is closed when a newcomer needs its place (connections.py); gRPC cannot do
# that, so it gets more room (~12 KB each), and closes idle connections after a minute.
HTTP_CONNECTIONS_MAX = 1024
GRPC_CONNECTIONS_MAX = 16384
ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio/selector_events.py's message


def raise_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:  # the kernel still caps it (fs.nr_open)
        hard = _nr_open()
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.debug("open file limit raised from %d to %d", soft, hard)
            soft = hard
        except (ValueError, OSError) as e:
            log.debug("open file limit stays %d: %s", soft, e)
    return soft


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


@dataclass(frozen=True)
class Shares:
    """Connections each listener may hold: the UI's and OTLP/HTTP's (``http``), OTLP/gRPC's."""

    http: int
    grpc: int


def listener_shares(limit: int | None = None) -> Shares:
    """Split the open file limit (the current soft one by default) among the three listeners."""
    if limit is None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        limit = _nr_open()
    spare = max(limit - RESERVED, 0)
    http = max(16, min(HTTP_CONNECTIONS_MAX, spare // 3))
    shares = Shares(http, max(16, min(GRPC_CONNECTIONS_MAX, spare - 2 * http)))
    if http < HTTP_CONNECTIONS_MAX:
        log.warning(
            "the open file limit is %d (ulimit -n): each listener takes at most %d connections (OTLP/gRPC %d)",
            limit,
            shares.http,
            shares.grpc,
        )
    return shares


class Throttled:
    """A log line at most once per ``interval``, saying how often it was suppressed meanwhile."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0):
        self.logger = logger
        self.interval = interval
        self._last = -float("inf")
        self._suppressed = 0

    def warning(self, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += f" (and {self._suppressed} more times in the last {now - self._last:.0f} s)"
        self._last, self._suppressed = now, 0
        self.logger.warning(msg, *args)


@contextlib.contextmanager
def throttled_accept_errors(loop, interval: float = 60.0) -> Iterator[None]:
    """While entered, ``loop`` logs its failures to accept a connection (EMFILE, ENFILE, …) once
    per ``interval`` with a count, instead of a traceback per failure (thousands a second, since
    asyncio retries every pass); everything else goes to the handler it had."""
    previous = loop.get_exception_handler()
    throttled = Throttled(log, interval)

    def handler(loop, context) -> None:
        if context.get("message") == ACCEPT_FAILED:
            exc = context.get("exception")
            reason = getattr(exc, "strerror", None) or str(exc)
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            throttled.warning("cannot accept connections: %s (open file limit %d)", reason, limit)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
