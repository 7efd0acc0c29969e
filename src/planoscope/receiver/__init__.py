"""OTLP receivers: thin transports over one shared ``Ingest`` callable."""
