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
from .cache import ResultCache
from .engine import TOO_MANY_SAMPLES, TOO_MANY_SERIES, Limits
from .samples_clickhouse import ClickHouseSamples
from .samples_duckdb import DuckDBSamples
from .storage import Matcher, is_stale, is_valid_label_name, matches_all, metric_name
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

    def __init__(
        self,
        store: SpanStore,
        instances: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        cache: ResultCache | None = None,
    ):
        self.instances = dict(instances or {})
        # Evaluated subexpressions kept across queries (``promql.cache``), per instance labels.
        self.cache, self.cache_scope = cache, tuple(sorted(self.instances.items()))
        self.limits = limits or Limits()
        self.sql = ClickHouseSamples(store) if store.dialect == "clickhouse" else DuckDBSamples(store)
        self.head = store.samples_head  # the last hours in memory (DuckDB), or None
        self.rollups = getattr(store, "rollups", None)  # the samples thinned per bucket (DuckDB), or None
        self.rollup_resolutions = tuple(sorted(self.rollups.resolutions, reverse=True)) if self.rollups else ()

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

    def select_thinned(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, resolution_ms: int
    ) -> Selection | None:
        """``select_block`` from the store's rollups (``store.rollups``: a subset of the samples,
        with each one's ``ordinal``): at ``resolution_ms`` up to its watermark, then at the finer
        resolutions up to theirs, then the raw samples. None when the rollups at
        ``resolution_ms`` do not cover ``start_ms`` (``start_ms`` is a bucket's start)."""
        names, job = self._pushdown([matchers], start_ms, end_ms)
        if names == []:
            return Selection.of([])
        matched: list[tuple[Labels, int]] = []  # the catalog's series that match, by label set

        def match() -> list[int]:
            matched[:] = self._matched(self.rollups, matchers, names, job)
            if len(matched) > self.limits.max_series:
                raise LimitExceeded(TOO_MANY_SERIES)
            return [key for _, key in matched]

        # In time order: raw samples before the rollups begin, rollups at ``resolution_ms`` up to
        # their watermark, at each finer resolution up to its own, then the raw samples.
        parts: list[tuple[int, pa.Table | Selection]] = []
        since = start_ms
        for r in (r for r in self.rollup_resolutions if r <= resolution_ms):
            got = self.sql.rollups(r, since, end_ms + 1, match)
            if got is None:
                if r == resolution_ms:
                    return None
                continue
            begins, watermark, rows = got
            if begins > since:
                parts.append((0, self.select_block(matchers, since, begins - 1)))
            since = watermark
            parts.append((r, rows))
            if since > end_ms:
                break
        if since <= end_ms:
            parts.append((0, self.select_block(matchers, since, end_ms)))
        if sum(len(p.ts) if r == 0 else p.num_rows for r, p in parts) > self.limits.max_samples:
            raise LimitExceeded(TOO_MANY_SAMPLES)
        return _thinned_selection([ls for ls, _ in matched], parts)

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

    def _matched(self, catalog, matchers, names, job) -> list[tuple[Labels, int]]:
        """(label set, key) of the series ``matchers`` match in ``catalog`` (the head, or the
        rollups: its ``catalog(names, job)``, kept in its ``memo`` while its ``generation`` is),
        sorted by label set."""
        memo_key = (
            "select",
            tuple(matchers),
            tuple(names) if names is not None else None,
            job,
            tuple(sorted(self.instances.items())),
        )
        hit = catalog.memo.get(memo_key)
        if hit is not None and hit[0] == catalog.generation:
            return hit[1]
        generation, rows = catalog.catalog(names, job)
        matched = []
        for key, name, target, labels in rows:
            ls = series_labels(name, target, json.loads(labels), self.instances.get(target))
            if matches_all(ls, matchers):
                matched.append((labels_of(ls), key))
        matched.sort()
        catalog.memo[memo_key] = (generation, matched)
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


