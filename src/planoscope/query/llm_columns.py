"""What the statement over LLM calls reads and answers, on every store (``llm_calls.py``): the
columns of ``c`` (SQL both dialects read alike: the typed columns are the same on both stores),
the per-call values the quantile panels take, what the sums part adds up, and the parts' shape."""

from __future__ import annotations

from dataclasses import dataclass

from ..store.schema import FAILURE_CLASS
from .panels import (
    CacheRatio,
    CallQuantiles,
    CostRate,
    CostTotal,
    FailureRate,
    FailureRatio,
    TokenRate,
)

# The columns of ``c``: the call's step ``k`` and these, by short name, from the typed columns.
COLUMNS = {
    "m": "coalesce(LlmModel, '')",
    "p": "coalesce(LlmProvider, '')",
    "it": "PromptTokens",
    "ot": "CompletionTokens",
    "ct": "CachedInputTokens",
    "rt": "ReasoningTokens",
    "cs": "CostUsd",
    "ce": "EstimatedCostUsd",
    "ttft": "TimeToFirstTokenMs",
    "ms": "Duration / 1e6",
    "f": FAILURE_CLASS,
    "r": "coalesce(RouteName, '')",
    "rq": "RequestedModel",
    "rs": "ResolvedModel",
    "q": "SignalsQuality",
    "fl": "Flagged",
    "s": "SessionId",
}
# Generation speed is measured on the calls whose output streamed: Plano sets the time to first
# token on every response, and a response that was not streamed arrives whole at its first chunk,
# a few ms before the span ends (completion / 3 ms: 100,000 tok/s). A streamed one goes on for
# the generation: the calls with at least this long after the first token count.
MIN_GENERATION_MS = 100
# A value of each call that CallQuantiles can take the quantiles of: its SQL over ``c`` (NULL
# where the call has none) and the columns it reads. Generation speed: completion tokens over
# the time after the first token.
CALL_VALUES = {
    "ttft_ms": ("ttft", ("ttft",)),
    "output_tokens_per_second": (
        f"CASE WHEN ot > 0 AND ms - ttft >= {MIN_GENERATION_MS} THEN ot / ((ms - ttft) / 1000) END",
        ("ot", "ms", "ttft"),
    ),
}
# The sums per step and model (the part "sums"): the sum of each column and how many calls had it.
SUMMED = ("it", "ot", "ct", "rt", "cs", "ce")
TOKEN_KINDS = {"input": "it", "output": "ot", "cached_input": "ct", "reasoning": "rt"}
COST_SOURCES = {"sent": "cs", "estimated": "ce"}
QUALITIES = ("excellent", "good", "neutral", "poor", "severe")  # Plano's signals.quality, best first
PER_MODEL = (TokenRate, CostRate, CostTotal, CallQuantiles, FailureRatio, FailureRate, CacheRatio)


@dataclass(frozen=True)
class Part:
    """A part of the statement: ``sql`` selects rows ``(part, k, other, keys, values)`` (several
    SELECTs joined by UNION ALL at most), reading the columns ``columns`` of ``c``, the shared
    CTEs ``uses`` (``km``, ``top``, ``kmf``, ``rest``: see ``_statement``) with the per step and
    model aggregates ``km`` added to ``km`` by name, and its own CTEs ``ctes``."""

    name: str
    sql: str
    columns: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    km: tuple[tuple[str, str], ...] = ()
    ctes: tuple[str, ...] = ()


def quantiles_part(q: CallQuantiles) -> str:
    """The part (and ``km`` column) of ``q``'s quantiles: q_ttft_ms_500_950_990."""
    return f"q_{q.value}_" + "_".join(str(round(x * 1000)) for x in q.quantiles)
