"""The ``--store`` setting: ``duckdb`` or a ClickHouse URL, parsed without ever showing its
password (``ClickHouseURL.shown`` is what logs, errors and /healthz name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .clickhouse_schema import DEFAULT_DATABASE

DEFAULT_PORTS = {"clickhouse": 8123, "clickhouses": 8443}


@dataclass(frozen=True)
class ClickHouseURL:
    """A parsed ``--store clickhouse://`` URL; ``shown`` is it without the password."""

    secure: bool
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    @property
    def shown(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"clickhouse{'s' if self.secure else ''}://{self.user}@{host}:{self.port}/{self.database}"

    @staticmethod
    def parse(url: str) -> ClickHouseURL:
        """Raises ``ValueError`` with a one-line message that never holds the password."""
        url = url.strip()
        scheme, sep, rest = url.partition("://")
        shown = f"{scheme}://{rest.rpartition('@')[2]}" if sep else "the URL"  # never the userinfo
        usage = "use clickhouse://[USER[:PASSWORD]@]HOST:PORT/DATABASE (clickhouses:// for TLS)"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{shown!r} is not a ClickHouse URL: {usage}") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{shown!r} is not a ClickHouse URL: {usage}")
        if parts.query or parts.fragment:
            raise ValueError(f"{shown!r}: a ClickHouse URL takes no query string or fragment ({usage})")
        database = unquote(parts.path.removeprefix("/")) or DEFAULT_DATABASE
        if "/" in database or "\0" in database:
            raise ValueError(f"{shown!r}: the path is the database, one name ({usage})")
        return ClickHouseURL(
            secure=scheme == "clickhouses",
            host=parts.hostname,
            port=port or DEFAULT_PORTS[scheme],
            user=unquote(parts.username or "") or "default",
            password=unquote(parts.password or ""),
            database=database,
        )


def is_clickhouse(store: str) -> bool:
    """Whether a ``store`` setting names ClickHouse (else it is ``duckdb``)."""
    return store.strip().lower().startswith(("clickhouse://", "clickhouses://"))
