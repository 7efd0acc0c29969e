"""A real ClickHouse server for the tests: chDB's ClickHouse engine serving ClickHouse's own HTTP
and native TCP interfaces, in a subprocess that a test can stop, kill and start again.

Debian's clickhouse-server (18.16) predates the ``Map`` type of the OpenTelemetry Collector
exporter's tables; PyPI's chdb-core is ClickHouse 26.x as a library. Its module-level
``_chdb.query(sql, "TabSeparated", path=DIR)`` runs clickhouse-local on ``DIR``, where
``SYSTEM START LISTEN HTTP/TCP`` opens the ports of the ``config.xml`` in the working directory;
the listeners live while that one call runs, so the call ends with an idle query that sleeps.
(``chdb.connect()`` cannot: "Can't start servers because start_servers_callback is not set".)

Run it by hand::

    python tests/support/clickhouse_server.py --data DIR --http-port 8123 --tcp-port 9000 \\
        --user planoscope --password secret

It prints ``clickhouse: ready http=127.0.0.1:N tcp=127.0.0.1:M`` once its HTTP port answers as this
very server, by its display name: a port in use ends the call with no error reported (the reason is
only on stderr), and another server's /ping must not pass for ours. Otherwise it exits 1. SIGTERM (or SIGINT) stops it cleanly: the idle
query is killed, the engine shuts down, exit code 0. SIGKILL is a crash; acknowledged inserts
survive both (MergeTree writes a part before the INSERT returns).

Users: chDB's embedded client logs in as ``default`` with an empty password, hard-coded
(``session->authenticate("default", "", ...)`` in chDB's ChdbClient), so ``default`` cannot have a
password here. It is kept for that login only, with no privilege but starting the listeners: over
HTTP it can read no table. Clients log in as ``--user`` with ``--password`` (stored as SHA-256).

``ClickHouseServer`` below drives the subprocess from a test; it does not import chDB.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.sax.saxutils import escape

HOST = "127.0.0.1"
READY = "clickhouse: ready"
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
# The listeners live while this query runs: a row a tenth of a second (cheap: no CPU), for
# ~3 years. max_block_size=1 makes each row its own block, so a KILL QUERY takes effect between
# two sleeps, within 0.1 s.
# How long the server keeps an idle HTTP connection (ClickHouse's default is 30 s): also how long
# a clean stop may wait for a client's idle connection.
KEEP_ALIVE_S = 2
IDLE_QUERY = "SELECT sleepEachRow(0.1) FROM numbers(1000000000) SETTINGS max_block_size = 1 FORMAT Null"


# --------------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------------


def _config_xml(http_port: int, tcp_port: int, users_xml: Path, display_name: str) -> str:
    return f"""<clickhouse>
    <listen_host>{HOST}</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <users_config>{escape(str(users_xml))}</users_config>
    <display_name>{escape(display_name)}</display_name>
    <!-- Once the idle query ends, the engine waits for open connections, and after 5 s exits 1
         without shutting down: an idle keep-alive connection must close by itself before that. -->
    <keep_alive_timeout>{KEEP_ALIVE_S}</keep_alive_timeout>
    <logger><console>1</console><level>warning</level></logger>
</clickhouse>
"""


def _users_xml(user: str, password: str) -> str:
    sha = hashlib.sha256(password.encode()).hexdigest()
    return f"""<clickhouse>
    <profiles><default/></profiles>
    <quotas><default/></quotas>
    <users>
        <default>
            <!-- chDB's own login (empty password, hard-coded): it may start the listeners, nothing else -->
            <password></password>
            <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
            <grants><query>GRANT SYSTEM LISTEN ON *.*</query></grants>
        </default>
        <{user}>
            <password_sha256_hex>{sha}</password_sha256_hex>
            <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
            <access_management>1</access_management>
        </{user}>
    </users>
