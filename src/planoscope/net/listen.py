"""Listening sockets: bound by planoscope itself, before anything is served.

Binding first lets port 0 report the port it got and lets a taken port fail with a clear
message before anything else starts.
"""

from __future__ import annotations

import os
import socket

LISTEN_BACKLOG = 1024  # connections the kernel queues until they are accepted


def split_address(addr: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` → (host, port)."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class StartupError(RuntimeError):
    """planoscope cannot start; the message is meant for the user."""


def bind(address: str, what: str) -> socket.socket:
    """A listening TCP socket on ``address``.

    Made with ``IPPROTO_TCP`` rather than ``socket.create_server``'s protocol 0: asyncio sets
    TCP_NODELAY only on accepted sockets whose protocol says TCP. Without it, a response written
    in two segments (headers, body) on a kept-alive connection waited ~40 ms for the client's
    delayed ACK: every API call after the first cost 44 ms instead of 2 (benchmarks/traces.py).
    """
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        return sock
    except socket.gaierror as e:
        sock.close()
        raise StartupError(f"cannot listen on {address} for {what}: unknown host ({e.strerror})") from None
    except OSError as e:
        sock.close()
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise StartupError(f"cannot listen on {address} for {what}: {reason}") from None


def bound_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