def _thinned_selection(catalog: list[Labels], parts: list[tuple[int, pa.Table | Selection]]) -> Selection:
    """One Selection of ``parts`` in time order, each rollups (resolution, rows whose Code is a
    place in ``catalog``) or raw samples (0, a Selection), with each sample's ``ordinal``: the
    non-stale samples of its series before its bucket (from each bucket's BucketN), plus its Rank,
    plus one. A raw sample is a bucket of its own."""
    index = {ls: i for i, ls in enumerate(catalog)}  # sorted
    extra = {ls for r, p in parts if r == 0 for ls in p.labels if ls not in index}  # series not thinned yet
    labels = sorted([*catalog, *extra]) if extra else catalog
    if extra:
        index = {ls: i for i, ls in enumerate(labels)}
    of_catalog = np.array([index[ls] for ls in catalog], np.int64)
    # (place, ts, vs, rank, size, bucket) per part, and the order that puts each part's samples
    # in time order within each series: the order written (the table's, thinned an hour after
    # another), which DuckDB's parallel join leaves in a few sorted runs.
    cols: list[tuple[np.ndarray, ...]] = []
    orders: list[np.ndarray] = []
    for i, (r, p) in enumerate(parts):
        if r == 0:
            n = len(p.ts)
            place = np.repeat(np.array([index[ls] for ls in p.labels], np.int64), np.diff(p.starts))
            bucket = np.arange(n, dtype=np.int64) * len(parts) + i  # every sample its own
            cols.append((place, p.ts, p.values, np.zeros(n, np.int32), (~is_stale(p.values)).astype(np.int32), bucket))
            orders.append(np.arange(n))
        elif p.num_rows:
            code = p.column("Code").to_numpy().astype(np.int64)
            ts = p.column("Timestamp").to_numpy()
            cols.append(
                (
                    of_catalog[code] if len(labels) > len(catalog) else code,
                    ts,
                    p.column("Value").to_numpy(),
                    p.column("Rank").to_numpy(),
                    p.column("BucketN").to_numpy(),
                    ts // r * len(parts) + i,
                )
            )
            orders.append(np.argsort(p.column("Row").to_numpy(), kind="stable"))
    if not cols:
        return Selection.of([])
    place, ts, vs, rank, size, bucket = (np.concatenate([c[i] for c in cols]) for i in range(6))
    if not len(ts):
        return Selection.of([])
    offsets = np.cumsum([0] + [len(c[0]) for c in cols[:-1]])
    order = np.concatenate([o + k for o, k in zip(orders, offsets)])
    # then by series, keeping that order: a stable radix sort while the places fit 16 bits
    order = order[np.argsort(place[order].astype(np.uint16 if len(labels) <= 1 << 16 else np.int64), kind="stable")]
    place, ts = place[order], ts[order]
    same = place[1:] == place[:-1]
    if (same & (ts[1:] < ts[:-1])).any():  # rollups made again after a late write: by time too
        order = order[np.lexsort((ts, place))]
        place, ts = place[order], ts[order]
    vs, rank, size, bucket = vs[order], rank[order], size[order], bucket[order]
    counts = np.bincount(place, minlength=len(labels))
    starts = np.zeros(len(labels) + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    # ordinal[i] = ordinal[i-1] - rank[i-1] + rank[i], plus the size of the bucket left behind
    # (a new bucket), from 1 at each series' first sample.
    step = rank.astype(np.int64)
    step[1:] -= rank[:-1]
    step[1:] += np.where(bucket[1:] != bucket[:-1], size[:-1], 0)
    firsts = starts[:-1][counts > 0]
    step[firsts] = rank[firsts].astype(np.int64) + 1
    ordinal = np.cumsum(step)
    base = np.zeros(len(firsts), np.int64)
    base[1:] = ordinal[firsts[1:] - 1]
    ordinal -= np.repeat(base, counts[counts > 0])
    if not counts.all():  # matched series without samples in the range
        labels = [ls for ls, c in zip(labels, counts) if c]
        starts = np.zeros(len(labels) + 1, np.int64)
        np.cumsum(counts[counts > 0], out=starts[1:])
    return Selection(
        labels, ts.astype(np.int64, copy=False), vs.astype(np.float64, copy=False), starts, ordinal=ordinal
    )
