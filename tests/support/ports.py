"""``free_port``: a port on 127.0.0.1 free now, for a server a test starts (or restarts) on it later."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A port free now for something to listen on later: below the kernel's ephemeral range, so
    that no client's connection takes it meanwhile as its local port (a forwarder retrying a
    backend that is down once connected to itself on the backend's port and held it)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    while True:
        port = rng.randrange(10_000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
