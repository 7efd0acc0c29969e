"""Serving an ASGI app with uvicorn on a socket we bound ourselves (see ``listen.py``), inside
our own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket

import uvicorn

from .connections import HEADER_TIMEOUT, ConnectionLimit, LimitedH11Protocol
from .fds import ACCEPT_BATCH
from .listen import LISTEN_BACKLOG, StartupError

# uvicorn's default: a kept-alive connection without a byte for this long is closed.
KEEP_ALIVE_TIMEOUT = 5


class _Server(uvicorn.Server):
    # The process owns SIGINT/SIGTERM (see ``cli.py``); uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self):
        yield


class HttpServer:
    """Async context manager: serves ``app`` on ``sock`` until exit, then drains connections.

    At most ``max_connections`` connections at once (None: no limit), idle ones giving way to
    new ones, and a request's headers complete within ``header_timeout`` (see ``connections.py``);
    ``name`` says which listener in the log."""

    def __init__(
        self,
        app,
        sock: socket.socket,
        max_connections: int | None = None,
        name: str = "HTTP",
        header_timeout: float = HEADER_TIMEOUT,
    ):
        self.sock = sock
        self.connections = ConnectionLimit(max_connections, name, header_timeout)
        config = uvicorn.Config(
            app,
            http=functools.partial(LimitedH11Protocol, limit=self.connections),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
            timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
            server_header=False,
            # asyncio accepts up to `backlog` connections in one pass, each taking a descriptor
            # before the listener can turn it away (see fds.ACCEPT_BATCH).
            backlog=ACCEPT_BATCH,
        )
        self._server = _Server(config)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> HttpServer:
        self._task = asyncio.create_task(self._server.serve(sockets=[self.sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise StartupError("HTTP server stopped during startup")
            await asyncio.sleep(0.01)
        # asyncio listened again with the batch size; the kernel's queue of pending connections
        # may stay longer than one batch.
        self.sock.listen(LISTEN_BACKLOG)
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self.sock.close()
