"""pytest fixtures for a real ClickHouse server (see clickhouse_server.py), imported by conftest.py.

Use them from a test module::

    def test_x(clickhouse_database):          # a fresh database on the session's server
        db = clickhouse_database
        db.client.command("CREATE TABLE ...")  # clickhouse-connect, bound to db.name
        db.url                                 # clickhouse://USER:PASSWORD@127.0.0.1:PORT/<name>

    def test_down(clickhouse_server_factory, tmp_path):   # a server of the test's own
        ch = clickhouse_server_factory(tmp_path / "ch")
        with ch.down(crash=True):              # SIGKILL; started again on the same data after
            ...
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.clickhouse_server import ClickHouseServer


@dataclass
class Database:
    """A database of its own for one test, dropped after it."""

    name: str
    url: str
    client: Any  # clickhouse_connect.driver.Client bound to this database
    server: ClickHouseServer


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory) -> Iterator[ClickHouseServer]:
    """One ClickHouse server for the session, on free ports; stop it only inside ``down()``."""
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"))
    server.start()
    yield server
    server.close()


@contextmanager
def _database(server: ClickHouseServer, label: str) -> Iterator[Database]:
    if not server.running:  # an earlier test stopped it and failed before starting it
        server.start()
    name = f"t_{re.sub(r'[^A-Za-z0-9]+', '_', label)[:40]}_{secrets.token_hex(3)}"
    admin = server.client()
    admin.command(f"CREATE DATABASE `{name}`")
    client = server.client(name)
    yield Database(name, server.url(name), client, server)
    client.close()
    if server.running:
        server.client().command(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()


@pytest.fixture
def clickhouse_database(clickhouse_server: ClickHouseServer, request) -> Iterator[Database]:
    with _database(clickhouse_server, request.node.name) as db:
        yield db


@pytest.fixture(scope="module")
def module_clickhouse_database(clickhouse_server: ClickHouseServer, request) -> Iterator[Database]:
    """A database shared by the tests of one module (the servers of its module fixtures)."""
    with _database(clickhouse_server, request.module.__name__.rpartition(".")[2]) as db:
        yield db


# The stores a behaviour test runs on: parametrize a module's server fixture with
# ``params=STORES`` and start it with ``serve_on(request, ...)``.
STORES = ("duckdb", "clickhouse")


def serve_on(request, factory: Callable, data_dir: Path, *args: str):
    """A planoscope server (``factory``: server_factory or module_server_factory) on the store of
    ``request.param``: the data directory's DuckDB file, or the module's ClickHouse database (its
    URL through the environment)."""
    if request.param == "duckdb":
        return factory(data_dir, *args)
    db = request.getfixturevalue("module_clickhouse_database")
    return factory(data_dir, *args, env={"PLANOSCOPE_STORE": db.url})


@pytest.fixture
def clickhouse_server_factory() -> Iterator[Callable[..., ClickHouseServer]]:
    """Servers of a test's own (to stop, kill, restart); all stopped after the test."""
    servers: list[ClickHouseServer] = []

    def make(data_dir: Path | str, **kwargs) -> ClickHouseServer:
        server = ClickHouseServer(data_dir, **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:  # a test that wants a clean stop calls stop(); here only speed matters
        if server.running:
            server.kill()
