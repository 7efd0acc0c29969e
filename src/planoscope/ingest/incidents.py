"""What has gone wrong with ingest's writes, as /healthz, /metrics and the log show it: inserts
into the store that fail and are retried, a journal that cannot be written, records set aside in
the journal's quarantine. The writer reports to it; nothing here decides anything.

A failure that lasts is logged when it starts, when its reason changes and once a minute, not on
every retry; its end is logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("planoscope.writer")

RELOG_AFTER_S = 60.0


class _Failure:
    """One kind of write that fails, since when and why."""

    def __init__(self, what: str):
        self.what = what
        self.since: float | None = None  # unix time of the first failure in a row
        self.reason: str | None = None
        self._logged: tuple[str | None, float] = (None, 0.0)  # (reason, monotonic time) last logged

    def failed(self, reason: str, message: str) -> None:
        if self.since is None:
            self.since = time.time()
        self.reason = reason
        last, at = self._logged
        if reason != last or time.monotonic() - at >= RELOG_AFTER_S:
            log.error("%s", message)
            self._logged = (reason, time.monotonic())

    def succeeded(self) -> None:
        if self.since is not None:
            log.warning("%s succeed again after %.0f s of failures", self.what, time.time() - self.since)
        self.since = self.reason = None
        self._logged = (None, 0.0)


class Incidents:
    """``redact`` takes file system paths out of what /healthz shows (it needs no credentials)."""

    def __init__(self, redact: Callable[[str], str]):
        self._redact = redact
        self.inserts = _Failure("inserts into the store")
        self.journal = _Failure("writes to the journal")
        self.quarantined_records = self.quarantined_spans = 0  # this run
        self.last_quarantined: dict | None = None

    def quarantined(self, where: str, spans: int, reason: str) -> None:
        self.quarantined_records += 1
        self.quarantined_spans += spans
        self.last_quarantined = {"file": where, "spans": spans, "reason": self._redact(reason), "at": time.time()}

    def problems(self, pending_spans: int) -> list[str]:
        """What fails now, one sentence each (none: all is well)."""
        now, out = time.time(), []
        if self.journal.since is not None:
            out.append(
                f"the journal cannot be written since {now - self.journal.since:.0f} s (ingest answers "
                f"with retryable errors): {self._redact(self.journal.reason or '')}"
            )
        if self.inserts.since is not None:
            out.append(
                f"inserts into the store have failed for {now - self.inserts.since:.0f} s ({pending_spans} "
                f"acknowledged spans wait in the journal, retried): {self._redact(self.inserts.reason or '')}"
            )
        return out

    def collect(self, pending_spans: int, corrupt_bytes: int) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "planoscope_journal_quarantined_records",
            "Journal records set aside in journal/quarantine/ because the store refused what they hold",
            value=self.quarantined_records,
        )
        yield CounterMetricFamily(
            "planoscope_journal_corrupt_bytes",
            "Unreadable journal bytes found on start, copied to .corrupt files beside their segment",
            value=corrupt_bytes,
        )
        yield GaugeMetricFamily(
            "planoscope_store_inserts_failing",
            "1 while inserts into the store fail (a full disk, an I/O error) and are retried",
            value=int(self.inserts.since is not None),
        )
        yield GaugeMetricFamily(
            "planoscope_journal_writes_failing",
            "1 while the journal cannot be written (ingest answers with retryable errors)",
            value=int(self.journal.since is not None),
        )
        yield GaugeMetricFamily(
            "planoscope_journal_pending_spans",
            "Acknowledged spans in the journal and not yet in the store",
            value=pending_spans,
        )
