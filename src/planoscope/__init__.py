"""planoscope: the Plano LLM gateway's observability stack in one Python process.

The packages follow the data: ``ingest`` (receivers, decode, journal, writer) → ``store``
(DuckDB) and ``metrics`` (span metrics); ``scrape`` (Envoy samples); ``query`` (panels, trace
search) → ``web`` (UI and API) and ``forward`` / ``grafana`` (outward); ``demo`` simulates Plano.
``app`` wires them, ``cli`` and ``settings`` are the edge; ``net`` is what they share.
"""

__version__ = "0.1.0"
