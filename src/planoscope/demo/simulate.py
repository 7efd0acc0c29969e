"""Simulated Plano gateway traffic (Plano 0.4.28+), as real OTLP.

``Simulation`` is a Plano gateway's traffic as a pure function of (seed, second): the requests
that start within one wall-clock second are drawn from a generator seeded with both. So the
same seed replays the same traffic for the same time, any window can be made without making
what came before it, and sending a window twice sends the same span ids (stored once).
``Player`` (export.py) plays a simulation in real time through Plano's batch exporters.

What each request sends follows ``reference/plano-telemetry/README.md`` (request.py, llm_call.py and spans.py have the
details); the gateway is configured in gateway.py. Three kinds of request:

- llm: a direct call to the LLM listener, rooted at ``plano(llm)`` ``POST {path} {model}``
  (``{requested} -> {resolved}`` when an alias, the router or the session router changed the
  model; ``llm`` when it failed before dispatch), with ``plano(routing)`` ``routing`` below it
  (and the router model's ``plano(outbound)`` when the request carried routing preferences) and
  the upstream call's ``plano(outbound)``;
- agent: Envoy's ``plano(inbound)`` root, ``plano(orchestrator)`` named after the listener with
  its agent-selection ``plano(outbound)``, ``plano(filter)`` spans, ``plano(agent)`` spans, and
  the agents' LLM calls (each a ``plano(llm)`` as above) below them;
- routing: ``/routing/v1/chat/completions``, a ``plano(routing)`` ``routing_decision`` root.

Latencies are log-normal per model with a slow tail; a fraction of calls is rate limited (429,
more of them in traffic bursts) or fails upstream (5xx); every few minutes an incident (a
model's rate-limit storm, a provider outage or slowdown) lasts a minute or two; the rate drifts
with the time of day and over tens of minutes.

Example::

    sim = Simulation(rate=5, seed=1)
    traces = sim.traces(start_s, start_s + 60)
    for req in export_requests(span for t in traces for span in t.spans):
        ...
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

from .export import OtlpExporter, Player, export_request, export_requests
from .gateway import LISTENERS, MODELS, ROUTES
from .request import Builder
from .spans import AGENT, LLM, ROUTING, Conditions, EnvoyCall, Fact, Session, Trace, pick

__all__ = [
    "AGENT",
    "DEFAULT_MIX",
    "LISTENERS",
    "LLM",
    "MODELS",
    "ROUTES",
    "ROUTING",
    "EnvoyCall",
    "Fact",
    "OtlpExporter",
    "Player",
    "Simulation",
    "Trace",
    "export_request",
    "export_requests",
    "normalize_mix",
    "parse_mix",
]

DEFAULT_MIX = {LLM: 0.65, AGENT: 0.3, ROUTING: 0.05}

# Share of LLM calls rejected with 429: a floor (users over their own budget) plus a part that
# grows with the square of the load (load = rate now / average rate), so bursts get throttled.
RATE_LIMIT_FLOOR, RATE_LIMIT_LOAD, RATE_LIMIT_MAX = 0.004, 0.004, 0.12
BURST_CHANCE, BURST_S, BURST_X = 0.3, (4.0, 16.0), (2.5, 5.0)  # per minute; duration; rate multiplier
# Bursts add to the average; the base rate is scaled down by their expected factor, so that
# ``rate`` is the long-run average.
_BURST_MEAN = 1 + BURST_CHANCE * (sum(BURST_S) / 2 / 60) * (sum(BURST_X) / 2 - 1)
# One incident per 4-minute window: a demo shows one (and can fire an alert on it) within a few
# minutes of starting, and is in one about a third of the time.
INCIDENT_WINDOW_S, INCIDENT_S = 240, (45.0, 120.0)
INCIDENTS = (("rate_limit", 0.4), ("outage", 0.35), ("slow", 0.25))
OUTAGE_TARGETS = (("openai", 0.4), ("anthropic", 0.3), ("groq", 0.15), ("gemini", 0.1), ("arch", 0.05))
# The live demo's first minutes: a rate-limit storm on the busiest model from a minute after it
# starts, for 3 minutes, so that Plano's 429 rule (over 10 % in 5 minutes, for 1 minute) fires
# about 3 minutes in whatever the seed, where the random incidents may take a quarter of an hour.
OPENING_AFTER_S, OPENING_S, OPENING_LEVEL = 60.0, 180.0, 0.45


@dataclass(frozen=True)
class Incident:
    """A stretch of trouble: ``rate_limit`` (a model's callers hit their budget: extra 429
    share ``level``), ``outage`` (a provider's 5xx share ``level``) or ``slow`` (a provider's
    latency times ``level``)."""

    kind: str
    target: str  # a model (rate_limit) or a provider, "arch" for Plano's own models
    level: float
    start_s: float
    end_s: float


def parse_mix(text: str) -> dict[str, float]:
    """``"llm=0.7,agent=0.3"`` → shares normalized to 1; a kind left out gets none."""
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep:
            raise ValueError(f"{part!r}: expected KIND=SHARE")
        try:
            shares[name] = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: the share is not a number") from None
    return normalize_mix(shares)


def normalize_mix(shares: dict[str, float]) -> dict[str, float]:
    """Shares of the request kinds, scaled to sum to 1; a kind left out gets none."""
    unknown = set(shares) - set(DEFAULT_MIX)
    if unknown:
        raise ValueError(f"unknown request kind {sorted(unknown)[0]!r} (known: {', '.join(DEFAULT_MIX)})")
    if any(not math.isfinite(v) or v < 0 for v in shares.values()):
        raise ValueError("shares must be zero or more")
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("at least one share must be above zero")
    return {k: shares.get(k, 0.0) / total for k in DEFAULT_MIX}


class Simulation:
    """Plano's traffic at ``rate`` requests (traces) per second on average.

    ``mix`` gives the share of each kind of request (``parse_mix``); ``steady`` turns off
    bursts, drift and incidents (a constant Poisson rate, for benchmarks); ``opening_at`` adds a
    rate-limit storm a minute after it (``OPENING_*``). Seconds are Unix seconds.
    """

    def __init__(
        self,
        rate: float = 5.0,
        mix: dict[str, float] | None = None,
        seed: int = 0,
        steady: bool = False,
        opening_at: float | None = None,
    ):
        if rate <= 0:
            raise ValueError("rate must be above zero")
        self.rate, self.seed, self.steady = rate, seed, steady
        # ``opening_at`` (unix s: when a live demo starts): the storm of its first minutes.
        busiest = max(MODELS.values(), key=lambda m: m.weight).name
        start = None if opening_at is None else opening_at + OPENING_AFTER_S
        self._opening = (
            None if start is None else Incident("rate_limit", busiest, OPENING_LEVEL, start, start + OPENING_S)
        )
        self.mix = normalize_mix(mix or DEFAULT_MIX)
        self._phase = random.Random(f"{seed}:phase").uniform(0, 2 * math.pi)
        self._sessions = max(4, int(rate * 30))  # live conversations per 10-minute window

    def intensity(self, second: int) -> float:
        """Requests per second expected at ``second``."""
        if self.steady:
            return self.rate
        day = 1 + 0.25 * math.sin(2 * math.pi * (second % 86400 - 9 * 3600) / 86400)  # peaks at 15:00 UTC
        drift = 1 + 0.2 * math.sin(2 * math.pi * second / 1200 + self._phase)
        return self.rate / _BURST_MEAN * day * drift * self.burst(second)

    def burst(self, second: int) -> float:
        """The burst multiplier at ``second`` (1 outside bursts). At most one burst starts per minute."""
        if self.steady:
            return 1.0
        for minute in (second // 60, second // 60 - 1):
            burst = _burst(self.seed, minute)
            if burst and burst[0] <= second < burst[1]:
                return burst[2]
        return 1.0

    def incidents(self, second: int) -> list[Incident]:
        """The incidents going on at ``second``."""
        if self.steady:
            return []
        window = second // INCIDENT_WINDOW_S
        found = [_incident(self.seed, w) for w in (window - 1, window)]
        if self._opening is not None:
            found.append(self._opening)
        return [i for i in found if i.start_s <= second < i.end_s]

    def conditions(self, second: int) -> Conditions:
        load = self.intensity(second) / self.rate
        incidents = self.incidents(second)
        return Conditions(
            rate_limit_p=min(RATE_LIMIT_MAX, RATE_LIMIT_FLOOR + RATE_LIMIT_LOAD * load * load),
            model_429=tuple((i.target, i.level) for i in incidents if i.kind == "rate_limit"),
            provider_5xx=tuple((i.target, i.level) for i in incidents if i.kind == "outage"),
            provider_slow=tuple((i.target, i.level) for i in incidents if i.kind == "slow"),
        )

    def second(self, second: int) -> list[Trace]:
        """The traces that start within ``[second, second + 1)``, in start order."""
        rng = random.Random(f"{self.seed}:{second}")
        lam = self.intensity(second)
        build = Builder(rng, self.conditions(second), self.session)
        kinds = [(build.llm_request, self.mix[LLM]), (build.agent_request, self.mix[AGENT])]
        kinds.append((build.routing_request, self.mix[ROUTING]))
        traces = []
        t = rng.expovariate(lam)
        while t < 1.0:
            make = rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
            traces.append(make(second * 1_000_000_000 + int(t * 1e9), second))
            t += rng.expovariate(lam)
        return traces

    def traces(self, start_s: int, end_s: int) -> list[Trace]:
        """The traces that start within ``[start_s, end_s)``."""
        return [t for s in range(start_s, end_s) for t in self.second(s)]

    def session(self, rng: random.Random, second: int, implicit: bool = False) -> Session:
        """A conversation of the current 10-minute window: an ``x-model-affinity`` value, or
        the ``implicit:`` key brightstaff derives from the prompt prefix (always, for agents)."""
        pool = "agent" if implicit else "llm"
        srng = random.Random(f"{self.seed}:session:{pool}:{second // 600}:{rng.randrange(self._sessions)}")
        explicit = not implicit and srng.random() < 0.45
        sid = f"conv-{srng.getrandbits(48):012x}" if explicit else f"implicit:{srng.getrandbits(64):016x}"
        route = pick(srng, {r: w for r, (w, _) in ROUTES.items()})
        anchor = pick(srng, ROUTES[route][1])
        user = f"user_{srng.randint(1000, 1400)}" if srng.random() < 0.6 else None
        return Session(sid, anchor, route, user)


@functools.lru_cache(maxsize=256)
def _burst(seed: int, minute: int) -> tuple[float, float, float] | None:
    """The burst that starts in ``minute``, if any: (start s, end s, rate multiplier)."""
    rng = random.Random(f"{seed}:burst:{minute}")
    if rng.random() >= BURST_CHANCE:
        return None
    start = minute * 60 + rng.uniform(0, 60)
    return start, start + rng.uniform(*BURST_S), rng.uniform(*BURST_X)


@functools.lru_cache(maxsize=256)
def _incident(seed: int, window: int) -> Incident:
    rng = random.Random(f"{seed}:incident:{window}")
    kind = pick(rng, INCIDENTS)
    start = window * INCIDENT_WINDOW_S + rng.uniform(0, INCIDENT_WINDOW_S - 30)
    end = start + rng.uniform(*INCIDENT_S)
    if kind == "rate_limit":
        return Incident(
            kind, pick(rng, {m.name: m.weight for m in MODELS.values()}), rng.uniform(0.25, 0.5), start, end
        )
    target = pick(rng, OUTAGE_TARGETS)
    level = rng.uniform(0.25, 0.6) if kind == "outage" else rng.uniform(2.0, 3.5)
    return Incident(kind, target, level, start, end)