</clickhouse>
"""


def _http(port: int, user: str, password: str, sql: str, timeout: float = 5.0) -> tuple[str, str]:
    """POST ``sql`` to the HTTP interface: (body, the server's display name)."""
    req = urllib.request.Request(f"http://{HOST}:{port}/", data=sql.encode(), method="POST")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read().decode(), resp.headers.get("X-ClickHouse-Server-Display-Name", "")


def serve(data: Path, http_port: int, tcp_port: int, user: str, password: str) -> int:
    """Run the server until SIGTERM/SIGINT; the exit code."""
    if not user.replace("_", "").isalnum() or user == "default":
        print(f"clickhouse: --user must be a plain name other than 'default', got {user!r}", file=sys.stderr)
        return 2
    data = data.resolve()
    etc, db = data / "etc", data / "db"
    etc.mkdir(parents=True, exist_ok=True)
    db.mkdir(exist_ok=True)
    # A name no other server has: the ready check knows its own server by it.
    display_name = f"planoscope-test-{os.getpid()}-{secrets.token_hex(4)}"
    (etc / "users.xml").write_text(_users_xml(user, password))
    (etc / "config.xml").write_text(_config_xml(http_port, tcp_port, etc / "users.xml", display_name))

    # Importing chdb starts (and stops) an in-memory engine in the working directory: not in etc/,
    # where it would read this config. clickhouse-local reads ./config.xml, hence the chdir after.
    import chdb

    os.chdir(etc)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            res = chdb._chdb.query(
                f"SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; {IDLE_QUERY}", "TabSeparated", path=str(db)
            )
            outcome["error"] = res.error_message() if res.has_error() else ""
        except Exception as e:  # the engine could not start (a corrupt data directory, ...)
            outcome["error"] = str(e)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    engine = threading.Thread(target=run, name="clickhouse", daemon=True)
    engine.start()

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if not engine.is_alive():
            why = outcome.get("error") or "ClickHouse's message is above (a port in use?)"
            print(f"clickhouse: the engine stopped before it listened: {why}", file=sys.stderr)
            return 1
        try:
            if _http(http_port, user, password, "SELECT 1", timeout=1)[1] == display_name:
                break
        except (OSError, urllib.error.URLError):
            pass
        if stop.is_set() or time.monotonic() > deadline:
            why = "stopped before it was ready" if stop.is_set() else f"port {http_port} does not answer as this server"
            print(f"clickhouse: {why}", file=sys.stderr)
            os._exit(1)  # the engine thread holds the process; nothing was served yet
        time.sleep(0.02)
    print(f"{READY} http={HOST}:{http_port} tcp={HOST}:{tcp_port}", flush=True)

    while not stop.wait(0.2):
        if not engine.is_alive():
            print(f"clickhouse: the engine stopped: {outcome.get('error')}", file=sys.stderr)
            return 1
    # A clean stop: end the idle query (the only one of the Local interface); the call returns and
    # the engine shuts down as when its last connection closes.
    try:
        _http(http_port, user, password, "KILL QUERY WHERE interface = 'Local' ASYNC")
    except (OSError, urllib.error.URLError) as e:
        print(f"clickhouse: cannot end the idle query: {e}", file=sys.stderr)
        os._exit(1)
    engine.join(STOP_TIMEOUT_S)
    if engine.is_alive():
        print("clickhouse: the engine did not stop", file=sys.stderr)
        os._exit(1)
    print("clickhouse: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="data directory (kept across restarts)")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--tcp-port", type=int, required=True)
    p.add_argument("--user", default="planoscope")
    p.add_argument("--password", default=os.environ.get("CLICKHOUSE_PASSWORD", ""))
    a = p.parse_args(argv)
    if not a.password:
        p.error("give --password (or CLICKHOUSE_PASSWORD)")
    return serve(a.data, a.http_port, a.tcp_port, a.user, a.password)


# --------------------------------------------------------------------------------------------
# Driving it from a test
# --------------------------------------------------------------------------------------------


class ClickHouseServerError(AssertionError):
    """The server did not start or stop as expected; the message carries its output."""


class ClickHouseServer:
    """One server subprocess on a data directory.

    ``start()`` picks free ports the first time and keeps them, so a restart serves the same
    address (and the same data); ``stop()`` is a clean stop (SIGTERM, exit code 0), ``kill()`` a
    crash (SIGKILL). ``url(database)`` is ``clickhouse://USER:PASSWORD@HOST:PORT/DATABASE``.
    """

    def __init__(self, data_dir: Path | str, *, user: str = "planoscope", password: str | None = None):
        self.data_dir = Path(data_dir)
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.http_port = self.tcp_port = 0
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []  # every run's output, "out| ..." / "err| ..."
        self._cond = threading.Condition()
        self._readers: list[threading.Thread] = []
        self.start_seconds = 0.0  # how long the last start took

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ClickHouseServer:
        from support.ports import free_port  # here: this file also runs as the server's own script

        assert not self.running, "already running"
        fresh = not self.http_port
        for _ in range(3 if fresh else 1):  # a port taken between free_port() and the bind: new ports
            if fresh:
                self.http_port, self.tcp_port = free_port(), free_port()
            if self._start_once():
                return self
        raise ClickHouseServerError("ClickHouse did not become ready:\n" + self.output())

    def _start_once(self) -> bool:
        t0 = time.monotonic()
        cmd = [sys.executable, __file__, "--data", str(self.data_dir), "--http-port", str(self.http_port)]
        cmd += ["--tcp-port", str(self.tcp_port), "--user", self.user]
        env = dict(os.environ, CLICKHOUSE_PASSWORD=self.password, PYTHONUNBUFFERED="1")
        self.lines.append(f"--- {' '.join(cmd)}")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env
        )
        mark = len(self.lines)
        self._readers = [
            threading.Thread(target=self._read, args=(stream, tag), daemon=True)
            for stream, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))
        ]
        for t in self._readers:
            t.start()
        deadline = t0 + READY_TIMEOUT_S + 5
        with self._cond:
            while not any(line.startswith(f"out| {READY}") for line in self.lines[mark:]):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    break
                self._cond.wait(0.1)
            ready = any(line.startswith(f"out| {READY}") for line in self.lines[mark:])
        if not ready:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self._join_readers()
            return False
        self.start_seconds = time.monotonic() - t0
        return True

    def _join_readers(self) -> None:
        for t in self._readers:
            t.join(5)

    def _read(self, stream, tag: str) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(f"{tag}| {line.rstrip()}")
                self._cond.notify_all()
        stream.close()

    def stop(self) -> float:
        """A clean stop; the seconds it took. Asserts exit code 0."""
        assert self.running, "not running"
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._join_readers()
            raise ClickHouseServerError("ClickHouse did not stop on SIGTERM:\n" + self.output()) from None
        if rc != 0:
            self._join_readers()
            raise ClickHouseServerError(f"ClickHouse exited {rc} on SIGTERM:\n" + self.output())
        return time.monotonic() - t0

    def kill(self) -> None:
        """A crash: SIGKILL, nothing flushed or shut down."""
        assert self.running, "not running"
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> ClickHouseServer:
        if self.running:
            self.stop()
        return self.start()

    @contextmanager
    def down(self, *, crash: bool = False) -> Iterator[None]:
        """ClickHouse unavailable for the ``with`` block (stopped, or killed if ``crash``), then
        started again on the same data and address."""
        self.kill() if crash else self.stop()
        try:
            yield
        finally:
            self.start()

    def close(self) -> None:
        """Stop if running (for teardown); a failed clean stop still ends the process."""
        if self.running:
            try:
                self.stop()
            finally:
                if self.running:
                    self.kill()

    def rss_bytes(self) -> int:
        """The server process's resident memory (VmRSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise ClickHouseServerError("no VmRSS")

    def url(self, database: str = "default") -> str:
        """The ``clickhouse://`` URL planoscope connects with (user and password URL-quoted)."""
        q = urllib.parse.quote
        return f"clickhouse://{q(self.user, safe='')}:{q(self.password, safe='')}@{HOST}:{self.http_port}/{database}"

    def client(self, database: str = "default", **kwargs):
        """A clickhouse-connect client over HTTP, from ``url(database)``."""
        import clickhouse_connect

        return clickhouse_connect.get_client(dsn=self.url(database), **kwargs)

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines[-200:])


if __name__ == "__main__":
    sys.exit(main())
