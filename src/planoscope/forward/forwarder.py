"""Forwarding: every span stored is passed on to other OTLP endpoints (Tempo, Jaeger, a collector,
another planoscope), at least once, in the order it was committed (``--forward-otlp URL``).

The retry queue is the store itself. Each destination keeps a cursor, the last commit it has
acknowledged, and its forwarder reads the spans committed after the cursor, whole commits at a
time, sends them, and only then moves the cursor. What a cursor is and where it is kept is the
store's (``Backlog``, one module per store): on DuckDB the commit's ``IngestedAt``, in
``<data_dir>/forward-state.json`` (replaced atomically); on ClickHouse the journal position of the
instance's insert, in its state file, and only the rows this instance inserted
(``backlog_clickhouse.py``). A destination that is down costs nothing but its backlog of spans
already on disk: ingest never waits for it, memory holds one batch, and a restart resumes from
the cursor. The backlog is bounded by the store's retention. A span re-sent after a failure or a
crash mid-batch arrives twice (at-least-once, as the OpenTelemetry Collector's exporters); a
planoscope receiver drops such repeats within its de-duplication window.

Spans go out as they came in: attribute values in their types, the resource and the scope with
their attributes (query/otlp.py); spans stored before values were typed hold strings.

URLs: ``grpc://HOST:PORT`` (``grpcs://`` for TLS) sends OTLP/gRPC; ``http://HOST:PORT[/PATH]``
(or ``https://``) sends OTLP/HTTP protobuf to PATH, ``/v1/traces`` by default.

Credentials travel as headers (``forward_otlp_headers``: gRPC metadata or HTTP headers). A URL's
``USER:PASSWORD@`` still works, sent as basic auth, but a destination is only ever shown, logged
and keyed in the state file by its URL without it (``Destination.shown``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from ..net.otlp import OtlpSender
from ..query.otlp import to_otlp_proto
from ..store import SpanStore, StoreError
from .backlog_clickhouse import ClickHouseBacklog, ClickHouseForwardState
from .backlog_duckdb import DuckDBBacklog

log = logging.getLogger("planoscope.forward")
STATE_FILE = "forward-state.json"
BATCH_SPANS = 5000  # spans read per batch (whole commits: a batch can be larger)
REQUEST_SPANS = 512  # spans per export request, as the SDKs' batch processors send
BACKOFF_S = (1, 2, 4, 8, 15, 30)
# Ingest comes first. Reading stored rows and converting them to OTLP costs ~90 µs of CPU a span,
# under the GIL (benchmarks/forward.py); while spans are arriving, a forwarder rests 3 s for every
# second it spent so, taking at most about a quarter of a core from ingest, and catches up when
# ingest quiets.
BUSY_REST = 3.0


@dataclass(frozen=True)
class Destination:
    url: str = field(repr=False)  # as given: it may hold a password
    shown: str  # the URL without USER:PASSWORD@ (what health, logs and the state file name)
    protocol: str  # grpc | http
    target: str  # HOST:PORT for gRPC, the full URL (without userinfo) for HTTP
    tls: bool
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # sent with every request


def redact_url(url: str) -> str:
    """``url`` without anything up to its last ``@``: a malformed URL's password may hold a
    ``/`` or ``?`` (where a parser would end the authority), and it is still not to be shown."""
    scheme, sep, rest = url.strip().partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}" if sep else url.strip().rpartition("@")[2]


def parse_destination(url: str, headers: Sequence[tuple[str, str]] = ()) -> Destination:
    """A ``--forward-otlp`` URL, with the ``headers`` to send there; raises ValueError with a
    message meant for the user (which names the URL without its password)."""
    url = url.strip()
    shown = redact_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("grpc", "grpcs", "http", "https") or not parts.hostname:
        raise ValueError(
            f"{shown!r} is not an OTLP URL: use grpc://HOST:PORT, grpcs://HOST:PORT or http(s)://HOST:PORT[/v1/traces]"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown!r} has an invalid port") from None
    headers = dict(headers)
    if parts.username is not None or parts.password is not None:  # this destination's own: it wins
        user_password = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        headers["authorization"] = "Basic " + base64.b64encode(user_password.encode()).decode()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    hostport = f"{host}:{port}" if port else host
    if scheme.startswith("grpc"):
        if not port:
            raise ValueError(f"{shown!r} needs a port (OTLP/gRPC is usually 4317)")
        if parts.path not in ("", "/"):
            raise ValueError(f"{shown!r}: an OTLP/gRPC URL has no path")
        return Destination(url, f"{scheme}://{hostport}", "grpc", hostport, scheme == "grpcs", tuple(headers.items()))
    path = parts.path if parts.path not in ("", "/") else "/v1/traces"
    target = f"{scheme}://{hostport}{path}"
    return Destination(url, target, "http", target, scheme == "https", tuple(headers.items()))


class Backlog(Protocol):
    """The spans a destination has still to receive, on one store: cursors are its own values."""

    def end(self) -> Any:
        """The cursor of a destination seen for the first time: the end of the store."""

    def batch(self, after: Any, spans: int) -> tuple[Any | None, list[tuple]]:
        """(the cursor after them, the ``query.otlp.SPAN_SELECT`` rows of) the whole commits after
        ``after``, about ``spans`` of them (a commit is never split); (None, []) when there is none."""

    def pending(self, after: Any) -> int | None:
        """How many spans are stored after ``after`` (None: not known now)."""

    def shown(self, cursor: Any) -> object:
        """``cursor`` as /healthz shows it."""


def backlog(store: SpanStore) -> Backlog:
    return ClickHouseBacklog(store) if store.dialect == "clickhouse" else DuckDBBacklog(store)


def forward_state(store: SpanStore) -> ForwardState | ClickHouseForwardState:
    """Where the store's destinations keep their cursors; raises ValueError with a message meant for the user."""
    return ClickHouseForwardState(store) if store.dialect == "clickhouse" else ForwardState(store.data_dir)


