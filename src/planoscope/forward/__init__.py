"""Forwarding: every stored span passed on over OTLP to Tempo, Jaeger or a collector."""
