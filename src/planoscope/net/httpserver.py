"""Serving an ASGI app with uvicorn on a socket we bound ourselves (see ``listen.py``), inside
our own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn

from .listen import StartupError


class _Server(uvicorn.Server):
    # The process owns SIGINT/SIGTERM (see ``cli.py``); uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self):
        yield


class HttpServer:
    """Async context manager: serves ``app`` on ``sock`` until exit, then drains connections."""

    def __init__(self, app, sock: socket.socket):
        self.sock = sock
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
            server_header=False,
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
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self.sock.close()
