"""The Plano deployment the demo simulates: its model providers, aliases, routing preferences,
agent listeners and filters, as a ``config.yaml`` would declare them, plus what its users send.

Models are provider-qualified as Plano configures them (``openai/gpt-4o-mini``); ``reported`` is
the model the upstream names in its response (Plano records it as a second ``llm.model``).
Latency figures are medians: time to first token, and output tokens per second.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    name: str  # provider/model, as configured
    reported: str  # the model the upstream reports back
    ttft_ms: float
    tokens_per_s: float
    input_usd_per_m: float
    output_usd_per_m: float
    cached_usd_per_m: float
    weight: float  # share of the direct requests that name it
    sigma: float = 0.45  # spread of the log-normal time to first token
    reasoning: bool = False

    @property
    def provider(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def short(self) -> str:
        """The model without its provider, as brightstaff's metric labels carry it."""
        return self.name.split("/", 1)[1]


MODELS = {
    m.name: m
    for m in (
        Model("openai/gpt-4o", "gpt-4o-2024-08-06", 450, 80, 2.5, 10.0, 1.25, 0.26),
        Model("openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18", 350, 110, 0.15, 0.6, 0.075, 0.26),
        Model("openai/o3-mini", "o3-mini-2025-01-31", 1700, 140, 1.1, 4.4, 0.55, 0.06, sigma=0.5, reasoning=True),
        Model("anthropic/claude-sonnet-4-20250514", "claude-sonnet-4-20250514", 800, 65, 3.0, 15.0, 0.3, 0.17),
        Model("anthropic/claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022", 450, 110, 0.8, 4.0, 0.08, 0.07),
        Model("groq/llama-3.3-70b-versatile", "llama-3.3-70b-versatile", 150, 280, 0.59, 0.79, 0.59, 0.12, sigma=0.35),
        Model("gemini/gemini-2.0-flash", "gemini-2.0-flash", 380, 170, 0.10, 0.40, 0.025, 0.06),
    )
}
SONNET, HAIKU = "anthropic/claude-sonnet-4-20250514", "anthropic/claude-3-5-haiku-20241022"
LLAMA, FLASH = "groq/llama-3.3-70b-versatile", "gemini/gemini-2.0-flash"


@dataclass(frozen=True)
class Upstream:
    host: str
    path: str  # of a chat completion, after Plano's rewrite for the provider
    cluster: str  # Envoy's cluster


PROVIDERS = {
    "openai": Upstream("api.openai.com", "/v1/chat/completions", "openai"),
    "anthropic": Upstream("api.anthropic.com", "/v1/messages", "anthropic"),
    "groq": Upstream("api.groq.com", "/openai/v1/chat/completions", "groq"),
    "gemini": Upstream("generativelanguage.googleapis.com", "/v1beta/openai/chat/completions", "gemini"),
}
# Plano's own models (agent selection, preference routing) are served by Katanemo.
ARCH = Upstream("archfc.katanemo.dev", "/v1/chat/completions", "arch")

ALIASES = {"fast": LLAMA, "smart": SONNET, "cheap": "openai/gpt-4o-mini"}
# Routing preferences the clients send inline (no top-level ones are configured: a request
# without them is routed to the model it names, `route.selected_model` = none).
ROUTES = {  # route: (weight, ((model, weight), ...)); the ranking policy picks one of them
    "code_generation": (0.35, ((SONNET, 0.6), ("openai/gpt-4o", 0.3), ("openai/o3-mini", 0.1))),
    "summarization": (0.25, (("openai/gpt-4o-mini", 0.7), (FLASH, 0.3))),
    "general_qa": (0.25, (("openai/gpt-4o-mini", 0.5), (LLAMA, 0.3), (HAIKU, 0.2))),
    "data_extraction": (0.15, (("openai/gpt-4o", 0.6), (FLASH, 0.4))),
}
DEFAULT_MODEL = "openai/gpt-4o-mini"  # what a client sending routing preferences names


@dataclass(frozen=True)
class Agent:
    filters: tuple[str, ...]  # input filter chain
    models: tuple[tuple[str, float], ...]
    tools: tuple[str, ...]


