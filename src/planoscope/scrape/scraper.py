"""The scraper: Prometheus-format targets (Envoy's admin ``/stats/prometheus``) read every
``interval`` and their samples stored through the writer, as the reference stack's Prometheus does.

Each target has its own task, so a slow or broken target never delays another, and nothing a
target returns can stop the process: a refused connection, a timeout, an HTTP error, a body past
``max_bytes`` or text that does not parse marks the target down (see ``health()``) and the next
scrape tries again.

Each scrape also stores ``up`` (1, or 0 when it failed), ``scrape_duration_seconds`` and
``scrape_samples_scraped``, as Prometheus adds them to every target (an alert on ``up == 0`` sees a
target that stopped answering).

Sample names are stored as the target writes them. prometheus-client's parser renames the samples
of a counter declared without ``_total`` (Envoy's ``envoy_wasmcustom_ratelimited_rq``) to
``…_total``; the ``# TYPE`` lines tell which it renamed, and the suffix is taken off again.

Every scrape, failed or not, also stores ``up``, ``scrape_duration_seconds`` and
``scrape_samples_post_metric_relabeling``, as Prometheus does (``scrape_series``).

Each target's ``# TYPE`` and ``# HELP`` lines of the families it kept samples of are kept in
memory (``metadata()``), as a Prometheus keeps its targets' metadata for ``/api/v1/metadata``.

Besides the targets, ``add_local`` adds an in-process one: a function returning metric families
(the registry of planoscope's own ``/metrics``), scraped on the same schedule and stored the same way, the samples
its own globs name kept; it is not one of the targets ``health()`` lists.

Example::

    async with Scraper(writer, [("envoy", "http://127.0.0.1:9901/stats/prometheus")]) as scraper:
        print(scraper.health())
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import pyarrow as pa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from ..ingest.writer import SpanWriter

log = logging.getLogger("planoscope.scraper")

SCHEMA = pa.schema(
    [
        ("Timestamp", pa.timestamp("us")),
        ("Target", pa.string()),
        ("MetricName", pa.string()),
        ("Labels", pa.string()),
        ("Value", pa.float64()),
    ]
)
_TYPE_LINE = re.compile(r"^#[ \t]*TYPE[ \t]+(\S+)[ \t]+(\S+)", re.M)
_META_LINE = re.compile(r"^#[ \t]*(TYPE|HELP|UNIT)[ \t]+(\S+)(?:[ \t]+(.*))?$", re.M)
# The samples a family's name is the stem of (Prometheus's metadata is per family).
_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_created", "_info", "_gcount", "_gsum")


class ScrapeError(Exception):
    """Why a scrape failed, in a few words for the health view."""


@dataclass
class TargetHealth:
    label: str
    url: str
    up: bool | None = None  # None: not scraped yet
    last_scrape: float | None = None  # unix s, start of the last scrape
    last_duration_s: float | None = None
    last_error: str | None = None
    samples_last_scrape: int = 0
    scrapes: int = 0
    failures: int = 0
    instance: str = ""  # the ``instance`` label Prometheus gives its samples (``instance_of``)
    keep: list[str] | None = None  # the sample names kept, when not the scraper's ``keep``
    collect: Callable[[], Iterable[Metric]] | None = None  # an in-process target: its metric families
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # family → type, help, unit


def instance_of(url: str) -> str:
    """A target URL's ``instance`` label as Prometheus sets it: ``host:port``, with the scheme's
    port when the URL names none."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def metadata(text: str, names: set[str]) -> dict[str, dict[str, str]]:
    """``{family: {"type", "help", "unit"}}`` from the ``# TYPE``/``# HELP``/``# UNIT`` lines of
    ``text``, for the families one of whose samples is in ``names``."""
    out: dict[str, dict[str, str]] = {}
    for m in _META_LINE.finditer(text):
        kind, family, rest = m.group(1), m.group(2), (m.group(3) or "").rstrip()
        if not any(family + suffix in names for suffix in _SUFFIXES):
            continue
        entry = out.setdefault(family, {"type": "unknown", "help": "", "unit": ""})
        if kind == "TYPE":
            entry["type"] = "unknown" if rest == "untyped" else rest  # as Prometheus reports it
        elif kind == "HELP":
            entry["help"] = rest.replace("\\\\", "\x00").replace("\\n", "\n").replace("\x00", "\\")
        else:
            entry["unit"] = rest
    return out


def parse(text: str, keep: list[str]) -> list[tuple[str, str, float]]:
    """``(name, labels as a JSON object, value)`` of every sample whose name matches a glob of ``keep``.

    Each ``# TYPE`` line starts a section parsed on its own, so that the name a counter was
    declared with is known: Envoy writes both ``envoy_cluster_upstream_rq`` (declared without
    ``_total``, which the parser renames to ``…_total``) and ``envoy_cluster_upstream_rq_total``
    (declared with it), and only the first is renamed back."""
    starts = [0, *(m.start() for m in _TYPE_LINE.finditer(text)), len(text)]
    out = []
    for a, b in zip(starts, starts[1:]):
        section = text[a:b]
        m = _TYPE_LINE.match(section)
        renamed = m.group(1) if m and m.group(2) == "counter" and not m.group(1).endswith("_total") else None
        for family in text_string_to_metric_families(section):
            for s in family.samples:
                name = renamed if renamed and s.name == renamed + "_total" else s.name
                if any(fnmatch.fnmatchcase(name, g) for g in keep):
                    out.append(
                        (name, json.dumps(dict(sorted(s.labels.items())), separators=(",", ":")), float(s.value))
                    )
    return out


