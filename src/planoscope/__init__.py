"""planoscope: the Plano LLM gateway's observability stack in one Python process."""

__version__ = "0.1.0"
