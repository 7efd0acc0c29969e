"""What an LLM call costs when its sender sent no cost: the price table.

Plano sends a call's cost (``llm.usage.total_cost_usd``) only with a session id and a configured
price source; most calls carry tokens and no cost. For those planoscope estimates the cost from
``genai-prices`` (pydantic's maintained table of LLM prices, read from the snapshot the package
ships: nothing is downloaded) and the ``llm_prices`` overrides of the config, which win. A model
neither knows has no cost, never a guessed one; an estimate is stored apart from a sent cost
(``EstimatedCostUsd`` beside ``CostUsd``), so the two are never mixed silently.

Tokens follow OpenAI's usage: prompt tokens include the cached ones and the cache writes; the
completion tokens include the reasoning ones. Prices are today's: a call from before a price
change is estimated at the new price.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import genai_prices
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from genai_prices.types import TieredPrices

# A per-token price is given per million tokens, as every price list writes it.
MTOK = 1_000_000
# Models looked up in genai-prices (~0.2 ms each) and remembered; a batch looks up at most
# NEW_MODELS_PER_BATCH it has not seen, so a client sending a new model name in every span costs
# a bounded share of ingest (its calls beyond that are not estimated).
MAX_MODELS = 10_000
NEW_MODELS_PER_BATCH = 256


@dataclass(frozen=True)
class Price:
    """USD per million tokens. A model without a cache-read (or cache-write) price is charged its
    input price for those tokens."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def cost(self, prompt, cached, written, completion):
        """USD for calls' tokens (numbers or numpy arrays): the uncached prompt tokens at the input
        price, cache reads and writes at theirs, completion tokens at the output price."""
        read = self.input if self.cached_input is None else self.cached_input
        write = self.input if self.cache_write is None else self.cache_write
        uncached = np.maximum(prompt - cached - written, 0.0)
        return (uncached * self.input + cached * read + written * write + completion * self.output) / MTOK

    def __str__(self) -> str:
        parts = [self.input, self.output, self.cached_input, self.cache_write]
        while parts[-1] is None:
            parts.pop()
        return "/".join("" if p is None else f"{p:g}" for p in parts)


_OVERRIDE = re.compile(r"^\s*(?P<model>[^=\s][^=]*?)\s*=\s*(?P<prices>[^=]+?)\s*$")


def parse_override(text: str) -> tuple[str, Price]:
    """``MODEL=INPUT/OUTPUT[/CACHED_INPUT[/CACHE_WRITE]]`` (USD per million tokens) as the model and
    its ``Price``; ``ValueError`` saying what is wrong otherwise."""
    m = _OVERRIDE.match(text)
    parts = m.group("prices").split("/") if m else []
    if not m or not 2 <= len(parts) <= 4:
        raise ValueError(
            f"not a price {text!r}: expected MODEL=INPUT/OUTPUT[/CACHED_INPUT[/CACHE_WRITE]] in USD per million "
            "tokens, e.g. openai/gpt-4o=2.5/10/1.25"
        )
    values: list[float | None] = []
    for p in parts:
        try:
            v = float(p) if p.strip() else None
        except ValueError:
            raise ValueError(f"not a price {text!r}: {p.strip()!r} is not a number") from None
        if v is not None and not (v >= 0 and v < float("inf")):
            raise ValueError(f"not a price {text!r}: {p.strip()!r} is not a finite price >= 0")
        values.append(v)
    if values[0] is None or values[1] is None:
        raise ValueError(f"not a price {text!r}: the input and output prices are required")
    return m.group("model"), Price(*values)


def _split(model: str, provider: str | None) -> tuple[str, str | None]:
    """Plano names a model ``provider/model`` (``openai/gpt-4o``): the model and its provider."""
    head, sep, tail = model.partition("/")
    if sep and tail:
        return tail, head
    return model, provider or None