class Scraper:
    """Async context manager scraping ``targets`` (``[(label, url)]``); also a prometheus-client
    Collector of its own ``planoscope_scrape_*`` metrics."""

    def __init__(
        self,
        writer: SpanWriter,
        targets: list[tuple[str, str]],
        interval: float = 15.0,
        timeout: float = 10.0,
        keep: list[str] | None = None,
        max_bytes: int = 8 * 1024 * 1024,
    ):
        self.writer = writer
        self.interval = interval
        self.timeout = min(timeout, interval)  # as Prometheus: a scrape never overlaps the next
        self.keep = list(keep if keep is not None else ["envoy_wasmcustom_*"])
        self.max_bytes = max_bytes
        self.targets = [TargetHealth(label, url, instance=instance_of(url)) for label, url in targets]
        self.local: list[TargetHealth] = []
        self._tasks: list[asyncio.Task] = []

    def add_local(self, label: str, instance: str, collect: Callable[[], Iterable[Metric]], keep: list[str]) -> None:
        """Scrape ``collect()`` too (a registry's: the families its exposition would show, read
        without writing and parsing the text), as target ``label`` with ``instance``, keeping the
        samples named by a glob of ``keep``; before the scraper is entered."""
        self.local.append(TargetHealth(label, "in-process", instance=instance, keep=list(keep), collect=collect))

    def instances(self) -> dict[str, str]:
        """Each target label's ``instance`` label, the in-process targets' included."""
        return {t.label: t.instance for t in (*self.targets, *self.local)}

    def metadata(self) -> dict[str, list[dict[str, str]]]:
        """What the targets said of each family they were last scraped with, as Prometheus's
        ``/api/v1/metadata`` gives it: ``{family: [{"type", "help", "unit"}, …]}``, distinct entries."""
        out: dict[str, list[dict[str, str]]] = {}
        for t in (*self.targets, *self.local):
            for family, entry in t.metadata.items():
                if entry not in out.setdefault(family, []):
                    out[family].append(entry)
        return dict(sorted(out.items()))

    async def __aenter__(self) -> Scraper:
        self._client = httpx.AsyncClient(
            timeout=self.timeout, follow_redirects=True, trust_env=False, headers={"Accept": "text/plain;version=0.0.4"}
        )
        self._tasks = [
            asyncio.create_task(self._loop(t), name=f"scrape {t.label}") for t in (*self.targets, *self.local)
        ]
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    def health(self) -> list[dict]:
        return [
            {
                "label": t.label,
                "url": t.url,
                "up": t.up,
                "last_scrape": t.last_scrape,
                "last_duration_s": t.last_duration_s,
                "last_error": t.last_error,
                "samples_last_scrape": t.samples_last_scrape,
                "scrapes": t.scrapes,
                "failures": t.failures,
            }
            for t in self.targets
        ]

    async def _loop(self, target: TargetHealth) -> None:
        next_at = time.monotonic()
        while True:
            await self.scrape(target)
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:  # fell behind (a slow store): skip the missed slots
                next_at = now + self.interval - (now - next_at) % self.interval
            await asyncio.sleep(next_at - now)

    async def scrape(self, target: TargetHealth) -> None:
        """One scrape of ``target``: fetch, parse, store; the outcome goes to its health."""
        started, t0 = time.time(), time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                if target.collect:
                    rows, meta = await asyncio.to_thread(collected, target.collect(), target.keep)
                else:
                    body = await self._fetch(target.url)
            if not target.collect:
                # MBs of Envoy stats: off the loop
                rows, meta = await asyncio.to_thread(_parse_all, body.decode("utf-8"), target.keep or self.keep)
        except (ScrapeError, httpx.HTTPError, TimeoutError, UnicodeDecodeError, ValueError) as e:
            duration = time.monotonic() - t0
            self._failed(target, started, duration, _describe(e, self.timeout))
            await self._store(target, started, scrape_series(False, duration, 0))
            return
        await self._store(target, started, rows + scrape_series(True, time.monotonic() - t0, len(rows)))
        if target.up is False:
            log.info("scrape target %s is up again", target.label)
        target.up, target.last_error = True, None
        target.last_scrape, target.last_duration_s = started, time.monotonic() - t0
        target.samples_last_scrape = len(rows)
        target.metadata = meta
        target.scrapes += 1

    async def _store(self, target: TargetHealth, started: float, rows: list[tuple[str, str, float]]) -> None:
        ts = datetime.fromtimestamp(started, UTC).replace(tzinfo=None)
        table = pa.table(
            [
                pa.array([ts] * len(rows), pa.timestamp("us")),
                pa.array([target.label] * len(rows)),
                pa.array([r[0] for r in rows], pa.string()),
                pa.array([r[1] for r in rows], pa.string()),
                pa.array([r[2] for r in rows], pa.float64()),
            ],
            schema=SCHEMA,
        )
        try:
            await self.writer.write_samples(table)
        except Exception as e:  # the store's problem, not the target's: the target stays up
            log.warning("could not store %d samples of %s: %s", len(rows), target.label, e)

    async def _fetch(self, url: str) -> bytes:
        async with self._client.stream("GET", url) as r:
            if r.status_code != 200:
                raise ScrapeError(f"HTTP {r.status_code}")
            declared = r.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_bytes:
                raise ScrapeError(f"body of {declared} bytes is larger than scrape_max_bytes ({self.max_bytes})")
            chunks, n = [], 0
            async for chunk in r.aiter_bytes():
                n += len(chunk)
                if n > self.max_bytes:
                    raise ScrapeError(f"body is larger than scrape_max_bytes ({self.max_bytes})")
                chunks.append(chunk)
            return b"".join(chunks)

    def _failed(self, target: TargetHealth, started: float, duration: float, error: str) -> None:
        if target.up is not False or target.last_error != error:  # once per change, not every interval
            log.warning("scrape of %s (%s) failed: %s", target.label, target.url, error)
        target.up, target.last_error = False, error
        target.last_scrape, target.last_duration_s = started, duration
        target.samples_last_scrape = 0
        target.scrapes += 1
        target.failures += 1

    # --- prometheus-client Collector ---------------------------------------------------
    def collect(self):
        up = GaugeMetricFamily(
            "planoscope_scrape_up", "1 if the last scrape of the target succeeded", labels=["target", "url"]
        )
        duration = GaugeMetricFamily(
            "planoscope_scrape_duration_seconds", "Duration of the last scrape", labels=["target", "url"]
        )
        samples = GaugeMetricFamily(
            "planoscope_scrape_samples", "Samples kept from the last scrape", labels=["target", "url"]
        )
        for t in self.targets:
            if t.up is None:
                continue
            up.add_metric([t.label, t.url], 1.0 if t.up else 0.0)
            duration.add_metric([t.label, t.url], t.last_duration_s or 0.0)
            samples.add_metric([t.label, t.url], float(t.samples_last_scrape))
        return [f for f in (up, duration, samples) if f.samples]  # none at all without a scrape


