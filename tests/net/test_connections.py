"""An HTTP listener's connections (``HttpServer`` on uvicorn, real sockets): idle connections give
way to new ones at the limit, a request's headers must be complete in time however they
trickle, and asyncio's failures to accept are logged once a minute, not once per attempt."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from planoscope.net.httpserver import HttpServer
from planoscope.net.listen import bind


def _app(release: asyncio.Event) -> Starlette:
    async def hello(request):
        return PlainTextResponse("hello")

    async def hold(request):
        await release.wait()
        return PlainTextResponse("released")

    return Starlette(routes=[Route("/hello", hello), Route("/hold", hold)])


async def _closed(sock: socket.socket, timeout: float = 5) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (whatever it sent first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sock.setblocking(False)
    while loop.time() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except BlockingIOError:
            await asyncio.sleep(0.02)
        except OSError:
            return True
    return False


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5)


def test_the_oldest_idle_connection_gives_way_and_busy_ones_are_kept():
    async def main() -> None:
        release = asyncio.Event()
        sock = bind("127.0.0.1:0", "test")
        host, port = sock.getsockname()[:2]
        async with HttpServer(_app(release), sock, max_connections=4):
            idle = [socket.create_connection((host, port)) for _ in range(4)]
            await asyncio.sleep(0.1)  # accepted: the listener is full of idle connections
            r = await asyncio.to_thread(_get, f"http://{host}:{port}/hello")
            assert r.status_code == 200 and r.text == "hello"
            assert await _closed(idle[0])  # the oldest made room
            assert not await _closed(idle[1], 0.3)
            for s in idle:
                s.close()

            # Four connections serving a request are never closed; a fifth is, at once.
            holders = [asyncio.create_task(asyncio.to_thread(_get, f"http://{host}:{port}/hold")) for _ in range(4)]
            await asyncio.sleep(0.5)
            extra = socket.create_connection((host, port))
            assert await _closed(extra)
            extra.close()
            release.set()
            assert [(await h).text for h in holders] == ["released"] * 4

    asyncio.run(main())


def test_headers_trickling_in_are_cut_off_at_the_header_timeout():
    """uvicorn restarts its keep-alive timer at every byte and waits for headers for ever; a
    byte of header every 0.2 s must not keep a connection open past the header timeout."""

    async def main() -> None:
        sock = bind("127.0.0.1:0", "test")
        host, port = sock.getsockname()[:2]
        async with HttpServer(_app(asyncio.Event()), sock, header_timeout=1.0):
            trickle = socket.create_connection((host, port))
            trickle.setblocking(False)
            started = time.monotonic()
            closed_at = None
            for byte in b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100:
                try:
                    trickle.send(bytes([byte]))
                    if trickle.recv(1) == b"":
                        closed_at = time.monotonic() - started
                        break
                except BlockingIOError:
                    pass
                except OSError:
                    closed_at = time.monotonic() - started
                    break
                await asyncio.sleep(0.2)
            trickle.close()
            assert closed_at is not None and 0.9 < closed_at < 2, closed_at
            # A request sent at once is served.
            r = await asyncio.to_thread(_get, f"http://{host}:{port}/hello")
            assert r.status_code == 200

    asyncio.run(main())


SERVER = textwrap.dedent(
    """
    import asyncio, logging, os, resource

    from planoscope.net.fds import throttled_accept_errors

    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")

    async def main():
        loop = asyncio.get_running_loop()
        with throttled_accept_errors(loop, interval=60):
            server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            print(server.sockets[0].getsockname()[1], flush=True)
            # No descriptor left to accept with: every accept fails with EMFILE.
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")), 4096))
            print("limited", flush=True)
            await asyncio.sleep(3)
            loop.call_exception_handler({"message": "something else"})
            await asyncio.sleep(0.1)

    asyncio.run(main())
    """
)


def test_accept_failures_are_logged_once_a_minute_with_nothing_else_hidden():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    port = int(proc.stdout.readline())
    assert proc.stdout.readline() == "limited\n"
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    _, err = proc.communicate(timeout=30)
    for c in clients:
        c.close()
    assert proc.returncode == 0, err
    lines = err.splitlines()
    accept = [ln for ln in lines if "cannot accept connections" in ln]
    assert len(accept) == 1 and "Too many open files" in accept[0], err[:2000]
    assert "Traceback" not in err and "socket.accept() out of system resource" not in err, err[:2000]
    assert any("something else" in ln for ln in lines), err  # other errors still reach the default handler
    assert len(err) < 2000, err[:2000]
