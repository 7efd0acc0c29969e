"""The test ClickHouse server is a real one: HTTP and native ports, users, and data that outlives
a clean stop and a crash under load."""

from __future__ import annotations

import socket
import threading
import time

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from support.clickhouse_server import HOST, ClickHouseServer


def _native_hello(port: int, user: str, password: str) -> bytes:
    """The first bytes a native-protocol server answers a client Hello with."""

    def string(s: str) -> bytes:
        b = s.encode()
        return bytes([len(b)]) + b  # every string here is shorter than 128 bytes: a 1-byte varint

    # Hello (0), client name, version 1.0, protocol revision 54449 (before the hello addendum)
    revision = bytes([0xB1, 0xA9, 0x03])  # 54449 as a varint
    hello = b"\x00" + string("planoscope-test") + b"\x01\x00" + revision + string("") + string(user) + string(password)
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(hello)
        return s.recv(64)


def test_clients_log_in_with_the_url_and_no_one_else_reads(clickhouse_database):
    db = clickhouse_database
    server = db.server
    db.client.command("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")
    db.client.insert("t", [[7]], column_names=["a"])
    # clickhouse://USER:PASSWORD@HOST:PORT/DATABASE, the password URL-quoted
    client = clickhouse_connect.get_client(dsn=db.url)
    assert client.command("SELECT currentUser(), currentDatabase()") == [server.user, db.name]
    assert client.command("SELECT a FROM t") == 7

    with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED"):
        clickhouse_connect.get_client(host=HOST, port=server.http_port, username=server.user, password="wrong")
    # No credentials is chDB's own user 'default': it may connect, but reads and changes nothing.
    anonymous = clickhouse_connect.get_client(host=HOST, port=server.http_port)
    with pytest.raises(DatabaseError, match="ACCESS_DENIED"):
        anonymous.command(f"SELECT a FROM `{db.name}`.t")
    with pytest.raises(DatabaseError, match="ACCESS_DENIED"):
        anonymous.command("CREATE DATABASE nope")

    # The native TCP port is ClickHouse's too, with the same users.
    assert _native_hello(server.tcp_port, server.user, server.password).startswith(b"\x00\x0aClickHouse")
    assert _native_hello(server.tcp_port, server.user, "wrong")[:1] == b"\x02"  # an exception packet


def test_a_password_with_url_characters_works_in_the_url(clickhouse_server_factory, tmp_path):
    server = clickhouse_server_factory(tmp_path / "ch", password="p@ss:w/rd?#%&=é")
    assert "p%40ss%3Aw%2Frd%3F%23%25%26%3D%C3%A9@" in server.url()
    assert server.client().command("SELECT currentUser()") == server.user


class _Writer(threading.Thread):
    """Inserts batches of rows in a loop, counting the rows whose INSERT returned."""

    def __init__(self, server: ClickHouseServer, database: str, batch: int = 1000):
        super().__init__(daemon=True)
        self.client = server.client(database)
        self.batch = batch
        self.acknowledged = 0
        self.failures = 0
        self.finish = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.finish.is_set():
            rows = [[n + i, f"row {n + i}"] for i in range(self.batch)]
            try:
                self.client.insert("t", rows, column_names=["k", "v"])
                self.acknowledged += self.batch
            except Exception:  # the server is down: what was not acknowledged may be retried
                self.failures += 1
                self.finish.wait(0.05)
            n += self.batch

    def wait_for(self, rows: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.acknowledged < rows:
            assert time.monotonic() < deadline, f"only {self.acknowledged} rows acknowledged"
            time.sleep(0.01)


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill"])
def test_acknowledged_rows_survive_a_stop_under_load(clickhouse_server_factory, tmp_path, crash):
    server = clickhouse_server_factory(tmp_path / "ch")
    port = server.http_port
    admin = server.client()
    admin.command("CREATE DATABASE d")
    admin.command("CREATE TABLE d.t (k UInt64, v String) ENGINE = MergeTree ORDER BY k")
    writer = _Writer(server, "d")
    writer.start()
    writer.wait_for(10_000)
    if crash:
        server.kill()
    else:
        server.stop()  # asserts exit code 0
    acknowledged = writer.acknowledged
    failures = writer.failures
    deadline = time.monotonic() + 10
    while writer.failures == failures:  # the writer sees the server gone
        assert time.monotonic() < deadline
        time.sleep(0.01)
    writer.finish.set()
    writer.join()

    server.start()
    assert server.http_port == port
    count = server.client("d").command("SELECT count() FROM t")
    # Every acknowledged row is there; the batch in flight at the stop may be too.
    assert acknowledged <= count <= acknowledged + writer.batch
    assert count % writer.batch == 0
    assert server.client("d").command("SELECT uniqExact(k) FROM t") == count


def test_down_restarts_on_the_same_data_and_address(clickhouse_server_factory, tmp_path):
    server = clickhouse_server_factory(tmp_path / "ch")
    server.client().command("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")
    server.client().insert("t", [[1], [2]], column_names=["a"])
    url = server.url()
    with server.down(crash=True):
        with pytest.raises(clickhouse_connect.driver.exceptions.OperationalError):
            clickhouse_connect.get_client(dsn=url, connect_timeout=2)
    assert clickhouse_connect.get_client(dsn=url).command("SELECT sum(a) FROM t") == 3
    assert server.start_seconds < 10  # measured ~0.3 s
    assert server.rss_bytes() < 1 << 30  # measured ~400 MB, mostly the shared library's pages
