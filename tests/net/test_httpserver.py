"""The listening sockets planoscope binds: accepted connections must have TCP_NODELAY, or a
response written in two segments waits ~40 ms for the client's delayed ACK on every request
after the first of a kept-alive connection (measured: 44 ms per API call instead of 1-2 ms)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from planoscope.net.listen import StartupError, bind


def test_accepted_connections_have_tcp_nodelay():
    async def main() -> int:
        sock = bind("127.0.0.1:0", "test")
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        async def on_connect(reader, writer):
            s = writer.get_extra_info("socket")
            seen.set_result(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _, w = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(seen, 5)
            w.close()
        return value

    assert asyncio.run(main()) != 0


def test_a_taken_port_is_a_clear_error():
    first = bind("127.0.0.1:0", "the UI")
    try:
        with pytest.raises(StartupError, match=r"cannot listen on 127\.0\.0\.1:\d+ for the UI: Address already in use"):
            bind(f"127.0.0.1:{first.getsockname()[1]}", "the UI")
    finally:
        first.close()
