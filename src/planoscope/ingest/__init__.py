"""Ingest: OTLP receivers (gRPC, HTTP), admission, decoding, the journal and the writer that owns the store's writes."""
