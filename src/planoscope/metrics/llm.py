"""LLM metrics derived from the LLM calls' spans, named after the OpenTelemetry GenAI semantic
conventions: **semantic-conventions v1.41.0** (``docs/gen-ai/gen-ai-metrics.md``, status
Development), the last release that holds them before they moved to the
semantic-conventions-genai repository, which renames the client metrics
``gen_ai.client.inference.*``. Names and units as the Collector's Prometheus exporter writes
them (dots to underscores, a unit suffix; ``{token}`` is an annotation and adds none):

- ``gen_ai_client_token_usage`` (histogram, {token}): the tokens of each call per
  ``gen_ai_token_type``: ``input`` and ``output`` (semconv's), ``cached_input`` and ``reasoning``
  (custom values, as semconv allows: the part of the input served from the provider's cache, the
  part of the output spent reasoning; so the four types overlap and do not add up);
- ``gen_ai_client_operation_duration_seconds`` (histogram): each call's span duration, with
  ``error_type`` = its failure class (``schema.FAILURE_RULES``: 429, 4xx, 5xx, before_dispatch,
  error_status), absent when it did not fail;
- ``gen_ai_client_operation_time_to_first_chunk_seconds`` (histogram): each call's time to first
  token (Plano's ``llm.time_to_first_token``, set on every response that sent a first chunk,
  streaming or not, errors included; the GenAI and OpenLIT attributes too);
- ``planoscope_llm_cost_usd_total`` (counter, USD) with ``source`` = ``sent`` (the cost the sender
  sent) or ``estimated`` (planoscope's estimate from its price table, for a call with tokens and no
  sent cost), never mixed;
- ``planoscope_llm_requests_total`` (counter): calls per ``failure_class`` (``none`` when it did not
  fail) and ``route`` (``plano.route.name``, absent without one).

Every family is labelled ``gen_ai_request_model`` (the LlmModel column: Plano's ``llm.model``,
``openai/gpt-4o``, or the GenAI/OpenInference names) and ``gen_ai_provider_name`` (LlmProvider),
each absent when the span has none (a call that failed before dispatch has no model). semconv's
``gen_ai.operation.name`` is left out: no sender here sets it. An LLM call is ``schema.LLM_CALL``.
Histogram buckets are semconv's advice. A value that cannot be a count, a time or a cost
(negative, NaN, infinite) is not counted.

The totals live as span metrics' do (``cumulative.py``): cumulative since the data began,
restored on start, each family bounded by ``metrics_cardinality_limit`` with its own overflow series.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client.core import Metric

from ..store.schema import FAILURE_RULES, LLM_CALL, LLM_CALL_COLUMNS, LLM_CALL_SQL, failure_rule_index, llm_calls
from .cumulative import OVERFLOW_LABELS, Cumulative, add_histogram, bucket_label

if TYPE_CHECKING:
    from ..store import SpanStore

SEMCONV_VERSION = "1.41.0"
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFC_BUCKETS_S = DURATION_BUCKETS_S
# gen_ai_token_type -> the column holding that count
TOKEN_TYPES = (
    ("input", "PromptTokens"),
    ("output", "CompletionTokens"),
    ("cached_input", "CachedInputTokens"),
    ("reasoning", "ReasoningTokens"),
)
MODEL_LABELS = ("gen_ai_request_model", "gen_ai_provider_name")


@dataclass(frozen=True)
class Family:
    """One exposed metric. Its series key is the JSON list [name, *label values] (null: label
    absent); a counter exposes its observations (``count``) or their sum (``sum``)."""

    name: str  # the Prometheus name, unit suffix included, _total excluded
    kind: str  # histogram | counter
    help: str
    labels: tuple[str, ...]
    unit: str = ""  # OpenMetrics' UNIT
    buckets: tuple[float, ...] = ()
    value: str = "count"


TOKENS, DURATION, TTFC, COST, REQUESTS = range(5)
FAMILIES = (
    Family(
        "gen_ai_client_token_usage",
        "histogram",
        "Number of input and output tokens used, per LLM call and token type "
        f"(OpenTelemetry GenAI semantic conventions v{SEMCONV_VERSION}: gen_ai.client.token.usage)",
        (*MODEL_LABELS, "gen_ai_token_type"),
        buckets=TOKEN_BUCKETS,
    ),
    Family(
        "gen_ai_client_operation_duration_seconds",
        "histogram",
        f"GenAI operation duration: each LLM call's span (semconv v{SEMCONV_VERSION}: gen_ai.client.operation.duration)",
        (*MODEL_LABELS, "error_type"),
        unit="seconds",
        buckets=DURATION_BUCKETS_S,
    ),
    Family(
        "gen_ai_client_operation_time_to_first_chunk_seconds",
        "histogram",
        "Time to receive the first chunk of each LLM call's response "
        f"(semconv v{SEMCONV_VERSION}: gen_ai.client.operation.time_to_first_chunk)",
        MODEL_LABELS,
        unit="seconds",
        buckets=TTFC_BUCKETS_S,
    ),
    Family(
        "planoscope_llm_cost_usd",
        "counter",
        "Cost of the LLM calls in USD: as the sender sent it (source=sent) or estimated by planoscope "
        "from its price table for calls with tokens and no cost sent (source=estimated)",
        (*MODEL_LABELS, "source"),
        unit="usd",
        value="sum",
    ),
    Family(
        "planoscope_llm_requests",
        "counter",
        "LLM calls per failure class (none: not failed) and route",
        (*MODEL_LABELS, "failure_class", "route"),
    ),
)
_CODE = {f.name: i for i, f in enumerate(FAMILIES)}
# What the aggregation reads of a span (the decoded batch has them; ``scan`` selects them).
COLUMNS = tuple(
    dict.fromkeys(
        [
            *(c for _, rule in FAILURE_RULES for c, _, _ in rule),
            *LLM_CALL_COLUMNS,
            "Duration",
            "LlmProvider",
            "TimeToFirstTokenMs",
            "CostUsd",
            "EstimatedCostUsd",
            "RouteName",
        ]
    )
)
_NOT_FAILED = "none"
_FAILED = (None, *(cls for cls, _ in FAILURE_RULES))  # by failure_rule_index + 1


def _render(labels: tuple) -> str:
    return json.dumps(list(labels), separators=(",", ":"), ensure_ascii=False)


_OVERFLOW = {f.name: _render((f.name, OVERFLOW_LABELS)) for f in FAMILIES}


class LlmMetrics(Cumulative):
    """The LLM metrics (see the module's docstring); the life of the totals is ``Cumulative``'s."""

    name = "llmmetrics"
    title = "LLM metrics"

    def __init__(self, cardinality_limit: int):
        super().__init__(cardinality_limit)
        # value <= bound exactly: ns <= floor(bound_s * 1e9) for the int64 ns, ms <= bound_s * 1000
        # for the float ms (these bounds times 1000 are whole numbers, exact in a float).
        self._duration_ns = np.array([math.floor(Fraction(str(b)) * 10**9) for b in DURATION_BUCKETS_S], np.int64)
        self._ttfc_ms = np.array([float(Fraction(str(b)) * 1000) for b in TTFC_BUCKETS_S])
        self._tokens = np.array(TOKEN_BUCKETS, np.int64)
        definition = [SEMCONV_VERSION, [(f.name, f.labels, f.buckets) for f in FAMILIES], FAILURE_RULES, LLM_CALL_SQL]
        self.fingerprint = hashlib.sha256(json.dumps([definition, TOKEN_TYPES]).encode()).hexdigest()[:16]

    def family(self, series: str) -> str:
        return series[2 : series.index('"', 2)]

    def overflow(self, family: str) -> str:
        return _OVERFLOW.get(family) or _render((family, OVERFLOW_LABELS))

    def scan(self, store: SpanStore, after: datetime | None = None, by_commit: bool = False) -> Iterator:
        return store.scan_spans(COLUMNS, where=LLM_CALL, after=after, by_commit=by_commit)

    def _aggregate(self, spans: pa.Table | pa.RecordBatch, dims: list[pa.Array] | None = None) -> dict[str, list]:
        """The batch's LLM calls counted per family: each label column dictionary-encoded once,
        a series' index in mixed radix over the codes of its labels, and one ``bincount`` per
        family into a series x bucket matrix: no string hashed per span, no column copied to
        filter it (numpy masks pick the rows), Python per series, not per span."""
        if spans.num_rows == 0:
            return {}
        mask = llm_calls(spans)
        if not pc.any(mask).as_py():
            return {}
        # The calls' columns only, before anything is combined or encoded: they are ~1 span in 5
        # of Plano's (a commit's table has a chunk per request: combining all its rows was most of
        # the cost).
        spans = spans.select(COLUMNS).filter(mask)
        call = np.ones(spans.num_rows, bool)
        col = {c: _array(spans.column(c)) for c in COLUMNS}
        m_code, models = _encode(col["LlmModel"])
        p_code, providers = _encode(col["LlmProvider"])
        r_code, routes = _encode(col["RouteName"])
        f_code = failure_rule_index(spans).astype(np.int64) + 1  # 0: not failed
        n_p, n_f, n_r = len(providers), len(_FAILED), len(routes)
        mp = m_code * n_p + p_code  # a (model, provider) pair
        mp_size, pairs = len(models) * n_p, None
        if mp_size > len(mp):  # many models: number the pairs that occur (no series index overflows)
            pairs, mp = np.unique(mp, return_inverse=True)
            mp_size = len(pairs)
        mpf = mp * n_f + f_code

        def model(code: int) -> tuple:
            if pairs is not None:
                code = int(pairs[code])
            return models[code // n_p], providers[code % n_p]

        def with_failure(code: int) -> tuple:
            pair, failed = divmod(code, n_f)
            return (*model(pair), _FAILED[failed])

        def with_route(code: int) -> tuple:
            pair_failed, route = divmod(code, n_r)
            *labels, failed = with_failure(pair_failed)
            return (*labels, failed or _NOT_FAILED, routes[route])

        out: dict[str, list] = {}
        count = self._count
        for token_type, column in TOKEN_TYPES:
            rows, tokens = _valid(col[column], call)
            if rows is not None:
                n = tokens[rows]
                count(
                    out, TOKENS, mp[rows], mp_size, _bucket(self._tokens, n), n, lambda c, t=token_type: (*model(c), t)
                )
        ns = col["Duration"].to_numpy()[call]
        count(out, DURATION, mpf[call], mp_size * n_f, _bucket(self._duration_ns, ns), ns / 1e9, with_failure)
        rows, ttft = _valid(col["TimeToFirstTokenMs"], call)
        if rows is not None:
            ms = ttft[rows]
            count(out, TTFC, mp[rows], mp_size, _bucket(self._ttfc_ms, ms), ms / 1000, model)
        for source, column in (("sent", "CostUsd"), ("estimated", "EstimatedCostUsd")):
            rows, usd = _valid(col[column], call)
            if rows is not None:
                count(out, COST, mp[rows], mp_size, None, usd[rows], lambda c, s=source: (*model(c), s))
        index = (mpf * n_r + r_code)[call]
        count(out, REQUESTS, index, mp_size * n_f * n_r, None, np.ones(len(index)), with_route)
        return out

    def _count(self, out: dict, family: int, index: np.ndarray, size: int, bucket, value: np.ndarray, labels) -> None:
        """Add to ``out`` the observations of ``family``: per observation its series' ``index``
        (below ``size``), ``bucket`` (None: a counter) and ``value``; ``labels(i)`` gives series
        ``i``'s label values."""
        f = FAMILIES[family]
        nb = len(f.buckets) + 1 if f.buckets else 1
        codes = None
        if size * nb > 16 * len(index) + 4096:  # sparse: number the series that occur instead
            codes, index = np.unique(index, return_inverse=True)
            size = len(codes)
        flat = index if bucket is None else index * nb + bucket
        counts = np.bincount(flat, minlength=size * nb).reshape(size, nb)
        sums = np.bincount(index, weights=value, minlength=size)
        per_series = counts.sum(axis=1)
        for i in np.flatnonzero(per_series).tolist():
            series = self.series_key((f.name, *labels(i if codes is None else int(codes[i]))), _render)
            out[series] = [int(per_series[i]), float(sums[i]), counts[i].tolist() if f.buckets else []]

    # --- exposition --------------------------------------------------------------------
    def collect(self) -> Iterable[Metric]:
        metrics = [Metric(f.name, f.help, f.kind, f.unit) for f in FAMILIES]
        bounds = [[bucket_label(b) for b in f.buckets] for f in FAMILIES]
        for series, count, total, buckets in sorted(self.snapshot()):
            values = json.loads(series)
            code = _CODE[values[0]]
            family, metric = FAMILIES[code], metrics[code]
            if isinstance(values[1], dict):  # the overflow series
                labels = values[1]
            else:
                labels = {k: v for k, v in zip(family.labels, values[1:]) if v is not None}
            if family.kind == "histogram":
                add_histogram(metric, labels, count, total, buckets, bounds[code])
            else:
                metric.add_sample(family.name + "_total", labels, count if family.value == "count" else total)
        yield from metrics


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _encode(values: pa.Array) -> tuple[np.ndarray, list]:
    """(each row's code, the values by code, None among them for a null)."""
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    return encoded.indices.to_numpy().astype(np.int64), encoded.dictionary.to_pylist()


def _valid(values: pa.Array, call: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(the rows that are LLM calls (``call``) with a finite, non-negative value; every row's
    value, NaN where none), or (None, None) when no call has one."""
    if values.null_count == len(values):
        return None, None
    v = values.to_numpy(zero_copy_only=False)  # a null is NaN (ints with nulls come as floats)
    with np.errstate(invalid="ignore"):
        rows = call & (v >= 0) & (np.isfinite(v) if v.dtype.kind == "f" else True)
    if not rows.any():
        return None, None
    return rows, v


def _bucket(bounds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bucket i holds bounds[i-1] < value <= bounds[i]; the last one, past every bound, is +Inf."""
    return np.searchsorted(bounds, values, side="left")