class Prices:
    """The price table: ``overrides`` (model name as sent, or without its ``provider/`` prefix →
    ``Price``) first, then genai-prices. Safe to use from several threads."""

    def __init__(self, overrides: Iterable[tuple[str, Price]] = ()):
        self.overrides = dict(overrides)
        self._lookups: dict[tuple[str, str | None], object] = {}
        self._lock = threading.Lock()

    def price(self, model: str, provider: str | None = None):
        """The price of ``model`` (as sent, e.g. ``openai/gpt-4o``; ``provider`` from the span
        where the name has no prefix): a ``Price`` (an override, or genai-prices' where it is one
        price a token), genai-prices' ``ModelPrice`` where it is tiered, or None."""
        key = (model, provider)
        with self._lock:
            if key in self._lookups:
                return self._lookups[key]
        found = self._find(model, provider)
        with self._lock:
            if len(self._lookups) >= MAX_MODELS:
                self._lookups.clear()
            self._lookups[key] = found
        return found

    def _known(self, key: tuple[str, str | None]) -> bool:
        with self._lock:
            return key in self._lookups

    def _find(self, model: str, provider: str | None):
        name, prefix = _split(model, provider)
        for candidate in (model, name):
            if candidate in self.overrides:
                return self.overrides[candidate]
        for provider_id in dict.fromkeys([prefix, None]):
            try:
                found = genai_prices.calc_price(genai_prices.Usage(), name, provider_id=provider_id).model_price
            except LookupError:
                continue
            return _linear(found) or found
        return None

    def estimate(self, batch: pa.Table) -> pa.Array:
        """``EstimatedCostUsd`` of the spans of ``batch`` (a table with the typed columns): the
        cost of each that has tokens and no sent cost, by its model's price; null for the others
        and for a model the table does not know. Vectorized per model: a batch costs a look-up per
        distinct model, not per call."""
        n = batch.num_rows
        if batch.column("LlmModel").null_count == n:  # no call with a model: most of Plano's batches
            return pa.nulls(n, pa.float64())
        prompt, completion = batch.column("PromptTokens"), batch.column("CompletionTokens")
        wanted = pc.and_(
            pc.is_null(batch.column("CostUsd")),
            pc.and_(pc.is_valid(batch.column("LlmModel")), pc.or_(pc.is_valid(prompt), pc.is_valid(completion))),
        )
        if n == 0 or not pc.any(wanted).as_py():
            return pa.nulls(n, pa.float64())
        rows = pc.indices_nonzero(wanted).to_numpy()
        groups: dict[tuple[str, str | None], list[int]] = {}
        models = batch.column("LlmModel").take(rows).to_pylist()
        providers = batch.column("LlmProvider").take(rows).to_pylist()
        for i, key in enumerate(zip(models, providers)):
            groups.setdefault(key, []).append(i)
        tokens = np.stack(
            [
                pc.fill_null(batch.column(c).take(rows), 0).to_numpy(zero_copy_only=False).astype(np.float64)
                for c in ("PromptTokens", "CachedInputTokens", "CacheCreationTokens", "CompletionTokens")
            ]
        )
        cost = np.full(len(rows), np.nan)
        new = 0
        for (model, provider), members in groups.items():
            if not self._known((model, provider)):
                new += 1
                if new > NEW_MODELS_PER_BATCH:
                    continue
            price = self.price(model, provider)
            if price is None:
                continue
            at = np.asarray(members)
            if isinstance(price, Price):
                cost[at] = price.cost(*tokens[:, at])
            else:  # tiered: the price depends on the call's size
                cost[at] = [_tiered_cost(price, *tokens[:, i]) for i in at]
        out = np.full(n, np.nan)
        out[rows] = cost
        return pa.array(out, pa.float64(), mask=np.isnan(out))


def _linear(price: genai_prices.types.ModelPrice) -> Price | None:
    """A genai-prices model price as a ``Price``, when it is one price a token whatever the call's
    size (None for tiered prices, or one without token prices)."""
    values = price.__dict__
    if any(isinstance(v, TieredPrices) for v in values.values()):
        return None
    if values.get("input_mtok") is None or values.get("output_mtok") is None:
        return None

    def get(key: str) -> float | None:
        v = values.get(key)
        return None if v is None else float(v)

    return Price(get("input_mtok"), get("output_mtok"), get("cache_read_mtok"), get("cache_write_mtok"))


def _tiered_cost(price, prompt: float, cached: float, written: float, completion: float) -> float:
    """USD for one call at a genai-prices price that depends on the call's size; NaN (no cost)
    for tokens the table refuses (more cached than prompt tokens, ...)."""
    try:
        usage = genai_prices.Usage(
            input_tokens=int(prompt),
            cache_read_tokens=int(cached) or None,
            cache_write_tokens=int(written) or None,
            output_tokens=int(completion),
        )
        return float(price.calc_price(usage)["total_price"])
    except (ValueError, ArithmeticError):
        return float("nan")