def scrape_series(up: bool, duration_s: float, kept: int) -> list[tuple[str, str, float]]:
    """The samples Prometheus adds to every scrape of a target, failed ones included: ``up``,
    ``scrape_duration_seconds`` and ``scrape_samples_post_metric_relabeling`` (the samples kept)."""
    return [
        ("up", "{}", 1.0 if up else 0.0),
        ("scrape_duration_seconds", "{}", duration_s),
        ("scrape_samples_post_metric_relabeling", "{}", float(kept)),
    ]


def collected(families: Iterable[Metric], keep: list[str]) -> tuple[list[tuple[str, str, float]], dict]:
    """What ``parse`` and ``metadata`` give for the exposition of ``families`` (prometheus-client's
    ``Metric``s), without it: its samples whose name a glob of ``keep`` matches, and the
    metadata under the name the exposition's ``# TYPE`` line gives (a counter's with ``_total``)."""
    rows, meta = [], {}
    for family in families:
        kept = [s for s in family.samples if any(fnmatch.fnmatchcase(s.name, g) for g in keep)]
        if not kept:
            continue
        rows += [
            (s.name, json.dumps(dict(sorted(s.labels.items())), separators=(",", ":")), float(s.value)) for s in kept
        ]
        name, kind = family.name, family.type
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name, kind = name + "_info", "gauge"
        kind = {"stateset": "gauge", "gaugehistogram": "histogram"}.get(kind, kind)
        meta[name] = {"type": kind, "help": family.documentation, "unit": family.unit}
    return rows, meta


def _parse_all(text: str, keep: list[str]) -> tuple[list[tuple[str, str, float]], dict]:
    rows = parse(text, keep)
    return rows, metadata(text, {r[0] for r in rows})


def _describe(e: BaseException, timeout: float) -> str:
    if isinstance(e, (TimeoutError, httpx.TimeoutException)):
        return f"timed out after {timeout:g} s"
    if isinstance(e, httpx.ConnectError):
        cause: BaseException | None = e
        while cause is not None:  # httpx says "All connection attempts failed"; the OS says why
            if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
                return "connection refused"
            cause = cause.__cause__ or cause.__context__
        return f"cannot connect: {e or type(e).__name__}"
    if isinstance(e, UnicodeDecodeError):
        return "not Prometheus text format: not UTF-8"
    if isinstance(e, ValueError):
        return f"not Prometheus text format: {str(e)[:200]}"
    if isinstance(e, httpx.HTTPError):
        return f"{type(e).__name__}: {str(e)[:200]}"
    return str(e)[:300]