LISTENERS = {  # listener: (weight, {agent id: Agent})
    "travel_booking_service": (
        0.6,
        {
            "weather_agent": Agent((), (("openai/gpt-4o-mini", 1.0),), ("get_weather",)),
            "flight_agent": Agent(
                ("input_guard", "query_rewriter"),
                (("openai/gpt-4o", 0.8), (SONNET, 0.2)),
                ("search_flights", "book_flight"),
            ),
            "hotel_agent": Agent(("input_guard",), ((HAIKU, 1.0),), ("search_hotels", "book_hotel")),
        },
    ),
    "customer_support": (
        0.4,
        {
            "billing_agent": Agent(("pii_redactor",), (("openai/gpt-4o", 1.0),), ("lookup_invoice", "issue_refund")),
            "tech_support_agent": Agent(
                ("pii_redactor", "context_builder"),
                ((SONNET, 0.7), ("openai/o3-mini", 0.3)),
                ("search_docs", "run_diagnostics"),
            ),
        },
    ),
}
FILTERS = {  # filter id: (url, share of requests it rejects with a 4xx)
    "input_guard": ("http://input-guard:10500", 0.03),
    "query_rewriter": ("http://query-rewriter:10501", 0.0),
    "pii_redactor": ("http://pii-redactor:10502", 0.01),
    "context_builder": ("http://context-builder:10503", 0.0),
}

PROMPTS = (
    "Refactor this function to use async/await and add type hints",
    "Summarize the attached quarterly report in five bullet points",
    "What’s the weather in Lisbon this weekend?",
    "Find me a flight from SFO to JFK next Friday morning",
    "Extract the invoice number, date and total from this email",
    "Why was I charged twice for my subscription this month?",
    "Write a SQL query that returns the top ten customers by revenue",
    "Translate this paragraph into Spanish, keeping the tone formal",
    "My router keeps dropping the connection every few minutes",
    "Book a hotel near the conference center for three nights",
    "Explain the difference between a mutex and a semaphore",
    "Draft a polite reply declining the meeting invitation",
)
TOOLS = ("get_weather", "search_docs", "run_sql", "lookup_invoice", "web_search", "read_file", "write_file")
TENANTS = ("acme", "globex", "initech", "umbrella")
USER_AGENTS = ("OpenAI/Python 1.82.0", "AsyncOpenAI/Python 2.17.0", "Anthropic/Python 0.52.0", "axios/1.7.9")
INBOUND_USER_AGENTS = ("Python/3.11 aiohttp/3.13.2", "python-httpx/0.28.1", "curl/8.5.0")

# Signals (brightstaff's analyzer): overall quality, and the signal types by group.
QUALITY = (  # (quality, share, quality score range)
    ("excellent", 0.24, (0.85, 1.0)),
    ("good", 0.41, (0.65, 0.85)),
    ("neutral", 0.25, (0.45, 0.65)),
    ("poor", 0.07, (0.25, 0.45)),
    ("severe", 0.03, (0.0, 0.25)),
)
SIGNALS = {  # group: ((signal type, snippet), ...)
    "interaction.misalignment": (
        ("interaction.misalignment.correction", "no, that's not what I asked"),
        ("interaction.misalignment.rephrase", "let me put it another way"),
        ("interaction.misalignment.clarification", "I meant the other account"),
    ),
    "interaction.stagnation": (
        ("interaction.stagnation.dragging", "we've been going back and forth"),
        ("interaction.stagnation.repetition", "same answer as before"),
    ),
    "interaction.disengagement": (
        ("interaction.disengagement.escalation", "get me a human"),
        ("interaction.disengagement.quit", "forget it"),
        ("interaction.disengagement.negative_stance", "this is useless"),
    ),
    "interaction.satisfaction": (
        ("interaction.satisfaction.gratitude", "thanks, that worked"),
        ("interaction.satisfaction.confirmation", "yes, exactly"),
        ("interaction.satisfaction.success", "it compiles now"),
    ),
    "execution.failure": (
        ("execution.failure.invalid_args", "missing required argument 'date'"),
        ("execution.failure.tool_not_found", "unknown tool 'book_car'"),
        ("execution.failure.state_error", "order already cancelled"),
    ),
    "execution.loops": (
        ("execution.loops.retry", "retrying search_flights"),
        ("execution.loops.parameter_drift", "date changed on every call"),
    ),
    "environment.exhaustion": (
        ("environment.exhaustion.api_error", "upstream returned 502"),
        ("environment.exhaustion.rate_limit", "429 Too Many Requests"),
        ("environment.exhaustion.timeout", "tool call timed out"),
    ),
}
BUILD = ("0.4.36", "003c36ae")  # brightstaff_build_info{version, git_sha}
