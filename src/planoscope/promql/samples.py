"""``StoredSamples``: the scraped samples of a store (DuckDB's ``samples``, ClickHouse's
``planoscope_samples``) as the series a Prometheus scraping the same targets would have stored.

A row's series is ``__name__`` = its MetricName, the labels it was scraped with, ``job`` = the
scrape target's label (the Target column: ``--scrape brightstaff=http://…`` gives
``job="brightstaff"``) and ``instance`` = the target's ``host:port``, as Prometheus sets them. A
scraped ``job`` or ``instance`` label becomes ``exported_job`` / ``exported_instance``, as
Prometheus does with ``honor_labels: false``. ``instance`` comes from the targets as configured
now (``instances``): samples of a target no longer configured have none.

The samples of planoscope's rules (recording rules, ``ALERTS``) are rows of target
``RULES_TARGET`` whose labels are the series' own, ``job`` and ``instance`` included.

What the store indexes is pushed down: the metric name (``=``, or the names in the range that the
``__name__`` matchers accept, matched here with the engine's own regexes), an equal ``job`` (that
target's rows and the rules' rows) and the time range. The series those select are listed first,
with their numbers of samples (at most ``limits.max_series`` of them), and matched here; then only
the samples of the matching series are read, as arrays (a 64-bit key per series, ms, value: ~25
bytes a sample while loading), if they are at most ``limits.max_samples``. A query over too much
fails with Prometheus's error instead of loading it.

Example::

    queryable = StoredSamples(store, {"envoy": "127.0.0.1:9901"})
    Engine().range_query(queryable, "rate(envoy_cluster_upstream_rq_total[1m])", start_ms, end_ms, 15_000)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..store import SpanStore
from .engine import TOO_MANY_SAMPLES, TOO_MANY_SERIES, Limits
from .samples_clickhouse import ClickHouseSamples
from .samples_duckdb import DuckDBSamples
from .storage import Matcher, is_valid_label_name, matches_all, metric_name
from .values import METRIC_NAME, Labels, LimitExceeded, Selection, labels_of

JOB, INSTANCE = "job", "instance"
# The Target of the samples planoscope's own rules write (recording rules, ALERTS): their labels
# are stored whole, job and instance included, as Prometheus stores a rule's output.
RULES_TARGET = ""


def series_labels(name: str, target: str, scraped: Mapping[str, str], instance: str | None) -> dict[str, str]:
    """The labels Prometheus would have stored a scraped sample under (see the module docstring);
    a rule's output (``RULES_TARGET``) as it was written."""
    if target == RULES_TARGET:
        return {**scraped, METRIC_NAME: name}
    out = {("exported_" + k if k in (JOB, INSTANCE) else k): v for k, v in scraped.items()}
    out[METRIC_NAME] = name
    out[JOB] = target
    if instance:
        out[INSTANCE] = instance
    return out


