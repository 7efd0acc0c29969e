"""Alerts sent to Alertmanager: ``POST {url}/api/v2/alerts``, as Prometheus's notifier does.

The evaluator hands over the alerts due (``send``: never waits); each Alertmanager has its own
task posting them. What is waiting is kept per alert (by labels), the latest version only, so
that an Alertmanager that is down gets, once it is back, every alert still current and nothing
stale; attempts back off from 1 s to 30 s. Prometheus drops what a failed post held and relies
on its resend every minute; this keeps it until delivered, and the resends replace it.

Example::

    async with Alertmanager("http://alertmanager:9093") as am:
        am.send([{"labels": {"alertname": "Down"}, "startsAt": "…", "endsAt": "…"}])
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("planoscope.alerting")

MAX_BATCH = 64  # alerts per request, as Prometheus's notifier
BACKOFF_S = (1.0, 30.0)


def shown_url(url: str) -> str:
    """A receiver's URL as logs and /metrics show it: scheme, host and port only (a webhook's
    path or query often is its secret, and a password may be in it)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def alert_key(alert: dict) -> tuple:
    return tuple(sorted(alert["labels"].items()))


class Backoff:
    """Exponential delays from ``BACKOFF_S[0]`` to ``BACKOFF_S[1]``, reset on success."""

    def __init__(self, first: float = BACKOFF_S[0], most: float = BACKOFF_S[1]):
        self.first, self.most, self.next = first, most, first

    def failed(self) -> float:
        delay, self.next = self.next, min(self.next * 2, self.most)
        return delay

    def reset(self) -> None:
        self.next = self.first


class Receiver:
    """What every receiver shares: its URL (``endpoint``; ``url`` as shown), an HTTP client and
    the task of its own that delivers (``_run``), started and stopped with it; its counts."""

    kind = "receiver"

    def __init__(self, endpoint: str, url: str, timeout: float):
        self.endpoint, self.url, self.timeout = endpoint, shown_url(url), timeout
        self.sent = self.failed = 0  # deliveries made; attempts that failed
        self.last_error = ""
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self):
        self._client = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        self._task = asyncio.create_task(self._run(), name=f"{self.kind} {self.url}")
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()

    async def _run(self) -> None:
        raise NotImplementedError


class Alertmanager(Receiver):
    """One Alertmanager (``url``: its base URL, e.g. ``http://127.0.0.1:9093``)."""

    kind = "alertmanager"

    def __init__(self, url: str, timeout: float = 10.0):
        super().__init__(url.rstrip("/") + "/api/v2/alerts", url, timeout)
        self.pending: dict[tuple, dict] = {}

    def send(self, alerts: list[dict]) -> None:
        """Queue ``alerts`` (Alertmanager's postable alerts) for this Alertmanager; never waits."""
        for a in alerts:
            self.pending[alert_key(a)] = a
        self._wake.set()

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                batch = list(self.pending.items())[:MAX_BATCH]
                try:
                    r = await self._client.post(self.endpoint, json=[a for _, a in batch])
                    if r.status_code // 100 != 2:
                        raise httpx.HTTPStatusError(
                            f"HTTP {r.status_code}: {r.text[:200]}", request=r.request, response=r
                        )
                except httpx.HTTPError as e:
                    self.failed += 1
                    message = str(e) or type(e).__name__
                    if message != self.last_error:
                        log.warning("cannot send %d alerts to Alertmanager %s: %s", len(batch), self.url, message)
                    self.last_error = message
                    await asyncio.sleep(backoff.failed())
                    continue
                if self.last_error:
                    log.info("Alertmanager %s takes alerts again", self.url)
                self.last_error = ""
                backoff.reset()
                self.sent += len(batch)
                for key, a in batch:
                    if self.pending.get(key) is a:  # not replaced by a newer version meanwhile
                        del self.pending[key]