class ForwardState:
    """The cursors of all destinations on the DuckDB store, in one small JSON file replaced atomically."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / STATE_FILE
        self._lock = threading.Lock()
        try:
            raw = json.loads(self.path.read_text())
            self.cursors = {url: datetime.fromisoformat(v) for url, v in raw.get("cursors", {}).items()}
        except FileNotFoundError:
            self.cursors = {}
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{self.path} is not a forwarding state file ({e}); move it away to start forwarding from now"
            ) from None

    def cursor(self, dest: Destination) -> datetime | None:
        """``dest``'s cursor. Earlier versions keyed it by the URL as given, password and all:
        such an entry moves to the URL as shown."""
        if dest.shown not in self.cursors and dest.url in self.cursors:
            with self._lock:
                self.cursors[dest.shown] = self.cursors.pop(dest.url)
            self.save(dest.shown, self.cursors[dest.shown])
        return self.cursors.get(dest.shown)

    def save(self, url: str, cursor: datetime) -> None:
        with self._lock:
            self.cursors[url] = cursor
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w") as f:
                json.dump({"cursors": {u: c.isoformat() for u, c in self.cursors.items()}}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)


class Forwarder:
    """Async context manager: forwards the spans committed after this destination's cursor until
    exit. A destination seen for the first time starts at the end of the store."""

    def __init__(
        self,
        store: SpanStore,
        dest: Destination,
        state: ForwardState | ClickHouseForwardState,
        poll_s: float = 0.5,
        ingesting: Callable[[], int] | None = None,
    ):
        """``ingesting()`` counts the spans written so far: while it moves, forwarding yields."""
        self.store, self.dest, self.state, self.poll_s = store, dest, state, poll_s
        self._ingesting = ingesting or (lambda: 0)
        self.backlog = backlog(store)
        self.cursor = state.cursor(dest)
        if self.cursor is None:
            self.cursor = self.backlog.end()
            state.save(dest.shown, self.cursor)
        self.forwarded = self.rejected = self.dropped = 0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._task: asyncio.Task | None = None
        self._sender: OtlpSender | None = None

    async def __aenter__(self) -> Forwarder:
        dest = self.dest
        self._sender = OtlpSender(dest.target, dest.protocol, gzip=True, tls=dest.tls, headers=dest.headers)
        self._task = asyncio.create_task(self._run(), name=f"forward {dest.shown}")
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._sender.close()

    def health(self) -> dict:
        return {
            "url": self.dest.shown,
            "forwarded": self.forwarded,
            "pending": self.backlog.pending(self.cursor),
            "rejected": self.rejected,
            "dropped": self.dropped,
            "cursor": self.backlog.shown(self.cursor),
            "last_error": self.last_error,
            "last_success": self.last_success,
        }

    # --- the loop ----------------------------------------------------------------------------
    def _next_batch(self) -> tuple[Any | None, list[tuple]]:
        """(the cursor after them, rows) of the next whole commits after the cursor, or (None, [])."""
        return self.backlog.batch(self.cursor, BATCH_SPANS)

    async def _run(self) -> None:
        failures = 0
        while True:
            t = time.perf_counter()
            try:
                upper, rows = await asyncio.to_thread(self._next_batch)
            except StoreError as e:  # the store does not answer (ClickHouse down): the backlog waits there
                self.last_error = f"reading the spans to forward: {e}"
                if failures == 0:
                    log.warning("forwarding to %s: %s; retried", self.dest.shown, self.last_error)
                failures += 1
                await asyncio.sleep(BACKOFF_S[min(failures - 1, len(BACKOFF_S) - 1)])
                continue
            read_s = time.perf_counter() - t
            if upper is None:
                await asyncio.sleep(self.poll_s)
                continue
            if not rows:  # commits without a span to send (ClickHouse: not this instance's)
                self.cursor = upper
                await asyncio.to_thread(self.state.save, self.dest.shown, upper)
                continue
            written = self._ingesting()
            try:
                refused = await self._send(rows)
            except _Retry as e:
                self.last_error = str(e)
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                if failures == 0:
                    log.warning(
                        "forwarding to %s failed (%s); retrying every %d s at most, nothing is lost",
                        self.dest.shown,
                        e,
                        BACKOFF_S[-1],
                    )
                failures += 1
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("forwarding to %s resumed", self.dest.shown)
            failures = 0
            if not refused:  # a refusal stays shown until a batch goes through whole
                self.last_error = None
            self.last_success = time.time()
            self.cursor = upper
            await asyncio.to_thread(self.state.save, self.dest.shown, upper)
            if self._ingesting() != written:  # spans arrived meanwhile: give ingest the CPU
                await asyncio.sleep((read_s + self._convert_s) * BUSY_REST)

    async def _send(self, rows: list[tuple]) -> int:
        """Send ``rows``; the number the destination refused for good (dropped)."""
        self._convert_s = 0.0
        refused = 0
        for i in range(0, len(rows), REQUEST_SPANS):
            chunk = rows[i : i + REQUEST_SPANS]
            t = time.perf_counter()
            body, bad = self._encode(chunk)
            self._convert_s += time.perf_counter() - t
            self.dropped += bad
            refused += bad
            sent = len(chunk) - bad
            if not sent:
                continue
            outcome, rejected = await self._sender.send(body)
            if outcome == "retryable":
                raise _Retry(f"{self.dest.shown} is unavailable")
            if outcome != "ok":  # refused for good: retrying would block every later span
                self.dropped += sent
                refused += sent
                self.last_error = f"{self.dest.shown} refused {sent} spans: {outcome.removeprefix('fatal:')}"
                log.error("forwarding: %s; they are not retried", self.last_error)
                continue
            self.forwarded += sent - rejected
            self.rejected += rejected
        return refused

    def _encode(self, chunk: list[tuple]) -> tuple[bytes | None, int]:
        """(the OTLP request of ``chunk``, or None if none of it converts; how many rows could not be
        converted). A row that cannot be rendered (e.g. a Timestamp stored as ``infinity`` by a
        version that did not reject such times) is dropped, counted and logged, instead of
        stopping forwarding for good behind it."""
        try:
            return to_otlp_proto(chunk).SerializeToString(), 0
        except Exception:  # find the bad rows: the rest still goes
            good, bad, why = [], 0, None
            for row in chunk:
                try:
                    to_otlp_proto([row])
                    good.append(row)
                except Exception as e:
                    bad += 1
                    why = why or f"{type(e).__name__}: {e}"
            self.last_error = f"{bad} stored spans cannot be converted to OTLP ({why}); they are not forwarded"
            log.error("forwarding to %s: %s", self.dest.shown, self.last_error)
            return (to_otlp_proto(good).SerializeToString() if good else None), bad


class _Retry(Exception):
    pass