class StoredSamples:
    """A ``Queryable`` over a store's scraped samples. ``instances``: each target label's
    ``instance`` (``scrape.scraper.instance_of`` its URL); ``limits``: the engine's, bounding what one selector loads."""

    indexed_labels = frozenset({METRIC_NAME, JOB})  # what select pushes down, with equality matchers

    def __init__(self, store: SpanStore, instances: Mapping[str, str] | None = None, limits: Limits | None = None):
        self.instances = dict(instances or {})
        self.limits = limits or Limits()
        self.sql = ClickHouseSamples(store) if store.dialect == "clickhouse" else DuckDBSamples(store)
        self.head = store.samples_head  # the last hours in memory (DuckDB), or None

    def select(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> Iterable[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        found = self.select_block(matchers, start_ms, end_ms)
        bounds = zip(found.labels, found.starts[:-1], found.starts[1:])
        return [(dict(ls), found.ts[a:b], found.values[a:b]) for ls, a, b in bounds]

    def select_block(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Selection:
        """``select`` whole: the matching series sorted by label set, with their samples in the
        range, from the store's samples head when it holds the range, else from the table."""
        head = self.head
        if head is not None:
            head.ensure_loaded()
            if head.covers(start_ms):
                return self._from_head(head, matchers, start_ms, end_ms)
        return self._from_table(matchers, start_ms, end_ms)

    def _from_head(self, head, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Selection:
        """Which series match is worked out once per set of series in the head."""
        names, job = self._pushdown([matchers], start_ms, end_ms)
        matched = self._matched(head, matchers, names, job) if names != [] else []
        series, timelines, samples = [], [], 0
        for (labels, _), (ts, vs, timeline) in zip(matched, head.views([k for _, k in matched], start_ms, end_ms)):
            if len(ts):
                series.append((labels, ts, vs))
                timelines.append(timeline)
                samples += len(ts)
        if len(series) > self.limits.max_series:
            raise LimitExceeded(TOO_MANY_SERIES)
        if samples > self.limits.max_samples:
            raise LimitExceeded(TOO_MANY_SAMPLES)
        return Selection.of(series, timelines)

    def _from_table(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Selection:
        """The series the pushed-down filters select are listed, with their numbers of samples,
        and matched here; then the samples of those that match are read in the order the store
        returns them (DuckDB: as written, in time order; no sort in SQL) and put in series order
        by their place in the sorted list, a stable sort on small integers."""
        names, job = self._pushdown([matchers], start_ms, end_ms)
        if names == []:
            return Selection.of([])
        candidates = self._candidates(names, job, start_ms, end_ms)
        wanted = sorted((labels_of(labels), key, n) for key, labels, n in candidates if matches_all(labels, matchers))
        if sum(n for _, _, n in wanted) > self.limits.max_samples:
            raise LimitExceeded(TOO_MANY_SAMPLES)
        if not wanted:
            return Selection.of([])
        keys = [key for _, key, _ in wanted]
        table = self.sql.samples(names, job, start_ms, end_ms, keys if len(keys) < len(candidates) else None)
        # Each sample's series: its place in ``wanted`` (-1: a series written since the listing).
        place = pc.index_in(table.column("k"), value_set=pa.array(keys, pa.uint64())).fill_null(-1).to_numpy()
        ts = table.column("t").to_numpy().astype(np.int64, copy=False)
        vs = table.column("v").to_numpy().astype(np.float64, copy=False)
        if (place < 0).any():
            listed = place >= 0
            place, ts, vs = place[listed], ts[listed], vs[listed]
        return _in_series_order([ls for ls, _, _ in wanted], place, ts, vs)

    def _matched(self, head, matchers, names, job) -> list[tuple[Labels, int]]:
        """(label set, head key) of the head's series ``matchers`` match, sorted by label set."""
        memo_key = (
            "select",
            tuple(matchers),
            tuple(names) if names is not None else None,
            job,
            tuple(sorted(self.instances.items())),
        )
        hit = head.memo.get(memo_key)
        if hit is not None and hit[0] == head.generation:
            return hit[1]
        generation, rows = head.catalog(names, job)
        matched = []
        for key, name, target, labels in rows:
            ls = series_labels(name, target, json.loads(labels), self.instances.get(target))
            if matches_all(ls, matchers):
                matched.append((labels_of(ls), key))
        matched.sort()
        head.memo[memo_key] = (generation, matched)
        return matched

    def _candidates(self, names, job, start_ms: int, end_ms: int) -> list[tuple[int, dict[str, str], int]]:
        """(key, labels, samples) of the series the pushed-down filters select: at most
        ``limits.max_series`` (more: ``LimitExceeded``, before any sample is read)."""
        rows = self.sql.series(names, job, start_ms, end_ms, self.limits.max_series + 1)
        if len(rows) > self.limits.max_series:
            raise LimitExceeded(TOO_MANY_SERIES)
        return [
            (int(key), series_labels(name, target, json.loads(labels), self.instances.get(target)), int(n))
            for key, name, target, labels, n in rows
        ]

    def series(self, matcher_sets: Sequence[Sequence[Matcher]], start_ms: int, end_ms: int) -> list[dict[str, str]]:
        """The label sets of the series with a sample in ``[start_ms, end_ms]`` matching any of
        ``matcher_sets`` (each a selector's matchers; none: every series), sorted. At most
        ``limits.max_series`` selected by the pushed-down filters, or ``LimitExceeded``."""
        sets = list(matcher_sets) or [[]]
        names, job = self._pushdown(sets, start_ms, end_ms)
        if names == []:
            return []
        found = {
            tuple(sorted(labels.items()))
            for _, labels, _ in self._candidates(names, job, start_ms, end_ms)
            if any(matches_all(labels, ms) for ms in sets)
        }
        return [dict(k) for k in sorted(found)]

    def label_names(self, matcher_sets: Sequence[Sequence[Matcher]], start_ms: int, end_ms: int) -> list[str]:
        """The label names of the series matching any of ``matcher_sets`` (none: of every series
        in the range, read without listing the series), sorted."""
        if matcher_sets:
            return sorted({k for labels in self.series(matcher_sets, start_ms, end_ms) for k in labels})
        targets = self.sql.targets(start_ms, end_ms)
        if not targets:
            return []
        scraped = self.sql.label_keys(start_ms, end_ms)
        found = {("exported_" + k if k in (JOB, INSTANCE) else k) for k in scraped} | {METRIC_NAME, JOB}
        if any(self.instances.get(t) for t in targets):
            found.add(INSTANCE)
        return sorted(found)

    def label_values(
        self, name: str, matcher_sets: Sequence[Sequence[Matcher]], start_ms: int, end_ms: int
    ) -> list[str]:
        """The values of label ``name`` on those series, sorted."""
        if matcher_sets:
            return sorted({ls[name] for ls in self.series(matcher_sets, start_ms, end_ms) if ls.get(name)})
        if not is_valid_label_name(name):
            return []
        if name == METRIC_NAME:
            found = self.sql.names(start_ms, end_ms)
        elif name == JOB:
            found = self.sql.targets(start_ms, end_ms)
        elif name == INSTANCE:
            found = [self.instances.get(t) for t in self.sql.targets(start_ms, end_ms)]
        elif name in ("exported_" + JOB, "exported_" + INSTANCE):  # stored as the target wrote it
            found = self.sql.label_key_values(name.removeprefix("exported_"), start_ms, end_ms)
        else:
            found = self.sql.label_key_values(name, start_ms, end_ms)
        return sorted({v for v in found if v})

    def _pushdown(self, matcher_sets, start_ms: int, end_ms: int) -> tuple[list[str] | None, str | None]:
        """The metric names to read (None: all) and the one target (job) to read, if fixed, for
        selectors any of whose matcher sets a series must match."""
        fixed = [metric_name(ms) for ms in matcher_sets]
        if all(fixed):
            names = sorted(set(fixed))
        elif any(m.name == METRIC_NAME for ms in matcher_sets for m in ms):
            stored = self.sql.names(start_ms, end_ms)
            names = sorted(
                {n for n in stored for ms in matcher_sets if all(m.matches(n) for m in ms if m.name == METRIC_NAME)}
            )
        else:
            names = None
        jobs = {next((m.value for m in ms if m.name == JOB and m.op == "="), None) for ms in matcher_sets}
        job = jobs.pop() if len(jobs) == 1 else None
        return names, job


def _in_series_order(labels: list[Labels], place: np.ndarray, ts: np.ndarray, vs: np.ndarray) -> Selection:
    """The samples of the series ``labels`` (sample ``i`` is of series ``place[i]``), in the order
    they were written, as a Selection: by series, then time. A stable sort on the series' places
    (a radix sort while they fit 16 bits) keeps each series' samples as written, so samples
    written in time order need no sort by time; any others get one (ties keep the written
    order). Of two samples in one millisecond the one written later is kept, as a TSDB keeps."""
    code = place.astype(np.uint16 if len(labels) <= 1 << 16 else np.int64)
    order = np.argsort(code, kind="stable")
    counts = np.bincount(code, minlength=len(labels))
    code = np.repeat(np.arange(len(labels), dtype=code.dtype), counts)  # ``code[order]``, without a gather
    ts, vs = ts[order], vs[order]
    same = code[1:] == code[:-1]
    if (same & (ts[1:] < ts[:-1])).any():
        order = np.lexsort((ts, code))
        code, ts, vs = code[order], ts[order], vs[order]
        same = code[1:] == code[:-1]
    dup = same & (ts[1:] == ts[:-1])
    if dup.any():
        keep = np.append(~dup, True)
        code, ts, vs = code[keep], ts[keep], vs[keep]
        counts = np.bincount(code, minlength=len(labels))
    if not counts.all():  # a series whose samples retention deleted after the listing
        labels = [ls for ls, c in zip(labels, counts) if c]
        counts = counts[counts > 0]
    starts = np.zeros(len(labels) + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    return Selection(labels, ts, vs, starts)
